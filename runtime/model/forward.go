package model

import (
	"fmt"

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
}

// NewRunner returns a Runner on pool.
func NewRunner(m *Model, pool *cpu.Pool) *Runner { return &Runner{M: m, Pool: pool} }

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
	cpu.MatMul(r.Pool, logits, r.M.Head, hidden, n)
	if c.FinalLogitSoftcap > 0 {
		cpu.Softcap(logits, float32(c.FinalLogitSoftcap))
	}
	return logits
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
	r.run(out, seqs)
	return nil
}

// check validates tokens that are to continue st.
func (r *Runner) check(st *State, tokens []int) error {
	c := &r.M.Config
	if len(tokens) == 0 {
		return fmt.Errorf("forward: no tokens")
	}
	if st.Pos+len(tokens) > st.Limit {
		return fmt.Errorf("context limit exceeded: %d tokens already, %d more, limit %d (model maximum %d)", st.Pos, len(tokens), st.Limit, c.MaxPositionEmbeddings)
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
func (r *Runner) forwardChunk(segs []segment, all []float32) {
	m, p := r.M, r.Pool
	c := &m.Config
	h, hd, half := c.HiddenSize, c.HeadDim, c.HeadDim/2
	qd, kvd := c.NumHeads*hd, c.NumKVHeads*hd
	eps := float32(c.RMSNormEps)
	T := 0
	for i := range segs {
		segs[i].row, segs[i].pos0 = T, segs[i].st.Pos
		T += len(segs[i].tokens)
	}
	r.buf.ensure(T, c)
	b := &r.buf
	x, xn := b.x[:T*h], b.xn[:T*h]

	// Each row's sequence and position; embedding lookup, scaled for Gemma
	// (by the weight-dtype scale); RoPE tables for the row's position,
	// global and sliding (local) bases.
	for si := range segs {
		s := &segs[si]
		for j, id := range s.tokens {
			t := s.row + j
			b.rowSeg[t], b.rowPos[t] = int32(si), s.pos0+j
			row := x[t*h : (t+1)*h]
			m.Embed.RowF32(row, id)
			if m.EmbedScale != 1 {
				for i := range row {
					row[i] *= m.EmbedScale
				}
			}
			m.rope[0].table(b.cosG[t*half:(t+1)*half], b.sinG[t*half:(t+1)*half], s.pos0+j)
			m.rope[1].table(b.cosL[t*half:(t+1)*half], b.sinL[t*half:(t+1)*half], s.pos0+j)
		}
	}

	for li := range m.Layers {
		l := &m.Layers[li]
		for si := range segs {
			segs[si].st.layers[li].reserve(segs[si].pos0 + len(segs[si].tokens))
		}

		// Attention block.
		rmsNormRows(xn, x, l.AttnNorm, eps, T)
		q, k, v := b.q[:T*qd], b.k[:T*kvd], b.v[:T*kvd]
		cpu.MatMul(p, q, l.Q, xn, T)
		cpu.MatMul(p, k, l.K, xn, T)
		cpu.MatMul(p, v, l.V, xn, T)
		cos, sin := b.cosG, b.sinG
		if l.Sliding {
			cos, sin = b.cosL, b.sinL
		}
		for t := 0; t < T; t++ {
			ct, snt := cos[t*half:(t+1)*half], sin[t*half:(t+1)*half]
			for hh := 0; hh < c.NumHeads; hh++ {
				qh := q[t*qd+hh*hd : t*qd+(hh+1)*hd]
				if l.QNorm != nil {
					cpu.RMSNorm(qh, qh, l.QNorm, eps)
				}
				cpu.RoPE(qh, ct, snt)
			}
			for g := 0; g < c.NumKVHeads; g++ {
				kh := k[t*kvd+g*hd : t*kvd+(g+1)*hd]
				if l.KNorm != nil {
					cpu.RMSNorm(kh, kh, l.KNorm, eps)
				}
				cpu.RoPE(kh, ct, snt)
			}
		}
		for si := range segs {
			s := &segs[si]
			lo, hi := s.row*kvd, (s.row+len(s.tokens))*kvd
			roundTrip(k[lo:hi], s.st.kvDT)
			roundTrip(v[lo:hi], s.st.kvDT)
		}
		att := b.att[:T*qd]
		r.attention(att, q, k, v, segs, li, T, l.Sliding)
		for si := range segs {
			s := &segs[si]
			cache := s.st.layers[li]
			for j := range s.tokens {
				t := s.row + j
				cache.store(s.pos0+j, k[t*kvd:(t+1)*kvd], v[t*kvd:(t+1)*kvd])
			}
		}
		o := b.o[:T*h]
		cpu.MatMul(p, o, l.O, att, T)
		if c.SandwichNorms {
			rmsNormRows(o, o, l.PostAttnNorm, eps, T)
		}
		addTo(x, o)

		// MLP block.
		mlpNorm := l.PostAttnNorm // Llama/Qwen3: post_attention_layernorm is the pre-MLP norm
		if c.SandwichNorms {
			mlpNorm = l.PreFFNorm
		}
		rmsNormRows(xn, x, mlpNorm, eps, T)
		gate, up, down := b.gate[:T*c.IntermediateSize], b.up[:T*c.IntermediateSize], b.down[:T*h]
		cpu.MatMul(p, gate, l.Gate, xn, T)
		cpu.MatMul(p, up, l.Up, xn, T)
		cpu.GatedActivation(gate, up, c.HiddenAct == "gelu_pytorch_tanh")
		cpu.MatMul(p, down, l.Down, gate, T)
		if c.SandwichNorms {
			rmsNormRows(down, down, l.PostFFNorm, eps, T)
		}
		addTo(x, down)
	}
	for si := range segs {
		segs[si].st.Pos += len(segs[si].tokens)
	}

	// Final norm, for every row or only each segment's last.
	if all != nil {
		rmsNormRows(all, x, m.Norm, eps, T)
	}
	for _, s := range segs {
		if s.last != nil {
			t := s.row + len(s.tokens) - 1
			cpu.RMSNorm(s.last, x[t*h:(t+1)*h], m.Norm, eps)
		}
	}
}

// rmsNormRows normalizes T rows of x into out.
func rmsNormRows(out, x, scale []float32, eps float32, T int) {
	n := len(scale)
	for t := 0; t < T; t++ {
		cpu.RMSNorm(out[t*n:(t+1)*n], x[t*n:(t+1)*n], scale, eps)
	}
}

func addTo(dst, src []float32) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] += src[i]
	}
}

// attnJob is the attention work of one layer, shared with the pool's
// workers through the Runner (so no closure is built per call).
type attnJob struct {
	out, q, k, v []float32 // k and v: the chunk's own rows, already rounded
	segs         []segment
	layer, T     int
	parts        int
	sliding      bool
}

// attention computes softmax(q·kᵀ·scale + causal/sliding mask)·v for the T
// rows of the chunk. Each row attends over its own sequence: positions
// before the segment's first are read from that state's cache in place,
// the segment's own positions from the chunk's k and v rows.
func (r *Runner) attention(out, q, k, v []float32, segs []segment, layer, T int, sliding bool) {
	c := &r.M.Config
	jobs := T * c.NumHeads
	parts := min(r.Pool.Threads(), jobs)
	// Scratch for the longest score row any query of the chunk needs.
	longest := 0
	for _, s := range segs {
		n := s.pos0 + len(s.tokens)
		if sliding {
			n = min(n, c.SlidingWindow)
		}
		longest = max(longest, n)
	}
	b := &r.buf
	for len(b.scores) < parts {
		b.scores = append(b.scores, nil)
	}
	for i := range parts {
		if len(b.scores[i]) < longest {
			b.scores[i] = make([]float32, max(longest, 2*len(b.scores[i])))
		}
	}
	r.attn = attnJob{out: out, q: q, k: k, v: v, segs: segs, layer: layer, T: T, parts: parts, sliding: sliding}
	if r.attnFn == nil {
		r.attnFn = func(lo, hi int) {
			for part := lo; part < hi; part++ {
				r.attendPart(part)
			}
		}
	}
	// One range per worker, each with its own score row; jobs are dealt
	// round-robin because rows of different sequences differ in length.
	r.Pool.For(parts, 1, r.attnFn)
	r.attn = attnJob{}
}

// attendPart runs the attention jobs (row, head) of worker part.
func (r *Runner) attendPart(part int) {
	a := &r.attn
	c := &r.M.Config
	hd := c.HeadDim
	qd, kvd := c.NumHeads*hd, c.NumKVHeads*hd
	group := c.NumHeads / c.NumKVHeads
	scale := float32(c.AttentionScale)
	softcap := float32(c.AttnLogitSoftcap)
	scores := r.buf.scores[part]
	for job := part; job < a.T*c.NumHeads; job += a.parts {
		t, hh := job/c.NumHeads, job%c.NumHeads
		s := &a.segs[r.buf.rowSeg[t]]
		qpos := r.buf.rowPos[t]
		first := 0
		if a.sliding {
			first = max(0, qpos-c.SlidingWindow+1)
		}
		// Positions before split are in the cache; the rest are this chunk's.
		split := max(first, s.pos0)
		g := hh / group
		qh := a.q[t*qd+hh*hd : t*qd+(hh+1)*hd]
		sc := scores[:qpos-first+1]
		cache := s.st.layers[a.layer]
		cache.scores(sc[:split-first], qh, first, g*hd, scale)
		for p := split; p <= qpos; p++ {
			row := (s.row+p-s.pos0)*kvd + g*hd
			sc[p-first] = cpu.Dot(qh, a.k[row:row+hd]) * scale
		}
		if softcap > 0 {
			cpu.Softcap(sc, softcap)
		}
		cpu.Softmax(sc)
		oh := a.out[t*qd+hh*hd : t*qd+(hh+1)*hd]
		clear(oh)
		cache.accumulate(oh, sc[:split-first], first, g*hd)
		for p := split; p <= qpos; p++ {
			row := (s.row+p-s.pos0)*kvd + g*hd
			cpu.Axpy(oh, sc[p-first], a.v[row:row+hd])
		}
	}
}
