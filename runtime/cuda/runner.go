package cuda

import (
	"errors"
	"fmt"

	"github.com/fhkit/fhkit/formats/arch"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/model"
)

// MaxChunk is the most tokens one device forward pass processes at once
// (as runtime/model.MaxChunk: prefill is matrix-matrix within a chunk).
const MaxChunk = model.MaxChunk

// devMat is a weight matrix in device memory: 16/32-bit as stored in the
// file, or packed int4 (q4 non-nil).
type devMat struct {
	rows, cols int
	dt         dtype.DType
	data       Buffer
	q4         *Int4
}

// devLayer is one decoder layer on the device. Norm scales are float32 in
// their effective form (model.Layer folds Gemma's 1 + w in).
type devLayer struct {
	attnNorm, qNorm, kNorm, postAttnNorm, preFFNorm, postFFNorm Buffer
	q, k, v, o, gate, up, down                                  devMat
	sliding                                                     bool
}

// Runner runs a model's forward pass on a CUDA device (or the emulator),
// mirroring runtime/model.Runner step for step: weights are uploaded once
// from the memory-mapped model, the KV cache of the current sequence lives
// on the device, and only token ids go up and hidden states or logits come
// down. The runner has a sequence of its own; a server keeps one Seq per
// request and runs them in turn (Use). A Runner is not safe for concurrent
// use.
type Runner struct {
	Dev *Device
	M   *model.Model
	// Pos is the number of tokens of the current sequence already
	// processed; Limit is its context limit.
	Pos, Limit int
	own, cur   *Seq // the runner's own sequence; the current one
	kv         dtype.DType
	layers     []devLayer
	embed      devMat
	head       devMat
	norm       Buffer
	invFreq    [2]Buffer // RoPE inverse frequencies: global, sliding layers
	fn         map[string]*Function
	// Activations of one chunk (MaxChunk tokens).
	x, xn, q, k, v, att, o, gate, up, down Buffer
	cosG, sinG, cosL, sinL                 Buffer
	hidden, logits, ids                    Buffer
	// in holds a pass's inputs (passInputs), uploaded in one copy before
	// its launches; inBytes is its host image.
	in      Buffer
	inBytes []byte
	// Host scratch of a pass, reused call after call: its rows, the
	// sequence whose last token each row is (−1: none), its hidden states.
	rows    []passRow
	ends    []int
	hostOut []float32
	allocs  []Buffer
	flash   *devFlash
	// stream carries every kernel; the decode step is captured from it
	// into graphs[head] on first use and replayed after (UseGraphs).
	stream Stream
	graphs map[bool]*Graph
	// UseGraphs makes Greedy replay a captured CUDA graph for single-token
	// steps instead of issuing each launch (on by default).
	UseGraphs bool
}

// NewRunner uploads m's weights and allocates a KV cache of kv (F32, BF16
// or F16) for ctx tokens (the model's maximum when ctx <= 0).
func NewRunner(dv *Device, m *model.Model, kv dtype.DType, ctx int) (r *Runner, err error) {
	c := &m.Config
	if kv != dtype.F32 && kv != dtype.BF16 && kv != dtype.F16 {
		return nil, fmt.Errorf("cuda: KV cache dtype %s not supported (want f32, bf16 or f16)", kv)
	}
	if c.HeadDim > 256 || c.HeadDim%2 != 0 {
		return nil, fmt.Errorf("cuda: head dim %d not supported (the attention kernel takes even head dims up to 256)", c.HeadDim)
	}
	if c.NumKVHeads <= 0 || c.NumHeads%c.NumKVHeads != 0 {
		return nil, fmt.Errorf("cuda: %d heads are not a multiple of %d KV heads", c.NumHeads, c.NumKVHeads)
	}
	limit := c.MaxPositionEmbeddings
	if ctx > 0 && ctx < limit {
		limit = ctx
	}
	r = &Runner{Dev: dv, M: m, Limit: limit, kv: kv, fn: map[string]*Function{}, graphs: map[bool]*Graph{}, UseGraphs: true}
	defer func() {
		if err != nil {
			r.Close()
			r = nil
		}
	}()
	if r.stream, err = dv.NewStream(); err != nil {
		return nil, err
	}
	for _, name := range []string{"fh_embed_bf16", "fh_embed_f16", "fh_embed_f32", "fh_rope_table", "fh_rope",
		"fh_rmsnorm", "fh_rmsnorm_add", "fh_add", "fh_gated_act", "fh_softcap", "fh_gemm_bf16", "fh_gemm_f16",
		"fh_gemm_f32", "fh_w4a16_gemv", "fh_w4a16_gemm", "fh_kv_store_f32", "fh_kv_store_bf16", "fh_kv_store_f16",
		"fh_attention_f32", "fh_attention_bf16", "fh_attention_f16", "fh_argmax_rows"} {
		if r.fn[name], err = dv.Function(name); err != nil {
			return nil, err
		}
	}
	h, hd, inter := c.HiddenSize, c.HeadDim, c.IntermediateSize
	qd, kvd := c.NumHeads*hd, c.NumKVHeads*hd
	if r.embed, err = r.uploadMat("model.embed_tokens", m.Embed); err != nil {
		return nil, err
	}
	if m.Embed.DType == dtype.U4 {
		return nil, fmt.Errorf("cuda: a packed int4 embedding is not supported")
	}
	if m.Head.DType == m.Embed.DType && len(m.Head.Data) > 0 && &m.Head.Data[0] == &m.Embed.Data[0] {
		r.head = r.embed // tied
	} else if r.head, err = r.uploadMat("lm_head", m.Head); err != nil {
		return nil, err
	}
	if r.norm, err = r.vec(m.Norm); err != nil {
		return nil, err
	}
	for i := range m.Layers {
		l := &m.Layers[i]
		d := devLayer{sliding: l.Sliding}
		for _, v := range []struct {
			dst *Buffer
			src []float32
		}{{&d.attnNorm, l.AttnNorm}, {&d.qNorm, l.QNorm}, {&d.kNorm, l.KNorm}, {&d.postAttnNorm, l.PostAttnNorm},
			{&d.preFFNorm, l.PreFFNorm}, {&d.postFFNorm, l.PostFFNorm}} {
			if *v.dst, err = r.vec(v.src); err != nil {
				return nil, err
			}
		}
		for _, w := range []struct {
			dst  *devMat
			src  cpu.Mat
			name string
		}{{&d.q, l.Q, "q_proj"}, {&d.k, l.K, "k_proj"}, {&d.v, l.V, "v_proj"}, {&d.o, l.O, "o_proj"},
			{&d.gate, l.Gate, "gate_proj"}, {&d.up, l.Up, "up_proj"}, {&d.down, l.Down, "down_proj"}} {
			if *w.dst, err = r.uploadMat(fmt.Sprintf("layer %d %s", i, w.name), w.src); err != nil {
				return nil, err
			}
		}
		r.layers = append(r.layers, d)
	}
	if r.own, err = r.newSeq(limit, r.alloc); err != nil {
		return nil, err
	}
	r.cur = r.own
	inv := [2][]float32{model.RopeInvFreq(hd, c.RopeTheta, c.RopeScaling), model.RopeInvFreq(hd, c.RopeLocalTheta, arch.RopeScaling{})}
	for i := range inv {
		if r.invFreq[i], err = r.vec(inv[i]); err != nil {
			return nil, err
		}
	}
	T := MaxChunk
	for _, b := range []struct {
		dst *Buffer
		n   int
	}{{&r.x, T * h}, {&r.xn, T * h}, {&r.q, T * qd}, {&r.k, T * kvd}, {&r.v, T * kvd}, {&r.att, T * qd},
		{&r.o, T * h}, {&r.gate, T * inter}, {&r.up, T * inter}, {&r.down, T * h},
		{&r.cosG, T * hd / 2}, {&r.sinG, T * hd / 2}, {&r.cosL, T * hd / 2}, {&r.sinL, T * hd / 2},
		{&r.hidden, T * h}, {&r.logits, T * c.VocabSize}, {&r.ids, T}, {&r.in, newPassInputs(T, len(m.Layers)).size / 4}} {
		if *b.dst, err = r.alloc(4 * b.n); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// alloc allocates a buffer freed by Close.
func (r *Runner) alloc(n int) (Buffer, error) {
	b, err := r.Dev.Alloc(max(n, 4))
	if err != nil {
		return Buffer{}, fmt.Errorf("cuda: model %s does not fit on %s: %w", r.M.File.Path, r.Dev.Name, err)
	}
	r.allocs = append(r.allocs, b)
	return b, nil
}

// vec uploads a float32 vector (nil gives a zero Buffer).
func (r *Runner) vec(v []float32) (Buffer, error) {
	if v == nil {
		return Buffer{}, nil
	}
	b, err := r.alloc(4 * len(v))
	if err != nil {
		return b, err
	}
	return b, r.Dev.UploadF32(b, 0, v)
}

// uploadMat copies a weight from the memory-mapped file to the device.
func (r *Runner) uploadMat(name string, m cpu.Mat) (devMat, error) {
	d := devMat{rows: m.Rows, cols: m.Cols, dt: m.DType}
	if m.DType == dtype.U4 {
		w, err := m.Weight()
		if err != nil {
			return d, fmt.Errorf("cuda: %s: %w", name, err)
		}
		if d.q4, err = r.Dev.UploadInt4(w); err != nil {
			return d, fmt.Errorf("cuda: %s: %w", name, err)
		}
		r.allocs = append(r.allocs, d.q4.Codes, d.q4.Scales, d.q4.Zeros)
		return d, nil
	}
	if m.DType != dtype.BF16 && m.DType != dtype.F16 && m.DType != dtype.F32 {
		return d, fmt.Errorf("cuda: %s: weight dtype %s not supported", name, m.DType)
	}
	var err error
	if d.data, err = r.alloc(len(m.Data)); err != nil {
		return d, err
	}
	return d, r.Dev.Upload(d.data, 0, m.Data)
}

// Close frees every device buffer of the runner.
func (r *Runner) Close() error {
	var errs []error
	for k, g := range r.graphs {
		errs = append(errs, r.Dev.DestroyGraph(g))
		delete(r.graphs, k)
	}
	if r.stream != 0 {
		errs = append(errs, r.Dev.SyncStream(r.stream), r.Dev.DestroyStream(r.stream))
		r.stream = 0
	}
	for _, b := range r.allocs {
		errs = append(errs, r.Dev.Free(b))
	}
	r.allocs = nil
	return errors.Join(errs...)
}

// Reset starts a new sequence in the current one's place (the cache
// memory is reused).
func (r *Runner) Reset() { r.Pos = 0 }

func dtName(dt dtype.DType) string {
	switch dt {
	case dtype.BF16:
		return "bf16"
	case dtype.F16:
		return "f16"
	}
	return "f32"
}

// launch queues a kernel on the runner's stream.
func (r *Runner) launch(name string, grid, block Dim3, args ...any) error {
	return r.Dev.Launch(r.fn[name], grid, block, 0, r.stream, args...)
}

// matmul computes out[t·rows + r] = W[r, :] · x[t·cols:] for T tokens.
func (r *Runner) matmul(out DevPtr, w devMat, x DevPtr, T int) error {
	rowsPerBlock := 8 // 256 threads, one warp per row
	if w.q4 != nil {
		if T == 1 {
			return r.launch("fh_w4a16_gemv", D1(ceilDiv(w.rows, rowsPerBlock)), D1(256), out, w.q4.Codes, w.q4.Scales, w.q4.Zeros, x, w.rows, w.cols, w.q4.Group)
		}
		return r.launch("fh_w4a16_gemm", Dim3{ceilDiv(w.rows, rowsPerBlock), ceilDiv(T, 8), 1}, D1(256), out, w.q4.Codes, w.q4.Scales, w.q4.Zeros, x, w.rows, w.cols, w.q4.Group, T)
	}
	return r.launch("fh_gemm_"+dtName(w.dt), Dim3{ceilDiv(w.rows, rowsPerBlock), ceilDiv(T, 8), 1}, D1(256), out, w.data, x, w.rows, w.cols, T)
}

// normThreads picks a block size for a row of n elements.
func normThreads(n int) int { return min(1024, max(32, (n+31)/32*32)) }

// denseLogits computes the head's logits of n hidden rows into r.logits.
func (r *Runner) denseLogits(hidden DevPtr, n int) error {
	c := &r.M.Config
	if err := r.matmul(r.logits.At(0), r.head, hidden, n); err != nil {
		return err
	}
	if c.FinalLogitSoftcap > 0 {
		return r.launch("fh_softcap", D1(min(1024, ceilDiv(n*c.VocabSize, 256))), D1(256), r.logits, n*c.VocabSize, float32(c.FinalLogitSoftcap))
	}
	return nil
}

// check validates a forward call's tokens against the context limit and
// the vocabulary (as the CPU runner does).
func (r *Runner) check(tokens []int) error {
	return model.CheckTokens(&r.M.Config, r.Pos, r.Limit, tokens)
}
