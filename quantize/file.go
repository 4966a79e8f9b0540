package quantize

import (
	"fmt"
	"os"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/formats/int4"
)

// Tool names fh-quantize in the files it writes.
const Tool = "fhkit fh-quantize 1"

// Methods.
const (
	MethodRTN  = "rtn"
	MethodGPTQ = "gptq"
)

// Options control a quantization.
type Options struct {
	// Method is MethodRTN (default) or MethodGPTQ.
	Method string
	// GroupSize is the requested group size (default 128). A layer whose
	// width it does not divide uses GroupFor's fallback, or fails the run
	// when StrictGroup is set.
	GroupSize   int
	StrictGroup bool
	// Asymmetric stores zero points (compressed-tensors W4A16_ASYM).
	Asymmetric bool
	// ScaleDType is BF16 or F16; Invalid picks F16 for an F16 model and
	// BF16 otherwise.
	ScaleDType dtype.DType
	// Ignore lists patterns of linear weights to keep dense: an exact
	// module or tensor name (`model.layers.0.mlp.down_proj`), a path.Match
	// glob (`model.layers.*.mlp.down_proj`), or `re:REGEXP` (searched, as
	// in compressed-tensors' ignore lists). Names are matched both with and
	// without the ".weight" suffix.
	Ignore []string
	// Threads bounds the goroutines (default 1).
	Threads int
	// GPTQ holds the GPTQ settings (Method "gptq").
	GPTQ GPTQOptions
	// Progress, if set, is called after each quantized layer with the
	// source weight bytes done so far, their total and the layer's name.
	Progress func(done, total int64, layer string)
}

// Summary describes a finished quantization.
type Summary struct {
	Input      string `json:"input"`
	Output     string `json:"output"`
	Method     string `json:"method"`
	GroupSize  int    `json:"group_size"`
	Symmetric  bool   `json:"symmetric"`
	ScaleDType string `json:"scale_dtype"`
	// Layers holds each quantized weight's errors (see fhm.QuantizedLayer).
	Layers  []fhm.QuantizedLayer `json:"layers"`
	Ignored map[string]string    `json:"ignored,omitempty"`
	// QuantizedParams counts the weights stored in 4 bits; PackedBytes is
	// what they occupy with their scales and zero points, BitsPerWeight
	// the ratio.
	QuantizedParams int64   `json:"quantized_params"`
	PackedBytes     int64   `json:"packed_bytes"`
	BitsPerWeight   float64 `json:"bits_per_weight"`
	InputBytes      int64   `json:"input_bytes"`
	Bytes           int64   `json:"bytes"`
	// MeanWeightRelError averages the layers' WeightRelError.
	MeanWeightRelError float64      `json:"mean_weight_rel_error"`
	Calibration        *Calibration `json:"calibration,omitempty"`
	Seconds            float64      `json:"seconds"`
}

// IsTarget reports whether name is an attention or MLP linear weight:
// model.layers.<i>.self_attn.{q,k,v,o}_proj.weight or
// model.layers.<i>.mlp.{gate,up,down}_proj.weight.
func IsTarget(name string) bool {
	rest, ok := strings.CutPrefix(name, "model.layers.")
	if !ok {
		return false
	}
	num, rest, ok := strings.Cut(rest, ".")
	if !ok || num == "" || strings.Trim(num, "0123456789") != "" {
		return false
	}
	switch rest {
	case "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
		"mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight":
		return true
	}
	return false
}

// matcher compiles ignore patterns.
type matcher struct {
	exact []string
	globs []string
	res   []*regexp.Regexp
}

func newMatcher(patterns []string) (*matcher, error) {
	m := &matcher{}
	for _, p := range patterns {
		switch {
		case p == "":
			return nil, fmt.Errorf("empty --ignore pattern")
		case strings.HasPrefix(p, "re:"):
			re, err := regexp.Compile(p[3:])
			if err != nil {
				return nil, fmt.Errorf("--ignore %q: %w", p, err)
			}
			m.res = append(m.res, re)
		case strings.ContainsAny(p, "*?["):
			if _, err := path.Match(p, ""); err != nil {
				return nil, fmt.Errorf("--ignore %q: %w", p, err)
			}
			m.globs = append(m.globs, p)
		default:
			m.exact = append(m.exact, p)
		}
	}
	return m, nil
}

func (m *matcher) match(name string) bool {
	module := strings.TrimSuffix(name, ".weight")
	for _, n := range []string{name, module} {
		for _, e := range m.exact {
			if n == e {
				return true
			}
		}
		for _, g := range m.globs {
			if ok, _ := path.Match(g, n); ok {
				return true
			}
		}
		for _, re := range m.res {
			if re.MatchString(n) {
				return true
			}
		}
	}
	return false
}

// layerPlan is what happens to one target weight.
type layerPlan struct {
	info  fhm.TensorInfo
	group int    // 0: stays dense
	why   string // reason it stays dense
}

func (o *Options) normalize(f *fhm.File) error {
	if o.Method == "" {
		o.Method = MethodRTN
	}
	if o.Method != MethodRTN && o.Method != MethodGPTQ {
		return fmt.Errorf("unknown method %q (want rtn or gptq)", o.Method)
	}
	if o.GroupSize == 0 {
		o.GroupSize = 128
	}
	if o.GroupSize < 0 {
		return fmt.Errorf("group size %d must be positive", o.GroupSize)
	}
	if o.ScaleDType == dtype.Invalid {
		o.ScaleDType = dtype.BF16
		if f != nil && f.Metadata.WeightDType == "F16" {
			o.ScaleDType = dtype.F16
		}
	}
	if o.ScaleDType != dtype.BF16 && o.ScaleDType != dtype.F16 {
		return fmt.Errorf("scale dtype %s not supported (want bf16 or f16)", o.ScaleDType)
	}
	o.Threads = max(1, o.Threads)
	return nil
}

// CheckQuantizable returns an error when f is already quantized.
func CheckQuantizable(f *fhm.File) error {
	if f.Metadata.Quantization != nil {
		return fmt.Errorf("%s: already quantized (%s, %d-bit, group %d); quantize the dense model instead", f.Path, f.Metadata.Quantization.Method, f.Metadata.Quantization.Bits, f.Metadata.Quantization.GroupSize)
	}
	for _, t := range f.Tensors {
		if t.DType == dtype.U4 {
			return fmt.Errorf("%s: already holds packed int4 tensor %q; quantize the dense model instead", f.Path, t.Name)
		}
	}
	return nil
}

// plan decides the group size of every target weight.
func plan(f *fhm.File, o *Options) ([]layerPlan, error) {
	ign, err := newMatcher(o.Ignore)
	if err != nil {
		return nil, err
	}
	var out []layerPlan
	for _, t := range f.Tensors {
		if !IsTarget(t.Name) {
			continue
		}
		p := layerPlan{info: t}
		switch {
		case len(t.Shape) != 2 || !t.DType.IsFloat():
			return nil, fmt.Errorf("%s: %q is %s%v, want a float matrix", f.Path, t.Name, t.DType, t.Shape)
		case ign.match(t.Name):
			p.why = "--ignore pattern"
		default:
			cols := int(t.Shape[1])
			g, ok := GroupFor(cols, o.GroupSize)
			switch {
			case o.StrictGroup && cols%o.GroupSize != 0:
				return nil, fmt.Errorf("%s: %q: group size %d does not divide its input width %d (drop --strict-group to fall back to a divisor per layer)", f.Path, t.Name, o.GroupSize, cols)
			case !ok:
				p.why = fmt.Sprintf("input width %d has no even group size between %d and %d dividing it", cols, MinGroupSize, o.GroupSize)
			default:
				p.group = g
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// loadF32 decodes a float tensor.
func loadF32(f *fhm.File, name string) ([]float32, error) {
	t, ok := f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("%s: no tensor %q", f.Path, name)
	}
	w := make([]float32, t.Info.NumElements())
	if err := dtype.DecodeFloats(w, t.Data, t.Info.DType); err != nil {
		return nil, fmt.Errorf("%s: %q: %w", f.Path, name, err)
	}
	return w, nil
}

// File quantizes the dense model in into the packed model out. Nothing
// appears at out unless it succeeds.
func File(in, out string, opts Options) (*Summary, error) {
	start := time.Now()
	f, err := fhm.Open(in)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := CheckQuantizable(f); err != nil {
		return nil, err
	}
	if err := opts.normalize(f); err != nil {
		return nil, fmt.Errorf("%s: %w", in, err)
	}
	plans, err := plan(f, &opts)
	if err != nil {
		return nil, err
	}
	// Packed weights computed ahead of writing (GPTQ); RTN quantizes each
	// weight while the output is written, so only one layer is in memory.
	results := map[string]int4.Weight{}
	sum := &Summary{Input: in, Output: out, Method: opts.Method, GroupSize: opts.GroupSize,
		Symmetric: !opts.Asymmetric, ScaleDType: opts.ScaleDType.String(), Ignored: map[string]string{}}
	var total, done int64
	byName := map[string]layerPlan{}
	for _, p := range plans {
		byName[p.info.Name] = p
		if p.group > 0 {
			total += p.info.Size
		}
	}
	progress := func(p layerPlan) {
		done += p.info.Size
		if opts.Progress != nil {
			opts.Progress(done, total, p.info.Name)
		}
	}
	sc := Scheme{Symmetric: !opts.Asymmetric, ScaleDType: opts.ScaleDType}
	layerErr := map[string]fhm.QuantizedLayer{}
	if opts.Method == MethodGPTQ {
		cal, err := runGPTQ(f, plans, sc, &opts, results, layerErr, progress)
		if err != nil {
			return nil, err
		}
		sum.Calibration = cal
	}
	rtn := func(p layerPlan) (int4.Weight, error) {
		w, err := loadF32(f, p.info.Name)
		if err != nil {
			return int4.Weight{}, err
		}
		rows, cols := int(p.info.Shape[0]), int(p.info.Shape[1])
		q, err := RTN(w, rows, cols, p.group, sc, opts.Threads)
		if err != nil {
			return int4.Weight{}, fmt.Errorf("%s: %q: %w", in, p.info.Name, err)
		}
		layerErr[p.info.Name] = fhm.QuantizedLayer{Name: p.info.Name, GroupSize: p.group, WeightRelError: RelError(w, q.Dequantize())}
		pk, err := q.Pack()
		if err != nil {
			return int4.Weight{}, fmt.Errorf("%s: %q: %w", in, p.info.Name, err)
		}
		progress(p)
		return pk, nil
	}

	w, err := fhm.Create(out)
	if err != nil {
		return nil, err
	}
	for _, t := range f.Tensors {
		p, planned := byName[t.Name]
		if !planned || p.group == 0 {
			tt, _ := f.Tensor(t.Name)
			if err := w.WriteTensorBytes(t.Name, t.DType, t.Shape, tt.Data); err != nil {
				w.Abort()
				return nil, fmt.Errorf("%s: %w", out, err)
			}
			continue
		}
		pk, ok := results[t.Name]
		if !ok {
			if pk, err = rtn(p); err != nil {
				w.Abort()
				return nil, err
			}
		}
		delete(results, t.Name)
		n, err := WriteWeight(w, t.Name, pk)
		if err != nil {
			w.Abort()
			return nil, fmt.Errorf("%s: %w", out, err)
		}
		sum.QuantizedParams += t.NumElements()
		sum.PackedBytes += n
	}

	meta := f.Metadata
	qm := &fhm.Quantization{Method: opts.Method, Bits: 4, GroupSize: opts.GroupSize, Symmetric: !opts.Asymmetric,
		ScaleDType: opts.ScaleDType.String(), Tool: Tool}
	for _, p := range plans {
		if p.group == 0 {
			qm.Ignored = append(qm.Ignored, p.info.Name)
			if qm.IgnoredWhy == nil {
				qm.IgnoredWhy = map[string]string{}
			}
			qm.IgnoredWhy[p.info.Name] = p.why
			sum.Ignored[p.info.Name] = p.why
			continue
		}
		qm.Layers = append(qm.Layers, layerErr[p.info.Name])
	}
	if sum.Calibration != nil {
		c := sum.Calibration
		qm.Calibration = &fhm.Calibration{Source: c.Source, Sequences: c.Sequences, Tokens: c.Tokens, Damping: c.Damping, ActOrder: c.ActOrder, BlockSize: c.BlockSize}
	}
	meta.Quantization = qm
	sum.Layers = qm.Layers
	for _, l := range qm.Layers {
		sum.MeanWeightRelError += l.WeightRelError / float64(len(qm.Layers))
	}

	if err := w.Commit(&meta); err != nil {
		return nil, fmt.Errorf("%s: %w", out, err)
	}
	if sum.QuantizedParams > 0 {
		sum.BitsPerWeight = float64(8*sum.PackedBytes) / float64(sum.QuantizedParams)
	}
	sum.InputBytes = f.Size
	if st, err := os.Stat(out); err == nil {
		sum.Bytes = st.Size()
	}
	sum.Seconds = time.Since(start).Seconds()
	return sum, nil
}

// WriteWeight writes a packed weight under the names formats/int4 derives
// from the dense name, and returns the bytes written.
func WriteWeight(w *fhm.Writer, name string, pk int4.Weight) (int64, error) {
	qn, sn, zn, ok := int4.Names(name)
	if !ok {
		return 0, fmt.Errorf("%q does not end in .weight", name)
	}
	rows, ng := int64(pk.Rows), int64(pk.Groups())
	if err := w.WriteTensorBytes(qn, dtype.U4, []int64{rows, int64(pk.Cols)}, pk.QWeight); err != nil {
		return 0, err
	}
	if err := w.WriteTensorBytes(sn, pk.ScaleDType, []int64{rows, ng}, pk.Scales); err != nil {
		return 0, err
	}
	n := int64(len(pk.QWeight) + len(pk.Scales))
	if pk.Zeros != nil {
		if err := w.WriteTensorBytes(zn, dtype.U4, []int64{rows, ng}, pk.Zeros); err != nil {
			return 0, err
		}
		n += int64(len(pk.Zeros))
	}
	return n, nil
}
