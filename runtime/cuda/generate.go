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

// Generate is runtime/generate's decode loop with the model on the device,
// for one prompt in a fresh sequence: the same end-of-sequence tokens, stop
// strings, limits and streamed text (generate.Stream). Greedy decoding
// (temperature 0, no repetition penalty) runs entirely on the device, one
// captured graph per token, with the FlashHead when fh is loaded in r.
// Sampling downloads each step's dense logits (or, with a FlashHead, its
// hidden state, sampled by fh on the CPU with pool) and draws with the
// runtime/sample sampler, so a seed gives the same choices as on the CPU
// up to the logits' rounding differences.
func Generate(r *Runner, tok *tokenizer.Tokenizer, fh *head.FlashHead, pool *cpu.Pool, prompt []int, opts generate.Options, emit func(string) error) (*generate.Result, error) {
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
			return fh.Sample(pool, sampler, hidden, context), nil
		}
		logits, err := r.Forward(tokens, false)
		if err != nil {
			return 0, err
		}
		return sampler.Next(logits, context), nil
	}
	r.Reset()
	res := &generate.Result{PromptTokens: len(prompt)}
	start := time.Now()
	id, err := step(prompt)
	if err != nil {
		return nil, err
	}
	res.PrefillSeconds = time.Since(start).Seconds()
	out := generate.NewStream(tok, generate.EOSTokens(r.M, tok), opts, emit)
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
			return nil, err
		}
	}
	res.Tokens, res.StopReason = out.Tokens, out.StopReason
	res.DecodeSeconds = time.Since(start).Seconds()
	res.Text = out.Text()
	return res, nil
}
