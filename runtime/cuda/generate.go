package cuda

import (
	"fmt"
	"slices"
	"time"

	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/generate"
	"github.com/fhkit/fhkit/runtime/head"
	"github.com/fhkit/fhkit/runtime/sample"
	"github.com/fhkit/fhkit/runtime/tokenizer"
)

// Session is runtime/generate's Session with the model on the device: the
// runner's current sequence, whose KV cache successive Generate calls
// reuse when the prompt extends everything processed so far (a chat).
// Greedy decoding (temperature 0, no repetition penalty) runs entirely on
// the device, one captured graph per token, with the FlashHead when one is
// loaded in the runner. Sampling downloads each step's dense logits (or,
// with a FlashHead, its hidden state, sampled by the FlashHead on the CPU
// with Pool) and draws with the runtime/sample sampler, so a seed gives the
// same choices as on the CPU up to the logits' rounding differences.
type Session struct {
	Runner    *Runner
	Tokenizer *tokenizer.Tokenizer
	// Flash is the CPU FlashHead sampled rows go through (nil: the dense
	// head); it must be the one loaded in the runner.
	Flash   *head.FlashHead
	Pool    *cpu.Pool
	history []int // tokens whose keys and values are in the sequence
}

// Generate runs one prompt in a fresh sequence of r (Session.Generate
// without a history).
func Generate(r *Runner, tok *tokenizer.Tokenizer, fh *head.FlashHead, pool *cpu.Pool, prompt []int, opts generate.Options, emit func(string) error) (*generate.Result, error) {
	s := &Session{Runner: r, Tokenizer: tok, Flash: fh, Pool: pool}
	return s.Generate(prompt, opts, emit)
}

// Generate continues from prompt (token ids, including any BOS) with the
// same end-of-sequence tokens, stop strings, limits and streamed text as
// runtime/generate (generate.Stream).
func (s *Session) Generate(prompt []int, opts generate.Options, emit func(string) error) (*generate.Result, error) {
	r, fh := s.Runner, s.Flash
	if err := opts.Check(prompt, r.Limit); err != nil {
		return nil, err
	}
	if fh != nil && r.flash == nil {
		return nil, fmt.Errorf("cuda: the FlashHead is not loaded on the device")
	}
	greedy := opts.Sample.Temperature == 0 && (opts.Sample.RepetitionPenalty == 0 || opts.Sample.RepetitionPenalty == 1)
	sampler := sample.New(opts.Sample)
	context := slices.Clone(prompt)
	// step runs tokens and returns the next token.
	step := func(tokens []int) (int, error) {
		if greedy {
			return r.Greedy(tokens)
		}
		if fh != nil {
			hidden, err := r.ForwardHidden(tokens, false)
			if err != nil {
				return 0, err
			}
			return fh.Sample(s.Pool, sampler, hidden, context), nil
		}
		logits, err := r.Forward(tokens, false)
		if err != nil {
			return 0, err
		}
		return sampler.Next(logits, context), nil
	}
	// Reuse the cache when the prompt extends what was processed (and the
	// runner still holds that sequence where it was left).
	todo := prompt
	if len(s.history) > 0 && len(prompt) > len(s.history) && slices.Equal(prompt[:len(s.history)], s.history) && r.Pos == len(s.history) {
		todo = prompt[len(s.history):]
	} else {
		r.Reset()
		s.history = s.history[:0]
	}
	res := &generate.Result{PromptTokens: len(prompt)}
	start := time.Now()
	id, err := step(todo)
	if err != nil {
		s.history = s.history[:0]
		return nil, err
	}
	s.history = append(s.history, todo...)
	res.PrefillSeconds = time.Since(start).Seconds()
	out := generate.NewStream(s.Tokenizer, generate.EOSTokens(r.M, s.Tokenizer), opts, emit)
	start = time.Now()
	for {
		context = append(context, id)
		done, err := out.Push(id)
		if err != nil {
			return nil, err
		}
		if done {
			break
		}
		if r.Pos+1 > r.Limit {
			if err := out.End("context"); err != nil {
				return nil, err
			}
			break
		}
		if id, err = step([]int{id}); err != nil {
			s.history = s.history[:0]
			return nil, err
		}
		s.history = append(s.history, context[len(context)-1])
	}
	res.Tokens, res.StopReason = out.Tokens, out.StopReason
	res.DecodeSeconds = time.Since(start).Seconds()
	res.Text = out.Text()
	return res, nil
}
