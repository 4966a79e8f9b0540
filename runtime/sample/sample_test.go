package sample

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestGreedySmallestIDOnTies(t *testing.T) {
	s := New(Params{})
	if got := s.Next([]float32{1, 3, 3, 2}, nil); got != 1 {
		t.Errorf("greedy = %d, want 1", got)
	}
}

// The empirical distribution of many draws must match the filtered,
// renormalised probabilities computed by hand.
func TestDistributions(t *testing.T) {
	logits := []float32{2, 1, 0.5, 0, -1}
	probs := func(temp float64, keep int) []float64 {
		var sum float64
		out := make([]float64, len(logits))
		for i := 0; i < keep; i++ {
			out[i] = math.Exp(float64(logits[i]) / temp)
			sum += out[i]
		}
		for i := range out {
			out[i] /= sum
		}
		return out
	}
	full := probs(0.7, 5)
	cases := []struct {
		name string
		p    Params
		want []float64
	}{
		{"temperature", Params{Temperature: 0.7}, full},
		{"top-k 2", Params{Temperature: 0.7, TopK: 2}, probs(0.7, 2)},
		// top-p 0.8: the first two carry full[0]+full[1] < 0.8? pick by computation below.
		{"min-p", Params{Temperature: 0.7, MinP: 0.2}, nil},
	}
	// top-p: smallest prefix reaching 0.8.
	cum, k := 0.0, 0
	for k < len(full) {
		cum += full[k]
		k++
		if cum >= 0.8 {
			break
		}
	}
	cases = append(cases, struct {
		name string
		p    Params
		want []float64
	}{"top-p 0.8", Params{Temperature: 0.7, TopP: 0.8}, probs(0.7, k)})
	// min-p 0.2: keep tokens with prob >= 0.2 * max.
	keep := 0
	for keep < len(full) && full[keep] >= 0.2*full[0] {
		keep++
	}
	cases[2].want = probs(0.7, keep)
	for _, c := range cases {
		s := New(Params{Temperature: c.p.Temperature, TopK: c.p.TopK, TopP: c.p.TopP, MinP: c.p.MinP, Seed: 42})
		const n = 200000
		counts := make([]float64, len(logits))
		for i := 0; i < n; i++ {
			l := append([]float32(nil), logits...)
			counts[s.Next(l, nil)]++
		}
		for i := range counts {
			got := counts[i] / n
			if math.Abs(got-c.want[i]) > 0.006 {
				t.Errorf("%s: token %d frequency %.4f, want %.4f", c.name, i, got, c.want[i])
			}
		}
	}
}

func TestSeedReproducible(t *testing.T) {
	logits := []float32{0.1, 0.2, 0.3, 0.25, 0.15}
	draw := func(seed uint64) []int {
		s := New(Params{Temperature: 1, Seed: seed})
		var out []int
		for i := 0; i < 50; i++ {
			out = append(out, s.Next(append([]float32(nil), logits...), nil))
		}
		return out
	}
	a, b, c := draw(7), draw(7), draw(8)
	same := true
	for i := range a {
		if a[i] != b[i] {
			t.Fatal("same seed gave different tokens")
		}
		same = same && a[i] == c[i]
	}
	if same {
		t.Error("different seeds gave identical sequences")
	}
}

func TestRepetitionPenalty(t *testing.T) {
	s := New(Params{RepetitionPenalty: 2})
	l := []float32{4, 3, -1}
	if got := s.Next(l, []int{0, 2}); got != 1 {
		t.Errorf("penalised greedy = %d, want 1 (4/2 < 3)", got)
	}
	if l[0] != 2 || l[2] != -2 {
		t.Errorf("penalty applied as %v, want [2 3 -2]", l)
	}
}

func TestValidate(t *testing.T) {
	for _, p := range []Params{{Temperature: -1}, {TopP: 1.5}, {TopK: -2}, {MinP: 2}, {RepetitionPenalty: -1}} {
		if p.Validate() == nil {
			t.Errorf("%+v accepted", p)
		}
	}
}

// BenchmarkNext times one temperature-1 draw over a whole vocabulary of
// random logits (the dense head's sampling path), and with top-k 40.
func BenchmarkNext(b *testing.B) {
	for _, V := range []int{512, 32768, 262144} {
		logits := make([]float32, V)
		r := rand.New(rand.NewPCG(uint64(V), 1))
		for i := range logits {
			logits[i] = float32(r.NormFloat64() * 3)
		}
		for _, p := range []Params{{Temperature: 1, Seed: 1}, {Temperature: 1, TopK: 40, Seed: 1}} {
			s := New(p)
			b.Run(fmt.Sprintf("V=%d/topk=%d", V, p.TopK), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					s.Next(logits, nil)
				}
			})
		}
	}
}

// byLogitThenID orders candidates logit descending, id ascending.
func byLogitThenID(a, b candidate) int {
	switch {
	case a.logit > b.logit:
		return -1
	case a.logit < b.logit:
		return 1
	}
	return a.id - b.id
}

// referenceDraw is the draw spelled out with a full sort of the
// candidates (logit descending, id ascending), the probabilities over the
// candidates left after top-k with their sum taken in id order, then top-p,
// min-p and the walk: what draw computes lazily.
func referenceDraw(p Params, logits []float32, u float64) int {
	c := make([]candidate, len(logits))
	for id, l := range logits {
		c[id] = candidate{id: id, logit: l}
	}
	if p.TopK > 0 && p.TopK < len(c) {
		sorted := slices.Clone(c)
		slices.SortFunc(sorted, byLogitThenID)
		keep := sorted[:p.TopK]
		slices.SortFunc(keep, func(a, b candidate) int { return a.id - b.id }) // id order for the sum
		c = keep
	}
	mx := math.Inf(-1)
	for _, x := range c {
		mx = max(mx, float64(x.logit)/p.Temperature)
	}
	var sum float64
	for _, x := range c {
		sum += math.Exp(float64(x.logit)/p.Temperature - mx)
	}
	for i := range c {
		c[i].prob = math.Exp(float64(c[i].logit)/p.Temperature-mx) / sum
	}
	slices.SortFunc(c, byLogitThenID)
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
		limit, keep := p.MinP*c[0].prob, 1
		for keep < len(c) && c[keep].prob >= limit {
			keep++
		}
		c = c[:keep]
		renormalize(c)
	}
	for _, x := range c {
		if u -= x.prob; u < 0 {
			return x.id
		}
	}
	return c[len(c)-1].id
}

// draw gives referenceDraw's token for every combination of temperature,
// top-k, top-p and min-p on random logits with many ties, draw after draw.
func TestDrawMatchesFullSort(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	for trial := 0; trial < 300; trial++ {
		V := 1 + r.IntN(3000)
		logits := make([]float32, V)
		for i := range logits {
			logits[i] = float32(r.IntN(40)) / 4 // ties
			if trial%2 == 0 {
				logits[i] = float32(r.NormFloat64() * 3)
			}
		}
		p := Params{
			Temperature: []float64{0.5, 1, 1.7}[r.IntN(3)],
			TopK:        []int{0, 1, 5, 50, V + 3}[r.IntN(5)],
			TopP:        []float64{0, 0.3, 0.9, 1}[r.IntN(4)],
			MinP:        []float64{0, 0.05, 0.3}[r.IntN(3)],
			Seed:        uint64(trial),
		}
		s, ref := New(p), New(p)
		for d := 0; d < 5; d++ {
			got := s.Next(slices.Clone(logits), nil)
			want := referenceDraw(p, logits, ref.rng.Float64())
			if got != want {
				t.Fatalf("trial %d %+v V=%d draw %d: %d, full sort %d", trial, p, V, d, got, want)
			}
		}
	}
}
