package main

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fhkit/fhkit/convert"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/formats/safetensors"
)

func TestGenerateAndTokenize(t *testing.T) {
	path := convertFixture(t, "gemma3-tiny")
	code, out, errOut := runArgs("generate", "--model", path, "--prompt", "hello there", "--max-tokens", "12", "--json")
	if code != 0 {
		t.Fatalf("generate: exit %d: %s", code, errOut)
	}
	var g struct {
		Tokens       []int   `json:"tokens"`
		PromptTokens int     `json:"prompt_tokens"`
		StopReason   string  `json:"stop_reason"`
		DecodeRate   float64 `json:"decode_tok_s"`
	}
	if err := json.Unmarshal([]byte(out), &g); err != nil {
		t.Fatalf("generate --json: %q: %v", out, err)
	}
	if g.PromptTokens < 2 || len(g.Tokens) == 0 || len(g.Tokens) > 12 || (g.StopReason != "length" && g.StopReason != "eos") {
		t.Errorf("generate result %+v", g)
	}
	// Greedy is deterministic; sampling with a seed is reproducible.
	tokensOf := func(args ...string) string {
		_, out, _ := runArgs(args...)
		var r struct {
			Tokens []int `json:"tokens"`
		}
		json.Unmarshal([]byte(out), &r)
		b, _ := json.Marshal(r.Tokens)
		return string(b)
	}
	if again := tokensOf("generate", "--model", path, "--prompt", "hello there", "--max-tokens", "12", "--json"); again != tokensOf("generate", "--model", path, "--prompt", "hello there", "--max-tokens", "12", "--json") {
		t.Error("greedy generation not deterministic")
	}
	s1 := []string{"generate", "--model", path, "--prompt", "hi", "--max-tokens", "16", "--temperature", "1", "--seed", "5", "--ignore-eos", "--json"}
	s2 := append(append([]string(nil), s1[:len(s1)-3]...), "6", "--ignore-eos", "--json")
	if a, b, c := tokensOf(s1...), tokensOf(s1...), tokensOf(s2...); a != b || a == c {
		t.Errorf("seeded sampling: seed 5 gave %s then %s, seed 6 gave %s", a, b, c)
	}
	// Streaming mode prints the text and the speeds.
	code, out, errOut = runArgs("generate", "--model", path, "--prompt", "hello", "--max-tokens", "4")
	if code != 0 || !strings.Contains(errOut, "decode:") || !strings.Contains(errOut, "tok/s") {
		t.Errorf("generate: exit %d, stderr %q", code, errOut)
	}

	code, out, _ = runArgs("tokenize", "--model", path, "--text", "hello there", "--json")
	var ids []int
	if code != 0 || json.Unmarshal([]byte(out), &ids) != nil || len(ids) == 0 {
		t.Fatalf("tokenize: exit %d, %q", code, out)
	}
	_, out2, _ := runArgs("tokenize", "--model", path, "--text", "hello there", "--json", "--add-special")
	var ids2 []int
	json.Unmarshal([]byte(out2), &ids2)
	if len(ids2) != len(ids)+1 || ids2[0] != 2 {
		t.Errorf("--add-special: %v vs %v (want BOS 2 prepended)", ids2, ids)
	}
	idText, _ := json.Marshal(ids)
	code, out, _ = runArgs("tokenize", "--model", path, "--decode", "--text", string(idText))
	if code != 0 || strings.TrimSpace(out) != "hello there" {
		t.Errorf("decode: exit %d, %q", code, out)
	}
	if code, _, errOut := runArgs("tokenize", "--model", path, "--decode", "--text", "1 99999"); code != 1 || !strings.Contains(errOut, "outside the vocabulary") {
		t.Errorf("decode of a bad id: exit %d, %s", code, errOut)
	}
}

func TestPromptBeyondContext(t *testing.T) {
	path := convertFixture(t, "gemma3-tiny")
	code, _, errOut := runArgs("generate", "--model", path, "--prompt", strings.Repeat("hello ", 40), "--ctx", "16")
	if code != 1 || !strings.Contains(errOut, "context limit") || !strings.Contains(errOut, path) {
		t.Errorf("long prompt: exit %d, %s", code, errOut)
	}
}

func TestVerifyAgainstModel(t *testing.T) {
	dense := convertFixture(t, "qwen3-tiny")
	f32 := filepath.Join(t.TempDir(), "f32.fhm")
	if _, err := convert.Dir(filepath.Join("..", "..", "testdata", "fixtures", "qwen3-tiny"), f32, convert.Options{DType: dtype.F32}); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runArgs("verify", "--model", dense, "--baseline-model", f32, "--json", "--sequences", "2", "--seq-len", "20")
	if code != 0 {
		t.Fatalf("verify: exit %d, %s", code, errOut)
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"top1_agreement", "mean_kl", "max_kl", "max_abs_diff", "positions"} {
		if _, ok := r[k]; !ok {
			t.Errorf("verify --json lacks %q", k)
		}
	}
	if r["top1_agreement"].(float64) != 1 || r["positions"].(float64) != 40 {
		t.Errorf("bf16 vs exact f32 widening of the same weights: %v", r)
	}
	// A threshold that cannot hold makes it exit 1.
	if code, _, errOut := runArgs("verify", "--model", dense, "--baseline-model", f32, "--max-kl", "-0.5", "--min-top1", "1.5"); code != 1 || !strings.Contains(errOut, "below --min-top1") {
		t.Errorf("unmet --min-top1: exit %d, %s", code, errOut)
	}
	// A baseline model with another vocabulary.
	other := smallerVocab(t, convertFixture(t, "qwen3-tiny"), 500)
	if code, _, errOut := runArgs("verify", "--model", dense, "--baseline-model", other); code != 1 || !strings.Contains(errOut, "vocabulary") {
		t.Errorf("vocab mismatch: exit %d, %s", code, errOut)
	}
}

// smallerVocab rewrites a model file keeping the first vocab rows of the
// embedding and head.
func smallerVocab(t *testing.T, path string, vocab int) string {
	src, err := fhm.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	meta := src.Metadata
	meta.Model.VocabSize = vocab
	out := filepath.Join(t.TempDir(), "small-vocab.fhm")
	w, err := fhm.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range src.Tensors {
		tt, _ := src.Tensor(ti.Name)
		shape, data := ti.Shape, tt.Data
		if ti.Name == "model.embed_tokens.weight" || ti.Name == "lm_head.weight" {
			shape = []int64{int64(vocab), ti.Shape[1]}
			data = data[:int64(vocab)*ti.Shape[1]*int64(ti.DType.Size())]
		}
		if err := w.WriteTensorBytes(ti.Name, ti.DType, shape, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(&meta); err != nil {
		t.Fatal(err)
	}
	return out
}

// writeBaseline writes tokens.0 and logits.0 of the given shapes.
func writeBaseline(t *testing.T, tokens []int64, vocab int) string {
	p := filepath.Join(t.TempDir(), "ref.safetensors")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	T := int64(len(tokens))
	w, err := safetensors.NewWriter(f, []safetensors.Header{{Name: "tokens.0", DType: dtype.I64, Shape: []int64{T}}, {Name: "logits.0", DType: dtype.F32, Shape: []int64{T, int64(vocab)}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range w.Order() {
		if h.Name == "tokens.0" {
			for _, id := range tokens {
				w.Write(binary.LittleEndian.AppendUint64(nil, uint64(id)))
			}
		} else {
			for i := int64(0); i < T*int64(vocab); i++ {
				w.Write(binary.LittleEndian.AppendUint32(nil, math.Float32bits(float32(i%7))))
			}
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVerifyBadBaselines(t *testing.T) {
	path := convertFixture(t, "llama-tiny")
	f, _ := fhm.Open(path)
	vocab := f.Metadata.Model.VocabSize
	f.Close()
	cases := map[string]struct {
		ref  string
		want string
	}{
		"wrong vocabulary": {writeBaseline(t, []int64{1, 5, 6}, vocab+1), "vocabulary"},
		"token id too big": {writeBaseline(t, []int64{1, int64(vocab), 6}, vocab), "outside the model's vocabulary"},
		"negative token":   {writeBaseline(t, []int64{1, -3}, vocab), "outside the model's vocabulary"},
	}
	for name, c := range cases {
		code, _, errOut := runArgs("verify", "--model", path, "--baseline", c.ref)
		if code != 1 || !strings.Contains(errOut, c.want) || !strings.Contains(errOut, "ref.safetensors") {
			t.Errorf("%s: exit %d, %s", name, code, errOut)
		}
	}
	// A baseline that does agree: logits computed by the model itself.
	if code, _, errOut := runArgs("verify", "--model", path); code != 2 || !strings.Contains(errOut, "--baseline") {
		t.Errorf("no baseline: exit %d, %s", code, errOut)
	}
}

func TestUnsupportedArchitectureModel(t *testing.T) {
	path := convertFixture(t, "llama-tiny")
	src, err := fhm.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	meta := src.Metadata
	meta.Model.Architecture = "mistral"
	bad := filepath.Join(t.TempDir(), "mistral.fhm")
	w, err := fhm.Create(bad)
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range src.Tensors {
		tt, _ := src.Tensor(ti.Name)
		if err := w.WriteTensorBytes(ti.Name, ti.DType, ti.Shape, tt.Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(&meta); err != nil {
		t.Fatal(err)
	}
	src.Close()
	for _, args := range [][]string{
		{"generate", "--model", bad, "--prompt", "hi"},
		{"verify", "--model", bad, "--baseline-model", path},
		{"tokenize", "--model", bad, "--text", "hi"},
	} {
		code, _, errOut := runArgs(args...)
		if code != 1 || !strings.Contains(errOut, "mistral") || !strings.Contains(errOut, "llama") || !strings.Contains(errOut, "mistral.fhm") {
			t.Errorf("%v: exit %d, %s", args[0], code, errOut)
		}
	}
}

func TestChatFromStdin(t *testing.T) {
	path := convertFixture(t, "gemma3-tiny")
	var so, se strings.Builder
	err := runChat([]string{"--model", path, "--max-tokens", "5", "--system", "Be brief."}, strings.NewReader("hello\n/reset\nhow are you\n"), &so, &se)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(se.String(), "tok/s") != 2 || !strings.Contains(se.String(), "reset") {
		t.Errorf("chat stderr %q", se.String())
	}
}

// Every subcommand's --help prints its usage once, on stdout, exit 0.
func TestHelpOnce(t *testing.T) {
	for _, cmd := range []string{"generate", "chat", "serve", "loadgen", "verify", "bench", "tokenize", "inspect"} {
		code, out, errOut := runArgs(cmd, "--help")
		if code != 0 || strings.Count(out, "Usage: fh-run "+cmd) != 1 || errOut != "" {
			t.Errorf("%s --help: exit %d, %d usages on stdout, stderr %q", cmd, code, strings.Count(out, "Usage: fh-run "+cmd), errOut)
		}
	}
}
