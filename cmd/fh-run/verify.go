package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/fhkit/fhkit/internal/cli"
	"github.com/fhkit/fhkit/runtime/verify"
)

const verifyHelp = `Usage: fh-run verify --model F (--baseline REF.safetensors | --baseline-model G.fhm) [flags]

Runs the model over token sequences (teacher forcing) and compares its logits
with a baseline: the stored logits of REF.safetensors (tokens.<i> I32/I64 [T],
logits.<i> F32/BF16/F16 [T, V]; scripts/make_baseline.py writes one with
Hugging Face transformers), or those of another model file over the same
tokens. With --baseline-model, the tokens come from --baseline when given,
else from --text, else from seeded random sequences.

Reports top-1 agreement, top-5 overlap, mean and max KL(baseline || model),
max and mean absolute logit difference, and the perplexity of the sequence
under both. --min-top1 / --max-kl make it exit 1 when violated.

With --head flashhead (and no baseline needed) it compares the model's
FlashHead with its own dense head on the same hidden states: top-1
agreement, recall@P (the dense argmax lies in the probed clusters), the dense
probability mass of the candidate set and KL(flash || dense) = -log(mass),
and whether greedy continuations of --greedy-tokens tokens are identical.

Examples:
  fh-run verify --model gemma.fhm --baseline reference.safetensors --kv f32
  fh-run verify --model gemma-w4.fhm --baseline-model gemma.fhm --json
  fh-run verify --model m.fhm --baseline ref.safetensors --min-top1 0.99 --max-kl 1e-3
  fh-run verify --model gemma-fh.fhm --head flashhead --probes 128 --baseline ref.safetensors

With --device cuda the model runs on the GPU and is compared with the
baseline, or with the same model on the CPU when no baseline is given; with
--head flashhead the device's FlashHead choices are also compared with the
CPU's at every position:
  fh-run verify --model gemma-fh.fhm --device cuda --head flashhead --min-top1 1

Flags:
`

func runVerify(args []string, stdout io.Writer) error {
	fs := pflag.NewFlagSet("verify", pflag.ContinueOnError)
	var rf runtimeFlags
	rf.register(fs)
	baseline := fs.String("baseline", "", "baseline logits file (safetensors)")
	baselineModel := fs.String("baseline-model", "", "baseline model file (.fhm)")
	texts := fs.StringArray("text", nil, "text to verify on, with --baseline-model (repeatable)")
	nseq := fs.Int("sequences", 4, "random sequences, with --baseline-model and no --baseline/--text")
	seqLen := fs.Int("seq-len", 64, "length of each random sequence")
	seed := fs.Uint64("seed", 1, "seed of the random sequences")
	minTop1 := fs.Float64("min-top1", -1, "exit 1 if top-1 agreement is below this")
	maxKL := fs.Float64("max-kl", -1, "exit 1 if the mean KL is above this")
	asJSON := fs.Bool("json", false, "print one JSON object")
	greedyTokens := fs.Int("greedy-tokens", 32, "with --head flashhead: tokens decoded greedily by both heads per sequence")
	device := registerDevice(fs)
	if err := parse(fs, args, verifyHelp, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("verify: unexpected argument %q", fs.Arg(0))
	}
	flashMode := rf.head == "flashhead"
	if *baseline == "" && *baselineModel == "" && !flashMode && *device == "cpu" {
		return cli.Usagef("verify: --baseline or --baseline-model is required (or --head flashhead to compare the FlashHead with the dense head)")
	}
	if !flashMode {
		rf.head = "dense" // logits comparisons use the dense head
	}
	if *nseq <= 0 || *seqLen <= 1 {
		return cli.Usagef("verify: --sequences must be > 0 and --seq-len > 1")
	}
	withTok := len(*texts) > 0
	l, err := rf.load(withTok)
	if err != nil {
		return err
	}
	defer l.Close()
	var seqs []verify.Sequence
	vocab := l.m.Config.VocabSize
	switch {
	case *baseline != "":
		if seqs, err = verify.ReadBaseline(*baseline, vocab); err != nil {
			return err
		}
	case withTok:
		for _, t := range *texts {
			seqs = append(seqs, verify.Sequence{Tokens: l.tok.Encode(t, true)})
		}
	default:
		seqs = verify.RandomSequences(*nseq, *seqLen, vocab, l.m.Config.BOSTokenID, 0, *seed)
	}
	for i, s := range seqs {
		if len(s.Tokens) > l.m.Config.MaxPositionEmbeddings {
			return fmt.Errorf("sequence %d has %d tokens, beyond the model's context limit of %d", i, len(s.Tokens), l.m.Config.MaxPositionEmbeddings)
		}
	}
	dr, err := openDevice(*device, l, &rf, deviceMessages(*asJSON, stdout))
	if err != nil {
		return err
	}
	defer closeDevice(dr)
	if dr == nil && *baseline == "" && *baselineModel == "" && !flashMode {
		return cli.Usagef("verify: --baseline or --baseline-model is required on the CPU")
	}
	if flashMode && dr == nil {
		return verifyFlash(l, seqs, *greedyTokens, *asJSON, *minTop1, *maxKL, stdout)
	}
	var base *loaded
	if *baselineModel != "" {
		bf := rf
		bf.model = *baselineModel
		if base, err = bf.load(false); err != nil {
			return err
		}
		defer base.Close()
		if base.m.Config.VocabSize != vocab {
			return fmt.Errorf("%s: vocabulary %d differs from %s's %d", *baselineModel, base.m.Config.VocabSize, rf.model, vocab)
		}
	}
	if dr != nil {
		return verifyDevice(dr, l, base, seqs, *baseline != "", *asJSON, *minTop1, *maxKL, stdout)
	}
	rep, err := runReport(l, base, seqs)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "%-8s %6s %8s %8s %10s %10s %10s %10s %10s\n", "sequence", "tokens", "top1", "top5", "mean KL", "max KL", "max |Δ|", "ppl model", "ppl base")
		for i, s := range rep.Sequences {
			fmt.Fprintf(stdout, "%-8d %6d %8.4f %8.4f %10.3g %10.3g %10.3g %10.4g %10.4g\n", i, s.Positions, s.Top1Agreement, s.Top5Overlap, s.MeanKL, s.MaxKL, s.MaxAbsDiff, s.PerplexityModel, s.PerplexityBaseline)
		}
		s := rep.Stats
		fmt.Fprintf(stdout, "%-8s %6d %8.4f %8.4f %10.3g %10.3g %10.3g %10.4g %10.4g\n", "all", s.Positions, s.Top1Agreement, s.Top5Overlap, s.MeanKL, s.MaxKL, s.MaxAbsDiff, s.PerplexityModel, s.PerplexityBaseline)
	}
	if *minTop1 >= 0 && rep.Top1Agreement < *minTop1 {
		return fmt.Errorf("top-1 agreement %.4f is below --min-top1 %g", rep.Top1Agreement, *minTop1)
	}
	if *maxKL >= 0 && rep.MeanKL > *maxKL {
		return fmt.Errorf("mean KL %.3g is above --max-kl %g", rep.MeanKL, *maxKL)
	}
	return nil
}

func runReport(l, base *loaded, seqs []verify.Sequence) (*verify.Report, error) {
	if base == nil {
		return verify.Run(l.run, nil, seqs, l.kv)
	}
	return verify.Run(l.run, base.run, seqs, l.kv)
}

// verifyFlash compares the FlashHead with the dense head of the same model.
func verifyFlash(l *loaded, seqs []verify.Sequence, greedyTokens int, asJSON bool, minTop1, maxKL float64, stdout io.Writer) error {
	st, err := verify.RunFlash(l.run, l.flash, seqs, l.kv, 16, greedyTokens)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(st); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "FlashHead vs dense head, %d probes of %d clusters x %d, %d positions:\n", st.Probes, l.flash.K, l.flash.Cap, st.Positions)
		fmt.Fprintf(stdout, "  top-1 agreement     %.4f\n  recall@P            %.4f\n  candidate mass      mean %.4f, min %.4f\n  KL(flash||dense)    mean %.3g, max %.3g\n  greedy continuations %d/%d identical (%d tokens each)\n",
			st.Top1Agreement, st.RecallAtP, st.MeanCandidateMass, st.MinCandidateMass, st.MeanKL, st.MaxKL, st.GreedyMatches, st.GreedySequences, greedyTokens)
	}
	if minTop1 >= 0 && st.Top1Agreement < minTop1 {
		return fmt.Errorf("top-1 agreement %.4f is below --min-top1 %g", st.Top1Agreement, minTop1)
	}
	if maxKL >= 0 && st.MeanKL > maxKL {
		return fmt.Errorf("mean KL %.3g is above --max-kl %g", st.MeanKL, maxKL)
	}
	return nil
}
