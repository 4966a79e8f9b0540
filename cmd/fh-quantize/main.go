// Command fh-quantize turns a dense .fhm model into a W4A16 one: the
// attention and MLP linear weights become packed int4 with group-wise
// scales (round-to-nearest or GPTQ); embeddings, norms and the head stay
// 16-bit.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"

	"github.com/spf13/pflag"

	"github.com/fhkit/fhkit/formats/atomicfile"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/internal/cli"
	"github.com/fhkit/fhkit/quantize"
)

const usage = `Usage: fh-quantize --in F.fhm --out G.fhm --w4a16 [--export-hf DIR] [flags]
       fh-quantize --in G.fhm --export-hf DIR          (export a quantized model)
       fh-quantize --import-hf DIR --out G.fhm [--dtype bf16|f16|f32]

Quantizes every attention and MLP linear weight (q/k/v/o, gate/up/down) of a
dense .fhm model to 4-bit integers with one scale per group of input
columns (and a zero point with --asym), in the packed layout of
formats/fhm/SPEC.md. Embeddings, norms and the LM head (and FlashHead) stay
as they are. The grid is compressed-tensors' (symmetric: scale = absmax/7.5).

Group size: a layer whose input width the group size does not divide uses
the largest divisor of its width below the group size that is at least 8
(stories260K, group 64: down_proj's width 172 gets groups of 43); a width
with no such divisor stays dense. --strict-group makes both an error.
The chosen size of every layer is in the --json summary and the metadata.

--ignore keeps more weights dense: an exact name (model.layers.0.mlp.down_proj),
a glob (model.layers.*.self_attn.o_proj) or re:REGEXP; repeatable.

--method gptq calibrates on --calib (plain text, or JSONL with a "text"
field per line) or, without it, on text the model generates itself from
varied prompts (documented in quantize.DefaultPrompts), and reports the
relative output error ‖WX − ŴX‖/‖WX‖ of GPTQ and of RTN for every layer.

--export-hf writes the quantized model as a Hugging Face directory in
compressed-tensors pack-quantized form (weight_packed, weight_scale,
weight_shape, weight_zero_point; config.json with the quantization_config
vLLM reads), codes and scales bit for bit, plus the tokenizer files and,
when the model has a FlashHead, the vLLM flash-head plugin's assets
(flash_head_assets/ and its config.json fields). --import-hf reads a
compressed-tensors or GPTQ (qweight/qzeros/scales/g_idx, v1 or v2, no
act-order) W4A16 checkpoint into a packed .fhm without dequantizing.

Examples:
  fh-quantize --in gemma.fhm --out gemma-w4.fhm --w4a16
  fh-quantize --in stories.fhm --out stories-w4.fhm --w4a16 --group-size 64 --json
  fh-quantize --in m.fhm --out m-gptq.fhm --w4a16 --method gptq --calib wiki.txt --calib-samples 64
  fh-quantize --in m.fhm --out m-asym.fhm --w4a16 --asym --ignore 're:.*down_proj'
  fh-quantize --in gemma.fhm --out gemma-w4.fhm --w4a16 --export-hf gemma-w4-hf
  fh-quantize --import-hf ./gemma-3-1b-it-W4A16 --out gemma-w4.fhm
  fh-run verify --model gemma-w4.fhm --baseline-model gemma.fhm

Exit status: 0 on success, 1 on a quantization error, 2 on a usage error.

Flags:
`

func main() { cli.Main("fh-quantize", run) }

func run(args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("fh-quantize", pflag.ContinueOnError)
	in := fs.String("in", "", "dense input model (.fhm, required)")
	out := fs.String("out", "", "quantized output model (.fhm, required)")
	w4a16 := fs.Bool("w4a16", false, "4-bit weights, 16-bit activations (required; the only scheme so far)")
	group := fs.Int("group-size", 128, "input columns per scale")
	strict := fs.Bool("strict-group", false, "fail when the group size does not divide a layer's width instead of falling back")
	method := fs.String("method", "rtn", "rtn (round to nearest) or gptq")
	sym := fs.Bool("sym", false, "symmetric grid, no zero points (the default)")
	asym := fs.Bool("asym", false, "asymmetric grid with a zero point per group")
	scaleDT := fs.String("scale-dtype", "", "bf16 or f16 (default: f16 for an f16 model, bf16 otherwise)")
	ignore := fs.StringArray("ignore", nil, "keep matching linear weights dense (exact name, glob or re:REGEXP; repeatable)")
	threads := fs.Int("threads", runtime.GOMAXPROCS(0), "worker goroutines")
	calib := fs.String("calib", "", "GPTQ calibration text (plain text or JSONL); default: self-generated")
	samples := fs.Int("calib-samples", 32, "GPTQ calibration sequences")
	seqLen := fs.Int("seq-len", 128, "GPTQ calibration sequence length in tokens")
	damp := fs.Float64("damp", 0.01, "GPTQ damping, a fraction of the mean Hessian diagonal")
	block := fs.Int("block-size", 128, "GPTQ lazy-update block width in columns")
	actOrder := fs.Bool("act-order", false, "GPTQ: quantize columns by decreasing Hessian diagonal")
	seed := fs.Uint64("seed", 1, "GPTQ: seed of the self-generated calibration text")
	exportHF := fs.String("export-hf", "", "also write the quantized model as a compressed-tensors Hugging Face directory")
	importHF := fs.String("import-hf", "", "import a compressed-tensors or GPTQ W4A16 checkpoint directory into --out")
	denseDT := fs.String("dtype", "bf16", "with --import-hf: dtype of the dense tensors (bf16, f16, f32)")
	asJSON := fs.Bool("json", false, "print the summary (with per-layer errors) as one JSON object")
	quiet := fs.BoolP("quiet", "q", false, "no progress bar")
	fs.Usage = func() { fmt.Fprint(stdout, usage); fmt.Fprint(stdout, fs.FlagUsages()) }
	if err := cli.ParseFlags(fs, args); err != nil {
		if err == pflag.ErrHelp {
			fs.Usage()
		}
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected argument %q", fs.Arg(0))
	}
	if *importHF != "" {
		if *in != "" || *out == "" || *exportHF != "" {
			return cli.Usagef("--import-hf needs --out and takes neither --in nor --export-hf")
		}
		d, err := dtype.ParseFloat(*denseDT)
		if err != nil {
			return cli.Usagef("--dtype: %v", err)
		}
		stop := cli.RemoveOnSignal(atomicfile.TempPath(*out))
		defer stop()
		s, err := quantize.ImportHF(*importHF, *out, quantize.ImportOptions{DType: d})
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(s)
		}
		fmt.Fprintf(stdout, "%s: %s %s, %d packed layers (group %d, symmetric %v), %d dense tensors, %s, %.2f s\n",
			s.Output, s.Architecture, s.Format, s.Packed, s.GroupSize, s.Symmetric, s.Dense, cli.HumanBytes(s.Bytes), s.Seconds)
		return nil
	}
	if *in != "" && *out == "" && *exportHF != "" && !*w4a16 {
		f, err := fhm.Open(*in)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := quantize.ExportHF(f, *exportHF); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: compressed-tensors export of %s\n", *exportHF, *in)
		return nil
	}
	if *in == "" || *out == "" {
		return cli.Usagef("--in and --out are required")
	}
	if !*w4a16 {
		return cli.Usagef("--w4a16 is required (the only quantization scheme so far)")
	}
	if *sym && *asym {
		return cli.Usagef("--sym and --asym are exclusive")
	}
	if *group <= 0 {
		return cli.Usagef("--group-size must be positive, got %d", *group)
	}
	if *method != quantize.MethodRTN && *method != quantize.MethodGPTQ {
		return cli.Usagef("--method must be rtn or gptq, got %q", *method)
	}
	if *threads <= 0 {
		return cli.Usagef("--threads must be positive, got %d", *threads)
	}
	if *samples <= 0 || *seqLen < 2 || *block <= 0 || *damp < 0 {
		return cli.Usagef("--calib-samples, --block-size must be positive, --seq-len at least 2, --damp not negative")
	}
	var sdt dtype.DType
	if *scaleDT != "" {
		d, err := dtype.ParseFloat(*scaleDT)
		if err != nil || d == dtype.F32 {
			return cli.Usagef("--scale-dtype must be bf16 or f16, got %q", *scaleDT)
		}
		sdt = d
	}
	if *in == *out {
		return cli.Usagef("--out must differ from --in")
	}
	var bar *cli.Progress
	stop := cli.RemoveOnSignal(atomicfile.TempPath(*out))
	defer stop()
	opts := quantize.Options{
		Method: *method, GroupSize: *group, StrictGroup: *strict, Asymmetric: *asym,
		ScaleDType: sdt, Ignore: *ignore, Threads: *threads,
		GPTQ: quantize.GPTQOptions{Calib: *calib, Samples: *samples, SeqLen: *seqLen, Damping: *damp,
			BlockSize: *block, ActOrder: *actOrder, Seed: *seed},
		Progress: func(done, total int64, layer string) {
			if bar == nil {
				bar = cli.NewProgress(stderr, total, "quantizing", *quiet || *asJSON)
			}
			bar.Describe(layer)
			bar.Set(done)
		},
	}
	if *exportHF != "" {
		if _, err := os.Stat(*exportHF); err == nil {
			return fmt.Errorf("--export-hf %s: already exists", *exportHF)
		}
	}
	s, err := quantize.File(*in, *out, opts)
	bar.Finish()
	if err != nil {
		return err
	}
	if s.Calibration != nil && s.Calibration.Warning != "" {
		fmt.Fprintf(stderr, "fh-quantize: warning: %s\n", s.Calibration.Warning)
	}
	if *exportHF != "" {
		f, err := fhm.Open(*out)
		if err != nil {
			return err
		}
		err = quantize.ExportHF(f, *exportHF)
		f.Close()
		if err != nil {
			return err
		}
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(s)
	}
	used := map[int]bool{}
	for _, l := range s.Layers {
		used[l.GroupSize] = true
	}
	groups := fmt.Sprint(slices.Sorted(maps.Keys(used)))
	fmt.Fprintf(stdout, "%s: %s, %d layers in 4 bits (%d dense), group %d (used: %s), %.3f bits/weight, mean weight error %.4f, %s, %.2f s\n",
		s.Output, s.Method, len(s.Layers), len(s.Ignored), s.GroupSize, groups, s.BitsPerWeight, s.MeanWeightRelError, cli.HumanBytes(s.Bytes), s.Seconds)
	for _, name := range slices.Sorted(maps.Keys(s.Ignored)) {
		fmt.Fprintf(stdout, "  dense: %s (%s)\n", name, s.Ignored[name])
	}
	return nil
}
