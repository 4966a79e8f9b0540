package head

import (
	"math"

	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/sample"
)

// SampleBatch is Sample for n hidden states (n x D) of sequences decoding
// together, each with its own sampler and history (samplers[i] and
// histories[i] belong to row i). Greedy rows go through ArgmaxBatch; the
// stage-1 scores of the sampled rows over the raw centroids are one matrix
// product for all of them, so the centroids are read once per step rather
// than once per sequence. Each row consumes its sampler's generator exactly
// as Sample would, so a seeded sequence draws the same tokens batched or
// alone (up to float32 rounding differences between kernels).
func (h *FlashHead) SampleBatch(p *cpu.Pool, samplers []*sample.Sampler, hidden []float32, histories [][]int) []int {
	n := len(samplers)
	out := make([]int, n)
	var greedy, sampled []int
	for i, s := range samplers {
		if s.Params().Temperature == 0 {
			greedy = append(greedy, i)
		} else {
			sampled = append(sampled, i)
		}
	}
	gather := func(rows []int) []float32 {
		if len(rows) == n {
			return hidden[:n*h.D]
		}
		x := make([]float32, len(rows)*h.D)
		for j, i := range rows {
			copy(x[j*h.D:(j+1)*h.D], hidden[i*h.D:(i+1)*h.D])
		}
		return x
	}
	if len(greedy) > 0 {
		for j, id := range h.ArgmaxBatch(p, gather(greedy)) {
			out[greedy[j]] = id
		}
	}
	if len(sampled) > 0 {
		x := gather(sampled)
		scores := make([]float32, len(sampled)*h.K)
		cpu.MatMul(p, scores, h.raw, x, len(sampled))
		for j, i := range sampled {
			var hist []int
			if i < len(histories) {
				hist = histories[i]
			}
			out[i] = h.drawScored(p, samplers[i], x[j*h.D:(j+1)*h.D], scores[j*h.K:(j+1)*h.K], hist)
		}
	}
	return out
}

// drawScored is the draw after stage 1 of Sample and SampleBatch: scores
// are the raw-centroid scores h·c_k of hidden (overwritten with the Gumbel
// keys).
func (h *FlashHead) drawScored(p *cpu.Pool, s *sample.Sampler, hidden, scores []float32, history []int) int {
	T := s.Params().Temperature
	rng := s.Rand()
	for k := range scores {
		// log softmax up to a constant, plus Gumbel noise: the top P keys
		// are a draw of P clusters without replacement.
		u := rng.Float64()
		for u == 0 {
			u = rng.Float64()
		}
		scores[k] = float32(float64(scores[k])/T - math.Log(-math.Log(u)))
	}
	ids, logits := h.Candidates(p, hidden, TopClusters(scores, h.Probes))
	// The candidate-space history for the repetition penalty.
	pos := make(map[int]int, len(ids))
	for i, id := range ids {
		pos[id] = i
	}
	var hist []int
	for _, id := range history {
		if i, ok := pos[id]; ok {
			hist = append(hist, i)
		}
	}
	return ids[s.Next(logits, hist)]
}
