// Package verify compares a model's logits with baseline logits: stored
// reference logits (a safetensors file of tokens.<i> / logits.<i> pairs) or
// another model's forward pass over the same tokens.
package verify

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/safetensors"
	"github.com/fhkit/fhkit/runtime/sample"
)

// Sequence is one baseline sequence: its tokens and, when stored, the
// baseline logits (T x V, row t = next-token logits after tokens[0..t]).
type Sequence struct {
	Tokens []int
	Logits []float32
}

// ReadBaseline reads tokens.<i> (I32 or I64 [T]) and logits.<i> (F32, BF16
// or F16 [T, V]) for i = 0, 1, ... from a safetensors file, and checks the
// vocabulary size against vocab and every token id against it.
func ReadBaseline(path string, vocab int) ([]Sequence, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var idx []int
	for _, t := range f.Tensors {
		if s, ok := strings.CutPrefix(t.Name, "tokens."); ok {
			i, err := strconv.Atoi(s)
			if err != nil || i < 0 {
				return nil, fmt.Errorf("%s: tensor %q: want tokens.<i> with i a non-negative integer", path, t.Name)
			}
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return nil, fmt.Errorf("%s: no tokens.<i> tensors: not a baseline logits file", path)
	}
	sort.Ints(idx)
	var seqs []Sequence
	for _, i := range idx {
		tt, _ := f.Tensor(fmt.Sprintf("tokens.%d", i))
		lt, ok := f.Tensor(fmt.Sprintf("logits.%d", i))
		if !ok {
			return nil, fmt.Errorf("%s: tokens.%d has no logits.%d", path, i, i)
		}
		if len(tt.Shape) != 1 || tt.Shape[0] == 0 {
			return nil, fmt.Errorf("%s: tokens.%d has shape %v, want [T] with T > 0", path, i, tt.Shape)
		}
		T := int(tt.Shape[0])
		tokens := make([]int, T)
		switch tt.DType {
		case dtype.I32:
			for j := range tokens {
				tokens[j] = int(int32(binary.LittleEndian.Uint32(tt.Data[4*j:])))
			}
		case dtype.I64:
			for j := range tokens {
				tokens[j] = int(int64(binary.LittleEndian.Uint64(tt.Data[8*j:])))
			}
		default:
			return nil, fmt.Errorf("%s: tokens.%d has dtype %s, want I32 or I64", path, i, tt.DType)
		}
		for j, id := range tokens {
			if id < 0 || id >= vocab {
				return nil, fmt.Errorf("%s: tokens.%d[%d] = %d is outside the model's vocabulary [0, %d)", path, i, j, id, vocab)
			}
		}
		if len(lt.Shape) != 2 || lt.Shape[0] != int64(T) {
			return nil, fmt.Errorf("%s: logits.%d has shape %v, want [%d, V]", path, i, lt.Shape, T)
		}
		if lt.Shape[1] != int64(vocab) {
			return nil, fmt.Errorf("%s: logits.%d has vocabulary %d, the model has %d", path, i, lt.Shape[1], vocab)
		}
		if !(lt.DType == dtype.F32 || lt.DType == dtype.BF16 || lt.DType == dtype.F16) {
			return nil, fmt.Errorf("%s: logits.%d has dtype %s, want F32, BF16 or F16", path, i, lt.DType)
		}
		logits := make([]float32, T*vocab)
		if err := dtype.DecodeFloats(logits, lt.Data, lt.DType); err != nil {
			return nil, fmt.Errorf("%s: logits.%d: %w", path, i, err)
		}
		seqs = append(seqs, Sequence{Tokens: tokens, Logits: logits})
	}
	return seqs, nil
}

// Stats compares model logits with baseline logits.
type Stats struct {
	Positions     int     `json:"positions"`
	Top1Agreement float64 `json:"top1_agreement"`
	Top5Overlap   float64 `json:"top5_overlap"`
	MeanKL        float64 `json:"mean_kl"`
	MaxKL         float64 `json:"max_kl"`
	MaxAbsDiff    float64 `json:"max_abs_diff"`
	MeanAbsDiff   float64 `json:"mean_abs_diff"`
	// Perplexities of the sequence's own next tokens (positions 0..T-2).
	PerplexityModel    float64 `json:"perplexity_model"`
	PerplexityBaseline float64 `json:"perplexity_baseline"`

	top1, top5, kl, abs float64
	nllModel, nllBase   float64
	nllCount            int
	absCount            int64
}

// Add accumulates the comparison of one sequence's T x V logits.
func (s *Stats) Add(tokens []int, model, base []float32, vocab int) {
	T := len(tokens)
	for t := 0; t < T; t++ {
		m, b := model[t*vocab:(t+1)*vocab], base[t*vocab:(t+1)*vocab]
		s.Positions++
		if sample.Argmax(m) == sample.Argmax(b) {
			s.top1++
		}
		s.top5 += overlap(topK(m, 5), topK(b, 5)) / 5
		lm, lb := logSoftmax(m), logSoftmax(b)
		var kl float64
		for i := range lb {
			pb := math.Exp(lb[i])
			if pb > 0 {
				kl += pb * (lb[i] - lm[i])
			}
			d := math.Abs(float64(m[i]) - float64(b[i]))
			s.abs += d
			s.MaxAbsDiff = max(s.MaxAbsDiff, d)
		}
		s.absCount += int64(vocab)
		kl = max(kl, 0)
		s.kl += kl
		s.MaxKL = max(s.MaxKL, kl)
		if t+1 < T {
			s.nllModel -= lm[tokens[t+1]]
			s.nllBase -= lb[tokens[t+1]]
			s.nllCount++
		}
	}
	s.finish()
}

func (s *Stats) finish() {
	n := float64(s.Positions)
	s.Top1Agreement, s.Top5Overlap, s.MeanKL = s.top1/n, s.top5/n, s.kl/n
	s.MeanAbsDiff = s.abs / float64(s.absCount)
	if s.nllCount > 0 {
		s.PerplexityModel = math.Exp(s.nllModel / float64(s.nllCount))
		s.PerplexityBaseline = math.Exp(s.nllBase / float64(s.nllCount))
	}
}

// Merge adds o's sums into s.
func (s *Stats) Merge(o *Stats) {
	s.Positions += o.Positions
	s.top1 += o.top1
	s.top5 += o.top5
	s.kl += o.kl
	s.abs += o.abs
	s.absCount += o.absCount
	s.nllModel += o.nllModel
	s.nllBase += o.nllBase
	s.nllCount += o.nllCount
	s.MaxKL = max(s.MaxKL, o.MaxKL)
	s.MaxAbsDiff = max(s.MaxAbsDiff, o.MaxAbsDiff)
	s.finish()
}

func topK(x []float32, k int) []int {
	idx := make([]int, 0, k+1)
	for i, v := range x {
		if len(idx) == k && v <= x[idx[k-1]] {
			continue
		}
		j := len(idx)
		idx = append(idx, i)
		for j > 0 && x[idx[j-1]] < v {
			idx[j] = idx[j-1]
			j--
		}
		idx[j] = i
		if len(idx) > k {
			idx = idx[:k]
		}
	}
	return idx
}

func overlap(a, b []int) float64 {
	n := 0
	for _, x := range a {
		for _, y := range b {
			if x == y {
				n++
				break
			}
		}
	}
	return float64(n)
}

// logSoftmax returns log(softmax(x)) in float64.
func logSoftmax(x []float32) []float64 {
	mx := math.Inf(-1)
	for _, v := range x {
		mx = max(mx, float64(v))
	}
	var sum float64
	for _, v := range x {
		sum += math.Exp(float64(v) - mx)
	}
	lse := mx + math.Log(sum)
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v) - lse
	}
	return out
}
