package quantize

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/fhkit/fhkit/convert"
	flashhead "github.com/fhkit/fhkit/flashhead-build"
	"github.com/fhkit/fhkit/formats/arch"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/formats/hf"
	"github.com/fhkit/fhkit/formats/int4"
	"github.com/fhkit/fhkit/formats/safetensors"
)

// CompressedTensorsVersion is the compressed-tensors version written in an
// exported quantization_config.
const CompressedTensorsVersion = "0.12.2"

// WeightsFile is the weights file of an exported directory.
const WeightsFile = "model.safetensors"

type stTensor struct {
	h    safetensors.Header
	data []byte
}

// ExportHF writes the quantized model f as a Hugging Face directory dir in
// compressed-tensors pack-quantized form (W4A16 formats document §4.1):
// config.json with quantization_config, model.safetensors with
// P.weight_packed / weight_scale / weight_shape (/ weight_zero_point) for
// every packed linear and the other tensors unchanged, the embedded
// tokenizer files, and, when f has a FlashHead, the reference vLLM
// plugin's assets (flash_head_assets/clustering_cache.safetensors and
// clustering_config.json) with the plugin's config.json fields
// (architectures FlashHead<Base>, flash_head_cache_dir, n_probes,
// flash_head_special_token_ids). The codes and scales are copied bit for
// bit. dir must not exist; it appears only when complete.
func ExportHF(f *fhm.File, dir string) error {
	q := f.Metadata.Quantization
	if q == nil {
		return fmt.Errorf("%s: not quantized: nothing to export as compressed-tensors", f.Path)
	}
	if _, err := os.Stat(dir); err == nil {
		return fmt.Errorf("--export-hf %s: already exists", dir)
	}
	var top map[string]any
	if err := json.Unmarshal(f.Metadata.Source.ConfigJSON, &top); err != nil || top == nil {
		return fmt.Errorf("%s: no usable source config.json in the metadata to export: %v", f.Path, err)
	}
	if top["model_type"] == "gemma3" {
		return fmt.Errorf("%s: converted from a multimodal Gemma-3 checkpoint; exporting its text model under the multimodal config is not supported", f.Path)
	}
	var model []stTensor
	groups := map[int][]string{} // group size → modules
	for _, t := range f.Tensors {
		switch {
		case strings.HasPrefix(t.Name, "tokenizer/"):
			continue
		case strings.HasPrefix(t.Name, "flashhead."):
			continue // exported in the plugin's format below
		}
		weight, packed := int4.IsPackedName(t.Name)
		if !packed {
			tt, _ := f.Tensor(t.Name)
			model = append(model, stTensor{safetensors.Header{Name: t.Name, DType: t.DType, Shape: t.Shape}, tt.Data})
			continue
		}
		if !strings.HasSuffix(t.Name, int4.QWeightSuffix) {
			continue // scales and zeros travel with their qweight
		}
		w, _, err := int4.Find(f, weight)
		if err != nil {
			return err
		}
		ct, err := int4.ToCompressedTensors(w)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", f.Path, weight, err)
		}
		p := strings.TrimSuffix(weight, ".weight")
		groups[w.GroupSize] = append(groups[w.GroupSize], p)
		shape := make([]byte, 16)
		binary.LittleEndian.PutUint64(shape, uint64(w.Rows))
		binary.LittleEndian.PutUint64(shape[8:], uint64(w.Cols))
		ng := int64(w.Groups())
		model = append(model,
			stTensor{safetensors.Header{Name: p + ".weight_packed", DType: dtype.I32, Shape: []int64{int64(w.Rows), int64(ct.PackedCols())}}, ct.Packed},
			stTensor{safetensors.Header{Name: p + ".weight_scale", DType: ct.ScaleDType, Shape: []int64{int64(w.Rows), ng}}, ct.Scale},
			stTensor{safetensors.Header{Name: p + ".weight_shape", DType: dtype.I64, Shape: []int64{2}}, shape})
		if ct.ZeroPoint != nil {
			model = append(model, stTensor{safetensors.Header{Name: p + ".weight_zero_point", DType: dtype.I32, Shape: []int64{int64((w.Rows + 7) / 8), ng}}, ct.ZeroPoint})
		}
	}
	if len(groups) == 0 {
		return fmt.Errorf("%s: no packed int4 tensors", f.Path)
	}
	top["quantization_config"] = quantizationConfig(q, groups)

	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return fmt.Errorf("--export-hf: %w", err)
	}
	fail := func(err error) error {
		os.RemoveAll(tmp)
		return err
	}
	if f.Metadata.FlashHead != nil {
		if err := exportFlashHead(f, tmp, top); err != nil {
			return fail(err)
		}
	}
	cfg, err := json.MarshalIndent(top, "", "  ")
	if err != nil {
		return fail(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, hf.ConfigName), append(cfg, '\n'), 0o644); err != nil {
		return fail(err)
	}
	if err := writeSafetensors(filepath.Join(tmp, WeightsFile), model); err != nil {
		return fail(err)
	}
	for file, tn := range f.Metadata.Tokenizer.Files {
		if file != filepath.Base(file) || file == hf.ConfigName || file == WeightsFile {
			return fail(fmt.Errorf("%s: odd embedded tokenizer file name %q", f.Path, file))
		}
		data, ok := f.TokenizerFile(file)
		if !ok {
			return fail(fmt.Errorf("%s: tokenizer file %q (tensor %q) missing", f.Path, file, tn))
		}
		if err := os.WriteFile(filepath.Join(tmp, file), data, 0o644); err != nil {
			return fail(err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fail(fmt.Errorf("--export-hf: %w", err))
	}
	return nil
}

// exportFlashHead writes f's FlashHead into dir as the reference plugin's
// assets and merges the plugin's fields into the config.json object top.
func exportFlashHead(f *fhm.File, dir string, top map[string]any) error {
	h, err := flashhead.FromFile(f)
	if err != nil {
		return err
	}
	if err := flashhead.ExportEmbedl(dir, h, flashhead.FlashHeadArchitecture(&f.Metadata)); err != nil {
		return fmt.Errorf("--export-hf: FlashHead: %w", err)
	}
	fieldsPath := filepath.Join(dir, flashhead.EmbedlFieldsFile)
	b, err := os.ReadFile(fieldsPath)
	if err != nil {
		return err
	}
	var fields map[string]any
	if err := json.Unmarshal(b, &fields); err != nil {
		return fmt.Errorf("%s: %w", fieldsPath, err)
	}
	maps.Copy(top, fields)
	return os.Remove(fieldsPath) // its fields now live in config.json
}

// quantizationConfig builds the compressed-tensors quantization_config: one
// config group per group size (targets "Linear" when there is only one,
// the module names otherwise), ignoring lm_head and the dense linears.
func quantizationConfig(q *fhm.Quantization, groups map[int][]string) map[string]any {
	var actorder any
	if q.Calibration != nil && q.Calibration.ActOrder {
		actorder = "static" // columns reordered during GPTQ, groups contiguous, no g_idx
	}
	sizes := make([]int, 0, len(groups))
	for g := range groups {
		sizes = append(sizes, g)
	}
	sort.Ints(sizes)
	cg := map[string]any{}
	for i, g := range sizes {
		targets := []string{"Linear"}
		if len(sizes) > 1 {
			targets = slices.Clone(groups[g])
		}
		cg[fmt.Sprintf("group_%d", i)] = map[string]any{
			"targets": targets,
			"weights": map[string]any{"num_bits": 4, "type": "int", "symmetric": q.Symmetric, "strategy": "group",
				"group_size": g, "dynamic": false, "actorder": actorder, "observer": "minmax",
				"observer_kwargs": map[string]any{}, "block_structure": nil},
			"input_activations":  nil,
			"output_activations": nil,
			"format":             "pack-quantized",
		}
	}
	ignore := []string{"lm_head"}
	for _, n := range q.Ignored {
		ignore = append(ignore, strings.TrimSuffix(n, ".weight"))
	}
	return map[string]any{
		"config_groups":            cg,
		"format":                   "pack-quantized",
		"global_compression_ratio": nil,
		"ignore":                   ignore,
		"kv_cache_scheme":          nil,
		"quant_method":             "compressed-tensors",
		"quantization_status":      "compressed",
		"sparsity_config":          map[string]any{},
		"transform_config":         map[string]any{},
		"version":                  CompressedTensorsVersion,
	}
}

func writeSafetensors(path string, ts []stTensor) error {
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(out, 1<<20)
	hs := make([]safetensors.Header, len(ts))
	byName := map[string][]byte{}
	for i, t := range ts {
		hs[i] = t.h
		byName[t.h.Name] = t.data
	}
	sw, err := safetensors.NewWriter(bw, hs, map[string]string{"format": "pt"})
	if err == nil {
		for _, h := range sw.Order() {
			if _, err = sw.Write(byName[h.Name]); err != nil {
				break
			}
		}
	}
	if err == nil {
		err = sw.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// ImportOptions control ImportHF.
type ImportOptions struct {
	// DType is the dtype of the dense tensors (embedding, norms, head);
	// Invalid keeps BF16.
	DType dtype.DType
}

// ImportSummary describes an imported checkpoint.
type ImportSummary struct {
	Input        string  `json:"input"`
	Output       string  `json:"output"`
	Format       string  `json:"format"`
	Architecture string  `json:"architecture"`
	GroupSize    int     `json:"group_size"`
	Symmetric    bool    `json:"symmetric"`
	Packed       int     `json:"packed_layers"`
	Dense        int     `json:"dense_tensors"`
	Bytes        int64   `json:"bytes"`
	Seconds      float64 `json:"seconds"`
	// FlashHead is set when the checkpoint's FlashHead assets were imported.
	FlashHead *fhm.FlashHead `json:"flashhead,omitempty"`
}

// hfQuantConfig holds the quantization_config fields the importers read.
type hfQuantConfig struct {
	QuantMethod      string `json:"quant_method"`
	Format           string `json:"format"`
	Bits             int    `json:"bits"`
	GroupSize        int    `json:"group_size"`
	Sym              *bool  `json:"sym"`
	DescAct          bool   `json:"desc_act"`
	CheckpointFormat string `json:"checkpoint_format"`
	ConfigGroups     map[string]struct {
		Weights *struct {
			NumBits   int    `json:"num_bits"`
			Type      string `json:"type"`
			Symmetric bool   `json:"symmetric"`
			Strategy  string `json:"strategy"`
			GroupSize int    `json:"group_size"`
		} `json:"weights"`
		InputActivations json.RawMessage `json:"input_activations"`
		Format           string          `json:"format"`
	} `json:"config_groups"`
}

// IsQuantizedDir reports whether the checkpoint directory holds a W4A16
// checkpoint ImportHF reads: config.json has a quantization_config, or a
// quantize_config.json (AutoGPTQ) is present. Unreadable files count as not
// quantized (the dense converter then reports them).
func IsQuantizedDir(dir string) bool {
	if _, err := os.Stat(filepath.Join(dir, "quantize_config.json")); err == nil {
		return true
	}
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return false
	}
	var c struct {
		Q json.RawMessage `json:"quantization_config"`
		T *struct {
			Q json.RawMessage `json:"quantization_config"`
		} `json:"text_config"`
	}
	if json.Unmarshal(b, &c) != nil {
		return false
	}
	return (len(c.Q) > 0 && string(c.Q) != "null") || (c.T != nil && len(c.T.Q) > 0 && string(c.T.Q) != "null")
}

// ImportHF converts a W4A16 Hugging Face checkpoint (compressed-tensors
// pack-quantized, or GPTQ v1/v2 without act-order) into a packed .fhm
// without dequantizing: the int4 codes, scales and zero points are re-packed
// bit for bit (GPTQ's v1 zero−1 quirk undone). Dense tensors are converted
// to opts.DType.
//
// fh-convert calls it for directories IsQuantizedDir recognises.
func ImportHF(in, out string, opts ImportOptions) (*ImportSummary, error) {
	start := time.Now()
	ck, err := hf.Open(in)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	raw := ck.Info.QuantizationConfig
	if raw == nil {
		if b, err := os.ReadFile(filepath.Join(in, "quantize_config.json")); err == nil {
			raw = b
		}
	}
	if raw == nil {
		return nil, fmt.Errorf("%s: no quantization_config in config.json and no quantize_config.json: not a quantized checkpoint (use fh-convert)", in)
	}
	var qc hfQuantConfig
	if err := json.Unmarshal(raw, &qc); err != nil {
		return nil, fmt.Errorf("%s: quantization_config: %w", in, err)
	}
	if opts.DType == dtype.Invalid {
		opts.DType = dtype.BF16
	}
	if opts.DType != dtype.BF16 && opts.DType != dtype.F16 && opts.DType != dtype.F32 {
		return nil, fmt.Errorf("dense dtype %s not supported (want bf16, f16 or f32)", opts.DType)
	}
	sum := &ImportSummary{Input: in, Output: out}
	qm := &fhm.Quantization{Bits: 4, Tool: Tool + " import"}
	switch qc.QuantMethod {
	case "compressed-tensors":
		if qc.Format != "pack-quantized" {
			return nil, fmt.Errorf("%s: compressed-tensors format %q not supported (want pack-quantized)", in, qc.Format)
		}
		for name, g := range qc.ConfigGroups {
			w := g.Weights
			if w == nil || w.NumBits != 4 || w.Type != "int" || w.Strategy != "group" || (len(g.InputActivations) > 0 && string(g.InputActivations) != "null") {
				return nil, fmt.Errorf("%s: quantization_config group %s is not W4A16 int4 group-wise", in, name)
			}
			qm.GroupSize, qm.Symmetric = w.GroupSize, w.Symmetric
		}
		qm.Method = "compressed-tensors"
	case "gptq":
		if qc.Bits != 4 {
			return nil, fmt.Errorf("%s: GPTQ with %d bits not supported (want 4)", in, qc.Bits)
		}
		if qc.CheckpointFormat != "" && qc.CheckpointFormat != "gptq" && qc.CheckpointFormat != "gptq_v2" {
			return nil, fmt.Errorf("%s: GPTQ checkpoint_format %q not supported", in, qc.CheckpointFormat)
		}
		qm.Method, qm.GroupSize, qm.Symmetric = "gptq-import", qc.GroupSize, qc.Sym == nil || *qc.Sym
	default:
		return nil, fmt.Errorf("%s: quant_method %q not supported (want compressed-tensors or gptq)", in, qc.QuantMethod)
	}
	sum.Format, sum.GroupSize, sum.Symmetric = qm.Method, qm.GroupSize, qm.Symmetric

	cfg := ck.Config
	if _, ok := ck.Tensor("lm_head.weight"); ok {
		cfg.TieWordEmbeddings = false
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: config.json: %w", in, err)
	}
	sum.Architecture = cfg.Architecture
	w, err := fhm.Create(out)
	if err != nil {
		return nil, err
	}
	abort := func(err error) (*ImportSummary, error) {
		w.Abort()
		return nil, err
	}
	var scaleDT dtype.DType
	for _, spec := range cfg.Tensors() {
		if t, ok := ck.Tensor(spec.Name); ok {
			if err := writeDense(w, spec, t, opts.DType); err != nil {
				return abort(fmt.Errorf("%s: %w", in, err))
			}
			sum.Dense++
			continue
		}
		if !IsTarget(spec.Name) {
			return abort(fmt.Errorf("%s: missing tensor %q required by %s", in, spec.Name, cfg.Architecture))
		}
		var pk int4.Weight
		if qm.Method == "compressed-tensors" {
			pk, err = importCT(ck, spec)
		} else {
			pk, err = importGPTQ(ck, spec, qc.CheckpointFormat == "gptq_v2")
		}
		if err != nil {
			return abort(fmt.Errorf("%s: %w", in, err))
		}
		if pk.Rows != int(spec.Shape[0]) || pk.Cols != int(spec.Shape[1]) {
			return abort(fmt.Errorf("%s: %s is [%d %d], config.json implies %v", in, spec.Name, pk.Rows, pk.Cols, spec.Shape))
		}
		if _, err := WriteWeight(w, spec.Name, pk); err != nil {
			return abort(fmt.Errorf("%s: %w", out, err))
		}
		scaleDT = pk.ScaleDType
		qm.Layers = append(qm.Layers, fhm.QuantizedLayer{Name: spec.Name, GroupSize: pk.GroupSize})
		sum.Packed++
	}
	if sum.Packed == 0 {
		return abort(fmt.Errorf("%s: quantization_config present but no packed linear weights found", in))
	}
	// A FlashHead model ships the plugin's clustering cache.
	fh, fhFiles, err := convert.ImportFlashHead(ck, &cfg, opts.DType, w)
	if err != nil {
		return abort(err)
	}
	sum.FlashHead = fh
	qm.ScaleDType = scaleDT.String()

	tok := fhm.Tokenizer{Files: map[string]string{}, ChatTemplate: ck.Tokenizer.ChatTemplate}
	if tc := ck.Tokenizer.Config; tc != nil {
		tok.AddBOSToken, tok.AddEOSToken = tc.AddBOSToken, tc.AddEOSToken
		tok.BOSToken, tok.EOSToken, tok.PadToken, tok.UnkToken = tc.BOSToken, tc.EOSToken, tc.PadToken, tc.UnkToken
	}
	tp := ck.Tokenizer
	paths := []string{}
	for _, p := range []string{tp.ModelPath, tp.JSONPath, tp.ConfigPath, tp.SpecialTokensMapPath, tp.AddedTokensPath, tp.GenerationConfigPath, tp.ChatTemplatePath} {
		if p != "" {
			paths = append(paths, p)
		}
	}
	slices.SortFunc(paths, func(a, b string) int { return strings.Compare(filepath.Base(a), filepath.Base(b)) })
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return abort(err)
		}
		name := fhm.TokenizerTensorName(filepath.Base(p))
		if err := w.WriteTensorBytes(name, dtype.U8, []int64{int64(len(data))}, data); err != nil {
			return abort(err)
		}
		tok.Files[filepath.Base(p)] = name
	}
	files, err := sourceFiles(in, ck.SourceFiles())
	if err != nil {
		return abort(err)
	}
	meta := &fhm.Metadata{Model: cfg, WeightDType: opts.DType.String(), Tokenizer: tok,
		Source: fhm.Source{Format: "huggingface", ConfigJSON: ck.RawConfig, Files: files}, Converter: Tool + " import", Quantization: qm}
	if g := ck.Generation; g != nil {
		meta.Generation = &fhm.Generation{DoSample: g.DoSample, Temperature: g.Temperature, TopK: g.TopK, TopP: g.TopP,
			MinP: g.MinP, RepetitionPenalty: g.RepetitionPenalty, MaxNewTokens: g.MaxNewTokens}
	}
	convert.WithFlashHead(meta, fh, fhFiles)
	if err := w.Commit(meta); err != nil {
		return nil, err
	}
	if st, err := os.Stat(out); err == nil {
		sum.Bytes = st.Size()
	}
	sum.Seconds = time.Since(start).Seconds()
	return sum, nil
}

func writeDense(w *fhm.Writer, spec arch.TensorSpec, t safetensors.Tensor, to dtype.DType) error {
	if !slices.Equal(t.Shape, spec.Shape) {
		return fmt.Errorf("tensor %q has shape %v, config.json implies %v", spec.Name, t.Shape, spec.Shape)
	}
	if !t.DType.IsFloat() {
		return fmt.Errorf("tensor %q has dtype %s, want a float type", spec.Name, t.DType)
	}
	buf := make([]byte, t.NumElements()*int64(to.Size()))
	bad, err := dtype.ConvertFloats(buf, to, t.Data, t.DType)
	if err != nil {
		return fmt.Errorf("tensor %q: %w", spec.Name, err)
	}
	if bad >= 0 {
		return fmt.Errorf("tensor %q: element %d is NaN or Inf", spec.Name, bad)
	}
	return w.WriteTensorBytes(spec.Name, to, spec.Shape, buf)
}

// needTensor returns a tensor with the given dtypes and rank.
func needTensor(ck *hf.Checkpoint, name string, rank int, dts ...dtype.DType) (safetensors.Tensor, error) {
	t, ok := ck.Tensor(name)
	if !ok {
		return t, fmt.Errorf("missing tensor %q", name)
	}
	if len(t.Shape) != rank || !slices.Contains(dts, t.DType) {
		return t, fmt.Errorf("tensor %q is %s%v, want rank %d of %v", name, t.DType, t.Shape, rank, dts)
	}
	return t, nil
}

func importCT(ck *hf.Checkpoint, spec arch.TensorSpec) (int4.Weight, error) {
	p := strings.TrimSuffix(spec.Name, ".weight")
	packed, err := needTensor(ck, p+".weight_packed", 2, dtype.I32)
	if err != nil {
		return int4.Weight{}, err
	}
	scale, err := needTensor(ck, p+".weight_scale", 2, dtype.BF16, dtype.F16, dtype.F32)
	if err != nil {
		return int4.Weight{}, err
	}
	shape, err := needTensor(ck, p+".weight_shape", 1, dtype.I64, dtype.I32)
	if err != nil {
		return int4.Weight{}, err
	}
	if shape.Shape[0] != 2 {
		return int4.Weight{}, fmt.Errorf("tensor %q has shape %v, want [2]", p+".weight_shape", shape.Shape)
	}
	var out, in int64
	if shape.DType == dtype.I64 {
		out, in = int64(binary.LittleEndian.Uint64(shape.Data)), int64(binary.LittleEndian.Uint64(shape.Data[8:]))
	} else {
		out, in = int64(int32(binary.LittleEndian.Uint32(shape.Data))), int64(int32(binary.LittleEndian.Uint32(shape.Data[4:])))
	}
	if out != spec.Shape[0] || in != spec.Shape[1] {
		return int4.Weight{}, fmt.Errorf("%s.weight_shape is [%d %d], config.json implies %v", p, out, in, spec.Shape)
	}
	ct := &int4.CompressedTensors{Packed: packed.Data, Scale: scale.Data, ScaleDType: scale.DType, Out: int(out), In: int(in)}
	if z, ok := ck.Tensor(p + ".weight_zero_point"); ok {
		if z.DType != dtype.I32 {
			return int4.Weight{}, fmt.Errorf("tensor %q is %s, want I32", p+".weight_zero_point", z.DType)
		}
		ct.ZeroPoint = z.Data
	}
	var gIdx []int32
	if g, ok := ck.Tensor(p + ".weight_g_idx"); ok {
		if gIdx, err = int32s(g); err != nil {
			return int4.Weight{}, err
		}
	}
	w, err := int4.FromCompressedTensors(ct, gIdx)
	if err != nil {
		return int4.Weight{}, fmt.Errorf("%s: %w", p, err)
	}
	return w, nil
}

func importGPTQ(ck *hf.Checkpoint, spec arch.TensorSpec, v2 bool) (int4.Weight, error) {
	p := strings.TrimSuffix(spec.Name, ".weight")
	qw, err := needTensor(ck, p+".qweight", 2, dtype.I32)
	if err != nil {
		return int4.Weight{}, err
	}
	qz, err := needTensor(ck, p+".qzeros", 2, dtype.I32)
	if err != nil {
		return int4.Weight{}, err
	}
	sc, err := needTensor(ck, p+".scales", 2, dtype.F16, dtype.BF16, dtype.F32)
	if err != nil {
		return int4.Weight{}, err
	}
	if _, ok := ck.Tensor(p + ".bias"); ok {
		return int4.Weight{}, fmt.Errorf("%s has a bias, which fhkit's architectures do not have", p)
	}
	q := &int4.GPTQ{QWeight: qw.Data, QZeros: qz.Data, Scales: sc.Data, ScaleDType: sc.DType, Out: int(spec.Shape[0]), In: int(spec.Shape[1]), V2: v2}
	if g, ok := ck.Tensor(p + ".g_idx"); ok {
		if q.GIdx, err = int32s(g); err != nil {
			return int4.Weight{}, err
		}
	}
	w, err := int4.FromGPTQ(q)
	if err != nil {
		return int4.Weight{}, fmt.Errorf("%s: %w", p, err)
	}
	return w, nil
}

func int32s(t safetensors.Tensor) ([]int32, error) {
	if len(t.Shape) != 1 || (t.DType != dtype.I32 && t.DType != dtype.I64) {
		return nil, fmt.Errorf("tensor %q is %s%v, want an I32 vector", t.Name, t.DType, t.Shape)
	}
	out := make([]int32, t.Shape[0])
	for i := range out {
		if t.DType == dtype.I32 {
			out[i] = int32(binary.LittleEndian.Uint32(t.Data[4*i:]))
		} else {
			out[i] = int32(binary.LittleEndian.Uint64(t.Data[8*i:]))
		}
	}
	return out, nil
}

// sourceFiles records the size and CRC-32C of the input files.
func sourceFiles(dir string, files []hf.SourceFile) ([]fhm.SourceFile, error) {
	out := make([]fhm.SourceFile, 0, len(files))
	for _, sf := range files {
		path := filepath.Join(dir, filepath.FromSlash(sf.Name))
		fh, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
		n, err := io.Copy(h, fh)
		fh.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, fhm.SourceFile{Name: sf.Name, Size: n, CRC32C: fmt.Sprintf("%08x", h.Sum32())})
	}
	return out, nil
}
