package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/fhkit/fhkit/internal/cli"
	"github.com/fhkit/fhkit/runtime/cuda"
	"github.com/fhkit/fhkit/runtime/generate"
	"github.com/fhkit/fhkit/runtime/tokenizer"
)

const generateHelp = `Usage: fh-run generate --model F --prompt P [flags]

Generates text after the prompt and streams it to standard output as it is
produced; prompt and decode speeds go to standard error at the end. Greedy
by default (--temperature 0); --chat wraps the prompt in the model's chat
template as one user turn.

Examples:
  fh-run generate --model gemma.fhm --prompt "The capital of France is"
  fh-run generate --model gemma.fhm --chat --prompt "Write a haiku" --temperature 0.7 --top-p 0.95 --seed 1
  fh-run generate --model m.fhm --prompt "Once upon a time" --max-tokens 64 --json
  fh-run generate --model gemma-fh.fhm --prompt "Hello" --device cuda

Flags:
`

func runGenerate(args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("generate", pflag.ContinueOnError)
	var rf runtimeFlags
	var sf sampleFlags
	rf.register(fs)
	sf.register(fs)
	prompt := fs.String("prompt", "", "prompt text (required)")
	maxTokens := fs.Int("max-tokens", 128, "maximum number of generated tokens")
	chat := fs.Bool("chat", false, "apply the chat template (the prompt is one user message)")
	stops := fs.StringArray("stop", nil, "stop string (repeatable)")
	ignoreEOS := fs.Bool("ignore-eos", false, "keep generating after end-of-sequence tokens")
	asJSON := fs.Bool("json", false, "print one JSON object at the end instead of streaming")
	device := registerDevice(fs)
	if err := parse(fs, args, generateHelp, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("generate: unexpected argument %q", fs.Arg(0))
	}
	if !fs.Changed("prompt") {
		return cli.Usagef("generate: --prompt is required")
	}
	if *maxTokens <= 0 {
		return cli.Usagef("--max-tokens %d must be > 0", *maxTokens)
	}
	sp, err := sf.params()
	if err != nil {
		return err
	}
	l, err := rf.load(true)
	if err != nil {
		return err
	}
	defer l.Close()
	ids, err := promptTokens(l.tok, *prompt, *chat)
	if err != nil {
		return err
	}
	emit := func(s string) error {
		_, err := io.WriteString(stdout, s)
		return err
	}
	if *asJSON {
		emit = nil
	}
	opts := generate.Options{MaxTokens: *maxTokens, Sample: sp, Stop: *stops, IgnoreEOS: *ignoreEOS}
	dr, err := openDevice(*device, l, &rf, stderr)
	if err != nil {
		return err
	}
	defer closeDevice(dr)
	var res *generate.Result
	if dr != nil {
		res, err = cuda.Generate(dr, l.tok, l.flash, l.pool, ids, opts, emit)
	} else {
		var sess *generate.Session
		if sess, err = generate.NewSession(l.run, l.tok, rf.ctx, l.kv); err != nil {
			return err
		}
		sess.Flash = l.flash
		res, err = sess.Generate(ids, opts, emit)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", rf.model, err)
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(map[string]any{
			"text": res.Text, "prompt_tokens": res.PromptTokens, "tokens": res.Tokens,
			"stop_reason": res.StopReason, "prefill_tok_s": res.PrefillRate(), "decode_tok_s": res.DecodeRate(),
		})
	}
	fmt.Fprintln(stdout)
	fmt.Fprintf(stderr, "prompt: %d tokens, %.1f tok/s; decode: %d tokens, %.1f tok/s; stop: %s\n",
		res.PromptTokens, res.PrefillRate(), len(res.Tokens), res.DecodeRate(), res.StopReason)
	return nil
}

// promptTokens encodes a raw prompt (with BOS when the tokenizer adds one)
// or a single-turn chat rendered with the model's template (which writes
// its own BOS).
func promptTokens(tok *tokenizer.Tokenizer, prompt string, chat bool) ([]int, error) {
	if !chat {
		return tok.Encode(prompt, true), nil
	}
	text, err := tok.RenderChat([]tokenizer.Message{{Role: "user", Content: prompt}}, true)
	if err != nil {
		return nil, err
	}
	return tok.Encode(text, false), nil
}
