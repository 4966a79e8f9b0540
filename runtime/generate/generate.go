// Package generate runs the decode loop: prefill a prompt, then pick tokens
// one at a time until an end-of-sequence token, a stop string or the token
// limit, streaming the text as it appears.
package generate

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/runtime/head"
	"github.com/fhkit/fhkit/runtime/model"
	"github.com/fhkit/fhkit/runtime/sample"
	"github.com/fhkit/fhkit/runtime/tokenizer"
)

// Options control one generation.
type Options struct {
	// MaxTokens limits the generated tokens (the context limit applies too).
	MaxTokens int
	Sample    sample.Params
	// Stop strings end the generation; the text is cut before them.
	Stop []string
	// IgnoreEOS keeps generating past end-of-sequence tokens.
	IgnoreEOS bool
}

// Check validates opts for a generation from prompt in a sequence with a
// context limit of limit tokens (the CPU session and the CUDA runner's
// Generate both call it).
func (opts Options) Check(prompt []int, limit int) error {
	if len(prompt) == 0 {
		return fmt.Errorf("empty prompt")
	}
	if err := opts.Sample.Validate(); err != nil {
		return err
	}
	if opts.MaxTokens <= 0 {
		return fmt.Errorf("max tokens %d must be > 0", opts.MaxTokens)
	}
	if len(prompt) >= limit {
		return fmt.Errorf("prompt of %d tokens does not fit the context limit of %d tokens", len(prompt), limit)
	}
	return nil
}

// Result describes a finished generation.
type Result struct {
	PromptTokens int
	Tokens       []int  // generated token ids (the stop token included)
	Text         string // generated text, cut before a stop string
	// StopReason is "eos", "stop", "length" or "context".
	StopReason     string
	PrefillSeconds float64
	DecodeSeconds  float64
}

// PrefillRate returns prompt tokens per second.
func (r *Result) PrefillRate() float64 { return rate(r.PromptTokens, r.PrefillSeconds) }

// DecodeRate returns generated tokens per second (the first token comes
// from the prefill and is not counted).
func (r *Result) DecodeRate() float64 { return rate(len(r.Tokens)-1, r.DecodeSeconds) }

func rate(n int, s float64) float64 {
	if n <= 0 || s <= 0 {
		return 0
	}
	return float64(n) / s
}

// Session holds a model, its tokenizer and one sequence's state. Successive
// Generate calls whose prompt extends everything processed so far (a chat)
// reuse the KV cache.
type Session struct {
	Runner    *model.Runner
	Tokenizer *tokenizer.Tokenizer
	State     *model.State
	// Flash, when set, picks tokens with the FlashHead instead of the dense
	// head.
	Flash   *head.FlashHead
	history []int // tokens whose keys and values are in State
	eos     map[int]bool
	// logits is the dense head's output, reused token after token (a
	// vocabulary of 262k is a megabyte: allocated per token, its fresh
	// pages cost as much as sampling from it).
	logits []float32
}

// NewSession prepares a sequence with a KV cache of kv precision and a
// context limit of ctx tokens (0 = the model's).
func NewSession(r *model.Runner, tok *tokenizer.Tokenizer, ctx int, kv dtype.DType) (*Session, error) {
	st, err := r.M.NewState(ctx, kv)
	if err != nil {
		return nil, err
	}
	return &Session{Runner: r, Tokenizer: tok, State: st, eos: EOSTokens(r.M, tok)}, nil
}

// Generate continues from prompt (token ids, including any BOS) and calls
// emit with each piece of text as soon as it is complete.
func (s *Session) Generate(prompt []int, opts Options, emit func(string) error) (*Result, error) {
	if err := opts.Check(prompt, s.State.Limit); err != nil {
		return nil, err
	}
	// Reuse the cache when the prompt extends what was processed.
	todo := prompt
	if len(s.history) > 0 && len(prompt) > len(s.history) && slices.Equal(prompt[:len(s.history)], s.history) {
		todo = prompt[len(s.history):]
	} else {
		s.State.Reset()
		s.history = s.history[:0]
	}
	res := &Result{PromptTokens: len(prompt)}
	start := time.Now()
	hidden, err := s.Runner.ForwardHidden(s.State, todo, false)
	if err != nil {
		return nil, err
	}
	s.history = append(s.history, todo...)
	res.PrefillSeconds = time.Since(start).Seconds()

	sampler := sample.New(opts.Sample)
	out := NewStream(s.Tokenizer, s.eos, opts, emit)
	context := slices.Clone(prompt)
	start = time.Now()
	for {
		id := s.next(sampler, hidden, context)
		context = append(context, id)
		done, err := out.Push(id)
		if err != nil {
			return nil, err
		}
		if done {
			break
		}
		if s.State.Pos+1 > s.State.Limit {
			if err := out.End("context"); err != nil {
				return nil, err
			}
			break
		}
		if hidden, err = s.Runner.ForwardHidden(s.State, []int{id}, false); err != nil {
			return nil, err
		}
		s.history = append(s.history, id)
	}
	res.Tokens, res.StopReason = out.Tokens, out.StopReason
	res.DecodeSeconds = time.Since(start).Seconds()
	res.Text = out.Text()
	return res, nil
}

// next picks a token from the final hidden state with the session's head.
func (s *Session) next(sampler *sample.Sampler, hidden []float32, context []int) int {
	if s.Flash != nil {
		return s.Flash.Sample(s.Runner.Pool, sampler, hidden, context)
	}
	if n := s.Runner.M.Config.VocabSize; len(s.logits) != n {
		s.logits = make([]float32, n)
	}
	s.Runner.DenseLogitsInto(s.logits, hidden)
	return sampler.Next(s.logits, context)
}

// stopFilter passes text through, holding back any tail that could be the
// start of a stop string, and cuts the text before a stop string.
type stopFilter struct {
	stops   []string
	emit    func(string) error
	pending string
	text    strings.Builder
}

func (f *stopFilter) write(s string) (stopped bool, err error) {
	f.pending += s
	for _, stop := range f.stops {
		if stop == "" {
			continue
		}
		if i := strings.Index(f.pending, stop); i >= 0 {
			f.pending = f.pending[:i]
			return true, f.flush()
		}
	}
	// Keep the longest suffix that is a prefix of some stop string.
	hold := 0
	for _, stop := range f.stops {
		for k := min(len(stop)-1, len(f.pending)); k > hold; k-- {
			if strings.HasSuffix(f.pending, stop[:k]) {
				hold = k
				break
			}
		}
	}
	ready := f.pending[:len(f.pending)-hold]
	f.pending = f.pending[len(f.pending)-hold:]
	return false, f.send(ready)
}

func (f *stopFilter) flush() error {
	s := f.pending
	f.pending = ""
	return f.send(s)
}

func (f *stopFilter) send(s string) error {
	if s == "" {
		return nil
	}
	f.text.WriteString(s)
	if f.emit != nil {
		return f.emit(s)
	}
	return nil
}
