// Package sample picks the next token from logits: greedy, or sampling with
// temperature, top-k, top-p (nucleus), min-p and a repetition penalty, from a
// seeded generator so runs are reproducible.
package sample

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Params are the sampling settings. The zero value is greedy decoding.
type Params struct {
	// Temperature 0 means greedy (argmax, smallest id on ties).
	Temperature float64
	// TopK keeps the K most likely tokens (0 = all).
	TopK int
	// TopP keeps the smallest set of most likely tokens whose probability
	// reaches P (1 or 0 = all).
	TopP float64
	// MinP drops tokens whose probability is below MinP times the most
	// likely token's (0 = off).
	MinP float64
	// RepetitionPenalty > 1 makes tokens already in the context less likely,
	// as transformers does: a positive logit is divided by it, a negative
	// one multiplied (1 or 0 = off).
	RepetitionPenalty float64
	// Seed seeds the generator.
	Seed uint64
}

// Validate checks the ranges of the parameters.
func (p Params) Validate() error {
	switch {
	case p.Temperature < 0 || math.IsNaN(p.Temperature):
		return fmt.Errorf("temperature %g must be >= 0", p.Temperature)
	case p.TopK < 0:
		return fmt.Errorf("top-k %d must be >= 0", p.TopK)
	case p.TopP < 0 || p.TopP > 1 || math.IsNaN(p.TopP):
		return fmt.Errorf("top-p %g must be in [0, 1]", p.TopP)
	case p.MinP < 0 || p.MinP > 1 || math.IsNaN(p.MinP):
		return fmt.Errorf("min-p %g must be in [0, 1]", p.MinP)
	case p.RepetitionPenalty < 0 || math.IsNaN(p.RepetitionPenalty):
		return fmt.Errorf("repetition penalty %g must be >= 0", p.RepetitionPenalty)
	}
	return nil
}

// Sampler draws tokens with fixed parameters and its own generator.
type Sampler struct {
	p      Params
	rng    *rand.Rand
	cand   []candidate
	sorted []candidate // draw's best-first prefix
}

type candidate struct {
	id    int
	logit float32
	prob  float64
}

// New returns a Sampler.
func New(p Params) *Sampler {
	return &Sampler{p: p, rng: rand.New(rand.NewPCG(p.Seed, 0x9e3779b97f4a7c15))}
}

// Params returns the sampler's parameters.
func (s *Sampler) Params() Params { return s.p }

// Rand returns the sampler's generator (for samplers built on this one, such
// as the FlashHead's cluster draw, so one seed drives the whole run).
func (s *Sampler) Rand() *rand.Rand { return s.rng }

// Argmax returns the index of the largest logit, the smallest on ties.
func Argmax(logits []float32) int {
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	return best
}

// Next picks a token from logits. history holds the tokens so far (prompt
// and generated) for the repetition penalty; logits is modified in place
// when the penalty applies.
func (s *Sampler) Next(logits []float32, history []int) int {
	p := s.p
	if p.RepetitionPenalty > 0 && p.RepetitionPenalty != 1 {
		seen := make(map[int]bool, len(history))
		for _, id := range history {
			if id < 0 || id >= len(logits) || seen[id] {
				continue
			}
			seen[id] = true
			if l := logits[id]; l > 0 {
				logits[id] = l / float32(p.RepetitionPenalty)
			} else {
				logits[id] = l * float32(p.RepetitionPenalty)
			}
		}
	}
	if p.Temperature == 0 {
		return Argmax(logits)
	}
	return s.draw(logits)
}

// draw applies temperature, top-k, top-p and min-p (in transformers'
// order: temperature, then top-k, top-p, min-p), then samples.
func (s *Sampler) draw(logits []float32) int {
	p := s.p
	c := s.cand[:0]
	for id, l := range logits {
		c = append(c, candidate{id: id, logit: l})
	}
	s.cand = c[:0] // reused by the next draw
	// The candidates are walked best first (logit descending, id ascending
	// on ties), but only as far as the filters and the draw go: a heap
	// yields them in that order, so a draw over a 262k vocabulary costs a
	// heap construction and a few hundred pops, not a full sort.
	var h byRank
	if p.TopK > 0 && p.TopK < len(c) {
		// The k best: a heap of k with the worst at the root.
		h = byRank(c[:p.TopK])
		heapify(h, true)
		for _, x := range c[p.TopK:] {
			if better(x, h[0]) {
				h[0] = x
				down(h, 0, true)
			}
		}
		c = h
	}
	h = byRank(c)
	heapify(h, false)
	// Probabilities over every candidate left, from the max and the sum of
	// exp over all of them.
	mx := float64(h[0].logit) / p.Temperature
	var sum float64
	for _, x := range c {
		sum += math.Exp(float64(x.logit)/p.Temperature - mx)
	}
	prob := func(x candidate) float64 { return math.Exp(float64(x.logit)/p.Temperature-mx) / sum }
	// sorted is the best-first prefix popped so far, in s.sorted.
	sorted := s.sorted[:0]
	pop := func() bool {
		if len(h) == 0 {
			return false
		}
		x := h[0]
		x.prob = prob(x)
		sorted = append(sorted, x)
		last := len(h) - 1
		h[0] = h[last]
		h = h[:last]
		down(h, 0, false)
		return true
	}
	keep := -1 // the kept prefix, once a filter has fixed it
	if p.TopP > 0 && p.TopP < 1 {
		cum := 0.0
		for pop() {
			cum += sorted[len(sorted)-1].prob
			if cum >= p.TopP {
				break
			}
		}
		keep = len(sorted)
		renormalize(sorted)
	}
	if p.MinP > 0 {
		if len(sorted) == 0 {
			pop()
		}
		limit := p.MinP * sorted[0].prob
		n := 1
		for {
			if n == len(sorted) && (keep >= 0 || !pop()) {
				break
			}
			if sorted[n].prob < limit {
				break
			}
			n++
		}
		sorted, keep = sorted[:n], n
		renormalize(sorted)
	}
	u := s.rng.Float64()
	defer func() { s.sorted = sorted[:0] }()
	for i := 0; ; i++ {
		if i == len(sorted) && (keep >= 0 || !pop()) {
			// Rounding left u above the last probability: the last one.
			return sorted[len(sorted)-1].id
		}
		if u -= sorted[i].prob; u < 0 {
			return sorted[i].id
		}
	}
}

// byRank is a heap of candidates (heapify, down).
type byRank []candidate

// better orders candidates best first: logit descending, id ascending.
func better(a, b candidate) bool { return a.logit > b.logit || (a.logit == b.logit && a.id < b.id) }

// before orders heap entries: better first, or with worst the worst
// first (the top-k heap keeps its worst at the root). A flag rather than a
// func value, so the comparison inlines.
func before(a, b candidate, worst bool) bool {
	if worst {
		return better(b, a)
	}
	return better(a, b)
}

// heapify makes h a heap under before.
func heapify(h byRank, worst bool) {
	for i := len(h)/2 - 1; i >= 0; i-- {
		down(h, i, worst)
	}
}

// down restores the heap order below i.
func down(h byRank, i int, worst bool) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && before(h[r], h[l], worst) {
			m = r
		}
		if !before(h[m], h[i], worst) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

func softmax(c []candidate, temperature float64) {
	mx := float64(c[0].logit) / temperature
	var sum float64
	for i := range c {
		e := math.Exp(float64(c[i].logit)/temperature - mx)
		c[i].prob = e
		sum += e
	}
	for i := range c {
		c[i].prob /= sum
	}
}

func renormalize(c []candidate) {
	var sum float64
	for _, x := range c {
		sum += x.prob
	}
	for i := range c {
		c[i].prob /= sum
	}
}
