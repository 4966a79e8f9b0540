package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/fhkit/fhkit/internal/cli"
	"github.com/fhkit/fhkit/runtime/bench"
)

const benchHelp = `Usage: fh-run bench --model F [--prompt-tokens 128] [--gen-tokens 32] [--json]

Measures, in one run: prefill tokens/s, decode tokens/s with the FlashHead
(when the model has one) and with the dense head, the head's and the body's
time per token, the bytes read per decoded token, and this machine's memory
read bandwidth (a probe built into the tool), with the ratio of decode speed
to the bandwidth bound (bandwidth / bytes per token). Random token ids.
The probe runs before each head's decode loop, after every 16 of its tokens
and after it; each window of tokens is bounded by the mean of the probes
around it (the machine's bandwidth can change within a second). When two
consecutive probes differ by more than a fifth, the bandwidth moved within
a window and a note says to run again (--json: probes_gbs of each head).

Examples:
  fh-run bench --model gemma-fh.fhm
  fh-run bench --model gemma-fh.fhm --threads 2 --json | jq .bound_ratio
  fh-run bench --model gemma-fh.fhm --device cuda

Flags:
`

func runBench(args []string, stdout io.Writer) error {
	fs := pflag.NewFlagSet("bench", pflag.ContinueOnError)
	var rf runtimeFlags
	rf.register(fs)
	promptTokens := fs.Int("prompt-tokens", 128, "prompt length for the prefill measurement")
	genTokens := fs.Int("gen-tokens", 32, "decoded tokens per head")
	seed := fs.Uint64("seed", 1, "seed of the random prompt")
	asJSON := fs.Bool("json", false, "print one JSON object")
	device := registerDevice(fs)
	if err := parse(fs, args, benchHelp, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("bench: unexpected argument %q", fs.Arg(0))
	}
	if *promptTokens <= 0 || *genTokens <= 0 {
		return cli.Usagef("bench: --prompt-tokens and --gen-tokens must be > 0")
	}
	l, err := rf.load(false)
	if err != nil {
		return err
	}
	defer l.Close()
	if *promptTokens+*genTokens > l.m.Config.MaxPositionEmbeddings {
		return cli.Usagef("bench: %d + %d tokens exceed the model's context of %d", *promptTokens, *genTokens, l.m.Config.MaxPositionEmbeddings)
	}
	dr, err := openDevice(*device, l, &rf, deviceMessages(*asJSON, stdout))
	if err != nil {
		return err
	}
	if dr != nil {
		defer closeDevice(dr)
		return benchDevice(dr, l.flash, rf.model, *promptTokens, *genTokens, *seed, *asJSON, stdout)
	}
	res, err := bench.Run(l.run, l.flash, bench.Options{PromptTokens: *promptTokens, GenTokens: *genTokens, KV: l.kv, Seed: *seed})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(stdout, "%s: %d threads, memory read bandwidth %.1f GB/s (probed before each head's decode loop, after every %d of its tokens and after it)\n", rf.model, res.Threads, res.BandwidthGBs, bench.ProbeWindow)
	fmt.Fprintf(stdout, "prefill: %d tokens at %.1f tok/s\n", res.PromptTokens, res.PrefillTokS)
	fmt.Fprintf(stdout, "%-10s %10s %12s %12s %14s %10s %9s\n", "head", "decode", "head ms/tok", "body ms/tok", "bytes/token", "bandwidth", "of bound")
	for _, h := range res.Heads {
		fmt.Fprintf(stdout, "%-10s %6.1f t/s %12.3f %12.3f %14s %5.1f GB/s %8.0f%%\n", h.Head, h.DecodeTokS, h.HeadMsPerTok, h.BodyMsPerTok, cli.HumanBytes(h.BytesPerToken), h.BandwidthGBs, 100*h.BoundRatio)
	}
	for _, h := range res.Heads {
		if moved, a, b := h.Unsteady(); moved {
			fmt.Fprintf(stdout, "note: the bandwidth moved from %.1f to %.1f GB/s within the %s decode loop; its ratio is rough, run again\n", a, b, h.Head)
		}
	}
	if len(res.Heads) == 2 {
		fmt.Fprintf(stdout, "FlashHead head time: %.3f of the dense head's\n", res.Heads[0].HeadMsPerTok/res.Heads[1].HeadMsPerTok)
	}
	return nil
}
