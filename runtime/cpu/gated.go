package cpu

import (
	"sync/atomic"
	"unsafe"

	"github.com/fhkit/fhkit/formats/dtype"
)

// GatedMatVecs computes the gated MLP of one input vector x up to its down
// projection: gate = act(Wg·x) ⊙ (Wu·x), with up = Wu·x (act is GELU-tanh
// when gelu, else SiLU, exactly as GatedActivation), and lays gate out for
// the int4 product next (the layer's down projection), so that next's
// product of gate, if it is the next product on p, skips that step.
//
// Why: in a decode step the activation and the layout of down's input were
// a serial stage between two parallel products, the caller alone reading
// the gate and up rows the threads had just written (half of them from the
// other core's cache), while memory idled. Here both products go out as one
// dispatch, whose rows are counted in blocks (a block: gate's and up's
// rows of the same inputs of next, a multiple of the chunk and of next's
// group), and whichever thread completes a block applies the activation
// and lays it out at once, while the other streams on. Measured in one
// process alternating the two ways every 8 tokens (gemma-3-1b W4A16): the
// body 2.6% faster in the fast memory mode, 1% in the slow one. Where that
// does not apply (next not an int4 product of the VNNI families, gate and
// up kernels that want different layouts of x, rows not in whole blocks)
// it is MatVecs followed by GatedActivation.
func GatedMatVecs(p *Pool, gate, up []float32, wg, wu Mat, x []float32, gelu bool, next Mat) {
	gatedMatVecsISA(isa, p, gate, up, wg, wu, x, gelu, next)
}

// gatedMatVecsISA is GatedMatVecs with the kernels of the given level.
func gatedMatVecsISA(level ISA, p *Pool, gate, up []float32, wg, wu Mat, x []float32, gelu bool, next Mat) {
	n := wg.Rows
	gate, up = gate[:n], up[:n]
	outs, ws := [2][]float32{gate, up}, [2]Mat{wg, wu}
	impl := q4ImplOf(level, wg)
	block := gatedBlock(level, impl, ws, next)
	if block == 0 {
		matVecsISA(level, p, outs[:], ws[:], x)
		gatedISA(level, gate, up, gelu)
		return
	}
	for _, w := range ws {
		if w.Observe != nil {
			w.Observe(x[:w.Cols], 1)
		}
	}
	p.mv.mu.Lock()
	defer p.mv.mu.Unlock()
	g := &p.mv.gated
	blocks := n / block
	if cap(g.done) < blocks {
		g.done = make([]atomic.Int32, blocks)
	}
	g.done = g.done[:blocks]
	for i := range g.done {
		g.done[i].Store(0)
	}
	g.gelu, g.block, g.perPart, g.next = gelu, block, block/mvChunkRows(impl, wg), next
	g.xq, g.nxs = p.mv.ahead.grow(q4ImplFor(level, next), next)
	matVecsRunLocked(level, impl, p, outs[:], ws[:], x, g)
	g.xq, g.nxs, g.next = nil, nil, Mat{}
}

// gatedBlock returns the rows of GatedMatVecs' blocks for gate and up
// weights ws at the level and the product next, or 0 where it does not
// apply. Only a layout made ahead pays for the blocks: with the activation
// alone (dense BF16 weights) a decode step was up to 3% slower in the fast
// memory mode (the activation is cheap, and reading the other thread's
// rows stalls a thread's stream). So next must be an int4 product of the
// VNNI families, whose layout is made group by group.
func gatedBlock(level ISA, impl q4Impl, ws [2]Mat, next Mat) int {
	wg, wu := ws[0], ws[1]
	if wg.Rows != wu.Rows || !matVecsShare(level, ws[:]) {
		return 0
	}
	chunk := mvChunkRows(impl, wg)
	if mvChunkRows(impl, wu) != chunk {
		return 0
	}
	if next.DType != dtype.U4 || next.Cols != wg.Rows || !mvSupported(level, next) {
		return 0
	}
	if ni := q4ImplFor(level, next); ni != q4AVX512VNNI && ni != q4AVX512VNNI16 {
		return 0
	}
	G := next.Q4.GroupSize
	block := chunk * G / gcd(chunk, G)
	if wg.Rows%block != 0 {
		return 0
	}
	return block
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// gatedSpec is GatedMatVecs' part of an mvJob. The job's chunks are
// numbered as MatVecs numbers them, gate's then up's, so each thread's
// home share is one stream of weights (numbering them block by block,
// each share both gate's and up's rows of its blocks, made decode 2.4–3.8%
// slower in the fast memory mode).
type gatedSpec struct {
	gelu    bool
	block   int            // rows of a block
	perPart int            // chunks of one part in a block
	done    []atomic.Int32 // per block: chunks of both parts computed
	next    Mat
	xq, nxs []float32 // next's layout of gate (aheadInput's buffer)
}

// gatedRange computes chunks [lo, hi) of a GatedMatVecs job, one kernel
// call per part they cover, then counts them to their blocks and finishes
// each block whose chunks are then all computed.
func (j *mvJob) gatedRange(lo, hi int) {
	g := j.gated
	per := g.perPart
	upFirst := j.parts[1].first
	for lo < hi {
		part := 0
		if lo >= upFirst {
			part = 1
		}
		first := j.parts[part].first
		end := hi
		if part == 0 {
			end = min(hi, upFirst)
		}
		chunk := j.parts[part].chunk
		j.rows(&j.parts[part], (lo-first)*chunk, (end-first)*chunk)
		for c := lo - first; c < end-first; {
			b := c / per
			n := min(end-first, (b+1)*per) - c
			// The thread that adds the block's last chunks sees every
			// row of it: the other threads' writes come before their Adds.
			if g.done[b].Add(int32(n)) == int32(2*per) {
				j.finishBlock(b)
			}
			c += n
		}
		lo = end
	}
}

// finishBlock applies the activation to block b of gate and lays it out
// for next.
func (j *mvJob) finishBlock(b int) {
	g := j.gated
	lo, hi := b*g.block, (b+1)*g.block
	gate, up := j.parts[0].out, j.parts[1].out
	gatedISA(j.level, gate[lo:hi], up[lo:hi], g.gelu)
	G := g.next.Q4.GroupSize
	q4PrepVNNI(unsafe.Slice((*int8)(unsafe.Pointer(&g.xq[0])), 2*len(gate))[2*lo:2*hi], g.nxs[2*lo/G:2*hi/G], gate[lo:hi], G, vnniK(g.next))
}

// vnniK is the zero-point factor of the VNNI layout's sums: 8 for
// symmetric codes, 1 with zero points (prepareQ4Into, finishBlock).
func vnniK(w Mat) int32 {
	if w.Q4.Zeros == nil {
		return 8
	}
	return 1
}

// aheadInput is an int4 product's input laid out before the product, by
// GatedMatVecs: valid for a product at kernel family impl of a weight
// like w (width, group size, symmetric or not) with the vector at x, and
// only for the pool's next product (matVecsRun consumes or drops it). The
// layout depends on x and those alone, not on the weight's codes.
type aheadInput struct {
	buf   []float32
	valid bool
	impl  q4Impl
	w     Mat
	x     *float32
}

// grow returns the buffers for w's input laid out for kernel family impl
// (as prepareQ4Into's), and forgets any layout they held.
func (a *aheadInput) grow(impl q4Impl, w Mat) (xq, nxs []float32) {
	if need := q4PrepLen(impl, w); cap(a.buf) < need {
		a.buf = make([]float32, need)
	}
	a.valid, a.impl, a.w = false, impl, w
	return a.split(w)
}

func (a *aheadInput) split(w Mat) (xq, nxs []float32) {
	return a.buf[:w.Cols/2], a.buf[w.Cols/2 : w.Cols/2+2*(w.Cols/w.Q4.GroupSize)]
}

// keep marks the buffers as holding x laid out (x as long as the weight
// grow was given is wide).
func (a *aheadInput) keep(x []float32) {
	a.valid, a.x = len(x) == a.w.Cols, &x[0]
}

// take returns the layout for the product of w with x at kernel family
// impl, if it was made ahead for it.
func (a *aheadInput) take(impl q4Impl, w Mat, x []float32) (xq, nxs []float32, ok bool) {
	if !a.valid || impl != a.impl || len(x) < w.Cols || &x[0] != a.x || w.Cols != a.w.Cols ||
		w.Q4.GroupSize != a.w.Q4.GroupSize || (w.Q4.Zeros == nil) != (a.w.Q4.Zeros == nil) {
		return nil, nil, false
	}
	xq, nxs = a.split(w)
	return xq, nxs, true
}
