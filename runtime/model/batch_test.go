package model

import (
	"github.com/fhkit/fhkit/internal/race"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/runtime/cpu"
)

// kvTol bounds the logit difference between two computations of the same
// tokens that differ only in how rows are grouped into matrix products
// (prefill or decode, batched or alone). cpu.MatMul sends one row to the
// matrix-vector kernels and several to the matrix-matrix ones, which order
// their float32 sums differently (FMA, blocking): hidden states then differ
// in the last bits, and logits of magnitude ~5 by at most ~5e-6 on the
// fixtures with an f32 cache. A 16-bit cache rounds keys and values to 8
// (bf16) or 11 (f16) mantissa bits, and a last-bit difference can flip that
// rounding: the element then moves by a whole 16-bit ulp, the precision of
// the cache itself. Those flips move logits by up to ~2.3e-3 on the
// fixtures, below the 0.023 that a bf16 cache costs against an f32 one
// (README, Accuracy). Bugs (a wrong position, row or cache slot) move
// logits by O(1).
func kvTol(kv dtype.DType) float64 {
	if kv == dtype.F32 {
		return 5e-5
	}
	return 2e-2
}

// A batched step over several states (at different positions, with
// different KV precisions, one of them still prefilling) must equal each
// state stepped alone, for every architecture.
func TestBatchEqualsAlone(t *testing.T) {
	pool := cpu.NewPool(2)
	defer pool.Close()
	for _, preset := range []string{"gemma3-tiny", "llama-tiny", "qwen3-tiny"} {
		m := loadFixture(t, preset, dtype.BF16)
		r := NewRunner(m, pool)
		H, V := m.Config.HiddenSize, m.Config.VocabSize
		rng := rand.New(rand.NewPCG(11, 12))
		kvs := []dtype.DType{dtype.F32, dtype.BF16, dtype.F16, dtype.F32, dtype.BF16}
		prompts := []int{1, 7, 30, 3, 19} // beyond the sliding windows of the fixtures
		batch := make([]*State, len(kvs))
		alone := make([]*State, len(kvs))
		for i, kv := range kvs {
			batch[i], _ = m.NewState(0, kv)
			alone[i], _ = m.NewState(0, kv)
			p := randomTokens(rng, prompts[i], V)
			if _, err := r.ForwardHidden(batch[i], p, false); err != nil {
				t.Fatal(err)
			}
			if _, err := r.ForwardHidden(alone[i], p, false); err != nil {
				t.Fatal(err)
			}
		}
		out := make([]float32, len(kvs)*H)
		for step := 0; step < 12; step++ {
			seqs := make([]Seq, len(kvs))
			for i := range seqs {
				n := 1
				if i == 2 && step < 3 {
					n = 5 // still prefilling while the others decode
				}
				seqs[i] = Seq{State: batch[i], Tokens: randomTokens(rng, n, V)}
			}
			if err := r.ForwardBatch(out, seqs); err != nil {
				t.Fatal(err)
			}
			got := r.DenseLogits(out)
			for i, s := range seqs {
				h, err := r.ForwardHidden(alone[i], s.Tokens, false)
				if err != nil {
					t.Fatal(err)
				}
				want := r.DenseLogits(h)
				if d := maxDiff(got[i*V:(i+1)*V], want); d > kvTol(kvs[i]) {
					t.Fatalf("%s step %d sequence %d (kv %s, position %d): batched logits differ from alone by %g", preset, step, i, kvs[i], alone[i].Pos, d)
				}
				if batch[i].Pos != alone[i].Pos {
					t.Fatalf("%s: sequence %d at position %d batched, %d alone", preset, i, batch[i].Pos, alone[i].Pos)
				}
			}
		}
	}
}

// More rows than MaxChunk are split into consecutive passes, a sequence
// continuing from one pass into the next.
func TestBatchLargerThanChunk(t *testing.T) {
	pool := cpu.NewPool(2)
	defer pool.Close()
	m := loadFixture(t, "llama-tiny", dtype.F32)
	r := NewRunner(m, pool)
	H, V := m.Config.HiddenSize, m.Config.VocabSize
	rng := rand.New(rand.NewPCG(3, 9))
	lens := []int{MaxChunk - 3, 9, MaxChunk + 20, 1}
	var seqs []Seq
	for _, n := range lens {
		st, _ := m.NewState(0, dtype.F32)
		seqs = append(seqs, Seq{State: st, Tokens: randomTokens(rng, n, V)})
	}
	out := make([]float32, len(seqs)*H)
	if err := r.ForwardBatch(out, seqs); err != nil {
		t.Fatal(err)
	}
	for i, s := range seqs {
		if s.State.Pos != lens[i] {
			t.Errorf("sequence %d at position %d, want %d", i, s.State.Pos, lens[i])
		}
		st, _ := m.NewState(0, dtype.F32)
		h, _ := r.ForwardHidden(st, s.Tokens, false)
		if d := maxDiff(out[i*H:(i+1)*H], h); d > kvTol(dtype.F32) {
			t.Errorf("sequence %d of %d tokens: hidden state differs by %g", i, lens[i], d)
		}
	}
}

func TestBatchErrorsLeaveStatesAlone(t *testing.T) {
	pool := cpu.NewPool(1)
	defer pool.Close()
	m := loadFixture(t, "qwen3-tiny", dtype.BF16)
	r := NewRunner(m, pool)
	H := m.Config.HiddenSize
	a, _ := m.NewState(0, dtype.F32)
	b, _ := m.NewState(4, dtype.F32)
	out := make([]float32, 2*H)
	cases := []struct {
		seqs []Seq
		out  []float32
		want string
	}{
		{[]Seq{{a, []int{5}}, {a, []int{6}}}, out, "share a state"},
		{[]Seq{{a, []int{5}}, {b, []int{1, 2, 3, 4, 5}}}, out, "context limit"},
		{[]Seq{{a, []int{5}}, {b, []int{-1}}}, out, "outside the vocabulary"},
		{[]Seq{{a, []int{5}}, {b, nil}}, out, "no tokens"},
		{[]Seq{{a, []int{5}}, {nil, []int{1}}}, out, "no state"},
		{[]Seq{{a, []int{5}}, {b, []int{1}}}, out[:H], "output holds"},
	}
	for _, c := range cases {
		err := r.ForwardBatch(c.out, c.seqs)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want an error with %q, got %v", c.want, err)
		}
		if a.Pos != 0 || b.Pos != 0 {
			t.Fatalf("a failed batch moved the states to %d and %d", a.Pos, b.Pos)
		}
	}
}

// Attention reads the cache in place: once the buffers have grown, a
// decode step's attention allocates nothing, whatever the KV precision.
func TestAttentionDoesNotAllocate(t *testing.T) {
	if race.Enabled {
		t.Skip("-race makes sync.Pool drop items at random: allocation counts mean nothing")
	}
	pool := cpu.NewPool(2)
	defer pool.Close()
	m := loadFixture(t, "gemma3-tiny", dtype.BF16)
	r := NewRunner(m, pool)
	rng := rand.New(rand.NewPCG(5, 5))
	for _, kv := range []dtype.DType{dtype.F32, dtype.BF16, dtype.F16} {
		var seqs []Seq
		for i := 0; i < 3; i++ {
			st, _ := m.NewState(0, kv)
			if _, err := r.ForwardHidden(st, randomTokens(rng, 20+i, m.Config.VocabSize), false); err != nil {
				t.Fatal(err)
			}
			seqs = append(seqs, Seq{State: st, Tokens: []int{7}})
		}
		out := make([]float32, len(seqs)*m.Config.HiddenSize)
		if err := r.ForwardBatch(out, seqs); err != nil { // grows every buffer
			t.Fatal(err)
		}
		b := &r.buf
		segs := []segment{{st: seqs[0].State, tokens: []int{1}, row: 0}, {st: seqs[1].State, tokens: []int{1}, row: 1}, {st: seqs[2].State, tokens: []int{1}, row: 2}}
		for i := range segs {
			segs[i].pos0 = segs[i].st.Pos
			b.rowSeg[i], b.rowPos[i] = int32(i), segs[i].pos0
		}
		for li := range m.Layers {
			allocs := testing.AllocsPerRun(20, func() {
				r.attention(b.att, b.q, b.k, b.v, segs, li, len(segs), m.Layers[li].Sliding)
			})
			if allocs != 0 {
				t.Errorf("kv %s layer %d: attention allocates %v times per step", kv, li, allocs)
			}
		}
	}
}

// BenchmarkDecodeBatch reports decode tokens/s of the body (no head) for
// several batch sizes on the gemma3-tiny fixture (f32 KV cache, fh-run's
// default), each sequence between 1 and 64 tokens into its context.
func BenchmarkDecodeBatch(b *testing.B) {
	pool := cpu.NewPool(0)
	defer pool.Close()
	m := loadFixture(&testing.T{}, "gemma3-tiny", dtype.BF16)
	r := NewRunner(m, pool)
	for _, B := range []int{1, 8, 32} {
		b.Run("B="+itoa(B), func(b *testing.B) {
			seqs := make([]Seq, B)
			for i := range seqs {
				st, _ := m.NewState(0, dtype.F32)
				seqs[i] = Seq{State: st, Tokens: []int{5}}
			}
			out := make([]float32, B*m.Config.HiddenSize)
			b.ResetTimer()
			for n := 0; n < b.N; n++ {
				for i := range seqs {
					if seqs[i].State.Pos >= 64 {
						seqs[i].State.Reset()
					}
				}
				if err := r.ForwardBatch(out, seqs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(B*b.N)/b.Elapsed().Seconds(), "tok/s")
		})
	}
}

func itoa(n int) string {
	const digits = "0123456789"
	if n < 10 {
		return digits[n : n+1]
	}
	return itoa(n/10) + digits[n%10:n%10+1]
}

// A chunk longer than a sliding window leaves the ring holding the window's
// last positions (rows are stored from several threads: only the rows that
// survive the chunk may be written), as decoding token by token does.
func TestRingAfterLongChunk(t *testing.T) {
	pool := cpu.NewPool(2)
	defer pool.Close()
	m := loadFixture(t, "gemma3-tiny", dtype.BF16)
	r := NewRunner(m, pool)
	tokens := randomTokens(rand.New(rand.NewPCG(8, 8)), 5*m.Config.SlidingWindow+3, m.Config.VocabSize)
	for round := 0; round < 20; round++ {
		a, _ := m.NewState(0, dtype.F32)
		b, _ := m.NewState(0, dtype.F32)
		if _, err := r.ForwardHidden(a, tokens, false); err != nil {
			t.Fatal(err)
		}
		for _, id := range tokens {
			if _, err := r.ForwardHidden(b, []int{id}, false); err != nil {
				t.Fatal(err)
			}
		}
		for li, c := range a.layers {
			if c.ring == 0 {
				continue
			}
			if d := maxDiff(c.k, b.layers[li].k); d > 1e-4 {
				t.Fatalf("round %d layer %d: ring keys differ by %g from token-by-token decoding", round, li, d)
			}
		}
	}
}
