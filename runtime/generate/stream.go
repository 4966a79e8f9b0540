package generate

import (
	"github.com/fhkit/fhkit/runtime/model"
	"github.com/fhkit/fhkit/runtime/tokenizer"
)

// Stream turns one sequence's generated tokens into text and decides when
// the sequence ends, with the rules of Session.Generate: an end-of-sequence
// token (unless IgnoreEOS), a stop string (the text is cut before it), or
// MaxTokens. It lets a caller that runs the model itself (a server decoding
// many sequences together) share those rules with the single-sequence loop.
type Stream struct {
	eos  map[int]bool
	opts Options
	dec  *tokenizer.Decoder
	out  stopFilter
	// Tokens are the tokens pushed so far (an end token included).
	Tokens []int
	// StopReason is "" while the sequence goes on, then "eos", "stop",
	// "length", or what End was given.
	StopReason string
}

// EOSTokens returns the end-of-sequence token ids of a model: those of its
// configuration and those its tokenizer declares.
func EOSTokens(m *model.Model, tok *tokenizer.Tokenizer) map[int]bool {
	eos := map[int]bool{}
	for _, id := range m.Config.EOSTokenIDs {
		eos[id] = true
	}
	for _, id := range tok.EOS() {
		eos[id] = true
	}
	return eos
}

// NewStream starts a sequence's text. eos is the set from EOSTokens; emit
// (nil: none) receives each piece of text as soon as no stop string can
// still claim it.
func NewStream(tok *tokenizer.Tokenizer, eos map[int]bool, opts Options, emit func(string) error) *Stream {
	return &Stream{eos: eos, opts: opts, dec: tok.NewDecoder(), out: stopFilter{stops: opts.Stop, emit: emit}}
}

// Push adds the next generated token and reports whether the sequence has
// ended (StopReason then says why). An error is emit's.
func (s *Stream) Push(id int) (done bool, err error) {
	s.Tokens = append(s.Tokens, id)
	if s.eos[id] && !s.opts.IgnoreEOS {
		return s.end("eos")
	}
	stopped, err := s.out.write(s.dec.Next(id))
	if err != nil {
		return false, err
	}
	if stopped {
		return s.end("stop")
	}
	if len(s.Tokens) >= s.opts.MaxTokens {
		return s.end("length")
	}
	return false, nil
}

// End ends the sequence for a reason of the caller's (such as "context"
// when the context is full) and releases the text held back for stop
// strings.
func (s *Stream) End(reason string) error {
	_, err := s.end(reason)
	return err
}

func (s *Stream) end(reason string) (bool, error) {
	s.StopReason = reason
	if reason == "stop" {
		return true, nil
	}
	if _, err := s.out.write(s.dec.Flush()); err != nil {
		return true, err
	}
	return true, s.out.flush()
}

// Text returns the text so far (cut before a stop string).
func (s *Stream) Text() string { return s.out.text.String() }
