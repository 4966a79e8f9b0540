// Package head implements the FlashHead LM head at run time: stage 1 scores
// the hidden state against the cluster centroids and keeps the best P
// clusters ("probes"); stage 2 computes exact float32 logits for the tokens
// of those clusters (plus the always-scored special tokens) and takes the
// argmax, or samples. The dense head is runtime/model.Runner.DenseLogits.
package head

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sync"
	"unsafe"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/hugemem"
	"github.com/fhkit/fhkit/runtime/sample"
)

// Stage1 is the precision of the centroid scoring.
type Stage1 int

const (
	// Stage1BF16 scores bfloat16 normalised centroids (the default).
	Stage1BF16 Stage1 = iota
	// Stage1Int8 scores int8 normalised centroids with one scale per
	// centroid ("selective quantization": stage 2 stays 16-bit).
	Stage1Int8
)

// ParseStage1 parses "bf16" or "int8".
func ParseStage1(s string) (Stage1, error) {
	switch s {
	case "bf16":
		return Stage1BF16, nil
	case "int8":
		return Stage1Int8, nil
	}
	return 0, fmt.Errorf("stage-1 precision %q: want bf16 or int8", s)
}

// FlashHead is a loaded FlashHead.
type FlashHead struct {
	K, Cap, D, Vocab int
	// Probes is the number of clusters scored in stage 2.
	Probes int
	// Special tokens are always scored.
	Special []int
	stage1  Stage1
	norm    cpu.Mat   // [K, D] bf16 normalised centroids
	q8      []int8    // [K, D] int8 normalised centroids
	q8scale []float32 // [K]
	raw     cpu.Mat   // [K, D] F32 centroids in the rows' scale (sampling)
	wperm   cpu.Mat   // [K*Cap, D]
	vmap    []int32   // [K*Cap] vocab id per slot, -1 = padding
	valid16 []uint16  // [K] when Cap is 16: bit s of block k set when slot s is not padding
	head    cpu.Mat   // the dense head rows, for special tokens
	softcap float32
	scratch sync.Pool // of *scratch
	// mem holds w_perm's copy and the stage-1 centroids (huge pages).
	mem *hugemem.Arena
}

// Load reads the FlashHead of a .fhm file. head is the model's dense head
// (its rows score the special tokens); probes <= 0 takes the file's default.
func Load(f *fhm.File, dense cpu.Mat, probes int, stage1 Stage1, softcap float64) (*FlashHead, error) {
	meta := f.Metadata.FlashHead
	if meta == nil {
		return nil, fmt.Errorf("%s: the model has no FlashHead (build one with fh-flashhead-build)", f.Path)
	}
	K, cp, D, V := meta.NumClusters, meta.ClusterSize, dense.Cols, dense.Rows
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%s: flashhead: %s", f.Path, fmt.Sprintf(format, a...))
	}
	if K <= 0 || cp <= 0 || K > V || int64(K)*int64(cp) < int64(V) || int64(K)*int64(cp) >= int64(V)+int64(K) {
		return nil, bad("%d clusters of %d slots do not cover a vocabulary of %d with less than one slot of padding per cluster", K, cp, V)
	}
	cent, ok := f.Tensor(fhm.FlashHeadCentroids)
	if !ok || cent.Info.DType != dtype.F32 || !slices.Equal(cent.Info.Shape, []int64{int64(K), int64(D)}) {
		return nil, bad("tensor %s missing or not F32 [%d %d]", fhm.FlashHeadCentroids, K, D)
	}
	vm, ok := f.Tensor(fhm.FlashHeadVocabMap)
	if !ok || vm.Info.DType != dtype.I32 || !slices.Equal(vm.Info.Shape, []int64{int64(K), int64(cp)}) {
		return nil, bad("tensor %s missing or not I32 [%d %d]", fhm.FlashHeadVocabMap, K, cp)
	}
	wp, ok := f.Tensor(fhm.FlashHeadWeights)
	if !ok || !slices.Equal(wp.Info.Shape, []int64{int64(K * cp), int64(D)}) {
		return nil, bad("tensor %s missing or not [%d %d]", fhm.FlashHeadWeights, K*cp, D)
	}
	// Stage 2 reads P blocks at random, each a few 4 KiB pages of the
	// mapped file (a TLB miss each): a copy in huge pages, made once here,
	// reads them faster (hugemem), and the file's pages leave the resident
	// set.
	mem := hugemem.New()
	rows := mem.Bytes(len(wp.Data))
	if err := f.CopyOut(rows, wp.Data); err != nil {
		return nil, bad("%s: %v", fhm.FlashHeadWeights, err)
	}
	f.Release(wp.Data)
	wperm, err := cpu.NewMat(K*cp, D, wp.Info.DType, rows)
	if err != nil {
		return nil, bad("%s: %v", fhm.FlashHeadWeights, err)
	}
	h := &FlashHead{K: K, Cap: cp, D: D, Vocab: V, stage1: stage1, wperm: wperm, head: dense, softcap: float32(softcap), mem: mem}
	h.vmap = make([]int32, K*cp)
	seen := make([]bool, V)
	for i := range h.vmap {
		id := int32(binary.LittleEndian.Uint32(vm.Data[4*i:]))
		h.vmap[i] = id
		if id == -1 {
			continue
		}
		if id < 0 || int(id) >= V || seen[id] {
			return nil, bad("vocab map slot %d holds %d: not a vocab id, or a duplicate", i, id)
		}
		seen[id] = true
	}
	for id, s := range seen {
		if !s {
			return nil, bad("token %d is in no cluster", id)
		}
	}
	if h.raw, err = cpu.NewMat(K, D, dtype.F32, cent.Data); err != nil {
		return nil, bad("%s: %v", fhm.FlashHeadCentroids, err)
	}
	h.buildStage1()
	h.setValid16()
	h.Probes = meta.Probes
	if probes > 0 {
		h.Probes = probes
	}
	h.Probes = max(1, min(h.Probes, K))
	for _, id := range meta.SpecialTokenIDs {
		if id >= 0 && id < V {
			h.Special = append(h.Special, id)
		}
	}
	slices.Sort(h.Special)
	h.Special = slices.Compact(h.Special)
	return h, nil
}

// buildStage1 normalises each centroid and stores it in bf16 and int8.
func (h *FlashHead) buildStage1() {
	K, D := h.K, h.D
	bf := h.mem.Bytes(K * D * 2)
	h.q8 = unsafe.Slice((*int8)(unsafe.Pointer(unsafe.SliceData(h.mem.Bytes(K*D)))), K*D)
	h.q8scale = make([]float32, K)
	row := make([]float32, D)
	c := make([]float32, D)
	for k := 0; k < K; k++ {
		h.raw.RowF32(c, k)
		var ss float64
		for _, v := range c {
			ss += float64(v) * float64(v)
		}
		inv := float32(0)
		if ss > 0 {
			inv = float32(1 / math.Sqrt(ss))
		}
		var amax float32
		for i, v := range c {
			row[i] = v * inv
			amax = max(amax, float32(math.Abs(float64(row[i]))))
		}
		dtype.EncodeFloats(bf[k*D*2:(k+1)*D*2], row, dtype.BF16)
		if amax > 0 {
			h.q8scale[k] = amax / 127
			for i, v := range row {
				h.q8[k*D+i] = int8(math.RoundToEven(float64(v / h.q8scale[k])))
			}
		}
	}
	h.norm, _ = cpu.NewMat(K, D, dtype.BF16, bf)
}

// Stage1Bytes is the size of the centroid matrix stage 1 reads.
func (h *FlashHead) Stage1Bytes() int64 {
	if h.stage1 == Stage1Int8 {
		return int64(len(h.q8)) + 4*int64(h.K)
	}
	return int64(len(h.norm.Data))
}

// WeightDType is the dtype of the permuted head rows stage 2 reads.
func (h *FlashHead) WeightDType() dtype.DType { return h.wperm.DType }

// ClusterScores writes stage-1 scores h·ĉ_k for every cluster into out (K).
func (h *FlashHead) ClusterScores(p *cpu.Pool, out, hidden []float32) {
	if h.stage1 == Stage1BF16 {
		cpu.MatVec(p, out, h.norm, hidden)
		return
	}
	cpu.MatVecInt8(p, out[:h.K], h.q8, h.D, hidden)
	for k, sc := range h.q8scale {
		out[k] *= sc
	}
}

// TopClusters returns the indices of the P best-scoring clusters, in
// descending score order (smaller index first on ties).
func TopClusters(scores []float32, P int) []int {
	hp := topClustersInto(make([]int, 0, P), scores, P)
	slices.SortFunc(hp, func(a, b int) int {
		if better(scores, a, b) {
			return -1
		}
		return 1
	})
	return hp
}

// topClustersInto writes the P best clusters to dst[:0] in no particular
// order (the argmax paths take the best token over all of them, and
// sorting them cost as much as finding them: ~18% of ArgmaxBatch at the
// embedded default's 32 clusters): a size-P min-heap (worst kept cluster
// at the root) written out by hand so that a decode step neither
// allocates nor makes K interface calls.
func topClustersInto(dst []int, scores []float32, P int) []int {
	P = min(P, len(scores))
	hp := dst[:0]
	// worse reports whether heap entry i ranks below entry j.
	worse := func(i, j int) bool { return better(scores, hp[j], hp[i]) }
	down := func(i int) {
		for {
			l := 2*i + 1
			if l >= len(hp) {
				return
			}
			m := l
			if r := l + 1; r < len(hp) && worse(r, l) {
				m = r
			}
			if !worse(m, i) {
				return
			}
			hp[i], hp[m] = hp[m], hp[i]
			i = m
		}
	}
	up := func() {
		for i := len(hp) - 1; i > 0; {
			parent := (i - 1) / 2
			if !worse(i, parent) {
				break
			}
			hp[i], hp[parent] = hp[parent], hp[i]
			i = parent
		}
	}
	if P == 0 {
		return hp
	}
	// The heap starts with the first P clusters scoring at least t, a
	// guess at the 2P-th best score from a sample, rather than with the
	// first P clusters: most of those were then replaced, each with a
	// sift-down whose child choices mispredict (BenchmarkTopClusters,
	// 16384 clusters, 256 probed: 77-84 -> 28-37 µs). Only clusters at
	// least as good as t can be among the best P when P of them reach it,
	// so the result is the same. When fewer do, or a score is NaN (which
	// the heap's ordering does not rank), it starts over without.
	next := P // the first cluster the replacements below look at
	if t, ok := sampledThreshold(scores, P); ok {
		k := 0
		for ; k < len(scores) && len(hp) < P; k++ {
			if sc := scores[k]; sc >= t {
				hp = append(hp, k)
				up()
			} else if sc != sc {
				break
			}
		}
		if len(hp) == P {
			next = k
		} else {
			hp = hp[:0]
		}
	}
	if len(hp) < P {
		for k := range scores[:P] {
			hp = append(hp, k)
			up()
		}
	}
	// Past the heap's first P, a score must beat the worst kept one, whose
	// index is smaller, so a tie loses (and so does a NaN): one comparison
	// with a value kept in a register settles most scores.
	worst := scores[hp[0]]
	for k := next; k < len(scores); k++ {
		if !(scores[k] > worst) {
			continue
		}
		hp[0] = k
		down(0)
		worst = scores[hp[0]]
	}
	return hp
}

// sampleStride is the spacing of the scores sampledThreshold reads.
const sampleStride = 16

// sampledThreshold returns the (2P/sampleStride)-th best of every
// sampleStride-th score, which about 2P of all the scores reach, and false
// when the scores are too few for a sample to pay (fewer than 16P or 256),
// P is above 32·sampleStride (the sample's heap has 64 slots) or that
// score is NaN.
func sampledThreshold(scores []float32, P int) (float32, bool) {
	K := len(scores)
	if K < 16*P || K < 256 {
		return 0, false
	}
	M := max(1, 2*P/sampleStride)
	// A min-heap of the M best sampled values, the worst at the root.
	var buf [64]float32
	if M > len(buf) {
		return 0, false
	}
	hp := buf[:0]
	for k := 0; k < K; k += sampleStride {
		v := scores[k]
		if len(hp) < M {
			hp = append(hp, v)
			for i := len(hp) - 1; i > 0 && hp[i] < hp[(i-1)/2]; i = (i - 1) / 2 {
				hp[i], hp[(i-1)/2] = hp[(i-1)/2], hp[i]
			}
			continue
		}
		if !(v > hp[0]) {
			continue
		}
		hp[0] = v
		for i := 0; ; {
			m, l := i, 2*i+1
			if l < M && hp[l] < hp[m] {
				m = l
			}
			if l+1 < M && hp[l+1] < hp[m] {
				m = l + 1
			}
			if m == i {
				break
			}
			hp[i], hp[m] = hp[m], hp[i]
			i = m
		}
	}
	return hp[0], hp[0] == hp[0]
}

func better(s []float32, a, b int) bool { return s[a] > s[b] || (s[a] == s[b] && a < b) }

// scratch holds one decode step's buffers; FlashHead keeps them in a
// sync.Pool so concurrent callers (a server's sequences) each get their own
// and a steady-state step allocates nothing.
type scratch struct {
	scores   []float32 // K stage-1 scores
	clusters []int     // the P probed clusters
	parts    []best    // per probed cluster: its best token
	stage2   stage2Task
	batch    batchScratch // ArgmaxBatch's
}

func (h *FlashHead) getScratch() *scratch {
	if s, ok := h.scratch.Get().(*scratch); ok {
		return s
	}
	return &scratch{scores: make([]float32, h.K), clusters: make([]int, 0, h.K), parts: make([]best, h.K)}
}

// Candidates returns the vocab ids of the given clusters' tokens plus the
// special tokens (sorted, unique) and their exact float32 logits.
func (h *FlashHead) Candidates(p *cpu.Pool, hidden []float32, clusters []int) (ids []int, logits []float32) {
	rows := make([]float32, len(clusters)*h.Cap)
	// One matrix-vector product per probed block: each block's cap rows are
	// contiguous in w_perm.
	p.For(len(clusters), 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			k := clusters[i]
			block := cpu.Mat{Rows: h.Cap, Cols: h.D, DType: h.wperm.DType, Data: h.wperm.Data[k*h.Cap*h.D*h.wperm.DType.Size() : (k+1)*h.Cap*h.D*h.wperm.DType.Size()]}
			block.DotRows(rows[i*h.Cap:(i+1)*h.Cap], hidden)
		}
	})
	type cand struct {
		id    int
		logit float32
	}
	cands := make([]cand, 0, len(rows)+len(h.Special))
	for i, k := range clusters {
		for s := 0; s < h.Cap; s++ {
			if id := h.vmap[k*h.Cap+s]; id >= 0 {
				cands = append(cands, cand{int(id), rows[i*h.Cap+s]})
			}
		}
	}
	probed := len(cands)
	for _, id := range h.Special {
		// A few special tokens: a scan of the candidates beats a set.
		if !slices.ContainsFunc(cands[:probed], func(c cand) bool { return c.id == id }) {
			one := []float32{0}
			row := cpu.Mat{Rows: 1, Cols: h.D, DType: h.head.DType, Data: h.head.Data[id*h.D*h.head.DType.Size() : (id+1)*h.D*h.head.DType.Size()]}
			row.DotRows(one, hidden)
			cands = append(cands, cand{id, one[0]})
		}
	}
	slices.SortFunc(cands, func(a, b cand) int { return a.id - b.id })
	ids = make([]int, len(cands))
	logits = make([]float32, len(cands))
	for i, c := range cands {
		ids[i], logits[i] = c.id, c.logit
	}
	if h.softcap > 0 {
		cpu.Softcap(logits, h.softcap)
	}
	return ids, logits
}

// Argmax is the greedy FlashHead: the candidate with the largest logit,
// the smallest vocab id on ties (as the dense argmax).
func (h *FlashHead) Argmax(p *cpu.Pool, hidden []float32) int {
	s := h.getScratch()
	defer h.scratch.Put(s)
	h.ClusterScores(p, s.scores, hidden)
	s.clusters = topClustersInto(s.clusters, s.scores, h.Probes)
	return h.argmaxOver(p, s, hidden, s.clusters)
}

// best is a running argmax with the smallest id winning ties.
type best struct {
	id    int
	logit float32
}

func (b *best) offer(id int, logit float32) {
	if b.id < 0 || logit > b.logit || (logit == b.logit && id < b.id) {
		b.id, b.logit = id, logit
	}
}

// argmaxOver scores the probed blocks and the special tokens and returns
// the best token, without building a candidate list (the fused path).
func (h *FlashHead) argmaxOver(p *cpu.Pool, s *scratch, hidden []float32, clusters []int) int {
	s.stage2 = stage2Task{h: h, parts: s.parts[:len(clusters)], hidden: hidden, clusters: clusters}
	p.Run(len(clusters), 8, &s.stage2)
	out := best{id: -1}
	for _, b := range s.stage2.parts {
		if b.id >= 0 {
			out.offer(b.id, b.logit)
		}
	}
	var one [1]float32
	for _, id := range h.Special {
		row := cpu.Mat{Rows: 1, Cols: h.D, DType: h.head.DType, Data: h.head.Data[id*h.D*h.head.DType.Size() : (id+1)*h.D*h.head.DType.Size()]}
		row.DotRows(one[:], hidden)
		out.offer(id, one[0])
	}
	s.stage2 = stage2Task{}
	return out.id
}

// stage2Task scores probed blocks [lo, hi) of clusters and keeps each
// block's best token in parts (a cpu.Task, so a step allocates nothing).
type stage2Task struct {
	h        *FlashHead
	parts    []best
	hidden   []float32
	clusters []int
}

func (t *stage2Task) Run(lo, hi int) {
	h := t.h
	blockBytes := h.Cap * h.D * h.wperm.DType.Size()
	var stack [64]float32 // clusters are 16 slots by default
	logits := stack[:0]
	if h.Cap <= len(stack) {
		logits = stack[:h.Cap]
	} else {
		logits = make([]float32, h.Cap)
	}
	for i := lo; i < hi; i++ {
		k := t.clusters[i]
		block := cpu.Mat{Rows: h.Cap, Cols: h.D, DType: h.wperm.DType, Data: h.wperm.Data[k*blockBytes : (k+1)*blockBytes]}
		block.DotRows(logits, t.hidden)
		t.parts[i] = h.blockBest(k, logits)
	}
}

// ArgmaxBatch is Argmax for n hidden states (n x D, e.g. n sequences
// decoding together). Stage 1 is one matrix-matrix product for all rows, so
// the centroids are read once per step rather than once per sequence.
// Stage 2 goes cluster by cluster: the rows that probe a cluster (when
// gatherRows or more) are multiplied by its block in one product (batch.go,
// clusterTask), so a block is read once per step however many rows probe
// it, and a small
// vocabulary's blocks, probed by most rows, are one matrix-matrix product
// over all of w_perm (BenchmarkArgmaxBatch: −25% per row at 32 rows of
// the embedded default). The result equals Argmax row by row up to the
// float32 rounding of the kernels; one row is Argmax itself.
func (h *FlashHead) ArgmaxBatch(p *cpu.Pool, hidden []float32) []int {
	n := len(hidden) / h.D
	if n == 1 {
		return []int{h.Argmax(p, hidden)}
	}
	s := h.getScratch()
	defer h.scratch.Put(s)
	P := min(h.Probes, h.K)
	b := &s.batch
	b.grow(n, P, h.K)
	scores := b.scores[:n*h.K]
	if h.stage1 == Stage1BF16 {
		cpu.MatMul(p, scores, h.norm, hidden, n)
	} else {
		for i := 0; i < n; i++ {
			h.ClusterScores(p, scores[i*h.K:(i+1)*h.K], hidden[i*h.D:(i+1)*h.D])
		}
	}
	probed := b.probed[:n*P]
	for i := 0; i < n; i++ {
		topClustersInto(probed[i*P:(i+1)*P], scores[i*h.K:(i+1)*h.K], P)
	}
	if 2*P >= h.K {
		// Most rows probe most blocks (a small vocabulary): one product of
		// every row with all of w_perm costs less than a product per block.
		C := h.K * h.Cap
		if len(b.all) < n*C {
			b.all = make([]float32, n*C)
		}
		all := b.all[:n*C]
		cpu.MatMul(p, all, h.wperm, hidden, n)
		if h.valid16 != nil {
			// Blocks of 16: each row's best over its probed blocks in one
			// vector pass (cpu.BestBlocks16), its ties among the lanes
			// that equal the maximum; a NaN makes the row go block by
			// block, as below.
			for i := range n {
				b.rowBest[i] = h.probedBest16(all[i*C:(i+1)*C], probed[i*P:(i+1)*P], b.hits[:P])
			}
			return h.finishBatch(b.rowBest[:n], hidden, 1)
		}
		for pair, k := range probed {
			row := all[pair/P*C:]
			b.rowBest[pair] = h.blockBest(k, row[k*h.Cap:(k+1)*h.Cap])
		}
		return h.finishBatch(b.rowBest[:n*P], hidden, P)
	}
	b.group(n, P, h.K)
	// One part per thread, or one on the caller when the products are too
	// small to be worth a hand-off (cpu.ParallelMACs).
	parts := min(p.Threads(), h.K)
	if n*P*h.Cap*h.D < cpu.ParallelMACs {
		parts = 1
	}
	for len(b.parts) < parts {
		b.parts = append(b.parts, clusterPart{pool: cpu.NewPool(1)}) // no goroutines: runs on the caller
	}
	b.task = clusterTask{h: h, b: b, parts: b.parts[:parts], hidden: hidden, P: P}
	p.Run(parts, 1, &b.task)
	b.task = clusterTask{}

	return h.finishBatch(b.rowBest[:n*P], hidden, P)
}

// finishBatch returns each row's token: the best of its P probed blocks'
// (rowBest, n x P) and of the special tokens.
func (h *FlashHead) finishBatch(rowBest []best, hidden []float32, P int) []int {
	out := make([]int, len(rowBest)/P)
	var one [1]float32
	for i := range out {
		r := best{id: -1}
		for _, c := range rowBest[i*P : (i+1)*P] {
			if c.id >= 0 {
				r.offer(c.id, c.logit)
			}
		}
		x := hidden[i*h.D : (i+1)*h.D]
		for _, id := range h.Special {
			row := cpu.Mat{Rows: 1, Cols: h.D, DType: h.head.DType, Data: h.head.Data[id*h.D*h.head.DType.Size() : (id+1)*h.D*h.head.DType.Size()]}
			row.DotRows(one[:], x)
			r.offer(id, one[0])
		}
		out[i] = r.id
	}
	return out
}

// setValid16 derives valid16 from vmap when blocks have 16 slots.
func (h *FlashHead) setValid16() {
	h.valid16 = nil
	if h.Cap != 16 {
		return
	}
	h.valid16 = make([]uint16, h.K)
	for i, id := range h.vmap {
		if id >= 0 {
			h.valid16[i/16] |= 1 << (i % 16)
		}
	}
}

// probedBest16 returns the best token of the probed blocks pr (Cap 16)
// given a row of every slot's logit: the token blockBest and offer would
// pick block by block, found in one vector pass (cpu.BestBlocks16) and the
// offer of the few slots that reach the maximum. hits is scratch (len(pr)).
// A NaN among the probed logits makes it go block by block.
func (h *FlashHead) probedBest16(row []float32, pr []int, hits []uint16) best {
	r := best{id: -1}
	if m := cpu.BestBlocks16(row, pr, h.valid16, hits); m == m {
		for j, lanes := range hits {
			for ; lanes != 0; lanes &= lanes - 1 {
				slot := pr[j]*16 + bits.TrailingZeros16(lanes)
				r.offer(int(h.vmap[slot]), row[slot])
			}
		}
		return r
	}
	for _, k := range pr {
		if c := h.blockBest(k, row[k*16:(k+1)*16]); c.id >= 0 {
			r.offer(c.id, c.logit)
		}
	}
	return r
}

// blockBest returns the best token of cluster k given its slots' logits
// (padding slots skipped).
func (h *FlashHead) blockBest(k int, logits []float32) best {
	r := best{id: -1}
	for s, l := range logits {
		if id := h.vmap[k*h.Cap+s]; id >= 0 {
			r.offer(int(id), l)
		}
	}
	return r
}

// Sample draws a token with the method's two-stage sampling: clusters are
// drawn without replacement in proportion to softmax(h·c_k / T) over the
// raw centroids (Gumbel top-P), then a token is drawn from the candidates'
// logits with the sampler's temperature, top-k, top-p, min-p and repetition
// penalty. This approximates sampling from the dense distribution: tokens
// outside the drawn clusters get no probability at that step. Greedy
// parameters (temperature 0) give Argmax.
func (h *FlashHead) Sample(p *cpu.Pool, s *sample.Sampler, hidden []float32, history []int) int {
	T := s.Params().Temperature
	if T == 0 {
		return h.Argmax(p, hidden)
	}
	scores := make([]float32, h.K)
	cpu.MatVec(p, scores, h.raw, hidden)
	return h.drawScored(p, s, hidden, scores, history)
}
