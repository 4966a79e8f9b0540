package sample

import (
	"math"
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
