package tokenizer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// sharedDir returns the conformance directory: $FHKIT_SHARED/conformance or
// ../../../shared/conformance. It skips the test when the data is absent,
// or fails it when FHKIT_REQUIRE_SHARED is set.
func sharedDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join("..", "..", "..", "shared", "conformance")
	if env := os.Getenv("FHKIT_SHARED"); env != "" {
		dir = filepath.Join(env, "conformance")
	}
	if _, err := os.Stat(dir); err != nil {
		if os.Getenv("FHKIT_REQUIRE_SHARED") != "" {
			t.Fatalf("shared conformance data required (FHKIT_REQUIRE_SHARED) but not found at %s: %v", dir, err)
		}
		t.Skipf("shared conformance data not found at %s (set FHKIT_SHARED): skipping", dir)
	}
	return dir
}

func readShared(t testing.TB, parts ...string) []byte {
	t.Helper()
	p := filepath.Join(append([]string{sharedDir(t)}, parts...)...)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return b
}

type gemmaCase struct {
	Text          string
	IDs           []int
	IDsAddSpecial []int
}

// gemmaCases reads tokenizer-gemma3/texts.jsonl and ids.jsonl.
func gemmaCases(t testing.TB) []gemmaCase {
	t.Helper()
	texts := readShared(t, "tokenizer-gemma3", "texts.jsonl")
	ids := readShared(t, "tokenizer-gemma3", "ids.jsonl")
	var out []gemmaCase
	sc := bufio.NewScanner(bytes.NewReader(texts))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var x struct {
			Text string `json:"text"`
		}
		if err := json.Unmarshal(sc.Bytes(), &x); err != nil {
			t.Fatalf("texts.jsonl: %v", err)
		}
		out = append(out, gemmaCase{Text: x.Text})
	}
	sc = bufio.NewScanner(bytes.NewReader(ids))
	sc.Buffer(nil, 1<<20)
	k := 0
	for sc.Scan() {
		var x struct {
			I             int   `json:"i"`
			IDs           []int `json:"ids"`
			IDsAddSpecial []int `json:"ids_add_special"`
		}
		if err := json.Unmarshal(sc.Bytes(), &x); err != nil {
			t.Fatalf("ids.jsonl: %v", err)
		}
		if x.I != k || k >= len(out) {
			t.Fatalf("ids.jsonl line %d has i=%d (texts: %d)", k, x.I, len(out))
		}
		out[k].IDs, out[k].IDsAddSpecial = x.IDs, x.IDsAddSpecial
		k++
	}
	if k != len(out) || len(out) != 40 {
		t.Fatalf("texts.jsonl has %d lines, ids.jsonl %d; want 40", len(out), k)
	}
	return out
}

// The Gemma-3 tokenizers are large; tests share one of each.
var (
	gemmaOnce sync.Map // Backend -> *gemmaLoad
)

type gemmaLoad struct {
	once sync.Once
	tok  *Tokenizer
	err  error
	dur  time.Duration
}

// gemmaTokenizer loads the conformance Gemma-3 tokenizer with backend b
// (JSON: tokenizer.json.gz; SentencePiece: tokenizer.model), with its
// tokenizer_config.json.
func gemmaTokenizer(t testing.TB, b Backend) (*Tokenizer, time.Duration) {
	t.Helper()
	dir := sharedDir(t)
	v, _ := gemmaOnce.LoadOrStore(b, &gemmaLoad{})
	l := v.(*gemmaLoad)
	l.once.Do(func() {
		f := Files{Backend: b}
		var err error
		if f.Config, err = os.ReadFile(filepath.Join(dir, "tokenizer-gemma3", "tokenizer_config.json.gz")); err != nil {
			l.err = err
			return
		}
		name := "tokenizer.model"
		dst := &f.Model
		if b == JSON {
			name, dst = "tokenizer.json.gz", &f.JSON
		}
		if *dst, err = os.ReadFile(filepath.Join(dir, "tokenizer-gemma3", name)); err != nil {
			l.err = err
			return
		}
		start := time.Now()
		l.tok, l.err = New(f)
		l.dur = time.Since(start)
	})
	if l.err != nil {
		t.Fatalf("load Gemma-3 tokenizer (%v): %v", b, l.err)
	}
	return l.tok, l.dur
}
