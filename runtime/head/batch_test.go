package head

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/sample"
)

// A batch mixing greedy and sampled rows (with their own seeds, top-p and
// repetition penalties) must pick, step after step, the tokens each row
// picks alone with Sample.
func TestSampleBatchEqualsSample(t *testing.T) {
	pool := cpu.NewPool(2)
	defer pool.Close()
	for _, st1 := range []Stage1{Stage1BF16, Stage1Int8} {
		h, _ := testHead(t, 300, 32, 16, []int{1, 2}, 4, st1)
		params := []sample.Params{
			{Temperature: 0.8, TopP: 0.9, Seed: 1},
			{},
			{Temperature: 1.2, RepetitionPenalty: 1.3, Seed: 2},
			{Temperature: 0.5, TopK: 5, Seed: 3},
			{RepetitionPenalty: 1.1},
		}
		batch := make([]*sample.Sampler, len(params))
		alone := make([]*sample.Sampler, len(params))
		histories := make([][]int, len(params))
		for i, p := range params {
			batch[i], alone[i] = sample.New(p), sample.New(p)
			histories[i] = []int{5, 9, 200}
		}
		r := rand.New(rand.NewPCG(4, 2))
		sampledDiffers := false
		for step := 0; step < 20; step++ {
			hidden := make([]float32, len(params)*h.D)
			for i := range hidden {
				hidden[i] = float32(r.NormFloat64())
			}
			got := h.SampleBatch(pool, batch, hidden, histories)
			for i := range params {
				want := h.Sample(pool, alone[i], hidden[i*h.D:(i+1)*h.D], histories[i])
				if got[i] != want {
					t.Fatalf("stage1 %v step %d row %d: batched %d, alone %d", st1, step, i, got[i], want)
				}
				if i == 0 && got[i] != h.Argmax(pool, hidden[:h.D]) {
					sampledDiffers = true
				}
				histories[i] = append(histories[i], got[i])
			}
		}
		if !sampledDiffers {
			t.Errorf("stage1 %v: the sampled row always took the greedy token", st1)
		}
	}
}

// BenchmarkArgmaxBatch reports the greedy FlashHead's time per row at the
// embedded default's shape (vocabulary 512, hidden 48, 32 clusters of 16,
// 16 probed) and at a larger one (32768 x 256, 2048 clusters, 64 probed),
// for one row and for 32 rows decoding together.
func BenchmarkArgmaxBatch(b *testing.B) {
	pool := cpu.NewPool(1)
	defer pool.Close()
	t := &testing.T{}
	for _, c := range []struct {
		name                  string
		vocab, D, cap, probes int
	}{{"tiny", 512, 48, 16, 16}, {"32k", 32768, 256, 16, 64}} {
		h, _ := testHead(t, c.vocab, c.D, c.cap, []int{1}, c.probes, Stage1BF16)
		r := rand.New(rand.NewPCG(1, 1))
		for _, n := range []int{1, 32} {
			hidden := make([]float32, 0, n*c.D)
			for range n {
				hidden = append(hidden, randHidden(r, c.D)...)
			}
			b.Run(fmt.Sprintf("%s/rows=%d", c.name, n), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					h.ArgmaxBatch(pool, hidden)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/row")
			})
		}
	}
}
