package model

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fhkit/fhkit/convert"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/runtime/cpu"
)

func loadFixture(t *testing.T, preset string, dt dtype.DType) *Model {
	t.Helper()
	out := filepath.Join(t.TempDir(), preset+".fhm")
	if _, err := convert.Dir(filepath.Join("..", "..", "testdata", "fixtures", preset), out, convert.Options{DType: dt}); err != nil {
		t.Fatal(err)
	}
	m, err := Load(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func randomTokens(r *rand.Rand, n, vocab int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = 3 + r.IntN(vocab-3)
	}
	return out
}

func maxDiff(a, b []float32) float64 {
	var d float64
	for i := range a {
		d = max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

// Prefill of the whole sequence, token-by-token decode and uneven chunks must
// give the same logits (up to kvTol), for every architecture and KV
// precision, on sequences much longer than the sliding window (the ring
// buffer wraps).
func TestPrefillEqualsDecode(t *testing.T) {
	pool := cpu.NewPool(2)
	defer pool.Close()
	for _, preset := range []string{"gemma3-tiny", "llama-tiny", "qwen3-tiny"} {
		m := loadFixture(t, preset, dtype.F32)
		r := NewRunner(m, pool)
		tokens := randomTokens(rand.New(rand.NewPCG(1, 2)), 3*MaxChunk/2+7, m.Config.VocabSize)
		V := m.Config.VocabSize
		for _, kv := range []dtype.DType{dtype.F32, dtype.BF16, dtype.F16} {
			st, _ := m.NewState(0, kv)
			all, err := r.Forward(st, tokens, true)
			if err != nil {
				t.Fatal(err)
			}
			st2, _ := m.NewState(0, kv)
			for i, id := range tokens {
				one, err := r.Forward(st2, []int{id}, false)
				if err != nil {
					t.Fatal(err)
				}
				if d := maxDiff(one, all[i*V:(i+1)*V]); d > kvTol(kv) {
					t.Fatalf("%s kv %s: position %d: decode differs from prefill by %g", preset, kv, i, d)
				}
			}
			st3, _ := m.NewState(0, kv)
			pos := 0
			for _, n := range []int{5, 1, 30, 64, 9} {
				last, err := r.Forward(st3, tokens[pos:pos+n], false)
				if err != nil {
					t.Fatal(err)
				}
				pos += n
				if d := maxDiff(last, all[(pos-1)*V:pos*V]); d > kvTol(kv) {
					t.Fatalf("%s kv %s: chunked prefill at %d differs by %g", preset, kv, pos, d)
				}
			}
		}
	}
}

// The sliding window must limit attention. With a global layer an early
// token still matters at the end; with every layer sliding, a token further
// back than layers x (W-1) positions cannot.
func TestSlidingWindowForgets(t *testing.T) {
	pool := cpu.NewPool(1)
	defer pool.Close()
	m := loadFixture(t, "gemma3-tiny", dtype.F32)
	W := m.Config.SlidingWindow
	r := NewRunner(m, pool)
	tokens := randomTokens(rand.New(rand.NewPCG(3, 4)), 3*W, m.Config.VocabSize)
	changed := append([]int(nil), tokens...)
	changed[0] = tokens[0] + 1
	run := func(toks []int) []float32 {
		st, _ := m.NewState(0, dtype.F32)
		out, err := r.Forward(st, toks, false)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// With a global layer, the first token still matters at the end.
	if maxDiff(run(tokens), run(changed)) == 0 {
		t.Fatal("a global layer ignored an early token")
	}
	for i := range m.Layers {
		m.Layers[i].Sliding = true
	}
	// All layers sliding: information travels at most W-1 positions per
	// layer, so a token more than L*(W-1) back cannot matter.
	L := len(m.Layers)
	long := randomTokens(rand.New(rand.NewPCG(5, 6)), L*(W-1)+5, m.Config.VocabSize)
	long2 := append([]int(nil), long...)
	long2[0] = long[0] + 1
	if d := maxDiff(run(long), run(long2)); d != 0 {
		t.Errorf("all-sliding model: a token %d positions back changed the logits by %g", len(long)-1, d)
	}
	long2[len(long)-2] = long[len(long)-2] + 1
	if maxDiff(run(long), run(long2)) == 0 {
		t.Error("a recent token changed nothing")
	}
}

func TestContextLimitAndBadTokens(t *testing.T) {
	pool := cpu.NewPool(1)
	defer pool.Close()
	m := loadFixture(t, "llama-tiny", dtype.BF16)
	r := NewRunner(m, pool)
	st, _ := m.NewState(10, dtype.F32)
	if _, err := r.Forward(st, make([]int, 11), false); err == nil || !strings.Contains(err.Error(), "context limit") {
		t.Errorf("11 tokens in a 10-token context: %v", err)
	}
	if _, err := r.Forward(st, []int{m.Config.VocabSize}, false); err == nil || !strings.Contains(err.Error(), "outside the vocabulary") {
		t.Errorf("token id = vocab size: %v", err)
	}
	if _, err := m.NewState(0, dtype.I8); err == nil {
		t.Error("int8 KV accepted")
	}
}

// BF16 and F32 weights of the same checkpoint (the fixture is bf16, so
// widening is exact) must give the same logits up to accumulation order.
func TestWeightDTypesAgree(t *testing.T) {
	pool := cpu.NewPool(2)
	defer pool.Close()
	a := loadFixture(t, "qwen3-tiny", dtype.BF16)
	b := loadFixture(t, "qwen3-tiny", dtype.F32)
	tokens := randomTokens(rand.New(rand.NewPCG(7, 8)), 20, a.Config.VocabSize)
	sa, _ := a.NewState(0, dtype.F32)
	sb, _ := b.NewState(0, dtype.F32)
	la, _ := NewRunner(a, pool).Forward(sa, tokens, true)
	lb, _ := NewRunner(b, pool).Forward(sb, tokens, true)
	if d := maxDiff(la, lb); d > 1e-5 {
		t.Errorf("bf16 and f32 weights differ by %g", d)
	}
}
