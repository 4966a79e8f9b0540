package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/internal/race"
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
// state stepped alone, for every architecture, with the batch's products
// shared by all rows and with the batch split into per-thread parts.
func TestBatchEqualsAlone(t *testing.T) {
	pool := cpu.NewPool(2)
	defer pool.Close()
	for _, split := range []bool{false, true} {
		for _, preset := range []string{"gemma3-tiny", "llama-tiny", "qwen3-tiny"} {
			t.Run(fmt.Sprintf("%s/split=%v", preset, split), func(t *testing.T) {
				testBatchEqualsAlone(t, pool, preset, split)
			})
		}
	}
}

func testBatchEqualsAlone(t *testing.T, pool *cpu.Pool, preset string, split bool) {
	{
		m := loadFixture(t, preset, dtype.BF16)
		r := NewRunner(m, pool)
		r.splitBudget = 0
		if split {
			r.splitBudget = math.MaxInt64
		}
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
			if ran := len(r.split.subs) > 0; ran != split {
				t.Fatalf("split step: %v, want %v", ran, split)
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

// splitBounds cuts a batch into parts of consecutive sequences that cover
// it once, none empty, each part's rows within one sequence of an equal
// share.
func TestSplitBounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 2000 {
		parts := 2 + rng.IntN(3)
		seqs := make([]Seq, parts+rng.IntN(20))
		rows, largest := 0, 0
		for i := range seqs {
			n := 1
			if rng.IntN(4) == 0 {
				n += rng.IntN(40)
			}
			seqs[i].Tokens = make([]int, n)
			rows += n
			largest = max(largest, n)
		}
		b := splitBounds(nil, seqs, parts)
		if len(b) != parts+1 || b[0] != 0 || b[parts] != len(seqs) {
			t.Fatalf("%d sequences in %d parts: bounds %v", len(seqs), parts, b)
		}
		for k := range parts {
			if b[k] >= b[k+1] {
				t.Fatalf("%d sequences in %d parts: part %d empty in %v", len(seqs), parts, k, b)
			}
			got := 0
			for _, s := range seqs[b[k]:b[k+1]] {
				got += len(s.Tokens)
			}
			// A part closes at the first sequence that reaches its share,
			// so it exceeds the share by less than that sequence, and
			// falls short only where the parts after it need a sequence.
			if share := (rows + parts - 1) / parts; got >= share+largest {
				t.Fatalf("part %d of %v holds %d rows, share %d, largest sequence %d", k, b, got, share, largest)
			}
		}
	}
}

// A batch is split only when there are threads and sequences to split it
// over, the layer weights fit the budget, no sequence dominates the rows,
// and no weight observes its inputs.
func TestSplitParts(t *testing.T) {
	m := loadFixture(t, "llama-tiny", dtype.F32)
	pool := cpu.NewPool(2)
	defer pool.Close()
	r := NewRunner(m, pool)
	r.splitBudget = m.BodyBytes()
	seqs := func(lens ...int) []Seq {
		s := make([]Seq, len(lens))
		for i, n := range lens {
			s[i].Tokens = make([]int, n)
		}
		return s
	}
	for _, c := range []struct {
		seqs []Seq
		want int
	}{
		{seqs(1), 1},
		{seqs(1, 1), 2},
		{seqs(1, 1, 1, 1, 1), 2},
		{seqs(5, 1, 1), 2},
		{seqs(7, 1, 1), 1}, // 7 of 9 rows: more than 1.5 shares
	} {
		if got := r.splitParts(c.seqs); got != c.want {
			t.Errorf("sequences of %v tokens: %d parts, want %d", lens(c.seqs), got, c.want)
		}
	}
	if got := NewRunner(m, cpu.NewPool(1)).splitParts(seqs(1, 1)); got != 1 {
		t.Errorf("one thread: %d parts, want 1", got)
	}
	r.splitBudget = m.BodyBytes() - 1
	if got := r.splitParts(seqs(1, 1)); got != 1 {
		t.Errorf("weights over the budget: %d parts, want 1", got)
	}
	r.splitBudget = m.BodyBytes()
	m.Layers[1].Down.Observe = func([]float32, int) {}
	defer func() { m.Layers[1].Down.Observe = nil }()
	if got := r.splitParts(seqs(1, 1)); got != 1 {
		t.Errorf("an observed weight: %d parts, want 1", got)
	}
}

func lens(seqs []Seq) []int {
	n := make([]int, len(seqs))
	for i, s := range seqs {
		n[i] = len(s.Tokens)
	}
	return n
}

// Once its sub-Runners and their buffers exist, a split decode step
// allocates nothing.
func TestSplitBatchDoesNotAllocate(t *testing.T) {
	if race.Enabled {
		t.Skip("-race makes sync.Pool drop items at random: allocation counts mean nothing")
	}
	pool := cpu.NewPool(2)
	defer pool.Close()
	m := loadFixture(t, "gemma3-tiny", dtype.BF16)
	r := NewRunner(m, pool)
	r.splitBudget = math.MaxInt64
	var seqs []Seq
	for range 6 {
		st, _ := m.NewState(0, dtype.F32)
		seqs = append(seqs, Seq{State: st, Tokens: []int{7}})
	}
	out := make([]float32, len(seqs)*m.Config.HiddenSize)
	step := func() {
		if err := r.ForwardBatch(out, seqs); err != nil {
			t.Fatal(err)
		}
	}
	for range 40 { // the caches grow in steps; past them, nothing grows
		step()
	}
	if len(r.split.subs) != 2 {
		t.Fatalf("%d parts, want 2", len(r.split.subs))
	}
	if n := testing.AllocsPerRun(20, step); n != 0 {
		t.Errorf("a split step allocates %g times", n)
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
	tokens := randomTokens(rand.New(rand.NewPCG(8, 8)), 2*(m.Config.SlidingWindow+MaxChunk)+3, m.Config.VocabSize)
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

// A state rewound to a shared prefix continues as a fresh state fed the
// whole sequence; Rewind refuses when a sliding layer's ring no longer
// holds the window before the rewound position (gemma3-tiny: window 8, a
// ring of 8 + MaxChunk).
func TestRewind(t *testing.T) {
	pool := cpu.NewPool(2)
	defer pool.Close()
	for _, preset := range []string{"gemma3-tiny", "llama-tiny"} {
		m := loadFixture(t, preset, dtype.BF16)
		r := NewRunner(m, pool)
		V := m.Config.VocabSize
		ring := 0
		for _, l := range m.Layers {
			if l.Sliding {
				ring = m.Config.SlidingWindow + MaxChunk
			}
		}
		R := m.Config.SlidingWindow + MaxChunk
		rng := rand.New(rand.NewPCG(3, 4))
		for _, c := range []struct{ fed, keep int }{{6, 3}, {8, 0}, {7, 7}, {20, 12}, {R + 10, 20}, {R + 10, 15}, {R + 10, R + 10}} {
			st, _ := m.NewState(0, dtype.F32)
			first := randomTokens(rng, c.fed, V)
			if _, err := r.ForwardHidden(st, first, false); err != nil {
				t.Fatal(err)
			}
			// Without a ring that has wrapped, every rewind works; past
			// that, a rewind that is accepted must still be exact below.
			mustWork := ring == 0 || c.fed <= ring || c.keep == c.fed
			ok := st.Rewind(c.keep)
			if mustWork && !ok {
				t.Fatalf("%s: %d tokens could not be rewound to %d", preset, c.fed, c.keep)
			}
			if !ok {
				if st.Pos != c.fed {
					t.Fatalf("%s: a refused rewind moved the state to %d", preset, st.Pos)
				}
				continue
			}
			next := append(append([]int(nil), first[:c.keep]...), randomTokens(rng, 5, V)...)
			h, err := r.ForwardHidden(st, next[c.keep:], false)
			if err != nil {
				t.Fatal(err)
			}
			fresh, _ := m.NewState(0, dtype.F32)
			hw, err := r.ForwardHidden(fresh, next, false)
			if err != nil {
				t.Fatal(err)
			}
			if d := maxDiff(r.DenseLogits(h), r.DenseLogits(hw)); d > kvTol(dtype.F32) || st.Pos != fresh.Pos {
				t.Fatalf("%s: %d tokens rewound to %d: logits differ from a fresh state's by %g (positions %d, %d)", preset, c.fed, c.keep, d, st.Pos, fresh.Pos)
			}
		}
		st, _ := m.NewState(0, dtype.F32)
		r.ForwardHidden(st, randomTokens(rng, 4, V), false)
		if st.Rewind(5) || st.Rewind(-1) || st.Pos != 4 {
			t.Fatalf("%s: rewound past its tokens or before the start", preset)
		}
	}
}
