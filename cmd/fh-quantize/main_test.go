package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fhkit/fhkit/convert"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/internal/cli"
)

func runArgs(args ...string) (int, string, string) {
	var so, se bytes.Buffer
	err := run(args, &so, &se)
	return cli.Report("fh-quantize", err, &se), so.String(), se.String()
}

func TestCLI(t *testing.T) {
	dir := t.TempDir()
	dense := filepath.Join(dir, "dense.fhm")
	if _, err := convert.Dir(filepath.Join("..", "..", "testdata", "fixtures", "gemma3-tiny"), dense, convert.Options{DType: dtype.BF16}); err != nil {
		t.Fatal(err)
	}
	q := filepath.Join(dir, "q.fhm")
	code, out, errOut := runArgs("--in", dense, "--out", q, "--w4a16", "--group-size", "16", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var s struct {
		Method        string  `json:"method"`
		BitsPerWeight float64 `json:"bits_per_weight"`
		Layers        []struct {
			Name           string  `json:"name"`
			GroupSize      int     `json:"group_size"`
			WeightRelError float64 `json:"weight_rel_error"`
		} `json:"layers"`
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("--json output %q: %v", out, err)
	}
	if s.Method != "rtn" || len(s.Layers) != 28 || s.BitsPerWeight != 5 || s.Layers[0].WeightRelError <= 0 {
		t.Errorf("summary %+v", s)
	}
	code, out, _ = runArgs("--in", dense, "--out", filepath.Join(dir, "a.fhm"), "--w4a16", "--asym", "--group-size", "32", "--scale-dtype", "f16", "--ignore", "model.layers.0.mlp.down_proj")
	if code != 0 || !strings.Contains(out, "dense: model.layers.0.mlp.down_proj.weight") {
		t.Errorf("asym run: exit %d, %q", code, out)
	}
	if code, _, _ := runArgs("--help"); code != 0 {
		t.Errorf("--help exit %d", code)
	}

	bad := filepath.Join(dir, "bad.fhm")
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--in", dense, "--out", bad}, 2, "--w4a16"},
		{[]string{"--in", dense, "--w4a16"}, 2, "required"},
		{[]string{"--in", dense, "--out", bad, "--w4a16", "--sym", "--asym"}, 2, "exclusive"},
		{[]string{"--in", dense, "--out", bad, "--w4a16", "--group-size", "0"}, 2, "positive"},
		{[]string{"--in", dense, "--out", bad, "--w4a16", "--method", "awq"}, 2, "rtn or gptq"},
		{[]string{"--in", dense, "--out", bad, "--w4a16", "--scale-dtype", "f32"}, 2, "bf16 or f16"},
		{[]string{"--in", dense, "--out", bad, "--w4a16", "--bogus"}, 2, "unknown flag"},
		{[]string{"--in", dense, "--out", dense, "--w4a16"}, 2, "differ"},
		{[]string{"--in", q, "--out", bad, "--w4a16"}, 1, "already quantized"},
		{[]string{"--in", filepath.Join(dir, "missing.fhm"), "--out", bad, "--w4a16"}, 1, "missing.fhm"},
		{[]string{"--in", dense, "--out", bad, "--w4a16", "--group-size", "40", "--strict-group"}, 1, "does not divide"},
		{[]string{"--in", dense, "--out", bad, "--w4a16", "--ignore", "re:("}, 1, "--ignore"},
	} {
		code, _, errOut := runArgs(c.args...)
		if code != c.code || !strings.Contains(errOut, c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d mentioning %q", c.args, code, errOut, c.code, c.msg)
		}
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("failed runs left %s", bad)
	}
}

func TestCLIExportImport(t *testing.T) {
	dir := t.TempDir()
	dense := filepath.Join(dir, "dense.fhm")
	if _, err := convert.Dir(filepath.Join("..", "..", "testdata", "fixtures", "llama-tiny"), dense, convert.Options{DType: dtype.BF16}); err != nil {
		t.Fatal(err)
	}
	q, hf, back := filepath.Join(dir, "q.fhm"), filepath.Join(dir, "hf"), filepath.Join(dir, "back.fhm")
	if code, _, errOut := runArgs("--in", dense, "--out", q, "--w4a16", "--group-size", "32", "--export-hf", hf, "-q"); code != 0 {
		t.Fatalf("quantize + export: exit %d: %s", code, errOut)
	}
	if code, _, errOut := runArgs("--import-hf", hf, "--out", back, "--json"); code != 0 {
		t.Fatalf("import: exit %d: %s", code, errOut)
	}
	a, _ := os.ReadFile(q)
	b, _ := os.ReadFile(back)
	if len(a) == 0 || len(b) == 0 {
		t.Fatal("empty outputs")
	}
	if code, _, errOut := runArgs("--in", q, "--export-hf", hf); code != 1 || !strings.Contains(errOut, "exists") {
		t.Errorf("export into an existing directory: exit %d %s", code, errOut)
	}
	if code, _, errOut := runArgs("--in", dense, "--export-hf", filepath.Join(dir, "hf2")); code != 1 || !strings.Contains(errOut, "not quantized") {
		t.Errorf("export of a dense model: exit %d %s", code, errOut)
	}
	if code, _, errOut := runArgs("--import-hf", hf, "--in", dense, "--out", back); code != 2 {
		t.Errorf("--import-hf with --in: exit %d %s", code, errOut)
	}
}
