package quantize

import (
	"fmt"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/formats/int4"
	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/model"
	"github.com/fhkit/fhkit/runtime/tokenizer"
)

// GPTQOptions control GPTQ.
type GPTQOptions struct {
	// Calib is a plain-text or JSONL calibration file; empty uses text the
	// model generates itself (see DefaultPrompts).
	Calib string
	// Samples is the number of calibration sequences (default 32) and
	// SeqLen their length in tokens (default 128).
	Samples, SeqLen int
	// Damping is λ in H += λ·mean(diag H)·I (default 0.01).
	Damping float64
	// BlockSize is the lazy-update block width (default 128).
	BlockSize int
	// ActOrder processes columns by decreasing Hessian diagonal.
	ActOrder bool
	// Seed drives the self-generated calibration text.
	Seed uint64
}

// Calibration describes the calibration data GPTQ used.
type Calibration struct {
	Source    string  `json:"source"`
	Sequences int     `json:"sequences"`
	Tokens    int     `json:"tokens"`
	Damping   float64 `json:"damping"`
	ActOrder  bool    `json:"act_order"`
	BlockSize int     `json:"block_size"`
	// Warning is set when there are too few tokens for the layer widths.
	Warning string `json:"warning,omitempty"`
}

// linearSlot names a linear weight of a decoder layer and the Mat field
// that holds it.
type linearSlot struct {
	suffix string
	mat    func(l *model.Layer) *cpu.Mat
	// input is the slot whose Observe hook sees this linear's input (q/k/v
	// share the attention input, gate/up the MLP input).
	input int
}

// linearSlots lists the seven linears of a decoder layer in forward order.
func linearSlots() []linearSlot {
	return []linearSlot{
		{"self_attn.q_proj.weight", func(l *model.Layer) *cpu.Mat { return &l.Q }, 0},
		{"self_attn.k_proj.weight", func(l *model.Layer) *cpu.Mat { return &l.K }, 0},
		{"self_attn.v_proj.weight", func(l *model.Layer) *cpu.Mat { return &l.V }, 0},
		{"self_attn.o_proj.weight", func(l *model.Layer) *cpu.Mat { return &l.O }, 3},
		{"mlp.gate_proj.weight", func(l *model.Layer) *cpu.Mat { return &l.Gate }, 4},
		{"mlp.up_proj.weight", func(l *model.Layer) *cpu.Mat { return &l.Up }, 4},
		{"mlp.down_proj.weight", func(l *model.Layer) *cpu.Mat { return &l.Down }, 6},
	}
}

// maxErrorWork bounds rows·cols² of the output-error evaluation; larger
// layers are evaluated on an evenly spaced subset of rows.
const maxErrorWork = 1e9

// runGPTQ quantizes the planned weights layer by layer. The residual
// stream of every calibration token is kept; for decoder layer l, a pass of
// layer l alone over that stream (its embedding swapped for the stream's
// rows) accumulates the inputs of its linears into XᵀX through MatMul's
// Observe hook; each linear is then quantized with GPTQ (and RTN, for the
// error comparison) and replaced by its packed weight; a second pass of the
// quantized layer advances the stream, so later layers see the quantized
// outputs. The inputs of one layer are captured in one pass (q/k/v, o,
// gate/up and down all see the dense layer l): 2 layer passes per layer.
func runGPTQ(f *fhm.File, plans []layerPlan, sc Scheme, o *Options, results map[string]int4.Weight, layerErr map[string]fhm.QuantizedLayer, progress func(layerPlan)) (*Calibration, error) {
	g := o.GPTQ
	if g.Samples <= 0 {
		g.Samples = 32
	}
	if g.SeqLen <= 0 {
		g.SeqLen = 128
	}
	if g.SeqLen < 2 {
		return nil, fmt.Errorf("calibration sequence length %d: need at least 2 tokens", g.SeqLen)
	}
	if g.Damping == 0 {
		g.Damping = 0.01
	}
	if g.Damping < 0 {
		return nil, fmt.Errorf("damping %g must not be negative", g.Damping)
	}
	if g.BlockSize <= 0 {
		g.BlockSize = 128
	}
	m, err := model.FromFile(f)
	if err != nil {
		return nil, err
	}
	pool := cpu.NewPool(o.Threads)
	defer pool.Close()
	r := model.NewRunner(m, pool)
	tok, tokErr := tokenizer.FromFHM(f)
	cal := &Calibration{Damping: g.Damping, ActOrder: g.ActOrder, BlockSize: g.BlockSize}
	var seqs [][]int
	if g.Calib != "" {
		if tokErr != nil {
			return nil, fmt.Errorf("--calib needs the model's tokenizer: %w", tokErr)
		}
		docs, err := calibDocs(g.Calib)
		if err != nil {
			return nil, err
		}
		seqs = fileSequences(tok, docs, g.Samples, g.SeqLen)
		cal.Source = g.Calib
	} else {
		if tokErr != nil {
			tok = nil
		}
		if seqs, err = selfSequences(r, tok, g.Samples, g.SeqLen, g.Seed); err != nil {
			return nil, fmt.Errorf("%s: %w", f.Path, err)
		}
		cal.Source = "self-generated"
	}
	if len(seqs) == 0 {
		return nil, fmt.Errorf("calibration text %s gives no sequence of 2 tokens or more", g.Calib)
	}
	cal.Sequences = len(seqs)
	for _, s := range seqs {
		cal.Tokens += len(s)
	}
	widest := 0
	for _, p := range plans {
		if p.group > 0 {
			widest = max(widest, int(p.info.Shape[1]))
		}
	}
	if cal.Tokens < 2*widest {
		cal.Warning = fmt.Sprintf("%d calibration tokens for inputs up to %d wide: the Hessians are (nearly) rank-deficient, so GPTQ fits the calibration set and its error elsewhere can exceed RTN's; use at least %d tokens (--calib-samples x --seq-len)", cal.Tokens, widest, 4*widest)
	}

	byName := map[string]layerPlan{}
	for _, p := range plans {
		byName[p.info.Name] = p
	}
	// The residual stream entering the current layer, for every
	// calibration token (sequence k's rows start at offs[k]). The model is
	// run one layer at a time: its embedding is replaced by these rows
	// (token i = row i), so layer l never re-runs layers 0..l-1.
	c := &m.Config
	H := c.HiddenSize
	offs := make([]int, len(seqs)+1)
	for k, s := range seqs {
		offs[k+1] = offs[k] + len(s)
	}
	N := offs[len(seqs)]
	stream := make([]float32, N*H)
	for k, s := range seqs {
		for t, id := range s {
			row := stream[(offs[k]+t)*H : (offs[k]+t+1)*H]
			m.Embed.RowF32(row, id)
			if m.EmbedScale != 1 {
				for i := range row {
					row[i] *= m.EmbedScale
				}
			}
		}
	}
	all, embed, embedScale, vocab := m.Layers, m.Embed, m.EmbedScale, c.VocabSize
	defer func() { m.Layers, m.Embed, m.EmbedScale, c.VocabSize = all, embed, embedScale, vocab }()
	streamBytes := make([]byte, 4*N*H)
	ids := make([]int, N)
	for i := range ids {
		ids[i] = i
	}
	// pass runs layer li on the stream, sequence by sequence; after(k) is
	// called when sequence k is done.
	pass := func(li int, failed func() error, after func(k int)) error {
		if err := dtype.EncodeFloats(streamBytes, stream, dtype.F32); err != nil {
			return err
		}
		m.Embed = cpu.Mat{Rows: N, Cols: H, DType: dtype.F32, Data: streamBytes}
		m.EmbedScale, c.VocabSize = 1, N
		m.Layers = all[li : li+1]
		defer func() { m.Layers, m.Embed, m.EmbedScale, c.VocabSize = all, embed, embedScale, vocab }()
		for k := range seqs {
			st, err := m.NewState(offs[k+1]-offs[k], dtype.F32)
			if err != nil {
				return err
			}
			if _, err := r.ForwardHidden(st, ids[offs[k]:offs[k+1]], false); err != nil {
				return fmt.Errorf("%s: calibration pass through layer %d: %w", f.Path, li, err)
			}
			if err := failed(); err != nil {
				return err
			}
			if after != nil {
				after(k)
			}
		}
		return nil
	}
	slots := linearSlots()
	cfg := GPTQConfig{Scheme: sc, Damping: g.Damping, BlockSize: g.BlockSize, ActOrder: g.ActOrder, Threads: o.Threads}
	for li := range all {
		prefix := fmt.Sprintf("model.layers.%d.", li)
		layer := &all[li]
		// Hook the inputs the planned linears need.
		hess := make([]*Hessian, len(slots))
		var hookErr error
		for _, s := range slots {
			if p, ok := byName[prefix+s.suffix]; !ok || p.group == 0 || hess[s.input] != nil {
				continue
			}
			in := slots[s.input].mat(layer)
			h := NewHessian(in.Cols)
			hess[s.input] = h
			name := prefix + slots[s.input].suffix
			in.Observe = func(x []float32, T int) {
				if hookErr == nil {
					if err := h.Add(x, T, o.Threads); err != nil {
						hookErr = fmt.Errorf("%s: input of %s: %w", f.Path, name, err)
					}
				}
			}
		}
		if anyHook(hess) {
			err := pass(li, func() error { return hookErr }, nil)
			if err == nil {
				err = hookErr
			}
			if err != nil {
				return nil, err
			}
		}
		for _, s := range slots {
			s.mat(layer).Observe = nil
		}
		if hookErr != nil {
			return nil, hookErr
		}
		syms := make([][]float64, len(slots))
		for _, s := range slots {
			name := prefix + s.suffix
			p, ok := byName[name]
			if !ok || p.group == 0 {
				continue
			}
			if syms[s.input] == nil {
				syms[s.input] = hess[s.input].Sym()
			}
			a := syms[s.input]
			w, err := loadF32(f, name)
			if err != nil {
				return nil, err
			}
			rows, cols := int(p.info.Shape[0]), int(p.info.Shape[1])
			c := cfg
			c.GroupSize = p.group
			gq, err := GPTQ(w, rows, cols, a, c)
			if err != nil {
				return nil, fmt.Errorf("%s: %q: %w", f.Path, name, err)
			}
			rq, err := RTN(w, rows, cols, p.group, sc, o.Threads)
			if err != nil {
				return nil, fmt.Errorf("%s: %q: %w", f.Path, name, err)
			}
			gd := gq.Dequantize()
			le := fhm.QuantizedLayer{Name: name, GroupSize: p.group, WeightRelError: RelError(w, gd)}
			le.OutputRelError, le.RTNOutputRelError = outputErrors(w, gd, rq.Dequantize(), rows, cols, a, o.Threads)
			layerErr[name] = le
			pk, err := gq.Pack()
			if err != nil {
				return nil, fmt.Errorf("%s: %q: %w", f.Path, name, err)
			}
			mat, err := cpu.NewInt4Mat(pk)
			if err != nil {
				return nil, fmt.Errorf("%s: %q: %w", f.Path, name, err)
			}
			*s.mat(layer) = mat
			results[name] = pk
			progress(p)
		}
		if li+1 < len(all) {
			if err := advance(r, layer, stream, offs, li, pass); err != nil {
				return nil, err
			}
		}
	}
	return cal, nil
}

// advance runs the (now quantized) layer on the stream and replaces it with
// the layer's output: x += post_attn(O·att); x += post_ff(Down·act), with
// att and act captured at the inputs of O and Down, as forward.go adds
// them.
func advance(r *model.Runner, layer *model.Layer, stream []float32, offs []int, li int,
	pass func(li int, failed func() error, after func(k int)) error) error {
	c := &r.M.Config
	H, eps := c.HiddenSize, float32(c.RMSNormEps)
	var att, act []float32
	layer.O.Observe = func(x []float32, T int) { att = append(att, x...) }
	layer.Down.Observe = func(x []float32, T int) { act = append(act, x...) }
	defer func() { layer.O.Observe, layer.Down.Observe = nil, nil }()
	add := func(dst []float32, w cpu.Mat, in []float32, T int, norm []float32) {
		out := make([]float32, T*H)
		cpu.MatMul(r.Pool, out, w, in, T)
		for t := 0; t < T; t++ {
			row := out[t*H : (t+1)*H]
			if c.SandwichNorms {
				cpu.RMSNorm(row, row, norm, eps)
			}
			d := dst[t*H : (t+1)*H]
			for i, v := range row {
				d[i] += v
			}
		}
	}
	return pass(li, func() error { return nil }, func(k int) {
		T := offs[k+1] - offs[k]
		x := stream[offs[k]*H : offs[k+1]*H]
		o, a := layer.O, layer.Down
		o.Observe, a.Observe = nil, nil
		add(x, o, att, T, layer.PostAttnNorm)
		add(x, a, act, T, layer.PostFFNorm)
		att, act = att[:0], act[:0]
	})
}

func anyHook(h []*Hessian) bool {
	for _, x := range h {
		if x != nil {
			return true
		}
	}
	return false
}

// outputErrors returns the relative output errors of the GPTQ and RTN
// weights, on a row subset for very large layers.
func outputErrors(w, gd, rd []float32, rows, cols int, a []float64, threads int) (gptq, rtn float64) {
	step := 1
	for float64(rows/step)*float64(cols)*float64(cols) > maxErrorWork && rows/step > 1 {
		step++
	}
	if step > 1 {
		n := (rows + step - 1) / step
		sub := func(x []float32) []float32 {
			out := make([]float32, 0, n*cols)
			for r := 0; r < rows; r += step {
				out = append(out, x[r*cols:(r+1)*cols]...)
			}
			return out
		}
		w, gd, rd, rows = sub(w), sub(gd), sub(rd), n
	}
	e := outputRelErrors(w, [][]float32{gd, rd}, rows, cols, a, threads)
	return e[0], e[1]
}
