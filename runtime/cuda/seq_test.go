package cuda

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/model"
	"github.com/fhkit/fhkit/runtime/sample"
)

// Three sequences run in turn on one runner (prefills of different lengths,
// then decode steps interleaved, one of them past the sliding window) give
// each sequence's logits as the CPU computes it alone, and the runner's own
// sequence, started before and continued after, is not disturbed.
func TestSeqsInterleaved(t *testing.T) {
	dv := testDevice(t)
	pool := cpu.NewPool(1)
	defer pool.Close()
	m := loadFixture(t, "gemma3-tiny", dtype.BF16)
	H, V := m.Config.HiddenSize, m.Config.VocabSize
	dr, err := NewRunner(dv, m, dtype.F32, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dr.Close()
	cpuRun := model.NewRunner(m, pool)
	r := rand.New(rand.NewPCG(3, 4))
	prompts := [][]int{randTokens(r, 3, V), randTokens(r, 1, V), randTokens(r, m.Config.SlidingWindow+5, V)}
	seqs := make([]*Seq, len(prompts))
	states := make([]*model.State, len(prompts))
	next := make([]int, len(prompts))
	for i := range prompts {
		if seqs[i], err = dr.NewSeq(0); err != nil {
			t.Fatal(err)
		}
		defer seqs[i].Close()
		if states[i], err = m.NewState(0, dtype.F32); err != nil {
			t.Fatal(err)
		}
	}
	own := randTokens(r, 4, V)
	ownWant, err := cpuRun.Forward(mustState(t, m), own, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dr.Forward(own[:3], false); err != nil {
		t.Fatal(err)
	}
	logits := make([]float32, V)
	for step := 0; step < 6; step++ {
		for i := range seqs {
			tokens := []int{next[i]}
			if step == 0 {
				tokens = prompts[i]
			}
			hidden := make([]float32, H)
			if err := dr.ForwardBatch(hidden, []*Seq{seqs[i]}, [][]int{tokens}); err != nil {
				t.Fatal(err)
			}
			if err := dr.Logits(logits, hidden); err != nil {
				t.Fatal(err)
			}
			want, err := cpuRun.Forward(states[i], tokens, false)
			if err != nil {
				t.Fatal(err)
			}
			compareLogits(t, "interleaved sequence", logits, want, V, logitTol(dtype.F32))
			next[i] = 3 + (step*7+i)%(V-3)
		}
	}
	if err := dr.Use(nil); err != nil {
		t.Fatal(err)
	}
	got, err := dr.Forward(own[3:], false)
	if err != nil {
		t.Fatal(err)
	}
	compareLogits(t, "own sequence after the others", got, ownWant, V, logitTol(dtype.F32))
	if err := dr.Use(seqs[0]); err != nil {
		t.Fatal(err)
	}
	if err := seqs[0].Close(); err == nil {
		t.Error("closing the current sequence was accepted")
	}
	if err := dr.Use(nil); err != nil {
		t.Fatal(err)
	}
}

// Greedy steps through the captured graph follow the current sequence: a
// graph captured on one sequence is not replayed on another.
func TestSeqGraphs(t *testing.T) {
	dv := testDevice(t)
	pool := cpu.NewPool(1)
	defer pool.Close()
	m := loadFixture(t, "llama-tiny", dtype.F32)
	V := m.Config.VocabSize
	dr, err := NewRunner(dv, m, dtype.F32, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dr.Close()
	a, err := dr.NewSeq(64)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	r := rand.New(rand.NewPCG(5, 6))
	pa, pb := randTokens(r, 5, V), randTokens(r, 9, V)
	for _, c := range []struct {
		seq    *Seq
		prompt []int
	}{{nil, pa}, {a, pb}, {nil, pa}} {
		if err := dr.Use(c.seq); err != nil {
			t.Fatal(err)
		}
		dr.Reset()
		st := mustState(t, m)
		cpuRun := model.NewRunner(m, pool)
		id, err := dr.Greedy(c.prompt)
		if err != nil {
			t.Fatal(err)
		}
		logits, err := cpuRun.Forward(st, c.prompt, false)
		if err != nil {
			t.Fatal(err)
		}
		for step := 0; step < 4; step++ {
			if want := sample.Argmax(logits); id != want {
				t.Fatalf("step %d: device greedy %d, CPU %d", step, id, want)
			}
			if logits, err = cpuRun.Forward(st, []int{id}, false); err != nil {
				t.Fatal(err)
			}
			if id, err = dr.Greedy([]int{id}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if a.Limit != 64 || a.KVBytes() <= 0 {
		t.Errorf("sequence limit %d, KV bytes %d", a.Limit, a.KVBytes())
	}
}

func randTokens(r *rand.Rand, n, V int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = 3 + r.IntN(V-3)
	}
	return out
}

func mustState(t *testing.T, m *model.Model) *model.State {
	t.Helper()
	st, err := m.NewState(0, dtype.F32)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// One batched pass over several sequences (prompts being prefilled next to
// sequences decoding, at different positions, one past the sliding window,
// one prompt longer than a pass so it spans two) gives each sequence's
// hidden state as the CPU computes it alone, step after step, for an f32
// and a bf16 cache.
func TestForwardBatch(t *testing.T) {
	dv := testDevice(t)
	pool := cpu.NewPool(1)
	defer pool.Close()
	m := loadFixture(t, "gemma3-tiny", dtype.BF16)
	H, V := m.Config.HiddenSize, m.Config.VocabSize
	for _, kv := range []dtype.DType{dtype.F32, dtype.BF16} {
		dr, err := NewRunner(dv, m, kv, 0)
		if err != nil {
			t.Fatal(err)
		}
		cpuRun := model.NewRunner(m, pool)
		r := rand.New(rand.NewPCG(7, 8))
		prompts := [][]int{randTokens(r, 5, V), randTokens(r, 1, V), randTokens(r, MaxChunk+9, V), randTokens(r, m.Config.SlidingWindow+3, V)}
		seqs := make([]*Seq, len(prompts))
		states := make([]*model.State, len(prompts))
		for i := range prompts {
			if seqs[i], err = dr.NewSeq(0); err != nil {
				t.Fatal(err)
			}
			if states[i], err = m.NewState(0, kv); err != nil {
				t.Fatal(err)
			}
		}
		// Step 0 feeds the first two prompts only; step 1 the other two
		// next to the first two's first decode step.
		tokens := [][]int{prompts[0], prompts[1]}
		active := []int{0, 1}
		for step := 0; step < 5; step++ {
			if step == 1 {
				active = []int{0, 1, 2, 3}
				tokens = append(tokens, prompts[2], prompts[3])
			}
			batch := make([]*Seq, len(active))
			for j, i := range active {
				batch[j] = seqs[i]
			}
			out := make([]float32, len(active)*H)
			if err := dr.ForwardBatch(out, batch, tokens); err != nil {
				t.Fatal(err)
			}
			for j, i := range active {
				want, err := cpuRun.ForwardHidden(states[i], tokens[j], false)
				if err != nil {
					t.Fatal(err)
				}
				var worst float64
				for d := range want {
					worst = max(worst, math.Abs(float64(out[j*H+d])-float64(want[d])))
				}
				// Hidden states are final-normed (|h| ~ 1): the logit bound
				// of logitTol over a dot product of H of them.
				if worst > logitTol(kv) {
					t.Fatalf("kv %s step %d sequence %d: max |Δhidden| %.3g against the CPU (bound %g)", kv, step, i, worst, logitTol(kv))
				}
				if seqs[i].Pos != states[i].Pos {
					t.Fatalf("kv %s step %d sequence %d: position %d, CPU %d", kv, step, i, seqs[i].Pos, states[i].Pos)
				}
			}
			for j := range tokens {
				tokens[j] = []int{3 + (step*11+j)%(V-3)}
			}
		}
		if err := dr.ForwardBatch(make([]float32, 2*H), []*Seq{seqs[0], seqs[0]}, [][]int{{5}, {6}}); err == nil {
			t.Error("one sequence twice in a batch was accepted")
		}
		if err := dr.ForwardBatch(make([]float32, H), []*Seq{seqs[1]}, [][]int{{V}}); err == nil {
			t.Error("a token outside the vocabulary was accepted")
		}
		for _, s := range seqs {
			s.Close()
		}
		dr.Close()
	}
}

// A sequence rewound to a shared prefix continues as a fresh one fed the
// whole sequence (against the CPU's state, the same way rewound); Rewind
// refuses once a sliding layer's ring (window + MaxChunk rows) has moved
// past what the next tokens attend to.
func TestSeqRewind(t *testing.T) {
	dv := testDevice(t)
	pool := cpu.NewPool(1)
	defer pool.Close()
	m := loadFixture(t, "gemma3-tiny", dtype.F32)
	H, V, W := m.Config.HiddenSize, m.Config.VocabSize, m.Config.SlidingWindow
	dr, err := NewRunner(dv, m, dtype.F32, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dr.Close()
	cpuRun := model.NewRunner(m, pool)
	R := W + MaxChunk
	r := rand.New(rand.NewPCG(9, 10))
	for _, c := range []struct {
		fed, keep int
		ok        bool
	}{{6, 3, true}, {20, 12, true}, {R + 10, 20, true}, {R + 10, 15, false}, {R + 10, R + 10, true}} {
		s, err := dr.NewSeq(0)
		if err != nil {
			t.Fatal(err)
		}
		first := randTokens(r, c.fed, V)
		for lo := 0; lo < len(first); lo += MaxChunk {
			if err := dr.ForwardBatch(make([]float32, H), []*Seq{s}, [][]int{first[lo:min(lo+MaxChunk, len(first))]}); err != nil {
				t.Fatal(err)
			}
		}
		if ok := s.Rewind(c.keep); ok != c.ok || (!ok && s.Pos != c.fed) {
			t.Fatalf("%d tokens rewound to %d: %v (position %d), want %v", c.fed, c.keep, ok, s.Pos, c.ok)
		}
		if c.ok {
			next := append(append([]int(nil), first[:c.keep]...), randTokens(r, 4, V)...)
			out := make([]float32, H)
			if err := dr.ForwardBatch(out, []*Seq{s}, [][]int{next[c.keep:]}); err != nil {
				t.Fatal(err)
			}
			st, _ := m.NewState(0, dtype.F32)
			want, err := cpuRun.ForwardHidden(st, next, false)
			if err != nil {
				t.Fatal(err)
			}
			for d := range want {
				if diff := math.Abs(float64(out[d]) - float64(want[d])); diff > logitTol(dtype.F32) {
					t.Fatalf("%d tokens rewound to %d: hidden differs from a fresh sequence's by %.3g", c.fed, c.keep, diff)
				}
			}
		}
		s.Close()
	}
}
