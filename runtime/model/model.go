// Package model loads a .fhm model and runs its forward pass on the CPU,
// following the Hugging Face transformers implementations of Gemma-3,
// Llama and Qwen3 with float32 activations (see forward.go).
package model

import (
	"fmt"
	"math"

	"github.com/fhkit/fhkit/formats/arch"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/formats/int4"
	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/hugemem"
)

// Layer holds one decoder layer's weights. Norm scales are float32 and
// already in their effective form ((1 + w) for Gemma).
type Layer struct {
	AttnNorm       []float32 // input_layernorm
	Q, K, V, O     cpu.Mat
	QNorm, KNorm   []float32 // per-head q/k norms (Gemma-3, Qwen3); nil otherwise
	PostAttnNorm   []float32 // Gemma: on the attention output; Llama/Qwen3: the pre-MLP norm
	PreFFNorm      []float32 // Gemma only
	Gate, Up, Down cpu.Mat
	PostFFNorm     []float32 // Gemma only
	Sliding        bool
}

// weights returns the layer's linear weights.
func (l *Layer) weights() [7]cpu.Mat {
	return [7]cpu.Mat{l.Q, l.K, l.V, l.O, l.Gate, l.Up, l.Down}
}

// BodyBytes is what the layers read per decoded token: every linear
// weight with its int4 scales and zero points (the embedding row, norms
// and KV cache are small at short contexts).
func (m *Model) BodyBytes() int64 {
	var n int64
	for i := range m.Layers {
		for _, w := range m.Layers[i].weights() {
			n += w.Bytes()
		}
	}
	return n
}

// Model is a loaded model. Weights alias the memory-mapped file.
type Model struct {
	Config arch.Config
	File   *fhm.File
	Embed  cpu.Mat // [vocab, hidden]
	Layers []Layer
	Norm   []float32
	Head   cpu.Mat // [vocab, hidden]; the embedding when tied
	// EmbedScale is the Gemma embedding multiplier rounded to the weight
	// dtype, as transformers does (sqrt(1152) = 33.94 becomes 34 in bf16).
	EmbedScale float32
	rope       [2]ropeFreqs // [0] global layers, [1] sliding layers
	// mem holds the weights repacked at load (Load).
	mem *hugemem.Arena
}

// Load opens and loads a .fhm file. Close the model to unmap it.
func Load(path string) (*Model, error) {
	f, err := fhm.Open(path)
	if err != nil {
		return nil, err
	}
	m, err := FromFile(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	// Decode reads every weight of the body and the head in full every
	// token: they go to huge pages now (hugemem; a decode step's body
	// took 9.8 ms from 4 KiB pages against 8.3 from huge pages), int4
	// ones as the copy the kernels repack them into and wide float ones in
	// the column tiles of the matrix-vector kernels (PrepareMatVec), other
	// float ones as they are, and the file's pages leave the resident set
	// (the CUDA upload and prefill read what they need back). A tied head
	// is the embedding: one copy serves both.
	m.mem = hugemem.New()
	tied := len(m.Head.Data) > 0 && len(m.Embed.Data) > 0 && &m.Head.Data[0] == &m.Embed.Data[0]
	for i := range m.Layers {
		l := &m.Layers[i]
		for _, w := range []*cpu.Mat{&l.Q, &l.K, &l.V, &l.O, &l.Gate, &l.Up, &l.Down} {
			m.inHugePages(w)
		}
	}
	// With a FlashHead the dense head only scores a few special tokens
	// per step (and serves --head dense): it stays in the file's pages,
	// which saves a copy of the vocabulary's rows (604 MB, ~1 s of load
	// for gemma-3-1b).
	if f.Metadata.FlashHead == nil {
		m.inHugePages(&m.Head)
		if tied {
			m.Embed = m.Head
		}
	}
	return m, nil
}

// inHugePages moves *w to m.mem (Load).
func (m *Model) inHugePages(w *cpu.Mat) {
	if w.PrepareMatVec(m.mem) {
		// The kernels' own copy serves decode (a wide float weight's
		// Data still serves prefill, from the page cache).
		m.File.Release(w.Data)
		return
	}
	if w.DType == dtype.U4 {
		return // no kernel copy on this CPU: the file's pages serve
	}
	data := m.mem.Bytes(len(w.Data))
	if err := m.File.CopyOut(data, w.Data); err != nil {
		return // the file's pages keep serving
	}
	moved, err := cpu.NewMat(w.Rows, w.Cols, w.DType, data)
	if err != nil {
		return // FromFile made *w from the same shape and dtype
	}
	m.File.Release(w.Data)
	*w = moved
}

// Close unmaps the model file.
func (m *Model) Close() error { return m.File.Close() }

// FromFile builds a Model over an open .fhm file, checking that every
// tensor the architecture needs is present with the right shape and dtype.
func FromFile(f *fhm.File) (*Model, error) {
	cfg := f.Metadata.Model
	if !arch.IsSupported(cfg.Architecture) {
		return nil, fmt.Errorf("%s: architecture %q is not supported by this runtime (supported: %v)", f.Path, cfg.Architecture, arch.Supported())
	}
	m := &Model{Config: cfg, File: f}
	var errs []error
	mat := func(name string, rows, cols int) cpu.Mat {
		t, ok := f.Tensor(name)
		if !ok {
			// W4A16: a packed int4 weight replaces P.weight (formats/int4).
			if q, found, err := int4.Find(f, name); found {
				if err == nil && (q.Rows != rows || q.Cols != cols) {
					err = fmt.Errorf("packed weight %q is [%d %d], want [%d %d]", name, q.Rows, q.Cols, rows, cols)
				}
				if err != nil {
					errs = append(errs, err)
					return cpu.Mat{}
				}
				w, err := cpu.NewInt4Mat(q)
				if err != nil {
					errs = append(errs, fmt.Errorf("tensor %q: %w", name, err))
				}
				return w
			}
			errs = append(errs, fmt.Errorf("missing tensor %q", name))
			return cpu.Mat{}
		}
		if len(t.Info.Shape) != 2 || t.Info.Shape[0] != int64(rows) || t.Info.Shape[1] != int64(cols) {
			errs = append(errs, fmt.Errorf("tensor %q has shape %v, want [%d %d]", name, t.Info.Shape, rows, cols))
			return cpu.Mat{}
		}
		w, err := cpu.NewMat(rows, cols, t.Info.DType, t.Data)
		if err != nil {
			errs = append(errs, fmt.Errorf("tensor %q: %w", name, err))
		}
		return w
	}
	plusOne := cfg.NormPlusOne
	vec := func(name string, n int) []float32 {
		t, ok := f.Tensor(name)
		if !ok {
			errs = append(errs, fmt.Errorf("missing tensor %q", name))
			return nil
		}
		if len(t.Info.Shape) != 1 || t.Info.Shape[0] != int64(n) || !t.Info.DType.IsFloat() {
			errs = append(errs, fmt.Errorf("tensor %q is %s%v, want a float vector [%d]", name, t.Info.DType, t.Info.Shape, n))
			return nil
		}
		v := make([]float32, n)
		dtype.DecodeFloats(v, t.Data, t.Info.DType)
		if plusOne {
			for i := range v {
				v[i] += 1
			}
		}
		return v
	}
	h, inter, hd := cfg.HiddenSize, cfg.IntermediateSize, cfg.HeadDim
	qd, kvd := cfg.NumHeads*hd, cfg.NumKVHeads*hd
	m.Embed = mat("model.embed_tokens.weight", cfg.VocabSize, h)
	for i := 0; i < cfg.NumLayers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		l := Layer{
			AttnNorm:     vec(p+"input_layernorm.weight", h),
			Q:            mat(p+"self_attn.q_proj.weight", qd, h),
			K:            mat(p+"self_attn.k_proj.weight", kvd, h),
			V:            mat(p+"self_attn.v_proj.weight", kvd, h),
			O:            mat(p+"self_attn.o_proj.weight", h, qd),
			PostAttnNorm: vec(p+"post_attention_layernorm.weight", h),
			Gate:         mat(p+"mlp.gate_proj.weight", inter, h),
			Up:           mat(p+"mlp.up_proj.weight", inter, h),
			Down:         mat(p+"mlp.down_proj.weight", h, inter),
			Sliding:      cfg.IsSliding(i),
		}
		if cfg.QKNorm {
			l.QNorm = vec(p+"self_attn.q_norm.weight", hd)
			l.KNorm = vec(p+"self_attn.k_norm.weight", hd)
		}
		if cfg.SandwichNorms {
			l.PreFFNorm = vec(p+"pre_feedforward_layernorm.weight", h)
			l.PostFFNorm = vec(p+"post_feedforward_layernorm.weight", h)
		}
		m.Layers = append(m.Layers, l)
	}
	m.Norm = vec("model.norm.weight", h)
	if cfg.TieWordEmbeddings {
		m.Head = m.Embed
	} else {
		m.Head = mat("lm_head.weight", cfg.VocabSize, h)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s: %w", f.Path, joinErrs(errs))
	}
	m.EmbedScale = 1
	if cfg.EmbedScale != 0 {
		m.EmbedScale = roundTo(float32(cfg.EmbedScale), m.Embed.DType)
	}
	m.rope[0] = newRopeFreqs(hd, cfg.RopeTheta, cfg.RopeScaling)
	m.rope[1] = newRopeFreqs(hd, cfg.RopeLocalTheta, arch.RopeScaling{})
	return m, nil
}

func joinErrs(errs []error) error {
	if len(errs) > 8 {
		errs = append(errs[:8], fmt.Errorf("... and %d more", len(errs)-8))
	}
	msg := ""
	for i, e := range errs {
		if i > 0 {
			msg += "; "
		}
		msg += e.Error()
	}
	return fmt.Errorf("%s", msg)
}

// roundTo rounds v to the precision of dt (how transformers casts the
// float32 embedding scale to the weight dtype).
func roundTo(v float32, dt dtype.DType) float32 {
	switch dt {
	case dtype.BF16:
		return dtype.BF16ToF32(dtype.F32ToBF16(v))
	case dtype.F16:
		return dtype.F16ToF32(dtype.F32ToF16(v))
	}
	return v
}

// ropeFreqs holds the inverse frequencies of one RoPE variant, computed in
// float32 as transformers does.
type ropeFreqs struct{ inv []float32 }

func newRopeFreqs(headDim int, theta float64, sc arch.RopeScaling) ropeFreqs {
	return ropeFreqs{inv: RopeInvFreq(headDim, theta, sc)}
}

// RopeInvFreq returns the RoPE inverse frequencies (headDim/2) for base
// theta and a scaling (none, linear or llama3), computed in float32 as
// transformers does; the CUDA backend uploads the same table.
func RopeInvFreq(headDim int, theta float64, sc arch.RopeScaling) []float32 {
	half := headDim / 2
	inv := make([]float32, half)
	for i := range inv {
		// inv_freq = 1 / base ** (arange(0, dim, 2).float() / dim), all in f32.
		exp := float32(2*i) / float32(headDim)
		inv[i] = 1 / float32(math.Pow(float64(float32(theta)), float64(exp)))
	}
	switch sc.Type {
	case "linear":
		for i := range inv {
			inv[i] /= float32(sc.Factor)
		}
	case "llama3":
		factor, low, high := float32(sc.Factor), float32(sc.LowFreqFactor), float32(sc.HighFreqFactor)
		old := float32(sc.OriginalMaxPositionEmbeddings)
		lowWL, highWL := old/low, old/high
		for i, f := range inv {
			wl := 2 * float32(math.Pi) / f
			scaled := f
			if wl > lowWL {
				scaled = f / factor
			}
			if !(wl < highWL) && !(wl > lowWL) {
				smooth := (old/wl - low) / (high - low)
				scaled = (1-smooth)*scaled/factor + smooth*scaled
			}
			inv[i] = scaled
		}
	}
	return inv
}

// table fills cos and sin (each headDim/2 long) for position pos.
func (r ropeFreqs) table(cos, sin []float32, pos int) {
	p := float32(pos)
	for i, f := range r.inv {
		a := float64(f * p)
		cos[i] = float32(math.Cos(a))
		sin[i] = float32(math.Sin(a))
	}
}
