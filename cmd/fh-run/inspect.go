package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"github.com/fhkit/fhkit/formats/inspect"
	"github.com/fhkit/fhkit/internal/cli"
)

const inspectUsage = `Usage: fh-run inspect FILE [--json] [--metadata]

Shows a .fhm model file or any .safetensors file: its metadata, the tensor
table (name, dtype, shape, offset, size, CRC-32C) and, for .fhm, whether every
tensor's stored checksum matches its data. Exits 1 if any checksum mismatches.

Examples:
  fh-run inspect model.fhm
  fh-run inspect model.fhm --metadata        # also print the full metadata JSON
  fh-run inspect model.safetensors --json | jq '.tensors[].name'

Flags:
`

func runInspect(args []string, stdout io.Writer) error {
	fs := pflag.NewFlagSet("inspect", pflag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print one JSON object")
	showMeta := fs.Bool("metadata", false, "print the full metadata JSON (text mode)")
	fs.Usage = func() { fmt.Fprint(stdout, inspectUsage+fs.FlagUsages()) }
	if err := cli.ParseFlags(fs, args); err != nil {
		if err == pflag.ErrHelp {
			fs.Usage()
		}
		return err
	}
	if fs.NArg() != 1 {
		return cli.Usagef("inspect: want exactly one FILE, got %d", fs.NArg())
	}
	r, err := inspect.File(fs.Arg(0))
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return err
		}
	} else {
		printReport(stdout, r, *showMeta)
	}
	if r.Mismatched > 0 {
		return fmt.Errorf("%s: %d of %d tensors fail their checksum", r.Path, r.Mismatched, r.NumTensors)
	}
	return nil
}

func printReport(w io.Writer, r *inspect.Report, showMeta bool) {
	fmt.Fprintf(w, "%s: %s", r.Path, r.Format)
	if r.Version > 0 {
		fmt.Fprintf(w, " v%d", r.Version)
	}
	fmt.Fprintf(w, ", %s, %d tensors, %d elements, %s of tensor data\n", cli.HumanBytes(r.FileSize), r.NumTensors, r.NumElements, cli.HumanBytes(r.DataBytes))
	if r.Format == "fhm" {
		var m struct {
			Model struct {
				Architecture string `json:"architecture"`
				VocabSize    int    `json:"vocab_size"`
				HiddenSize   int    `json:"hidden_size"`
				NumLayers    int    `json:"num_layers"`
			} `json:"model"`
			WeightDType string            `json:"weight_dtype"`
			Tokenizer   map[string]any    `json:"tokenizer"`
			Converter   string            `json:"converter"`
			Source      map[string]any    `json:"source"`
			Extra       map[string]string `json:"extra"`
		}
		json.Unmarshal(r.Metadata, &m)
		fmt.Fprintf(w, "model: %s, vocab %d, hidden %d, %d layers, weights %s; written by %s\n",
			m.Model.Architecture, m.Model.VocabSize, m.Model.HiddenSize, m.Model.NumLayers, m.WeightDType, m.Converter)
		if files, ok := m.Tokenizer["files"].(map[string]any); ok {
			names := make([]string, 0, len(files))
			for k := range files {
				names = append(names, k)
			}
			fmt.Fprintf(w, "tokenizer files: %s\n", strings.Join(slices.Sorted(slices.Values(names)), ", "))
		}
	}
	if showMeta || r.Format == "safetensors" {
		var buf strings.Builder
		var v any
		if json.Unmarshal(r.Metadata, &v) == nil {
			b, _ := json.MarshalIndent(v, "", "  ")
			buf.Write(b)
		}
		fmt.Fprintf(w, "metadata: %s\n", buf.String())
	}
	fmt.Fprintf(w, "\n%-56s %-5s %-18s %12s %12s %-8s %s\n", "tensor", "dtype", "shape", "offset", "bytes", "crc32c", "check")
	for _, t := range r.Tensors {
		fmt.Fprintf(w, "%-56s %-5s %-18s %12d %12d %-8s %s\n", t.Name, t.DType, shapeString(t.Shape), t.Offset, t.Size, t.CRC32C, t.Status)
	}
	switch r.Format {
	case "fhm":
		fmt.Fprintf(w, "\nchecksums: %d/%d verified", r.Verified, r.NumTensors)
		if r.Mismatched > 0 {
			fmt.Fprintf(w, ", %d MISMATCHED", r.Mismatched)
		}
		fmt.Fprintln(w)
	default:
		fmt.Fprintf(w, "\nstructure valid; safetensors stores no checksums (CRC-32C computed above)\n")
	}
}

func shapeString(s []int64) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, ",") + "]"
}
