// Command fh-fixture writes Hugging Face checkpoints with random weights
// (tiny ones for tests, and real-shape ones on demand for benchmarks).
//
//	fh-fixture --list
//	fh-fixture --preset gemma3-tiny --out testdata/fixtures/gemma3-tiny
//	fh-fixture --all --out testdata/fixtures
//	fh-fixture --preset gemma3-1b --out /tmp/gemma3-1b --seed 7
//
// Exit status: 0 on success, 2 on a usage error, 1 on any other error.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/fhkit/fhkit/internal/fixture"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, isTerminal(os.Stderr)))
}

// isTerminal reports whether f is a character device (a terminal).
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

const usageText = `fh-fixture writes a Hugging Face checkpoint directory with random weights:
config.json, generation_config.json, model.safetensors (or shards + index),
tokenizer.model, tokenizer_config.json and special_tokens_map.json.
The same preset and seed always give byte-identical files.

Usage:
  fh-fixture --preset NAME --out DIR [--seed N]
  fh-fixture --all --out DIR [--seed N]     every tiny preset, into DIR/<preset>
  fh-fixture --list

Examples:
  fh-fixture --list
  fh-fixture --preset gemma3-tiny --out testdata/fixtures/gemma3-tiny
  fh-fixture --all --out testdata/fixtures  # regenerate the committed fixtures
  fh-fixture --preset llama-sharded --out /tmp/llama-sharded --seed 3
  fh-fixture --preset gemma3-1b --out /tmp/gemma3-1b    # ~2 GB, streamed

Flags:
`

// run is the whole command; it returns the exit status.
func run(args []string, stdout, stderr io.Writer, progress bool) int {
	fs := pflag.NewFlagSet("fh-fixture", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	preset := fs.String("preset", "", "preset to generate (see --list)")
	out := fs.String("out", "", "output directory (created if needed; files of the same names are replaced)")
	seed := fs.Uint64("seed", 0, "random seed for the weights")
	list := fs.Bool("list", false, "list the presets and exit")
	all := fs.Bool("all", false, "generate every tiny (not on-demand) preset into OUT/<preset>")
	fs.Usage = func() {
		fmt.Fprint(stdout, usageText)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fs.SetOutput(stderr)
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "fh-fixture: "+format+"\n", a...)
		fmt.Fprintln(stderr, "Run 'fh-fixture --help' for usage.")
		return 2
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return usageErr("%v", err)
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected argument %q", fs.Arg(0))
	}
	if *list {
		if *preset != "" || *out != "" || *all {
			return usageErr("--list takes no other flag")
		}
		printList(stdout)
		return 0
	}
	if *all {
		if *preset != "" || *out == "" {
			return usageErr("--all needs --out and no --preset")
		}
		for _, p := range fixture.Presets() {
			if p.OnDemand {
				continue
			}
			if code := generate(p, filepath.Join(*out, p.Name), *seed, stderr, false); code != 0 {
				return code
			}
		}
		return 0
	}
	if *preset == "" || *out == "" {
		return usageErr("--preset and --out are required (or use --all or --list)")
	}
	p, err := fixture.Lookup(*preset)
	if err != nil {
		return usageErr("%v", err)
	}
	return generate(p, *out, *seed, stderr, progress)
}

// generate writes preset p into dir and returns the exit status.
func generate(p fixture.Preset, dir string, seed uint64, stderr io.Writer, progress bool) int {
	var opts fixture.Options
	start := time.Now()
	if progress && p.OnDemand {
		last := time.Time{}
		opts.Progress = func(done, total int64) {
			if now := time.Now(); now.Sub(last) >= 200*time.Millisecond || done == total {
				last = now
				fmt.Fprintf(stderr, "\r%s: %5.1f%% of %.2f GB", p.Name, 100*float64(done)/float64(total), float64(total)/1e9)
			}
		}
	}
	err := fixture.WriteWithOptions(dir, p.Name, seed, opts)
	if opts.Progress != nil {
		fmt.Fprintln(stderr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "fh-fixture: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "fh-fixture: wrote %s (seed %d) to %s in %.1fs\n", p.Name, seed, dir, time.Since(start).Seconds())
	return 0
}

func printList(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "PRESET\tSIZE\tKIND\tDESCRIPTION")
	for _, p := range fixture.Presets() {
		kind := "tiny"
		if p.OnDemand {
			kind = "on demand"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Name, humanBytes(p.ApproxBytes), kind, p.Description)
	}
	tw.Flush()
}

func humanBytes(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.1f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	default:
		return fmt.Sprintf("%d KB", (n+999)/1000)
	}
}
