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
}

// NewRunner returns a Runner on pool.
func NewRunner(m *Model, pool *cpu.Pool) *Runner { return &Runner{M: m, Pool: pool} }

// buffers are the activations of one chunk of T tokens.
type buffers struct {
	T                      int
	x, xn, q, k, v, att, o []float32
	gate, up, down         []float32
	cosG, sinG, cosL, sinL []float32
	pastK, pastV           []float32
}

func (b *buffers) ensure(T int, c *arch.Config) {
	if b.T >= T {
		return
	}
	h, qd, kvd, inter, half := c.HiddenSize, c.NumHeads*c.HeadDim, c.NumKVHeads*c.HeadDim, c.IntermediateSize, c.HeadDim/2
	*b = buffers{
		T: T, x: make([]float32, T*h), xn: make([]float32, T*h),
		q: make([]float32, T*qd), k: make([]float32, T*kvd), v: make([]float32, T*kvd),
		att: make([]float32, T*qd), o: make([]float32, T*h),
		gate: make([]float32, T*inter), up: make([]float32, T*inter), down: make([]float32, T*h),
		cosG: make([]float32, T*half), sinG: make([]float32, T*half),
		cosL: make([]float32, T*half), sinL: make([]float32, T*half),
	}
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
	c := &r.M.Config
	if len(tokens) == 0 {
		return nil, fmt.Errorf("forward: no tokens")
	}
	if st.Pos+len(tokens) > st.Limit {
		return nil, fmt.Errorf("context limit exceeded: %d tokens already, %d more, limit %d (model maximum %d)", st.Pos, len(tokens), st.Limit, c.MaxPositionEmbeddings)
	}
	for _, id := range tokens {
		if id < 0 || id >= c.VocabSize {
			return nil, fmt.Errorf("token id %d outside the vocabulary [0, %d)", id, c.VocabSize)
		}
	}
	H := c.HiddenSize
	var hidden []float32
	if all {
		hidden = make([]float32, len(tokens)*H)
	} else {
		hidden = make([]float32, H)
	}
	for start := 0; start < len(tokens); start += MaxChunk {
		chunk := tokens[start:min(start+MaxChunk, len(tokens))]
		last := start+len(chunk) == len(tokens)
		switch {
		case all:
			r.forwardChunk(st, chunk, hidden[start*H:(start+len(chunk))*H], true)
		case last:
			r.forwardChunk(st, chunk, hidden, false)
		default:
			r.forwardChunk(st, chunk, nil, false)
		}
	}
	return hidden, nil
}

// forwardChunk runs up to MaxChunk tokens at positions st.Pos.. through the
// model. out receives the final-normed hidden states: T rows when all is
// set, the last token's row when it is non-nil otherwise, nothing when nil.
func (r *Runner) forwardChunk(st *State, tokens []int, out []float32, all bool) {
	m, p := r.M, r.Pool
	c := &m.Config
	T, pos0 := len(tokens), st.Pos
	h, hd, half := c.HiddenSize, c.HeadDim, c.HeadDim/2
	qd, kvd := c.NumHeads*hd, c.NumKVHeads*hd
	eps := float32(c.RMSNormEps)
	r.buf.ensure(T, c)
	b := &r.buf
	x, xn := b.x[:T*h], b.xn[:T*h]

	// Embedding lookup, scaled for Gemma (by the weight-dtype scale).
	for t, id := range tokens {
		row := x[t*h : (t+1)*h]
		m.Embed.RowF32(row, id)
		if m.EmbedScale != 1 {
			for i := range row {
				row[i] *= m.EmbedScale
			}
		}
	}
	// RoPE tables for each position: global and sliding (local) bases.
	for t := 0; t < T; t++ {
		m.rope[0].table(b.cosG[t*half:(t+1)*half], b.sinG[t*half:(t+1)*half], pos0+t)
		m.rope[1].table(b.cosL[t*half:(t+1)*half], b.sinL[t*half:(t+1)*half], pos0+t)
	}

	for li := range m.Layers {
		l := &m.Layers[li]
		cache := st.layers[li]
		cache.reserve(pos0 + T)

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
		roundTrip(k, st.kvDT)
		roundTrip(v, st.kvDT)
		att := b.att[:T*qd]
		r.attention(att, q, k, v, cache, pos0, T, l.Sliding)
		for t := 0; t < T; t++ {
			cache.store(pos0+t, k[t*kvd:(t+1)*kvd], v[t*kvd:(t+1)*kvd])
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
	st.Pos += T

	if out == nil {
		return
	}
	// Final norm, for every position or only the last.
	first := 0
	if !all {
		first = T - 1
	}
	rmsNormRows(out, x[first*h:], m.Norm, eps, T-first)
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

// attention computes softmax(q·kᵀ·scale + causal/sliding mask)·v for the T
// queries at positions pos0.., over the cached past keys and the chunk's
// own keys k, v (already rounded to the cache precision).
func (r *Runner) attention(out, q, k, v []float32, cache *layerCache, pos0, T int, sliding bool) {
	c := &r.M.Config
	hd := c.HeadDim
	qd, kvd := c.NumHeads*hd, c.NumKVHeads*hd
	group := c.NumHeads / c.NumKVHeads
	window := c.SlidingWindow
	// The earliest position any query of the chunk can see.
	pastStart := 0
	if sliding {
		pastStart = max(0, pos0-window+1)
	}
	nPast := pos0 - pastStart
	b := &r.buf
	if cap(b.pastK) < (nPast+T)*kvd {
		b.pastK = make([]float32, (nPast+T)*kvd)
		b.pastV = make([]float32, (nPast+T)*kvd)
	}
	// keys/values of positions pastStart .. pos0+T-1, one row each.
	keys, vals := b.pastK[:(nPast+T)*kvd], b.pastV[:(nPast+T)*kvd]
	for i := 0; i < nPast; i++ {
		cache.load(pastStart+i, keys[i*kvd:(i+1)*kvd], vals[i*kvd:(i+1)*kvd])
	}
	copy(keys[nPast*kvd:], k)
	copy(vals[nPast*kvd:], v)

	scale := float32(c.AttentionScale)
	softcap := float32(c.AttnLogitSoftcap)
	r.Pool.For(T*c.NumHeads, 1, func(lo, hi int) {
		scores := make([]float32, nPast+T)
		for job := lo; job < hi; job++ {
			t, hh := job/c.NumHeads, job%c.NumHeads
			qpos := pos0 + t
			first := pastStart
			if sliding {
				first = max(pastStart, qpos-window+1)
			}
			g := hh / group
			qh := q[t*qd+hh*hd : t*qd+(hh+1)*hd]
			s := scores[:qpos-first+1]
			for p := first; p <= qpos; p++ {
				row := (p - pastStart) * kvd
				s[p-first] = cpu.Dot(qh, keys[row+g*hd:row+(g+1)*hd]) * scale
			}
			if softcap > 0 {
				cpu.Softcap(s, softcap)
			}
			cpu.Softmax(s)
			oh := out[t*qd+hh*hd : t*qd+(hh+1)*hd]
			clear(oh)
			for p := first; p <= qpos; p++ {
				row := (p - pastStart) * kvd
				cpu.Axpy(oh, s[p-first], vals[row+g*hd:row+(g+1)*hd])
			}
		}
	})
}
