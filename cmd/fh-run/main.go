// Command fh-run runs and examines fhkit model files.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/fhkit/fhkit/internal/cli"
)

const usage = `fh-run: run and examine fhkit model files

Usage:
  fh-run <command> [flags]

Commands:
  generate  generate text from a prompt, streamed as it is produced
  chat      interactive multi-turn chat with the model's chat template
  serve     OpenAI-compatible HTTP server with continuous batching
  loadgen   load test a server on the loopback: throughput, latency percentiles
  verify    compare the model's logits with baseline logits or another model
  tokenize  token ids of text (or text of ids with --decode)
  bench     prefill/decode speed, head time, bytes per token, bandwidth bound
  inspect   show a .fhm or .safetensors file: metadata, tensors, checksums

Run 'fh-run <command> --help' for a command's flags and examples.
`

func main() { cli.Main("fh-run", run) }

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return cli.Usagef("no command given")
	}
	switch args[0] {
	case "inspect":
		return runInspect(args[1:], stdout)
	case "generate":
		return runGenerate(args[1:], stdout, stderr)
	case "chat":
		return runChat(args[1:], os.Stdin, stdout, stderr)
	case "serve":
		return runServe(args[1:], stdout, stderr)
	case "loadgen":
		return runLoadgen(args[1:], stdout, stderr)
	case "verify":
		return runVerify(args[1:], stdout)
	case "bench":
		return runBench(args[1:], stdout)
	case "tokenize":
		return runTokenize(args[1:], os.Stdin, stdout)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return cli.Usagef("unknown command %q (commands: generate, chat, serve, loadgen, verify, tokenize, bench, inspect)", args[0])
}
