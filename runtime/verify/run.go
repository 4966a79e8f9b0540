package verify

import (
	"fmt"
	"math/rand/v2"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/runtime/model"
)

// Report holds per-sequence and overall statistics.
type Report struct {
	Sequences []Stats `json:"sequences"`
	Stats
}

// Run computes the model's logits for every sequence (teacher forcing) and
// compares them with the sequence's stored logits, or, when base is not
// nil, with base's logits for the same tokens. kv is the KV-cache precision
// of both models.
func Run(m *model.Runner, base *model.Runner, seqs []Sequence, kv dtype.DType) (*Report, error) {
	vocab := m.M.Config.VocabSize
	if base != nil && base.M.Config.VocabSize != vocab {
		return nil, fmt.Errorf("baseline model vocabulary %d differs from the model's %d", base.M.Config.VocabSize, vocab)
	}
	rep := &Report{}
	for i, s := range seqs {
		logits, err := forward(m, s.Tokens, kv)
		if err != nil {
			return nil, fmt.Errorf("sequence %d: %w", i, err)
		}
		ref := s.Logits
		if base != nil {
			if ref, err = forward(base, s.Tokens, kv); err != nil {
				return nil, fmt.Errorf("sequence %d (baseline model): %w", i, err)
			}
		}
		if len(ref) != len(logits) {
			return nil, fmt.Errorf("sequence %d: no baseline logits", i)
		}
		var st Stats
		st.Add(s.Tokens, logits, ref, vocab)
		rep.Sequences = append(rep.Sequences, st)
		rep.Stats.Merge(&st)
	}
	return rep, nil
}

func forward(r *model.Runner, tokens []int, kv dtype.DType) ([]float32, error) {
	st, err := r.M.NewState(0, kv)
	if err != nil {
		return nil, err
	}
	return r.Forward(st, tokens, true)
}

// RandomSequences returns n sequences of length T: bos (when >= 0) then
// uniform ids from [lo, vocab), from a fixed seed.
func RandomSequences(n, T, vocab, bos, lo int, seed uint64) []Sequence {
	r := rand.New(rand.NewPCG(seed, 17))
	out := make([]Sequence, n)
	for i := range out {
		toks := make([]int, 0, T)
		if bos >= 0 {
			toks = append(toks, bos)
		}
		for len(toks) < T {
			toks = append(toks, lo+r.IntN(vocab-lo))
		}
		out[i] = Sequence{Tokens: toks}
	}
	return out
}
