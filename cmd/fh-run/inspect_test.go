package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fhkit/fhkit/convert"
	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/internal/cli"
)

func convertFixture(t *testing.T, preset string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), preset+".fhm")
	if _, err := convert.Dir(filepath.Join("..", "..", "testdata", "fixtures", preset), out, convert.Options{}); err != nil {
		t.Fatal(err)
	}
	return out
}

func runArgs(args ...string) (int, string, string) {
	var so, se bytes.Buffer
	err := run(args, &so, &se)
	return cli.Report("fh-run", err, &se), so.String(), se.String()
}

func TestInspectFHM(t *testing.T) {
	path := convertFixture(t, "qwen3-tiny")
	code, out, errOut := runArgs("inspect", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"fhm v1", "qwen3", "lm_head.weight", "model.layers.0.self_attn.q_norm.weight", "tokenizer/tokenizer.model", "checksums: "} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runArgs("inspect", "--json", path)
	var r struct {
		Format     string `json:"format"`
		NumTensors int    `json:"num_tensors"`
		Verified   int    `json:"verified"`
		Mismatched int    `json:"mismatched"`
		Tensors    []struct {
			Name   string `json:"name"`
			Status string `json:"status"`
		} `json:"tensors"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil {
		t.Fatalf("--json: exit %d, %q", code, out)
	}
	if r.Format != "fhm" || r.Verified != r.NumTensors || r.Mismatched != 0 || len(r.Tensors) != r.NumTensors {
		t.Errorf("json report %+v", r)
	}
}

func TestInspectDetectsCorruptData(t *testing.T) {
	path := convertFixture(t, "llama-tiny")
	f, err := fhm.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	emb, _ := f.Tensor("model.embed_tokens.weight")
	off := fhm.PageAlign + emb.Info.Offset + 10
	f.Close()
	b, _ := os.ReadFile(path)
	b[off] ^= 0x40
	os.WriteFile(path, b, 0o644)
	code, out, errOut := runArgs("inspect", path)
	if code != 1 || !strings.Contains(out, "MISMATCH") || !strings.Contains(errOut, "1 of") || !strings.Contains(errOut, path) {
		t.Errorf("corrupt tensor: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
}

func TestInspectSafetensorsAndErrors(t *testing.T) {
	st := filepath.Join("..", "..", "testdata", "fixtures", "llama-tiny", "model.safetensors")
	code, out, errOut := runArgs("inspect", st)
	if code != 0 || !strings.Contains(out, "safetensors") || !strings.Contains(out, "model.norm.weight") {
		t.Errorf("safetensors: exit %d %s %s", code, out, errOut)
	}
	bad := filepath.Join(t.TempDir(), "bad.fhm")
	os.WriteFile(bad, []byte("FHKITFHM short"), 0o644)
	if code, _, errOut := runArgs("inspect", bad); code != 1 || !strings.Contains(errOut, "bad.fhm") {
		t.Errorf("truncated fhm: exit %d, %s", code, errOut)
	}
	if code, _, _ := runArgs("inspect"); code != 2 {
		t.Errorf("no file: exit %d, want 2", code)
	}
	if code, _, _ := runArgs("frobnicate"); code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
}
