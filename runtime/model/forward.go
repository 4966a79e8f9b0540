package model

import (
	"fmt"
	"math"

	"github.com/fhkit/fhkit/formats/arch"
	"github.com/fhkit/fhkit/runtime/cpu"
)

// MaxChunk is the largest number of tokens one forward pass processes at
// once; longer inputs are split (prefill is matrix-matrix within a chunk).
const MaxChunk = 128

// Runner runs a model's forward pass on a worker pool with reusable buffers.
// A Runner is not safe for concurrent use; create one per goroutine.
type Runner struct {
	M    *Model
	Pool *cpu.Pool
	buf  buffers
	// attnFn is the attention worker handed to Pool.For, built once so
	// that a decode step does not allocate a closure per layer.
	attnFn func(lo, hi int)
	attn   attnJob
	rows   rowTask
	rope   ropeCache
	// serial is a one-thread pool for products too small to share
	// (matMul); it has its own scratch, so it is created per Runner.
	serial *cpu.Pool
	// split runs a batch's sequences in parts, one per thread, when the
	// layer weights stay in each core's cache (splitParts).
	split splitTask
	// splitBudget is the most layer-weight bytes for which a batch is
	// split (cpu.L2Bytes; tests set it to force or forbid the split).
	splitBudget int64
}

// ropeCacheBytes bounds the RoPE tables a Runner keeps (positions of both
// variants, cos and sin): 8192 positions at head_dim 16, 512 at 256.
// Beyond them the tables are computed per row (float64 cos and sin cost
// more than the rest of a small model's per-row work).
const ropeCacheBytes = 1 << 20

// ropeCache holds the cos and sin tables of positions [0, n) for the global
// [0] and sliding [1] RoPE variants, half = head_dim/2 values per position.
type ropeCache struct {
	n        int
	cos, sin [2][]float32
}

// growRope makes the cache cover positions < end (as far as the bound
// allows). It runs before the rows are spread over threads, which only read
// the cache.
func (r *Runner) growRope(end int) {
	half := r.M.Config.HeadDim / 2
	limit := ropeCacheBytes / (16 * max(half, 1))
	end = min(end, limit)
	rc := &r.rope
	if end <= rc.n || half == 0 {
		return
	}
	n := min(max(end, 2*rc.n, 64), limit)
	for v := range 2 {
		cos, sin := make([]float32, n*half), make([]float32, n*half)
		copy(cos, rc.cos[v])
		copy(sin, rc.sin[v])
		for p := rc.n; p < n; p++ {
			r.M.rope[v].table(cos[p*half:(p+1)*half], sin[p*half:(p+1)*half], p)
		}
		rc.cos[v], rc.sin[v] = cos, sin
	}
	rc.n = n
}

// ropeTable fills cos and sin (head_dim/2 each) for position pos of RoPE
// variant v (0 global, 1 sliding).
func (r *Runner) ropeTable(v int, cos, sin []float32, pos int) {
	rc := &r.rope
	if pos < rc.n {
		half := len(cos)
		copy(cos, rc.cos[v][pos*half:(pos+1)*half])
		copy(sin, rc.sin[v][pos*half:(pos+1)*half])
		return
	}
	r.M.rope[v].table(cos, sin, pos)
}

// NewRunner returns a Runner on pool.
func NewRunner(m *Model, pool *cpu.Pool) *Runner {
	return &Runner{M: m, Pool: pool, splitBudget: int64(cpu.L2Bytes())}
}

// Seq is one sequence's share of a batched forward pass: Tokens continue
// the sequence in State (at State.Pos).
type Seq struct {
	State  *State
	Tokens []int
}

// segment is one sequence's rows inside a chunk.
type segment struct {
	st     *State
	tokens []int
	row    int       // the segment's first row in the chunk
	pos0   int       // the position of its first token
	last   []float32 // receives the last row's final hidden state (nil: none)
}

// buffers are the activations of one chunk of T rows, and the scratch of
// attention; they only grow, so steady-state decoding allocates nothing.
type buffers struct {
	T                      int
	x, xn, q, k, v, att, o []float32
	gate, up, down         []float32
	cosG, sinG, cosL, sinL []float32
	rowSeg                 []int32 // segment of each row
	rowPos                 []int   // position of each row
	segs                   []segment
	scores                 [][]float32 // one attention score row per worker
}

func (b *buffers) ensure(T int, c *arch.Config) {
	if b.T >= T {
		return
	}
	h, qd, kvd, inter, half := c.HiddenSize, c.NumHeads*c.HeadDim, c.NumKVHeads*c.HeadDim, c.IntermediateSize, c.HeadDim/2
	b.T = T
	b.x, b.xn = make([]float32, T*h), make([]float32, T*h)
	b.q, b.k, b.v = make([]float32, T*qd), make([]float32, T*kvd), make([]float32, T*kvd)
	b.att, b.o = make([]float32, T*qd), make([]float32, T*h)
	b.gate, b.up, b.down = make([]float32, T*inter), make([]float32, T*inter), make([]float32, T*h)
	b.cosG, b.sinG = make([]float32, T*half), make([]float32, T*half)
	b.cosL, b.sinL = make([]float32, T*half), make([]float32, T*half)
	b.rowSeg, b.rowPos = make([]int32, T), make([]int, T)
}

// Forward runs tokens, which continue the sequence in st, and advances st.
// It returns the dense head's logits for every token (len(tokens) x vocab,
// row per token) when all is true, and for the last token only otherwise.
func (r *Runner) Forward(st *State, tokens []int, all bool) ([]float32, error) {
	hidden, err := r.ForwardHidden(st, tokens, all)
	if err != nil {
		return nil, err
	}
	return r.DenseLogits(hidden), nil
}

// DenseLogits applies the dense LM head (and the final soft-cap, if any) to
// rows of final hidden states (n x hidden) and returns n x vocab logits.
func (r *Runner) DenseLogits(hidden []float32) []float32 {
	c := &r.M.Config
	n := len(hidden) / c.HiddenSize
	logits := make([]float32, n*c.VocabSize)
	r.DenseLogitsInto(logits, hidden)
	return logits
}

// DenseLogitsInto is DenseLogits writing into out (n x vocab), for callers
// that reuse one buffer step after step.
func (r *Runner) DenseLogitsInto(out, hidden []float32) {
	c := &r.M.Config
	n := len(hidden) / c.HiddenSize
	out = out[:n*c.VocabSize]
	cpu.MatMul(r.Pool, out, r.M.Head, hidden, n)
	if c.FinalLogitSoftcap > 0 {
		cpu.Softcap(out, float32(c.FinalLogitSoftcap))
	}
}

// ForwardHidden runs tokens like Forward but stops before the LM head: it
// returns the final-normed hidden states (the head's input) of every token
// (len(tokens) x hidden) when all is true, of the last token otherwise.
func (r *Runner) ForwardHidden(st *State, tokens []int, all bool) ([]float32, error) {
	if err := r.check(st, tokens); err != nil {
		return nil, err
	}
	H := r.M.Config.HiddenSize
	if !all {
		hidden := make([]float32, H)
		r.run(hidden, []Seq{{State: st, Tokens: tokens}})
		return hidden, nil
	}
	hidden := make([]float32, len(tokens)*H)
	for start := 0; start < len(tokens); start += MaxChunk {
		chunk := tokens[start:min(start+MaxChunk, len(tokens))]
		r.buf.segs = append(r.buf.segs[:0], segment{st: st, tokens: chunk})
		r.forwardChunk(r.buf.segs, hidden[start*H:(start+len(chunk))*H])
	}
	return hidden, nil
}

// ForwardBatch runs several sequences through the model in one pass and
// advances each one's state: every linear layer multiplies the rows of all
// sequences at once (the weights are read once per step, not once per
// sequence), and attention reads each row's own KV cache. Sequences may
// have any number of tokens (a decode step of one token next to a prompt
// being prefilled); more than MaxChunk rows in all are split into
// consecutive passes. out receives, for each sequence, the final-normed
// hidden state of its last token (len(seqs) x hidden). On an error no
// state has been changed.
func (r *Runner) ForwardBatch(out []float32, seqs []Seq) error {
	H := r.M.Config.HiddenSize
	if len(out) < len(seqs)*H {
		return fmt.Errorf("forward batch: output holds %d values, %d sequences need %d", len(out), len(seqs), len(seqs)*H)
	}
	for i, s := range seqs {
		if s.State == nil {
			return fmt.Errorf("forward batch: sequence %d has no state", i)
		}
		if err := r.check(s.State, s.Tokens); err != nil {
			return fmt.Errorf("forward batch: sequence %d: %w", i, err)
		}
		// One state twice would write its cache rows twice in one pass;
		// batches are small, so a quadratic scan is cheaper than a map.
		for j := range i {
			if seqs[j].State == s.State {
				return fmt.Errorf("forward batch: sequences %d and %d share a state", j, i)
			}
		}
	}
	if parts := r.splitParts(seqs); parts > 1 {
		r.split.start(r, out, seqs, parts)
		return nil
	}
	r.run(out, seqs)
	return nil
}

// splitParts returns how many parts ForwardBatch splits seqs into (1: no
// split). A batch's linear layers share one product per layer so that
// the weights are read once per step; when the layer weights fit in a
// core's L2 cache there is nothing to share, and the step's hand-offs
// between threads (a dozen per layer: products, norms, attention) cost
// more than they save: on the embedded default the step split in two runs
// 1.3x the rows/s of the shared one at 32 rows and 1.75x at 8 (go test
// -bench DecodeBatch ./runtime/model, back to back: 269k -> 356k and
// 181k -> 320k rows/s).
// Each part is then a Runner of its own on one thread. Sequences are not
// cut, so a batch whose largest sequence is most of its rows (a prompt
// being prefilled) stays whole, and so does a model whose weights observe
// their inputs (calibration hooks are not made for two threads).
func (r *Runner) splitParts(seqs []Seq) int {
	threads := r.Pool.Threads()
	if threads < 2 || len(seqs) < 2 || r.M.BodyBytes() > r.splitBudget {
		return 1
	}
	for i := range r.M.Layers {
		for _, w := range r.M.Layers[i].weights() {
			if w.Observe != nil {
				return 1
			}
		}
	}
	rows, largest := 0, 0
	for _, s := range seqs {
		rows += len(s.Tokens)
		largest = max(largest, len(s.Tokens))
	}
	// The step takes as long as its largest part: past one and a half
	// shares, the shared products are the faster way.
	if 2*largest*threads > 3*rows {
		return 1
	}
	return min(threads, len(seqs))
}

// splitTask is a ForwardBatch split into parts (splitParts): part i runs
// seqs[bounds[i]:bounds[i+1]] on subs[i], a Runner on a one-thread pool
// (its own scratch: the shared pool's matrix-vector buffers are not for
// two threads). It is kept in the Runner, so a split step allocates
// nothing once the sub-Runners exist.
type splitTask struct {
	subs   []*Runner
	bounds []int
	out    []float32
	seqs   []Seq
}

// start runs seqs (validated) in parts of about equal rows, consecutive
// sequences each, on r's pool.
func (t *splitTask) start(r *Runner, out []float32, seqs []Seq, parts int) {
	for len(t.subs) < parts {
		t.subs = append(t.subs, &Runner{M: r.M, Pool: cpu.NewPool(1)})
	}
	t.bounds = splitBounds(t.bounds[:0], seqs, parts)
	t.out, t.seqs = out, seqs
	r.Pool.Run(parts, 1, t) // parts <= threads: one each, claimed by whoever is free
	t.out, t.seqs = nil, nil
}

// splitBounds appends to dst the parts+1 bounds of seqs cut into parts of
// consecutive sequences with about equal rows: part k ends at the first
// sequence that brings it to k+1 shares of the rows, but leaves at least
// one sequence for each part after it (len(seqs) >= parts).
func splitBounds(dst []int, seqs []Seq, parts int) []int {
	rows := 0
	for _, s := range seqs {
		rows += len(s.Tokens)
	}
	dst = append(dst, 0)
	done := 0
	for i, s := range seqs[:len(seqs)-1] {
		done += len(s.Tokens)
		k := len(dst) // the part that ends here, if any, is k-1
		if k < parts && (done*parts >= k*rows || len(seqs)-(i+1) == parts-k) {
			dst = append(dst, i+1)
		}
	}
	return append(dst, len(seqs))
}

// Run implements cpu.Task: parts [lo, hi). Pool.Run hands a part to
// whichever thread is free, so a late thread (its core busy with the
// server's connections) leaves its part to the caller.
func (t *splitTask) Run(lo, hi int) {
	H := t.subs[0].M.Config.HiddenSize
	for i := lo; i < hi; i++ {
		a, b := t.bounds[i], t.bounds[i+1]
		t.subs[i].run(t.out[a*H:b*H], t.seqs[a:b])
	}
}

// check validates tokens that are to continue st.
func (r *Runner) check(st *State, tokens []int) error {
	return CheckTokens(&r.M.Config, st.Pos, st.Limit, tokens)
}

// CheckTokens validates tokens that are to continue a sequence of pos
// tokens with a context limit: at least one, within the limit, every id in
// the vocabulary. The CPU and CUDA runners both call it.
func CheckTokens(c *arch.Config, pos, limit int, tokens []int) error {
	if len(tokens) == 0 {
		return fmt.Errorf("forward: no tokens")
	}
	if pos+len(tokens) > limit {
		return fmt.Errorf("context limit exceeded: %d tokens already, %d more, limit %d (model maximum %d)", pos, len(tokens), limit, c.MaxPositionEmbeddings)
	}
	for _, id := range tokens {
		if id < 0 || id >= c.VocabSize {
			return fmt.Errorf("token id %d outside the vocabulary [0, %d)", id, c.VocabSize)
		}
	}
	return nil
}

// run packs validated sequences into chunks of at most MaxChunk rows and
// runs them; a sequence that does not fit continues in the next chunk.
func (r *Runner) run(out []float32, seqs []Seq) {
	H := r.M.Config.HiddenSize
	segs := r.buf.segs[:0]
	rows := 0
	for i, s := range seqs {
		toks := s.Tokens
		for len(toks) > 0 {
			n := min(len(toks), MaxChunk-rows)
			var last []float32
			if n == len(toks) {
				last = out[i*H : (i+1)*H]
			}
			segs = append(segs, segment{st: s.State, tokens: toks[:n], last: last})
			rows += n
			toks = toks[n:]
			if rows == MaxChunk {
				r.forwardChunk(segs, nil)
				segs, rows = segs[:0], 0
			}
		}
	}
	if rows > 0 {
		r.forwardChunk(segs, nil)
	}
	r.buf.segs = segs[:0]
}

// forwardChunk runs up to MaxChunk rows through the model. The rows are the
// tokens of the segments, one after the other; each segment continues its
// own state at its own position. all, when non-nil, receives the
// final-normed hidden state of every row; each segment's last, when
// non-nil, that of its last row.
//
// Linear layers multiply all rows at once; the work between them is per
// row (rowTask below, one stage per gap) and is spread over the pool when
// there are enough rows, since in a batch of short sequences it costs as
// much as the products.
func (r *Runner) forwardChunk(segs []segment, all []float32) {
	m := r.M
	c := &m.Config
	h, hd := c.HiddenSize, c.HeadDim
	qd, kvd := c.NumHeads*hd, c.NumKVHeads*hd
	eps := float32(c.RMSNormEps)
	T := 0
	for i := range segs {
		segs[i].row, segs[i].pos0 = T, segs[i].st.Pos
		T += len(segs[i].tokens)
	}
	r.buf.ensure(T, c)
	b := &r.buf
	x := b.x[:T*h]
	for si := range segs {
		s := &segs[si]
		for j := range s.tokens {
			b.rowSeg[s.row+j], b.rowPos[s.row+j] = int32(si), s.pos0+j
		}
	}
	end := 0
	for _, s := range segs {
		end = max(end, s.pos0+len(s.tokens))
	}
	r.growRope(end)
	task := &r.rows
	*task = rowTask{r: r, segs: segs}
	task.run(stageEmbed, T)

	for li := range m.Layers {
		l := &m.Layers[li]
		task.layer, task.l = li, l
		for si := range segs {
			segs[si].st.layers[li].reserve(segs[si].pos0 + len(segs[si].tokens))
		}

		// Attention block.
		task.run(stageAttnNorm, T)
		xn := b.xn[:T*h]
		qkv, qkvW := [3][]float32{b.q[:T*qd], b.k[:T*kvd], b.v[:T*kvd]}, [3]cpu.Mat{l.Q, l.K, l.V}
		r.matMuls(xn, T, qkv[:], qkvW[:])
		task.run(stageQKV, T)
		r.attention(b.att[:T*qd], b.q[:T*qd], b.k[:T*kvd], b.v[:T*kvd], segs, li, T, l.Sliding)
		r.matMul(b.o[:T*h], l.O, b.att[:T*qd], T)
		task.run(stageAttnOut, T)

		// MLP block.
		gate, up := b.gate[:T*c.IntermediateSize], b.up[:T*c.IntermediateSize]
		if T == 1 {
			// The threads that compute gate and up apply the activation and
			// lay it out for down, block by block (cpu.GatedMatVecs).
			cpu.GatedMatVecs(r.poolFor(2*l.Gate.Rows*l.Gate.Cols), gate, up, l.Gate, l.Up, xn, c.GELU(), l.Down)
		} else {
			gu, guW := [2][]float32{gate, up}, [2]cpu.Mat{l.Gate, l.Up}
			r.matMuls(xn, T, gu[:], guW[:])
			task.run(stageActivation, T)
		}
		r.matMul(b.down[:T*h], l.Down, gate, T)
		task.run(stageMLPOut, T)
	}
	*task = rowTask{}
	for si := range segs {
		segs[si].st.Pos += len(segs[si].tokens)
	}

	// Final norm, for every row or only each segment's last.
	if all != nil {
		cpu.RMSNormRows(all, x, m.Norm, eps)
	}
	for _, s := range segs {
		if s.last != nil {
			t := s.row + len(s.tokens) - 1
			cpu.RMSNorm(s.last, x[t*h:(t+1)*h], m.Norm, eps)
		}
	}
}

// rowStage is one of the per-row steps of forwardChunk.
type rowStage int

const (
	// stageEmbed: embedding lookup, scaled for Gemma (by the weight-dtype
	// scale), and the row's RoPE tables (global and sliding bases).
	stageEmbed rowStage = iota
	// stageAttnNorm: input_layernorm of x into xn.
	stageAttnNorm
	// stageQKV: per-head q/k norms, RoPE on q and k, k and v rounded to
	// the row's cache precision (so keys used within the chunk equal those
	// later read from the cache); a segment of one token (a decode step)
	// stores them in its cache now, so that its attention reads every
	// position from there (the slot it takes in a sliding layer's ring
	// held the position just out of its window).
	stageQKV
	// stageAttnOut: the keys and values of longer segments' rows into
	// their caches (after every row's attention: a sliding layer's ring
	// slot may still be read by an earlier row), Gemma's post-attention
	// norm, the residual, and the pre-MLP norm into xn.
	stageAttnOut
	// stageActivation: act(gate) * up into gate.
	stageActivation
	// stageMLPOut: Gemma's post-feed-forward norm and the residual.
	stageMLPOut
)

// matMul is cpu.MatMul on the pool, or on the calling thread alone when
// the product is small (cpu.ParallelMACs).
func (r *Runner) matMul(out []float32, w cpu.Mat, x []float32, T int) {
	cpu.MatMul(r.poolFor(T*w.Rows*w.Cols), out, w, x, T)
}

// poolFor returns the pool for products of macs multiply-adds: the
// Runner's, or its one-thread pool below cpu.ParallelMACs.
func (r *Runner) poolFor(macs int) *cpu.Pool {
	if macs >= cpu.ParallelMACs {
		return r.Pool
	}
	if r.serial == nil {
		r.serial = cpu.NewPool(1) // no goroutines: runs on the caller
	}
	return r.serial
}

// matMuls is matMul of several weights over the same input x (q, k and
// v; gate and up): one token's products go out as one dispatch
// (cpu.MatVecs).
func (r *Runner) matMuls(x []float32, T int, outs [][]float32, ws []cpu.Mat) {
	if T != 1 {
		for i, w := range ws {
			r.matMul(outs[i], w, x, T)
		}
		return
	}
	macs := 0
	for _, w := range ws {
		macs += w.Rows * w.Cols
	}
	cpu.MatVecs(r.poolFor(macs), outs, ws, x)
}

// parallelWork is the number of elements (or multiply-adds) below which
// per-row work stays on the calling thread: handing rows to a worker costs
// a few hundred nanoseconds (cpu.ParallelMACs), more than fewer elements
// take.
const parallelWork = 1024

// rowTask runs one stage over rows [lo, hi) of the current chunk; it is a
// cpu.Task kept in the Runner so that a step allocates nothing.
type rowTask struct {
	r     *Runner
	segs  []segment
	stage rowStage
	layer int
	l     *Layer
}

func (t *rowTask) run(stage rowStage, T int) {
	c := &t.r.M.Config
	t.stage = stage
	perRow := c.HiddenSize
	switch stage {
	case stageQKV:
		perRow = (c.NumHeads + 2*c.NumKVHeads) * c.HeadDim
	case stageActivation:
		perRow = c.IntermediateSize
	}
	t.r.Pool.Run(T, (parallelWork+perRow-1)/perRow, t)
}

// Run implements cpu.Task. Norms and activations take the range's rows in
// one call (the kernels overlap their latency-bound reductions across
// rows); per-head q/k norms treat each head as a row.
func (t *rowTask) Run(lo, hi int) {
	r, l := t.r, t.l
	m := r.M
	c := &m.Config
	b := &r.buf
	h, hd, half := c.HiddenSize, c.HeadDim, c.HeadDim/2
	qd, kvd := c.NumHeads*hd, c.NumKVHeads*hd
	inter := c.IntermediateSize
	eps := float32(c.RMSNormEps)
	x, xn := b.x[lo*h:hi*h], b.xn[lo*h:hi*h]
	switch t.stage {
	case stageEmbed:
		for row := lo; row < hi; row++ {
			x := b.x[row*h : (row+1)*h]
			s := &t.segs[b.rowSeg[row]]
			pos := b.rowPos[row]
			m.Embed.RowF32(x, s.tokens[pos-s.pos0])
			if m.EmbedScale != 1 {
				for i := range x {
					x[i] *= m.EmbedScale
				}
			}
			r.ropeTable(0, b.cosG[row*half:(row+1)*half], b.sinG[row*half:(row+1)*half], pos)
			r.ropeTable(1, b.cosL[row*half:(row+1)*half], b.sinL[row*half:(row+1)*half], pos)
		}
	case stageAttnNorm:
		cpu.RMSNormRows(xn, x, l.AttnNorm, eps)
	case stageQKV:
		q, k := b.q[lo*qd:hi*qd], b.k[lo*kvd:hi*kvd]
		if l.QNorm != nil {
			cpu.RMSNormRows(q, q, l.QNorm, eps)
		}
		if l.KNorm != nil {
			cpu.RMSNormRows(k, k, l.KNorm, eps)
		}
		for row := lo; row < hi; row++ {
			cos, sin := b.cosG[row*half:(row+1)*half], b.sinG[row*half:(row+1)*half]
			if l.Sliding {
				cos, sin = b.cosL[row*half:(row+1)*half], b.sinL[row*half:(row+1)*half]
			}
			cpu.RoPEHeads(b.q[row*qd:(row+1)*qd], cos, sin)
			k, v := b.k[row*kvd:(row+1)*kvd], b.v[row*kvd:(row+1)*kvd]
			cpu.RoPEHeads(k, cos, sin)
			seg := &t.segs[b.rowSeg[row]]
			roundTrip(k, seg.st.kvDT)
			roundTrip(v, seg.st.kvDT)
			if len(seg.tokens) == 1 {
				seg.st.layers[t.layer].store(b.rowPos[row], k, v)
			}
		}
	case stageAttnOut:
		for row := lo; row < hi; row++ {
			s := &t.segs[b.rowSeg[row]]
			cache, pos := s.st.layers[t.layer], b.rowPos[row]
			// A ring keeps a sliding layer's last positions: a row that a
			// later row of the segment will overwrite is not stored, so
			// rows on different threads never write the same slot.
			if len(s.tokens) > 1 && (cache.ring == 0 || pos >= s.pos0+len(s.tokens)-cache.ring) {
				cache.store(pos, b.k[row*kvd:(row+1)*kvd], b.v[row*kvd:(row+1)*kvd])
			}
		}
		o := b.o[lo*h : hi*h]
		mlpNorm := l.PostAttnNorm // Llama/Qwen3: post_attention_layernorm is the pre-MLP norm
		if c.SandwichNorms {
			cpu.RMSNormRows(o, o, l.PostAttnNorm, eps)
			mlpNorm = l.PreFFNorm
		}
		cpu.Add(x, o)
		cpu.RMSNormRows(xn, x, mlpNorm, eps)
	case stageActivation:
		cpu.GatedActivation(b.gate[lo*inter:hi*inter], b.up[lo*inter:hi*inter], c.GELU())
	case stageMLPOut:
		down := b.down[lo*h : hi*h]
		if c.SandwichNorms {
			cpu.RMSNormRows(down, down, l.PostFFNorm, eps)
		}
		cpu.Add(x, down)
	}
}

// attnJob is the attention work of one layer, shared with the pool's
// workers through the Runner (so no closure is built per call).
type attnJob struct {
	out, q, k, v []float32 // k and v: the chunk's own rows, already rounded
	segs         []segment
	layer, T     int
	parts        int
	heads        int // heads per job: all of a row's, or one
	sliding      bool
}

// attention computes softmax(q·kᵀ·scale + causal/sliding mask)·v for the T
// rows of the chunk. Each row attends over its own sequence: positions
// before the segment's first are read from that state's cache in place,
// the segment's own positions from the chunk's k and v rows.
func (r *Runner) attention(out, q, k, v []float32, segs []segment, layer, T int, sliding bool) {
	c := &r.M.Config
	jobs := T * c.NumHeads
	// Scratch for the longest score row any query of the chunk needs, and
	// the chunk's work (scores and sums over every visible position).
	longest, work := 0, 0
	for _, s := range segs {
		n := s.pos0 + len(s.tokens)
		if sliding {
			n = min(n, c.SlidingWindow)
		}
		longest = max(longest, n)
		work += len(s.tokens) * n
	}
	work *= 2 * c.NumHeads * c.HeadDim
	parts := min(r.Pool.Threads(), jobs)
	if work < cpu.ParallelMACs { // as small products: cheaper than a hand-off
		parts = 1
	}
	// A job is a row's heads, all of them when there are enough rows to
	// share out (their score rows, of one length, then go through one
	// softmax call), else one (so that a few long rows still spread).
	heads := c.NumHeads
	if parts > 1 && T < 2*parts {
		heads = 1
	}
	b := &r.buf
	for len(b.scores) < parts {
		b.scores = append(b.scores, nil)
	}
	for i := range parts {
		if need := heads * cpu.ScoreStride(longest); len(b.scores[i]) < need {
			b.scores[i] = make([]float32, max(need, 2*len(b.scores[i])))
		}
	}
	r.attn = attnJob{out: out, q: q, k: k, v: v, segs: segs, layer: layer, T: T, parts: parts, heads: heads, sliding: sliding}
	if r.attnFn == nil {
		r.attnFn = func(lo, hi int) {
			for part := lo; part < hi; part++ {
				r.attendPart(part)
			}
		}
	}
	// One range per worker, each with its own score rows; jobs are dealt
	// round-robin because rows of different sequences differ in length.
	r.Pool.For(parts, 1, r.attnFn)
	r.attn = attnJob{}
}

// attendPart runs the attention jobs (row, block of a.heads heads) of
// worker part.
func (r *Runner) attendPart(part int) {
	a := &r.attn
	c := &r.M.Config
	hd := c.HeadDim
	qd, kvd := c.NumHeads*hd, c.NumKVHeads*hd
	group := c.NumHeads / c.NumKVHeads
	scale := float32(c.AttentionScale)
	softcap := float32(c.AttnLogitSoftcap)
	scores := r.buf.scores[part]
	blocks := c.NumHeads / a.heads
	// bounds returns row t's sequence, position, first visible position,
	// and split: positions before split are in the cache, the rest are
	// this chunk's (none for a decode step, whose row stageQKV stored).
	bounds := func(t int) (s *segment, qpos, first, split int) {
		s = &a.segs[r.buf.rowSeg[t]]
		qpos = r.buf.rowPos[t]
		if a.sliding {
			first = max(0, qpos-c.SlidingWindow+1)
		}
		split = max(first, s.pos0)
		if len(s.tokens) == 1 {
			split = qpos + 1
		}
		return s, qpos, first, split
	}
	// The cached rows were evicted by the weights streamed since the last
	// step (and a server's HTTP work): each part asks for its first row's
	// at once, so that their misses overlap instead of waiting on the
	// hardware prefetcher as the kernels read them in order. A gemma-3-1b
	// decode step, whose two parts share one row's heads and so read the
	// same cache, spent 13-15 µs per layer in attention on average over
	// positions 4 to 68 in the fast memory mode, 10 µs with this.
	if part < a.T*blocks {
		s, _, first, split := bounds(part / blocks)
		s.st.layers[a.layer].prefetch(first, split)
	}
	for job := part; job < a.T*blocks; job += a.parts {
		t, h0 := job/blocks, job%blocks*a.heads
		// The next row's arrive while this one is scored.
		if next := job + a.parts; next < a.T*blocks && next/blocks != t {
			ns, _, nfirst, nsplit := bounds(next / blocks)
			ns.st.layers[a.layer].prefetch(nfirst, nsplit)
		}
		s, qpos, first, split := bounds(t)
		n := qpos - first + 1
		cache := s.st.layers[a.layer]
		// A decode row's whole row of heads, its positions in one run of
		// an f32 cache: one call (the same kernels, checked once).
		if len(s.tokens) == 1 && h0 == 0 && a.heads == c.NumHeads && softcap == 0 {
			if k, v, ok := cache.run(first, n); ok {
				cpu.AttendRow(a.out[t*qd:(t+1)*qd], a.q[t*qd:(t+1)*qd], k, v, scores, kvd, hd, group, n, scale)
				continue
			}
		}
		// This chunk's keys and values: rows kvd apart from split's.
		own := (s.row + split - s.pos0) * kvd
		ns := cpu.ScoreStride(n)
		for i := range a.heads {
			hh := h0 + i
			g := hh / group
			qh := a.q[t*qd+hh*hd : t*qd+(hh+1)*hd]
			sc := scores[i*ns : i*ns+n]
			cache.scores(sc[:split-first], qh, first, g*hd, scale)
			if split <= qpos {
				cpu.ScaledDots(sc[split-first:], a.k[own+g*hd:], kvd, qh, scale)
			}
			if softcap > 0 {
				cpu.Softcap(sc, softcap)
			}
			// The padding weighs nothing: e^-inf = 0.
			for j := n; j < ns; j++ {
				scores[i*ns+j] = float32(math.Inf(-1))
			}
		}
		cpu.SoftmaxRows(scores[:a.heads*ns], ns)
		for i := range a.heads {
			hh := h0 + i
			g := hh / group
			w := scores[i*ns : i*ns+n]
			oh := a.out[t*qd+hh*hd : t*qd+(hh+1)*hd]
			clear(oh)
			cache.accumulate(oh, w[:split-first], first, g*hd)
			if split <= qpos {
				cpu.WeightedSum(oh, w[split-first:], a.v[own+g*hd:], kvd)
			}
		}
	}
}
