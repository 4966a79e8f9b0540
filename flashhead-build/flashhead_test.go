package flashhead

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/runtime/cpu"
)

// matrix returns a [V, D] head in dt from float32 values.
func matrix(t testing.TB, vals []float32, V, D int, dt dtype.DType) cpu.Mat {
	t.Helper()
	b := make([]byte, len(vals)*dt.Size())
	if err := dtype.EncodeFloats(b, vals, dt); err != nil {
		t.Fatal(err)
	}
	m, err := cpu.NewMat(V, D, dt, b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// gaussian returns V x D standard normal values.
func gaussian(V, D int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 7))
	x := make([]float32, V*D)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

// planted returns V rows around `dirs` random unit directions (V/dirs rows
// each, row v around direction v % dirs, shuffled so that labels are not
// contiguous), with noise of norm about `noise`, and random row norms in
// [0.5, 2] (as real heads have). It returns the label of each row.
func planted(V, D, dirs int, noise float64, seed uint64) ([]float32, []int) {
	r := rand.New(rand.NewPCG(seed, 9))
	centre := gaussian(dirs, D, seed+100)
	for k := 0; k < dirs; k++ {
		normalise(centre[k*D : (k+1)*D])
	}
	x := make([]float32, V*D)
	label := make([]int, V)
	perm := r.Perm(V)
	for i := 0; i < V; i++ {
		v := perm[i]
		k := i % dirs
		label[v] = k
		scale := 0.5 + 1.5*r.Float64()
		row := x[v*D : (v+1)*D]
		for d := range row {
			row[d] = float32(scale * (float64(centre[k*D+d]) + noise*r.NormFloat64()/math.Sqrt(float64(D))))
		}
	}
	return x, label
}

// purity is the mean over clusters of the share of the cluster's real
// members that carry its most common label.
func purity(h *Head, label []int) float64 {
	var sum float64
	for k := 0; k < h.NumClusters; k++ {
		count := map[int]int{}
		n, best := 0, 0
		for _, v := range h.VocabMap[k*h.ClusterSize : (k+1)*h.ClusterSize] {
			if v >= 0 {
				count[label[v]]++
				n++
				best = max(best, count[label[v]])
			}
		}
		sum += float64(best) / float64(n)
	}
	return sum / float64(h.NumClusters)
}

// checkStructure asserts the layout invariants of SPEC.md directly.
func checkStructure(t *testing.T, h *Head, V, cap_ int) {
	checkLayout(t, h, V, cap_, true)
}

// checkLayout is checkStructure, the centroid check optional (an imported
// head keeps the cache's centroids).
func checkLayout(t *testing.T, h *Head, V, cap_ int, centroids bool) {
	t.Helper()
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	K := (V + cap_ - 1) / cap_
	if h.NumClusters != K || h.ClusterSize != cap_ || len(h.VocabMap) != K*cap_ {
		t.Fatalf("K %d cap %d slots %d, want K %d cap %d", h.NumClusters, h.ClusterSize, len(h.VocabMap), K, cap_)
	}
	seen := make([]int, V)
	pads := 0
	for k := 0; k < K; k++ {
		slots := h.VocabMap[k*cap_ : (k+1)*cap_]
		real := 0
		for s, v := range slots {
			if v < 0 {
				pads++
				continue
			}
			if s > 0 && (slots[s-1] < 0 || slots[s-1] >= v) {
				t.Fatalf("cluster %d: slot %d (%d) follows %d", k, s, v, slots[s-1])
			}
			seen[v]++
			real++
		}
		// Padding: one slot each in the last clusters.
		wantReal := capacities(V, K, cap_)[k]
		if real != wantReal {
			t.Errorf("cluster %d has %d real slots, want %d", k, real, wantReal)
		}
	}
	for v, n := range seen {
		if n != 1 {
			t.Fatalf("vocab id %d appears %d times", v, n)
		}
	}
	if pads != K*cap_-V || h.PaddingSlots() != pads {
		t.Errorf("%d padding slots, want %d", pads, K*cap_-V)
	}
	// w_perm: row k*cap+s is the row of vocab_map[k][s]; padding rows zero.
	w := h.WPerm()
	rb := h.Dim * h.Rows.DType.Size()
	if len(w) != K*cap_*rb {
		t.Fatalf("w_perm has %d bytes, want %d", len(w), K*cap_*rb)
	}
	for i, v := range h.VocabMap {
		got := w[i*rb : (i+1)*rb]
		if v < 0 {
			if !bytes.Equal(got, make([]byte, rb)) {
				t.Fatalf("padding slot %d: w_perm row is not zero", i)
			}
		} else if !bytes.Equal(got, h.Rows.Data[int(v)*rb:(int(v)+1)*rb]) {
			t.Fatalf("slot %d: w_perm row is not head row %d", i, v)
		}
	}
	if !centroids {
		return
	}
	// Centroids: the mean of the members in the original scale.
	row := make([]float32, h.Dim)
	for _, k := range []int{0, K - 1} {
		mean := make([]float64, h.Dim)
		n := 0
		for _, v := range h.VocabMap[k*cap_ : (k+1)*cap_] {
			if v >= 0 {
				h.Rows.RowF32(row, int(v))
				for d, x := range row {
					mean[d] += float64(x)
				}
				n++
			}
		}
		for d := range mean {
			if got, want := h.Centroids[k*h.Dim+d], float32(mean[d]/float64(n)); math.Abs(float64(got-want)) > 1e-6*(1+math.Abs(float64(want))) {
				t.Fatalf("centroid %d[%d] = %g, want the member mean %g", k, d, got, want)
			}
		}
	}
}

func TestLayout(t *testing.T) {
	for _, tc := range []struct {
		name       string
		V, D, cap_ int
		dt         dtype.DType
		search     string
	}{
		{"V1000-cap16-padding", 1000, 24, 16, dtype.BF16, ""},
		{"V1024-cap16", 1024, 24, 16, dtype.F32, ""},
		{"V1000-cap16-graph", 1000, 24, 16, dtype.F16, SearchGraph},
		{"V17-cap16", 17, 8, 16, dtype.BF16, ""},
		{"V5-cap16-one-cluster", 5, 8, 16, dtype.F32, ""},
		{"V40-cap1", 40, 8, 1, dtype.F32, ""},
		{"V3000-cap7-graph", 3000, 16, 7, dtype.BF16, SearchGraph},
	} {
		t.Run(tc.name, func(t *testing.T) {
			head := matrix(t, gaussian(tc.V, tc.D, 1), tc.V, tc.D, tc.dt)
			h, err := Build(head, Options{ClusterSize: tc.cap_, Search: tc.search, Seed: 3, SpecialTokenIDs: []int{2, 1, 2, -5, tc.V}})
			if err != nil {
				t.Fatal(err)
			}
			checkStructure(t, h, tc.V, tc.cap_)
			if want := SpecialIDs([]int{2, 1}, tc.V); !slices.Equal(h.SpecialTokenIDs, want) {
				t.Errorf("special ids %v, want %v (deduplicated, in range)", h.SpecialTokenIDs, want)
			}
			if want := max(1, min(DefaultProbes, (h.NumClusters+1)/2)); h.Probes != want {
				t.Errorf("probes %d, want %d (256, at most half of K)", h.Probes, want)
			}
		})
	}
}

func TestCapacities(t *testing.T) {
	for _, c := range [][3]int{{1000, 63, 16}, {1024, 64, 16}, {17, 2, 16}, {5, 1, 16}, {262144, 16384, 16}, {151936, 9496, 16}, {100, 34, 3}} {
		V, K, cap_ := c[0], c[1], c[2]
		caps := capacities(V, K, cap_)
		sum := 0
		for k, n := range caps {
			sum += n
			if n < 1 || n > cap_ || (k > 0 && n > caps[k-1]) {
				t.Errorf("V %d K %d cap %d: capacities %v", V, K, cap_, caps)
				break
			}
		}
		if sum != V {
			t.Errorf("V %d K %d cap %d: capacities sum to %d", V, K, cap_, sum)
		}
	}
}

func headBytes(h *Head) []byte {
	var b []byte
	for _, v := range h.VocabMap {
		b = binary.LittleEndian.AppendUint32(b, uint32(v))
	}
	for _, x := range h.Centroids {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return append(b, h.WPerm()...)
}

// TestDeterminism: the same seed gives the same head whatever the number of
// threads; another seed gives another head.
func TestDeterminism(t *testing.T) {
	for _, search := range []string{SearchExact, SearchGraph} {
		x, _ := planted(4000, 32, 100, 1.0, 5)
		head := matrix(t, x, 4000, 32, dtype.BF16)
		build := func(seed uint64, threads int) []byte {
			h, err := Build(head, Options{Seed: seed, Threads: threads, Search: search})
			if err != nil {
				t.Fatal(err)
			}
			return headBytes(h)
		}
		a, b, c := build(1, 1), build(1, 2), build(1, 3)
		if !bytes.Equal(a, b) || !bytes.Equal(a, c) {
			t.Errorf("%s: seed 1 gives different heads with 1, 2 and 3 threads", search)
		}
		if bytes.Equal(a, build(2, 2)) {
			t.Errorf("%s: seeds 1 and 2 give the same head", search)
		}
	}
}

// TestPlantedClusters: rows around 64 random directions (16 rows each, with
// random norms) must come back as their 64 groups, far above a random
// balanced partition.
func TestPlantedClusters(t *testing.T) {
	for _, tc := range []struct {
		name          string
		V, D, dirs    int
		noise         float64
		search        string
		minPurity     float64
		minCosineGain float64
	}{
		// cos(row, direction) is about 0.7 at noise 1.
		{"64-directions-exact", 1024, 64, 64, 1.0, SearchExact, 0.99, 0.3},
		{"64-directions-graph", 1024, 64, 64, 1.0, SearchGraph, 0.99, 0.3},
		{"1024-directions-graph", 16384, 96, 1024, 1.0, SearchGraph, 0.75, 0.3},
		{"1024-directions-exact", 16384, 96, 1024, 1.0, SearchExact, 0.97, 0.3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testing.Short() && tc.V > 2000 {
				t.Skip("large case skipped in -short mode")
			}
			x, label := planted(tc.V, tc.D, tc.dirs, tc.noise, 11)
			head := matrix(t, x, tc.V, tc.D, dtype.F32)
			h, err := Build(head, Options{Seed: 1, Search: tc.search})
			if err != nil {
				t.Fatal(err)
			}
			checkStructure(t, h, tc.V, 16)
			rnd := RandomBalanced(head, 16, 1)
			p, pr := purity(h, label), purity(rnd, label)
			t.Logf("purity %.4f (random partition %.4f), mean cosine %.4f (random %.4f), %.2f s", p, pr, h.MeanCosine, rnd.MeanCosine, h.Seconds)
			if p < tc.minPurity {
				t.Errorf("purity %.4f, want >= %.2f", p, tc.minPurity)
			}
			if h.MeanCosine < rnd.MeanCosine+tc.minCosineGain {
				t.Errorf("mean cosine %.4f is not well above a random partition's %.4f", h.MeanCosine, rnd.MeanCosine)
			}
		})
	}
}

func TestBuildErrors(t *testing.T) {
	head := matrix(t, gaussian(64, 8, 1), 64, 8, dtype.F32)
	for _, o := range []Options{
		{ClusterSize: -1}, {Probes: -2}, {Iterations: -1}, {Candidates: 1}, {Search: "fast"},
	} {
		if _, err := Build(head, o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
	bad := head
	bad.Data = bad.Data[:10]
	if _, err := Build(bad, Options{}); err == nil {
		t.Error("short head data: no error")
	}
}

func TestApportion(t *testing.T) {
	for _, c := range []struct {
		sizes []int
		total int
	}{
		{[]int{10, 0, 5, 1, 100}, 20},
		{[]int{3, 3, 3}, 9},
		{[]int{3, 3, 3}, 3},
		{[]int{1000, 1, 1, 1}, 10},
	} {
		got := apportion(c.sizes, c.total)
		sum := 0
		for j, n := range got {
			sum += n
			if c.sizes[j] > 0 && (n < 1 || n > c.sizes[j]) || c.sizes[j] == 0 && n != 0 {
				t.Errorf("apportion(%v, %d) = %v", c.sizes, c.total, got)
			}
		}
		if sum != c.total {
			t.Errorf("apportion(%v, %d) = %v sums to %d", c.sizes, c.total, got, sum)
		}
	}
}
