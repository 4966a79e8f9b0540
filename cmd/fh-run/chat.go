package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/fhkit/fhkit/internal/cli"
	"github.com/fhkit/fhkit/runtime/cuda"
	"github.com/fhkit/fhkit/runtime/generate"
	"github.com/fhkit/fhkit/runtime/tokenizer"
)

const chatHelp = `Usage: fh-run chat --model F [flags]

An interactive multi-turn chat with the model's chat template: type a
message and press Enter; the reply streams back. The KV cache is kept between
turns, so earlier turns are not recomputed (on the CPU or, with --device
cuda, on the GPU). Commands: /reset starts over, /exit (or end of input)
quits.

Examples:
  fh-run chat --model gemma.fhm
  fh-run chat --model gemma.fhm --system "Answer in one sentence." --temperature 0.7 --seed 3
  printf 'Hello\nTell me more\n' | fh-run chat --model gemma.fhm
  fh-run chat --model gemma-fh.fhm --device cuda

Flags:
`

func runChat(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("chat", pflag.ContinueOnError)
	var rf runtimeFlags
	var sf sampleFlags
	rf.register(fs)
	sf.register(fs)
	system := fs.String("system", "", "system message")
	maxTokens := fs.Int("max-tokens", 512, "maximum tokens per reply")
	device := registerDevice(fs)
	if err := parse(fs, args, chatHelp, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("chat: unexpected argument %q", fs.Arg(0))
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
	if l.tok.ChatTemplate() == nil {
		return fmt.Errorf("%s: the model has no chat template; use fh-run generate", rf.model)
	}
	if err := checkDevice(*device); err != nil {
		return err
	}
	dr, err := openDevice(*device, l, &rf, stderr)
	if err != nil {
		return err
	}
	defer closeDevice(dr)
	// A turn: the CPU session or the device's, each keeping its cache.
	var turn func(ids []int, opts generate.Options, emit func(string) error) (*generate.Result, error)
	if dr != nil {
		turn = (&cuda.Session{Runner: dr, Tokenizer: l.tok, Flash: l.flash, Pool: l.pool}).Generate
	} else {
		sess, err := generate.NewSession(l.run, l.tok, rf.ctx, l.kv)
		if err != nil {
			return err
		}
		sess.Flash = l.flash
		turn = sess.Generate
	}
	var history []tokenizer.Message
	if *system != "" {
		history = append(history, tokenizer.Message{Role: "system", Content: *system})
	}
	base := len(history)
	interactive := cli.IsTerminal(stdout) && stdin == os.Stdin
	in := bufio.NewScanner(stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	for {
		if interactive {
			fmt.Fprint(stdout, "> ")
		}
		if !in.Scan() {
			return in.Err()
		}
		line := strings.TrimSpace(in.Text())
		switch line {
		case "":
			continue
		case "/exit", "/quit":
			return nil
		case "/reset":
			history = history[:base]
			fmt.Fprintln(stderr, "(conversation reset)")
			continue
		}
		history = append(history, tokenizer.Message{Role: "user", Content: line})
		text, err := l.tok.RenderChat(history, true)
		if err != nil {
			return err
		}
		ids := l.tok.Encode(text, false)
		res, err := turn(ids, generate.Options{MaxTokens: *maxTokens, Sample: sp}, func(s string) error {
			_, err := io.WriteString(stdout, s)
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: %w", rf.model, err)
		}
		fmt.Fprintln(stdout)
		fmt.Fprintf(stderr, "(%d tokens, %.1f tok/s, stop: %s)\n", len(res.Tokens), res.DecodeRate(), res.StopReason)
		history = append(history, tokenizer.Message{Role: "assistant", Content: res.Text})
	}
}
