package cuda

import (
	"encoding/binary"
	"fmt"
)

// ForwardHidden runs tokens, which continue the current sequence, and
// returns the final-normed hidden states (the head's input) of every token
// (len(tokens) × hidden) when all is true, of the last one otherwise.
func (r *Runner) ForwardHidden(tokens []int, all bool) ([]float32, error) {
	if err := r.check(tokens); err != nil {
		return nil, err
	}
	H := r.M.Config.HiddenSize
	out := make([]float32, H)
	if all {
		out = make([]float32, len(tokens)*H)
	}
	err := r.chunks(tokens, all, func(start, n int) error {
		if !all {
			return r.Dev.DownloadF32(out, r.hidden, 0)
		}
		return r.Dev.DownloadF32(out[start*H:(start+n)*H], r.hidden, 0)
	})
	return out, err
}

// Forward is ForwardHidden followed by the dense head on the device (and
// the final soft-cap): the logits of every token (len(tokens) × vocab)
// when all is true, of the last token otherwise.
func (r *Runner) Forward(tokens []int, all bool) ([]float32, error) {
	if err := r.check(tokens); err != nil {
		return nil, err
	}
	V := r.M.Config.VocabSize
	out := make([]float32, V)
	if all {
		out = make([]float32, len(tokens)*V)
	}
	err := r.chunks(tokens, all, func(start, n int) error {
		if !all {
			n, start = 1, 0
		}
		if err := r.denseLogits(r.hidden.At(0), n); err != nil {
			return err
		}
		return r.Dev.DownloadF32(out[start*V:(start+n)*V], r.logits, 0)
	})
	return out, err
}

// chunks runs tokens in chunks of at most MaxChunk. After each chunk that
// produced output (every chunk with all, the last one otherwise), done is
// called with the chunk's offset and length while r.hidden holds its
// final-normed states (all rows, or the last token's at row 0).
func (r *Runner) chunks(tokens []int, all bool, done func(start, n int) error) error {
	for start := 0; start < len(tokens); start += MaxChunk {
		chunk := tokens[start:min(start+MaxChunk, len(tokens))]
		last := start+len(chunk) == len(tokens)
		if err := r.chunk(chunk, all, all || last); err != nil {
			// The device state past r.Pos is garbage now; the next call
			// overwrites it.
			return err
		}
		if all || last {
			if err := done(start, len(chunk)); err != nil {
				return err
			}
		}
	}
	return nil
}

// chunk runs up to MaxChunk tokens at positions r.Pos.. through the model,
// mirroring runtime/model's forwardChunk. With out, the final norm is
// applied to every row (all) or to the last token's row, into r.hidden.
func (r *Runner) chunk(tokens []int, all, out bool) error {
	if err := r.upload(tokens); err != nil {
		return err
	}
	if err := r.body(len(tokens), all, out); err != nil {
		return err
	}
	r.Pos += len(tokens)
	return nil
}

// upload writes the inputs of a pass of tokens continuing the current
// sequence at r.Pos.
func (r *Runner) upload(tokens []int) error {
	rows := r.rows[:0]
	for i, t := range tokens {
		rows = append(rows, passRow{seq: r.cur, token: t, pos: r.Pos + i})
	}
	r.rows = rows[:0]
	return r.uploadRows(rows)
}

// passRow is one row of a pass: a token of a sequence at a position.
type passRow struct {
	seq        *Seq
	token, pos int
}

// passInputs is the layout of a pass's inputs in r.in for T rows and L
// layers (every kernel reads them from there, which is what lets a
// captured graph serve every decode step, of any sequence):
//
//	tok  int32 [T]      token ids
//	pos  int32 [T]      positions
//	ring int32 [L][T]   the ring of each row's cache per layer (0: none)
//	     (padding to 8 bytes)
//	kc   uint64 [L][T]  the device address of each row's key cache per layer
//	vc   uint64 [L][T]  and of its value cache
type passInputs struct {
	T, L                   int
	tok, pos, ring, kc, vc int // byte offsets
	size                   int
}

func newPassInputs(T, L int) passInputs {
	p := passInputs{T: T, L: L, tok: 0, pos: 4 * T, ring: 8 * T}
	p.kc = (p.ring + 4*L*T + 7) &^ 7
	p.vc = p.kc + 8*L*T
	p.size = p.vc + 8*L*T
	return p
}

// uploadRows writes rows' inputs to r.in in one copy.
func (r *Runner) uploadRows(rows []passRow) error {
	p := newPassInputs(len(rows), len(r.layers))
	if cap(r.inBytes) < p.size {
		r.inBytes = make([]byte, p.size)
	}
	b := r.inBytes[:p.size]
	clear(b)
	le := binary.LittleEndian
	for t, row := range rows {
		le.PutUint32(b[p.tok+4*t:], uint32(row.token))
		le.PutUint32(b[p.pos+4*t:], uint32(row.pos))
		for li, kv := range row.seq.layers {
			i := li*p.T + t
			le.PutUint32(b[p.ring+4*i:], uint32(kv.ring))
			le.PutUint64(b[p.kc+8*i:], kv.kc.Ptr)
			le.PutUint64(b[p.vc+8*i:], kv.vc.Ptr)
		}
	}
	return r.Dev.Upload(r.in, 0, b)
}

// body queues the launches of one chunk of T tokens (nothing but kernel
// launches on r.stream, so it can be captured).
func (r *Runner) body(T int, all, out bool) error {
	m := r.M
	c := &m.Config
	h, hd := c.HiddenSize, c.HeadDim
	half := hd / 2
	eps := float32(c.RMSNormEps)
	in := newPassInputs(T, len(r.layers))
	steps := []func() error{
		func() error {
			return r.launch("fh_embed_"+dtName(r.embed.dt), D1(T), D1(normThreads(h)), r.x, r.embed.data, r.in.At(in.tok), h, m.EmbedScale)
		},
		func() error {
			return r.launch("fh_rope_table", D1(T), D1(normThreads(half)), r.cosG, r.sinG, r.invFreq[0], r.in.At(in.pos), half)
		},
		func() error {
			return r.launch("fh_rope_table", D1(T), D1(normThreads(half)), r.cosL, r.sinL, r.invFreq[1], r.in.At(in.pos), half)
		},
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	for li := range r.layers {
		if err := r.layer(li, T); err != nil {
			return fmt.Errorf("layer %d: %w", li, err)
		}
	}
	if !out {
		return nil
	}
	first := 0
	if !all {
		first = T - 1
	}
	return r.launch("fh_rmsnorm", D1(T-first), D1(normThreads(h)), r.hidden, r.x.At(4*first*h), r.norm, h, eps, 0)
}

// layer runs one decoder layer over the T tokens in r.x.
func (r *Runner) layer(li int, T int) error {
	l := &r.layers[li]
	in := newPassInputs(T, len(r.layers))
	pos, rings := r.in.At(in.pos), r.in.At(in.ring+4*li*T)
	kcs, vcs := r.in.At(in.kc+8*li*T), r.in.At(in.vc+8*li*T)
	c := &r.M.Config
	h, hd, inter := c.HiddenSize, c.HeadDim, c.IntermediateSize
	half := hd / 2
	nh, nkv := c.NumHeads, c.NumKVHeads
	kvd := nkv * hd
	eps := float32(c.RMSNormEps)
	nt := normThreads(h)
	cos, sin := r.cosG, r.sinG
	window := 0
	if l.sliding {
		cos, sin = r.cosL, r.sinL
		window = c.SlidingWindow
	}
	gelu := 0
	if c.GELU() {
		gelu = 1
	}
	// The residual add after each block: Gemma normalizes the block's
	// output first (sandwich norms).
	residual := func(y Buffer, post Buffer) error {
		if c.SandwichNorms {
			return r.launch("fh_rmsnorm_add", D1(T), D1(nt), r.x, y, post, h, eps, 0)
		}
		return r.launch("fh_add", D1(min(1024, ceilDiv(T*h, 256))), D1(256), r.x, y, T*h)
	}
	mlpNorm := l.postAttnNorm // Llama/Qwen3: the pre-MLP norm
	if c.SandwichNorms {
		mlpNorm = l.preFFNorm
	}
	steps := []func() error{
		func() error { return r.launch("fh_rmsnorm", D1(T), D1(nt), r.xn, r.x, l.attnNorm, h, eps, 0) },
		func() error { return r.matmul(r.q.At(0), l.q, r.xn.At(0), T) },
		func() error { return r.matmul(r.k.At(0), l.k, r.xn.At(0), T) },
		func() error { return r.matmul(r.v.At(0), l.v, r.xn.At(0), T) },
		func() error {
			if l.qNorm.Ptr == 0 {
				return nil
			}
			if err := r.launch("fh_rmsnorm", D1(T*nh), D1(normThreads(hd)), r.q, r.q, l.qNorm, hd, eps, 0); err != nil {
				return err
			}
			return r.launch("fh_rmsnorm", D1(T*nkv), D1(normThreads(hd)), r.k, r.k, l.kNorm, hd, eps, 0)
		},
		func() error {
			return r.launch("fh_rope", Dim3{nh, T, 1}, D1(normThreads(half)), r.q, cos, sin, nh, half)
		},
		func() error {
			return r.launch("fh_rope", Dim3{nkv, T, 1}, D1(normThreads(half)), r.k, cos, sin, nkv, half)
		},
		func() error {
			return r.launch("fh_kv_store_"+dtName(r.kv), D1(T), D1(normThreads(kvd)), kcs, vcs, r.k, r.v, pos, rings, kvd)
		},
		func() error {
			return r.launch("fh_attention_"+dtName(r.kv), Dim3{nh, T, 1}, D1(128), r.att, r.q, kcs, vcs, pos, rings,
				nh, nkv, hd, window, float32(c.AttentionScale), float32(c.AttnLogitSoftcap))
		},
		func() error { return r.matmul(r.o.At(0), l.o, r.att.At(0), T) },
		func() error { return residual(r.o, l.postAttnNorm) },
		func() error { return r.launch("fh_rmsnorm", D1(T), D1(nt), r.xn, r.x, mlpNorm, h, eps, 0) },
		func() error { return r.matmul(r.gate.At(0), l.gate, r.xn.At(0), T) },
		func() error { return r.matmul(r.up.At(0), l.up, r.xn.At(0), T) },
		func() error {
			return r.launch("fh_gated_act", D1(min(1024, ceilDiv(T*inter, 256))), D1(256), r.gate, r.up, T*inter, gelu)
		},
		func() error { return r.matmul(r.down.At(0), l.down, r.gate.At(0), T) },
		func() error { return residual(r.down, l.postFFNorm) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return nil
}
