package verify

import (
	"fmt"
	"math"
	"slices"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/runtime/head"
	"github.com/fhkit/fhkit/runtime/model"
	"github.com/fhkit/fhkit/runtime/sample"
)

// FlashStats compares the FlashHead with the dense head of the same model
// on the same hidden states.
type FlashStats struct {
	Positions     int     `json:"positions"`
	Probes        int     `json:"probes"`
	Top1Agreement float64 `json:"top1_agreement"`
	// RecallAtP is how often the dense argmax lies in the probed clusters.
	RecallAtP float64 `json:"recall_at_p"`
	// CandidateMass is the dense probability mass inside the candidate set
	// (mean and minimum over positions).
	MeanCandidateMass float64 `json:"mean_candidate_mass"`
	MinCandidateMass  float64 `json:"min_candidate_mass"`
	// KL(flash || dense) where the FlashHead distribution is the dense one
	// renormalised over the candidates: it equals -log(candidate mass).
	MeanKL float64 `json:"mean_kl"`
	MaxKL  float64 `json:"max_kl"`
	// MaxAbsDiff of the candidates' logits against the dense logits (the
	// candidates are scored exactly, so it is 0 up to summation order).
	MaxAbsDiff float64 `json:"max_abs_diff"`
	// Greedy continuations that are identical token for token.
	GreedySequences int `json:"greedy_sequences"`
	GreedyMatches   int `json:"greedy_matches"`
	GreedyTokens    int `json:"greedy_tokens"`
}

// RunFlash teacher-forces every sequence through the model and compares
// the FlashHead's choices with the dense head's at every position; then it
// decodes greedyTokens tokens greedily with both heads after each
// sequence's first promptLen tokens and counts identical continuations.
func RunFlash(r *model.Runner, fh *head.FlashHead, seqs []Sequence, kv dtype.DType, promptLen, greedyTokens int) (*FlashStats, error) {
	st := &FlashStats{Probes: fh.Probes, MinCandidateMass: 1}
	var top1, recall, mass, kl float64
	H := r.M.Config.HiddenSize
	scores := make([]float32, fh.K)
	for i, s := range seqs {
		state, err := r.M.NewState(0, kv)
		if err != nil {
			return nil, err
		}
		hidden, err := r.ForwardHidden(state, s.Tokens, true)
		if err != nil {
			return nil, fmt.Errorf("sequence %d: %w", i, err)
		}
		dense := r.DenseLogits(hidden)
		V := r.M.Config.VocabSize
		for t := range s.Tokens {
			h := hidden[t*H : (t+1)*H]
			dl := dense[t*V : (t+1)*V]
			want := sample.Argmax(dl)
			fh.ClusterScores(r.Pool, scores, h)
			ids, logits := fh.Candidates(r.Pool, h, head.TopClusters(scores, fh.Probes))
			best := 0
			for j := range logits {
				if logits[j] > logits[best] {
					best = j
				}
				st.MaxAbsDiff = max(st.MaxAbsDiff, math.Abs(float64(logits[j])-float64(dl[ids[j]])))
			}
			if ids[best] == want {
				top1++
			}
			if _, found := slices.BinarySearch(ids, want); found {
				recall++
			}
			m := candidateMass(dl, ids)
			mass += m
			st.MinCandidateMass = min(st.MinCandidateMass, m)
			k := -math.Log(m)
			kl += k
			st.MaxKL = max(st.MaxKL, k)
			st.Positions++
		}
		if greedyTokens > 0 && len(s.Tokens) > 0 {
			prompt := s.Tokens[:min(promptLen, len(s.Tokens))]
			a, err := greedy(r, nil, prompt, greedyTokens, kv)
			if err != nil {
				return nil, err
			}
			b, err := greedy(r, fh, prompt, greedyTokens, kv)
			if err != nil {
				return nil, err
			}
			st.GreedySequences++
			st.GreedyTokens += len(a)
			if slices.Equal(a, b) {
				st.GreedyMatches++
			}
		}
	}
	n := float64(st.Positions)
	st.Top1Agreement, st.RecallAtP, st.MeanCandidateMass, st.MeanKL = top1/n, recall/n, mass/n, kl/n
	return st, nil
}

// candidateMass returns the softmax probability of logits inside ids.
func candidateMass(logits []float32, ids []int) float64 {
	mx := math.Inf(-1)
	for _, l := range logits {
		mx = max(mx, float64(l))
	}
	var all, in float64
	for _, l := range logits {
		all += math.Exp(float64(l) - mx)
	}
	for _, id := range ids {
		in += math.Exp(float64(logits[id]) - mx)
	}
	return in / all
}

// greedy decodes n tokens after prompt with the dense head (fh nil) or the
// FlashHead, without stopping at end-of-sequence tokens.
func greedy(r *model.Runner, fh *head.FlashHead, prompt []int, n int, kv dtype.DType) ([]int, error) {
	st, err := r.M.NewState(0, kv)
	if err != nil {
		return nil, err
	}
	n = min(n, st.Limit-len(prompt))
	var out []int
	in := prompt
	for len(out) < n {
		h, err := r.ForwardHidden(st, in, false)
		if err != nil {
			return nil, err
		}
		var id int
		if fh != nil {
			id = fh.Argmax(r.Pool, h)
		} else {
			id = sample.Argmax(r.DenseLogits(h))
		}
		out = append(out, id)
		in = []int{id}
	}
	return out, nil
}
