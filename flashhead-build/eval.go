package flashhead

import (
	"fmt"
	"slices"

	"github.com/fhkit/fhkit/runtime/cpu"
)

// NormalizedCentroids returns the centroids scaled to unit norm ([K, D]),
// as stage 1 of the greedy path scores them.
func (h *Head) NormalizedCentroids() []float32 {
	c := slices.Clone(h.Centroids)
	for k := 0; k < h.NumClusters; k++ {
		normalise(c[k*h.Dim : (k+1)*h.Dim])
	}
	return c
}

// Probe returns the p clusters with the highest scores x·ĉ_k against the
// normalised centroids cn (from NormalizedCentroids), best first; equal
// scores go to the lower cluster id.
func (h *Head) Probe(cn, x []float32, p int) []int32 {
	D := h.Dim
	p = min(p, h.NumClusters)
	idx := make([]int32, p)
	score := make([]float32, p)
	scores := make([]float32, h.NumClusters)
	for k := range scores {
		scores[k] = dot(x, cn[k*D:(k+1)*D])
	}
	selectTop(idx, score, scores, iota32(h.NumClusters))
	return idx
}

// RecallResult is the quality of stage 1 at one number of probes.
type RecallResult struct {
	Probes int `json:"probes"`
	// Recall is the fraction of hidden states whose dense argmax token is
	// in one of the probed clusters.
	Recall float64 `json:"recall"`
	// Top1 is the fraction whose dense argmax FlashHead returns: its
	// cluster is probed or it is a special (always scored) token.
	Top1 float64 `json:"top1"`
	// Rows is the mean number of head rows scored (K + P*cap).
	Rows int `json:"rows"`
}

// Recall measures stage 1 on T hidden states (hidden is T x D, the inputs
// of the LM head): for each number of probes, how often the dense head's
// argmax (first index on ties) lies in a probed cluster.
func (h *Head) Recall(pool *cpu.Pool, hidden []float32, probes []int) ([]RecallResult, error) {
	D, V := h.Dim, h.Vocab
	if len(hidden)%D != 0 || len(hidden) == 0 {
		return nil, fmt.Errorf("recall: %d hidden values is not a positive multiple of D = %d", len(hidden), D)
	}
	T := len(hidden) / D
	logits := make([]float32, T*V)
	cpu.MatMul(pool, logits, h.Rows, hidden, T)
	assign := h.Assignments()
	cn := h.NormalizedCentroids()
	maxP := 0
	for _, p := range probes {
		maxP = max(maxP, min(p, h.NumClusters))
	}
	// rank[t] = position of the argmax's cluster in the probe order.
	rank := make([]int, T)
	special := make([]bool, T)
	for t := 0; t < T; t++ {
		row := logits[t*V : (t+1)*V]
		best := 0
		for v, x := range row {
			if x > row[best] {
				best = v
			}
		}
		special[t] = slices.Contains(h.SpecialTokenIDs, best)
		order := h.Probe(cn, hidden[t*D:(t+1)*D], maxP)
		rank[t] = slices.Index(order, assign[best])
	}
	var out []RecallResult
	for _, p := range probes {
		p = min(p, h.NumClusters)
		hit, top1 := 0, 0
		for t := range rank {
			in := rank[t] >= 0 && rank[t] < p
			if in {
				hit++
			}
			if in || special[t] {
				top1++
			}
		}
		out = append(out, RecallResult{Probes: p, Recall: float64(hit) / float64(T), Top1: float64(top1) / float64(T),
			Rows: h.NumClusters + p*h.ClusterSize})
	}
	return out, nil
}
