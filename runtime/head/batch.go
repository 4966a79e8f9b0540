package head

import (
	"math"
	"slices"

	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/sample"
)

// SampleBatch is Sample for n hidden states (n x D) of sequences decoding
// together, each with its own sampler and history (samplers[i] and
// histories[i] belong to row i). Greedy rows go through ArgmaxBatch; the
// stage-1 scores of the sampled rows over the raw centroids are one matrix
// product for all of them, so the centroids are read once per step rather
// than once per sequence. Each row consumes its sampler's generator exactly
// as Sample would, so a seeded sequence draws the same tokens batched or
// alone (up to float32 rounding differences between kernels).
func (h *FlashHead) SampleBatch(p *cpu.Pool, samplers []*sample.Sampler, hidden []float32, histories [][]int) []int {
	n := len(samplers)
	out := make([]int, n)
	var greedy, sampled []int
	for i, s := range samplers {
		if s.Params().Temperature == 0 {
			greedy = append(greedy, i)
		} else {
			sampled = append(sampled, i)
		}
	}
	gather := func(rows []int) []float32 {
		if len(rows) == n {
			return hidden[:n*h.D]
		}
		x := make([]float32, len(rows)*h.D)
		for j, i := range rows {
			copy(x[j*h.D:(j+1)*h.D], hidden[i*h.D:(i+1)*h.D])
		}
		return x
	}
	if len(greedy) > 0 {
		for j, id := range h.ArgmaxBatch(p, gather(greedy)) {
			out[greedy[j]] = id
		}
	}
	if len(sampled) > 0 {
		x := gather(sampled)
		scores := make([]float32, len(sampled)*h.K)
		cpu.MatMul(p, scores, h.raw, x, len(sampled))
		for j, i := range sampled {
			var hist []int
			if i < len(histories) {
				hist = histories[i]
			}
			out[i] = h.drawScored(p, samplers[i], x[j*h.D:(j+1)*h.D], scores[j*h.K:(j+1)*h.K], hist)
		}
	}
	return out
}

// drawScored is the draw after stage 1 of Sample and SampleBatch: scores
// are the raw-centroid scores h·c_k of hidden (overwritten with the Gumbel
// keys).
func (h *FlashHead) drawScored(p *cpu.Pool, s *sample.Sampler, hidden, scores []float32, history []int) int {
	T := s.Params().Temperature
	rng := s.Rand()
	for k := range scores {
		// log softmax up to a constant, plus Gumbel noise: the top P keys
		// are a draw of P clusters without replacement.
		u := rng.Float64()
		for u == 0 {
			u = rng.Float64()
		}
		scores[k] = float32(float64(scores[k])/T - math.Log(-math.Log(u)))
	}
	ids, logits := h.Candidates(p, hidden, TopClusters(scores, h.Probes))
	// The candidate-space history, which only the repetition penalty reads:
	// each history token's index among the (sorted) candidates.
	var hist []int
	if rp := s.Params().RepetitionPenalty; rp != 0 && rp != 1 {
		for _, id := range history {
			if i, ok := slices.BinarySearch(ids, id); ok {
				hist = append(hist, i)
			}
		}
	}
	return ids[s.Next(logits, hist)]
}

// batchScratch holds ArgmaxBatch's buffers for n rows; they only grow.
type batchScratch struct {
	scores []float32 // n x K stage-1 scores
	probed []int     // n x P: row i's probed clusters
	// The (row, probe) pairs grouped by cluster: those of cluster k are
	// members[start[k]:start[k+1]], each an index i*P+j into probed.
	start   []int
	members []int
	rowBest []best    // per (row, probe) pair: the best token of that block
	all     []float32 // n x K·Cap: every row's logits over w_perm (small vocabularies)
	hits    []uint16  // P: a row's lanes that reach its maximum, per probed block
	parts   []clusterPart
	task    clusterTask
}

// clusterPart is one thread's share of stage 2: a one-thread pool for its
// products (pools keep the kernels' scratch) and its gathered rows and
// logits.
type clusterPart struct {
	pool      *cpu.Pool
	x, logits []float32
}

func (b *batchScratch) grow(n, P, K int) {
	if len(b.scores) < n*K {
		b.scores = make([]float32, n*K)
	}
	if len(b.probed) < n*P {
		b.probed, b.members, b.rowBest = make([]int, n*P), make([]int, n*P), make([]best, n*P)
	}
	if len(b.start) < K+1 {
		b.start = make([]int, K+1)
	}
	if len(b.hits) < P {
		b.hits = make([]uint16, P)
	}
}

// group fills start and members from the n x P probed clusters: a counting
// sort by cluster, pairs in ascending order within a cluster.
func (b *batchScratch) group(n, P, K int) {
	start := b.start[:K+1]
	clear(start)
	for _, k := range b.probed[:n*P] {
		start[k+1]++
	}
	for k := 1; k <= K; k++ {
		start[k] += start[k-1]
	}
	// Fill with start[k] as cluster k's cursor; it ends at start[k+1]'s
	// value, so shifting by one cluster afterwards restores the starts.
	for pair, k := range b.probed[:n*P] {
		b.members[start[k]] = pair
		start[k]++
	}
	copy(start[1:], start[:K])
	start[0] = 0
}

// gatherRows is the number of rows probing a block from which stage 2
// gathers them into one matrix-matrix product; below it, each row is a
// matrix-vector product (at 16 x 256 blocks, one to three rows are faster
// that way: BenchmarkArgmaxBatch).
const gatherRows = 4

// clusterTask is stage 2 of ArgmaxBatch, cluster by cluster: the rows that
// probe a cluster, gathered, times its block in one product, and each
// row's best token of the block into rowBest. Part i of parts takes
// clusters [i·K/parts, (i+1)·K/parts) (a cpu.Task, so a step allocates no
// closure).
type clusterTask struct {
	h      *FlashHead
	b      *batchScratch
	parts  []clusterPart
	hidden []float32
	P      int
}

// Run implements cpu.Task over parts [lo, hi).
func (t *clusterTask) Run(lo, hi int) {
	parts := len(t.parts)
	for i := lo; i < hi; i++ {
		t.clusters(&t.parts[i], i*t.h.K/parts, (i+1)*t.h.K/parts)
	}
}

func (t *clusterTask) clusters(part *clusterPart, lo, hi int) {
	h, b := t.h, t.b
	D, C := h.D, h.Cap
	blockBytes := C * D * h.wperm.DType.Size()
	for k := lo; k < hi; k++ {
		pairs := b.members[b.start[k]:b.start[k+1]]
		m := len(pairs)
		if m == 0 {
			continue
		}
		block := cpu.Mat{Rows: C, Cols: D, DType: h.wperm.DType, Data: h.wperm.Data[k*blockBytes : (k+1)*blockBytes]}
		if len(part.logits) < m*C {
			part.logits = make([]float32, max(m*C, 2*len(part.logits)))
		}
		logits := part.logits[:m*C]
		if m < gatherRows {
			// Argmax's kernel, so a lone row's logits are the same bits.
			for j, pair := range pairs {
				row := pair / t.P
				block.DotRows(logits[j*C:(j+1)*C], t.hidden[row*D:(row+1)*D])
			}
		} else {
			if len(part.x) < m*D {
				part.x = make([]float32, max(m*D, 2*len(part.x)))
			}
			x := part.x[:m*D]
			for j, pair := range pairs {
				row := pair / t.P
				copy(x[j*D:(j+1)*D], t.hidden[row*D:(row+1)*D])
			}
			cpu.MatMul(part.pool, logits, block, x, m)
		}
		for j, pair := range pairs {
			b.rowBest[pair] = h.blockBest(k, logits[j*C:(j+1)*C])
		}
	}
}
