package flashhead

import (
	"math/rand/v2"

	"github.com/fhkit/fhkit/runtime/cpu"
)

// WithOrder sets the greedy placement order of the balanced assignment
// ("margin", "score", "index"), for the comparisons of the tests.
func WithOrder(o Options, order string) Options {
	o.order = order
	return o
}

// RandomBalanced returns a Head whose clusters are a seeded random
// partition of the rows (same capacities as Build): the baseline.
func RandomBalanced(head cpu.Mat, cap_ int, seed uint64) *Head {
	V := head.Rows
	K := (V + cap_ - 1) / cap_
	caps := capacities(V, K, cap_)
	perm := rand.New(rand.NewPCG(seed, 1)).Perm(V)
	assign := make([]int32, V)
	i := 0
	for k, n := range caps {
		for j := 0; j < n; j++ {
			assign[perm[i]] = int32(k)
			i++
		}
	}
	p := cpu.NewPool(0)
	defer p.Close()
	h := assemble(p, head, assign, K, cap_)
	h.Probes = min(DefaultProbes, K)
	h.Source = "random"
	return h
}
