// Command fh-convert converts a Hugging Face checkpoint directory into a .fhm
// packed model file.
package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/fhkit/fhkit/convert"
	"github.com/fhkit/fhkit/formats/arch"
	"github.com/fhkit/fhkit/formats/atomicfile"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/internal/cli"
	"github.com/fhkit/fhkit/quantize"
)

const usage = `Usage: fh-convert --in DIR --out FILE.fhm [--dtype bf16|f16|f32] [--json]

Converts a Hugging Face checkpoint directory (config.json, model.safetensors
or shards with model.safetensors.index.json, tokenizer files) into one .fhm
file. Supported architectures: %s (Gemma-3 also from the text part of
multimodal checkpoints). W4A16 checkpoints (compressed-tensors
pack-quantized, GPTQ) are imported without dequantizing, and a FlashHead
cache (flash_head_assets/) is imported when the checkpoint ships one. Every tensor is checked against config.json; the
tokenizer files and chat template are embedded; the size and CRC-32C of
every input file are recorded. The output appears only when complete.

Examples:
  fh-convert --in ./gemma-3-1b-it --out gemma-3-1b-it.fhm
  fh-convert --in ./Llama-3.2-1B --out llama.fhm --dtype f32 --json

Exit status: 0 on success, 1 on a conversion error, 2 on a usage error.

Flags:
`

func main() { cli.Main("fh-convert", run) }

func run(args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("fh-convert", pflag.ContinueOnError)
	in := fs.String("in", "", "Hugging Face checkpoint directory (required)")
	out := fs.String("out", "", "output .fhm file (required)")
	dt := fs.String("dtype", "bf16", "weight dtype of the output: bf16, f16 or f32")
	asJSON := fs.Bool("json", false, "print the summary as one JSON object")
	allowNonFinite := fs.Bool("allow-nonfinite", false, "convert weights that contain NaN or Inf instead of failing")
	quiet := fs.BoolP("quiet", "q", false, "no progress bar")
	fs.Usage = func() { fmt.Fprintf(stdout, usage, archList()); fmt.Fprint(stdout, fs.FlagUsages()) }
	if err := cli.ParseFlags(fs, args); err != nil {
		if err == pflag.ErrHelp {
			fs.Usage()
		}
		return err
	}
	if *in == "" || *out == "" {
		return cli.Usagef("--in and --out are required")
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected argument %q", fs.Arg(0))
	}
	d, err := dtype.ParseFloat(*dt)
	if err != nil {
		return cli.Usagef("--dtype: %v", err)
	}
	var bar *cli.Progress
	stop := cli.RemoveOnSignal(atomicfile.TempPath(*out))
	defer stop()
	opts := convert.Options{
		DType:          d,
		AllowNonFinite: *allowNonFinite,
		Progress: func(done, total int64) {
			if bar == nil {
				bar = cli.NewProgress(stderr, total, "converting", *quiet || *asJSON)
			}
			bar.Set(done)
		},
	}
	if quantize.IsQuantizedDir(*in) {
		// A W4A16 checkpoint (compressed-tensors or GPTQ): its int4 codes
		// are re-packed as they are, never dequantized.
		qs, err := quantize.ImportHF(*in, *out, quantize.ImportOptions{DType: d})
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(qs)
		}
		fmt.Fprintf(stdout, "%s: %s, imported %s W4A16 (group %d, %d packed layers, %d dense tensors), %s, %.2f s\n",
			qs.Output, qs.Architecture, qs.Format, qs.GroupSize, qs.Packed, qs.Dense, cli.HumanBytes(qs.Bytes), qs.Seconds)
		return nil
	}
	s, err := convert.Dir(*in, *out, opts)
	bar.Finish()
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		return enc.Encode(s)
	}
	fmt.Fprintf(stdout, "%s: %s, %d tensors, %d params, %s, %.2f s\n", s.Output, s.Architecture, s.Tensors, s.Params, cli.HumanBytes(s.Bytes), s.Seconds)
	return nil
}

func archList() string {
	s := ""
	for i, a := range arch.Supported() {
		if i > 0 {
			s += ", "
		}
		s += a
	}
	return s
}
