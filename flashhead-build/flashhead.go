// Package flashhead builds a FlashHead: it partitions the V rows of a
// model's LM head into K clusters of exactly ClusterSize slots by spherical
// balanced k-means, and stores the centroids, the cluster table and the head
// rows in cluster order as the .fhm FlashHead tensors (formats/fhm/SPEC.md).
// It also reads and writes the clustering cache of the reference vLLM
// plugin (embedl/flash-head), so a head clustered by either tool can be used
// by the other.
//
// The method, the choices behind it and the measured quality and speed are
// in README.md next to this file.
package flashhead

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/runtime/cpu"
)

// Defaults of Options.
const (
	DefaultClusterSize     = 16
	DefaultProbes          = 256
	DefaultIterations      = 8
	DefaultLloydIterations = 6
	DefaultCandidates      = 48
)

// Search strategies of Options.Search.
const (
	// SearchAuto scores every cluster when one such pass is cheap (V*K*D
	// at most 4e9 multiply-adds) and uses the graph search otherwise.
	SearchAuto = "auto"
	// SearchExact scores every row against every centroid in each pass.
	SearchExact = "exact"
	// SearchGraph scores every row only against the centroid-graph
	// neighbours of its current cluster, after a two-level initialisation.
	SearchGraph = "graph"
)

// DefaultProbesFor returns the default probes for K clusters: 256 (the
// reference plugin's shipped setting, a few percent of the clusters of a
// 128k-262k vocabulary), but at most half the clusters, so a small
// vocabulary still skips half its head (stories260K: K 32 -> 16 probes,
// which keeps top-1 agreement with the dense head at 1.0 there).
func DefaultProbesFor(K int) int { return max(1, min(DefaultProbes, (K+1)/2)) }

// Options control Build. Zero values select the defaults.
type Options struct {
	// ClusterSize is cap, the number of slots of every cluster (16).
	ClusterSize int
	// Probes is the default number of clusters stage 2 scores (0 selects
	// DefaultProbesFor(K)).
	Probes int
	// Iterations is the number of balanced assignment iterations (8); they
	// stop early when no row moves.
	Iterations int
	// LloydIterations is the number of unconstrained spherical k-means
	// iterations before the balanced ones (6; negative for none).
	LloydIterations int
	// Candidates is m, the number of clusters each row is scored against
	// in the balanced iterations (48, at most K).
	Candidates int
	// Search is SearchAuto (default), SearchExact or SearchGraph.
	Search string
	// Seed makes the clustering reproducible: the same rows, options, and
	// seed give the same Head whatever the number of threads.
	Seed uint64
	// Threads is the number of threads when Pool is nil (0: all cores).
	Threads int
	// Pool, if set, runs the work (and Threads is ignored).
	Pool *cpu.Pool
	// SpecialTokenIDs are recorded as always-scored ids (the model's EOS
	// ids); ids outside the vocabulary are dropped, as the reference does.
	SpecialTokenIDs []int
	// Progress, if set, is called after each step with the stage name
	// ("coarse", "init", "lloyd", "balance", "done") and the estimated
	// work done and total (in millions of multiply-adds).
	Progress func(stage string, done, total int)

	// order is the greedy placement order of the balanced assignment:
	// "margin" (default), "score" or "index" (set by tests, to compare).
	order string
}

// Head is a clustered LM head: everything the three .fhm FlashHead tensors
// and the metadata hold.
type Head struct {
	// Vocab (V) and Dim (D) are the head's shape.
	Vocab, Dim int
	// NumClusters (K) clusters of ClusterSize (cap) slots; K*cap >= V.
	NumClusters, ClusterSize int
	// Centroids is [K, D]: the mean of each cluster's member rows in their
	// original scale.
	Centroids []float32
	// VocabMap is [K, cap]: the vocab ids of each cluster, ascending, then
	// -1 for its padding slots.
	VocabMap []int32
	// Rows is the head [V, D] the clusters index (w_perm is gathered from it).
	Rows cpu.Mat
	// Probes is the default number of probed clusters.
	Probes int
	// SpecialTokenIDs are always scored in stage 2.
	SpecialTokenIDs []int
	// MeanCosine is the mean over the vocabulary of the cosine between a
	// row and its cluster's centroid.
	MeanCosine float64
	// Source is "kmeans" (Build) or "embedl" (imported cache).
	Source string
	// Seed and Iterations (Lloyd + balanced iterations run) record how a
	// built head was made.
	Seed       uint64
	Iterations int
	// Seconds is the clustering's wall time (not stored in .fhm files).
	Seconds float64
}

// Build clusters the rows of head ([V, D], BF16, F16 or F32).
func Build(head cpu.Mat, opts Options) (*Head, error) {
	start := time.Now()
	V, D := head.Rows, head.Cols
	if V < 1 || D < 1 {
		return nil, fmt.Errorf("head has shape [%d, %d]", V, D)
	}
	if _, err := cpu.NewMat(V, D, head.DType, head.Data); err != nil {
		return nil, fmt.Errorf("head: %w", err)
	}
	if opts.ClusterSize == 0 {
		opts.ClusterSize = DefaultClusterSize
	}
	if opts.ClusterSize < 1 {
		return nil, fmt.Errorf("cluster size %d: must be at least 1", opts.ClusterSize)
	}
	if opts.Probes < 0 {
		return nil, fmt.Errorf("probes %d: must be at least 1", opts.Probes)
	}
	if opts.Iterations == 0 {
		opts.Iterations = DefaultIterations
	}
	if opts.Iterations < 1 {
		return nil, fmt.Errorf("iterations %d: must be at least 1", opts.Iterations)
	}
	switch {
	case opts.LloydIterations == 0:
		opts.LloydIterations = DefaultLloydIterations
	case opts.LloydIterations < 0:
		opts.LloydIterations = 0
	}
	if opts.Candidates == 0 {
		opts.Candidates = DefaultCandidates
	}
	if opts.Candidates < 2 {
		return nil, fmt.Errorf("candidates %d: must be at least 2", opts.Candidates)
	}
	cap_ := opts.ClusterSize
	K := (V + cap_ - 1) / cap_
	exact := false
	switch opts.Search {
	case "", SearchAuto:
		exact = float64(V)*float64(K)*float64(D) <= exactBudget || K < 4
	case SearchExact:
		exact = true
	case SearchGraph:
		if K < 4 {
			exact = true
		}
	default:
		return nil, fmt.Errorf("search %q: want %q, %q or %q", opts.Search, SearchAuto, SearchExact, SearchGraph)
	}
	pool := opts.Pool
	if pool == nil {
		pool = cpu.NewPool(opts.Threads)
		defer pool.Close()
	}

	c := &clusterer{
		pool: pool, V: V, D: D, K: K, seed: opts.Seed,
		m: min(opts.Candidates, K), exact: exact,
		caps: capacities(V, K, cap_), assign: make([]int32, V), order: opts.order,
	}
	c.X = normalisedRows(pool, head)
	c.prog = &progress{fn: opts.Progress}
	c.prog.total = c.estTotal(opts.LloydIterations, opts.Iterations)
	if K == 1 {
		c.C = make([]float32, D) // a single cluster holds every row
		c.prog.finish()
	} else {
		c.run(opts.LloydIterations, opts.Iterations)
	}

	h := assemble(pool, head, c.assign, K, cap_)
	h.Probes = min(opts.Probes, K)
	if opts.Probes == 0 {
		h.Probes = DefaultProbesFor(K)
	}
	h.SpecialTokenIDs = SpecialIDs(opts.SpecialTokenIDs, V)
	h.Source = "kmeans"
	h.Seed = opts.Seed
	h.Iterations = c.lloydDone + c.balancedDone
	h.Seconds = time.Since(start).Seconds()
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("internal error: %w", err)
	}
	return h, nil
}

// capacities returns the number of real rows of each of the K clusters of
// cap slots holding V rows: the K*cap - V padding slots go one per cluster
// to the last clusters (more than one only when there are more padding
// slots than clusters).
func capacities(V, K, cap_ int) []int {
	pad := K*cap_ - V
	caps := make([]int, K)
	for k := range caps {
		caps[k] = cap_ - pad/K
		if k >= K-pad%K {
			caps[k]--
		}
	}
	return caps
}

// SpecialIDs returns the ids inside [0, V), without duplicates, in order
// (ids outside the vocabulary are dropped, as the reference plugin does).
func SpecialIDs(ids []int, V int) []int {
	out := []int{}
	for _, id := range ids {
		if id >= 0 && id < V && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// normalisedRows returns the head rows as float32, each scaled to unit L2
// norm (zero rows stay zero).
func normalisedRows(p *cpu.Pool, head cpu.Mat) []float32 {
	V, D := head.Rows, head.Cols
	X := make([]float32, V*D)
	p.For(V, 1024, func(lo, hi int) {
		for v := lo; v < hi; v++ {
			row := X[v*D : (v+1)*D]
			head.RowF32(row, v)
			normalise(row)
		}
	})
	return X
}

// normalise scales x to unit L2 norm (sum in float64; zero stays zero).
func normalise(x []float32) {
	var n float64
	for _, v := range x {
		n += float64(v) * float64(v)
	}
	if n > 0 {
		s := 1 / math.Sqrt(n)
		for i, v := range x {
			x[i] = float32(float64(v) * s)
		}
	}
}

// assemble builds the Head of an assignment: members of each cluster in
// ascending vocab id, padding (-1) after them, centroids as the mean of the
// member rows in their original scale, and the mean cosine.
func assemble(p *cpu.Pool, head cpu.Mat, assign []int32, K, cap_ int) *Head {
	V, D := head.Rows, head.Cols
	h := &Head{Vocab: V, Dim: D, NumClusters: K, ClusterSize: cap_, Rows: head,
		VocabMap: make([]int32, K*cap_), Centroids: make([]float32, K*D)}
	for i := range h.VocabMap {
		h.VocabMap[i] = -1
	}
	fill := make([]int, K)
	for v, k := range assign { // ascending v: members end up sorted
		h.VocabMap[int(k)*cap_+fill[k]] = int32(v)
		fill[k]++
	}
	h.computeCentroids(p)
	h.MeanCosine = h.meanCosine(p)
	return h
}

// computeCentroids sets every centroid to the mean of its member rows
// (float64 sums in slot order, so the result is deterministic).
func (h *Head) computeCentroids(p *cpu.Pool) {
	D, cap_ := h.Dim, h.ClusterSize
	p.For(h.NumClusters, 64, func(lo, hi int) {
		row := make([]float32, D)
		acc := make([]float64, D)
		for k := lo; k < hi; k++ {
			clear(acc)
			n := 0
			for _, v := range h.VocabMap[k*cap_ : (k+1)*cap_] {
				if v < 0 {
					continue
				}
				h.Rows.RowF32(row, int(v))
				for d, x := range row {
					acc[d] += float64(x)
				}
				n++
			}
			for d := range acc {
				if n > 0 {
					h.Centroids[k*D+d] = float32(acc[d] / float64(n))
				}
			}
		}
	})
}

// meanCosine returns the mean over the real rows of cos(row, centroid of
// its cluster) (a zero row or centroid counts as 0).
func (h *Head) meanCosine(p *cpu.Pool) float64 {
	D, cap_, K := h.Dim, h.ClusterSize, h.NumClusters
	sums := make([]float64, K)
	p.For(K, 64, func(lo, hi int) {
		row := make([]float32, D)
		c := make([]float32, D)
		for k := lo; k < hi; k++ {
			copy(c, h.Centroids[k*D:(k+1)*D])
			normalise(c)
			for _, v := range h.VocabMap[k*cap_ : (k+1)*cap_] {
				if v < 0 {
					continue
				}
				h.Rows.RowF32(row, int(v))
				normalise(row)
				var s float64
				for d, x := range row {
					s += float64(x) * float64(c[d])
				}
				sums[k] += s
			}
		}
	})
	var t float64
	for _, s := range sums {
		t += s
	}
	return t / float64(h.Vocab)
}

// Assignments returns the cluster of every vocab id ([V]).
func (h *Head) Assignments() []int32 {
	a := make([]int32, h.Vocab)
	for i, v := range h.VocabMap {
		if v >= 0 {
			a[v] = int32(i / h.ClusterSize)
		}
	}
	return a
}

// PaddingSlots returns K*cap - V.
func (h *Head) PaddingSlots() int { return h.NumClusters*h.ClusterSize - h.Vocab }

// Metadata returns the .fhm metadata of the head.
func (h *Head) Metadata() fhm.FlashHead {
	ids := slices.Clone(h.SpecialTokenIDs)
	if ids == nil {
		ids = []int{}
	}
	return fhm.FlashHead{
		ClusterSize: h.ClusterSize, NumClusters: h.NumClusters, Probes: h.Probes,
		SpecialTokenIDs: ids, Source: h.Source, Seed: h.Seed, Iterations: h.Iterations,
		MeanCosine: h.MeanCosine,
	}
}

// Validate checks the head's invariants: shapes, every cluster has exactly
// cap slots with its real ids ascending before its padding, every vocab id
// appears exactly once, K = ceil(V / cap), and the special ids are in range.
func (h *Head) Validate() error {
	V, D, K, cap_ := h.Vocab, h.Dim, h.NumClusters, h.ClusterSize
	if V < 1 || D < 1 || cap_ < 1 || K < 1 {
		return fmt.Errorf("flashhead: invalid shape V=%d D=%d K=%d cap=%d", V, D, K, cap_)
	}
	if K != (V+cap_-1)/cap_ {
		return fmt.Errorf("flashhead: %d clusters of %d slots for %d rows: want ceil(V/cap) = %d clusters", K, cap_, V, (V+cap_-1)/cap_)
	}
	if len(h.VocabMap) != K*cap_ || len(h.Centroids) != K*D {
		return fmt.Errorf("flashhead: vocab map has %d slots (want %d), centroids %d values (want %d)", len(h.VocabMap), K*cap_, len(h.Centroids), K*D)
	}
	if h.Rows.Rows != V || h.Rows.Cols != D {
		return fmt.Errorf("flashhead: head rows are [%d, %d], want [%d, %d]", h.Rows.Rows, h.Rows.Cols, V, D)
	}
	seen := make([]bool, V)
	for k := 0; k < K; k++ {
		prev := int32(-1)
		pad := false
		real := 0
		for s, v := range h.VocabMap[k*cap_ : (k+1)*cap_] {
			switch {
			case v == -1:
				pad = true
			case v < -1 || int(v) >= V:
				return fmt.Errorf("flashhead: cluster %d slot %d: vocab id %d outside [0, %d)", k, s, v, V)
			case pad:
				return fmt.Errorf("flashhead: cluster %d slot %d: vocab id %d after a padding slot", k, s, v)
			case v <= prev:
				return fmt.Errorf("flashhead: cluster %d slot %d: vocab ids not ascending (%d after %d)", k, s, v, prev)
			case seen[v]:
				return fmt.Errorf("flashhead: vocab id %d is in two slots", v)
			default:
				seen[v] = true
				prev = v
				real++
			}
		}
		if real == 0 {
			return fmt.Errorf("flashhead: cluster %d has no vocab id", k)
		}
	}
	for v, ok := range seen {
		if !ok {
			return fmt.Errorf("flashhead: vocab id %d is in no cluster", v)
		}
	}
	for _, id := range h.SpecialTokenIDs {
		if id < 0 || id >= V {
			return fmt.Errorf("flashhead: special token id %d outside [0, %d)", id, V)
		}
	}
	if h.Probes < 1 || h.Probes > K {
		return fmt.Errorf("flashhead: %d probes, want 1..%d", h.Probes, K)
	}
	for i, x := range h.Centroids {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return fmt.Errorf("flashhead: centroid %d has a non-finite value", i/D)
		}
	}
	return nil
}

// HeadMatrix returns the LM head rows of a .fhm file: lm_head.weight when
// present, else the tied model.embed_tokens.weight, with the tensor name.
func HeadMatrix(f *fhm.File) (cpu.Mat, string, error) {
	name := "lm_head.weight"
	t, ok := f.Tensor(name)
	if !ok {
		name = "model.embed_tokens.weight"
		if t, ok = f.Tensor(name); !ok {
			return cpu.Mat{}, "", fmt.Errorf("%s: neither lm_head.weight nor model.embed_tokens.weight: no LM head", f.Path)
		}
	}
	if len(t.Info.Shape) != 2 {
		return cpu.Mat{}, "", fmt.Errorf("%s: %s has shape %v, want [vocab, hidden]", f.Path, name, t.Info.Shape)
	}
	V, D := int(t.Info.Shape[0]), int(t.Info.Shape[1])
	if cfg := f.Metadata.Model; cfg.VocabSize != 0 && (V != cfg.VocabSize || D != cfg.HiddenSize) {
		return cpu.Mat{}, "", fmt.Errorf("%s: %s is [%d, %d], the model is vocab %d x hidden %d", f.Path, name, V, D, cfg.VocabSize, cfg.HiddenSize)
	}
	m, err := cpu.NewMat(V, D, t.Info.DType, t.Data)
	if err != nil {
		return cpu.Mat{}, "", fmt.Errorf("%s: %s: %w", f.Path, name, err)
	}
	return m, name, nil
}

// progress turns step reports into calls of Options.Progress.
type progress struct {
	fn          func(stage string, done, total int)
	done, total float64
}

func (p *progress) step(stage string, work float64) {
	p.done += work
	if p.fn != nil {
		t := max(1, int(p.total/1e6))
		p.fn(stage, min(int(p.done/1e6), t-1), t)
	}
}

func (p *progress) finish() {
	if p.fn != nil {
		t := max(1, int(p.total/1e6))
		p.fn("done", t, t)
	}
}
