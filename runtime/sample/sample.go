// Package sample picks the next token from logits: greedy, or sampling with
// temperature, top-k, top-p (nucleus), min-p and a repetition penalty, from a
// seeded generator so runs are reproducible.
package sample

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
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
	p    Params
	rng  *rand.Rand
	cand []candidate
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
	sort.Slice(c, func(i, j int) bool {
		if c[i].logit != c[j].logit {
			return c[i].logit > c[j].logit
		}
		return c[i].id < c[j].id
	})
	if p.TopK > 0 && p.TopK < len(c) {
		c = c[:p.TopK]
	}
	softmax(c, p.Temperature)
	if p.TopP > 0 && p.TopP < 1 {
		cum, keep := 0.0, len(c)
		for i := range c {
			cum += c[i].prob
			if cum >= p.TopP {
				keep = i + 1
				break
			}
		}
		c = c[:keep]
		renormalize(c)
	}
	if p.MinP > 0 {
		limit := p.MinP * c[0].prob
		keep := 1
		for keep < len(c) && c[keep].prob >= limit {
			keep++
		}
		c = c[:keep]
		renormalize(c)
	}
	s.cand = c
	u := s.rng.Float64()
	for _, x := range c {
		u -= x.prob
		if u < 0 {
			return x.id
		}
	}
	return c[len(c)-1].id
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
