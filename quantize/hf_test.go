package quantize

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/formats/int4"
	"github.com/fhkit/fhkit/formats/safetensors"
)

// Our packed → compressed-tensors export → import gives bit-identical int4
// weights, scales and zero points, and the same dense tensors.
func TestExportImportRoundTrip(t *testing.T) {
	for _, preset := range []string{"llama-tiny", "gemma3-tiny", "qwen3-tiny"} {
		for _, asym := range []bool{false, true} {
			dense := fixtureFHM(t, preset, dtype.BF16)
			dir := t.TempDir()
			q := filepath.Join(dir, "q.fhm")
			if _, err := File(dense, q, Options{GroupSize: 16, Asymmetric: asym, Ignore: []string{"model.layers.0.mlp.down_proj"}}); err != nil {
				t.Fatal(err)
			}
			f, err := fhm.Open(q)
			if err != nil {
				t.Fatal(err)
			}
			hfDir := filepath.Join(dir, "hf")
			if err := ExportHF(f, hfDir); err != nil {
				t.Fatal(err)
			}
			if err := ExportHF(f, hfDir); err == nil || !strings.Contains(err.Error(), "exists") {
				t.Errorf("second export into the same directory: %v", err)
			}
			var cfg struct {
				QC struct {
					QuantMethod  string         `json:"quant_method"`
					Format       string         `json:"format"`
					Ignore       []string       `json:"ignore"`
					ConfigGroups map[string]any `json:"config_groups"`
				} `json:"quantization_config"`
			}
			b, _ := os.ReadFile(filepath.Join(hfDir, "config.json"))
			if err := json.Unmarshal(b, &cfg); err != nil {
				t.Fatal(err)
			}
			if cfg.QC.QuantMethod != "compressed-tensors" || cfg.QC.Format != "pack-quantized" || len(cfg.QC.ConfigGroups) != 1 ||
				len(cfg.QC.Ignore) != 2 || cfg.QC.Ignore[1] != "model.layers.0.mlp.down_proj" {
				t.Errorf("%s: quantization_config %+v", preset, cfg.QC)
			}
			st, err := safetensors.Open(filepath.Join(hfDir, WeightsFile))
			if err != nil {
				t.Fatal(err)
			}
			wp, ok := st.Tensor("model.layers.1.mlp.up_proj.weight_packed")
			_, hasZP := st.Tensor("model.layers.1.mlp.up_proj.weight_zero_point")
			if !ok || wp.DType != dtype.I32 || hasZP != asym {
				t.Errorf("%s: weight_packed %v %s, zero point %v", preset, ok, wp.DType, hasZP)
			}
			st.Close()

			back := filepath.Join(dir, "back.fhm")
			sum, err := ImportHF(hfDir, back, ImportOptions{DType: dtype.BF16})
			if err != nil {
				t.Fatal(err)
			}
			if sum.Format != "compressed-tensors" || sum.Symmetric == asym || sum.Packed != 7*f.Metadata.Model.NumLayers-1 {
				t.Errorf("%s: import summary %+v", preset, sum)
			}
			g, err := fhm.Open(back)
			if err != nil {
				t.Fatal(err)
			}
			for _, ti := range f.Tensors {
				a, _ := f.Tensor(ti.Name)
				c, ok := g.Tensor(ti.Name)
				if !ok || c.Info.DType != ti.DType || !bytes.Equal(a.Data, c.Data) {
					t.Errorf("%s asym %v: %s differs after export and import", preset, asym, ti.Name)
				}
			}
			if len(g.Tensors) != len(f.Tensors) {
				t.Errorf("%d tensors after import, %d before", len(g.Tensors), len(f.Tensors))
			}
			rep := compare(t, back, dense, nil)
			if rep.MeanKL > 0.1 {
				t.Errorf("%s: imported model KL %g", preset, rep.MeanKL)
			}
			f.Close()
			g.Close()
		}
	}
}

// writeGPTQ turns an exported compressed-tensors directory into a GPTQ v1
// checkpoint of the same weights.
func writeGPTQ(t *testing.T, f *fhm.File, ctDir, dir string, sym bool) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var ts []stTensor
	for _, ti := range f.Tensors {
		if strings.HasPrefix(ti.Name, "tokenizer/") {
			continue
		}
		weight, packed := int4.IsPackedName(ti.Name)
		if !packed {
			tt, _ := f.Tensor(ti.Name)
			ts = append(ts, stTensor{safetensors.Header{Name: ti.Name, DType: ti.DType, Shape: ti.Shape}, tt.Data})
			continue
		}
		if !strings.HasSuffix(ti.Name, ".qweight") {
			continue
		}
		w, _, err := int4.Find(f, weight)
		if err != nil {
			t.Fatal(err)
		}
		q, err := int4.ToGPTQ(w)
		if err != nil {
			t.Fatal(err)
		}
		p := strings.TrimSuffix(weight, ".weight")
		gi := make([]byte, 4*len(q.GIdx))
		for i, v := range q.GIdx {
			gi[4*i], gi[4*i+1], gi[4*i+2], gi[4*i+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
		}
		ng := int64(w.Groups())
		ts = append(ts,
			stTensor{safetensors.Header{Name: p + ".qweight", DType: dtype.I32, Shape: []int64{int64(w.Cols / 8), int64(w.Rows)}}, q.QWeight},
			stTensor{safetensors.Header{Name: p + ".qzeros", DType: dtype.I32, Shape: []int64{ng, int64(w.Rows / 8)}}, q.QZeros},
			stTensor{safetensors.Header{Name: p + ".scales", DType: q.ScaleDType, Shape: []int64{ng, int64(w.Rows)}}, q.Scales},
			stTensor{safetensors.Header{Name: p + ".g_idx", DType: dtype.I32, Shape: []int64{int64(w.Cols)}}, gi})
	}
	if err := writeSafetensors(filepath.Join(dir, WeightsFile), ts); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(ctDir)
	for _, e := range entries {
		if e.Name() == WeightsFile {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(ctDir, e.Name()))
		if e.Name() == "config.json" {
			var m map[string]any
			json.Unmarshal(b, &m)
			m["quantization_config"] = map[string]any{"quant_method": "gptq", "bits": 4, "group_size": 16, "desc_act": false, "sym": sym,
				"damp_percent": 0.01, "true_sequential": true, "static_groups": false, "checkpoint_format": "gptq", "lm_head": false}
			b, _ = json.Marshal(m)
		}
		os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644)
	}
}

// A GPTQ-format checkpoint imports and matches its dequantized reference
// (the weights it was made from), with the v1 zero−1 quirk undone.
func TestImportGPTQ(t *testing.T) {
	for _, asym := range []bool{false, true} {
		dense := fixtureFHM(t, "llama-tiny", dtype.F32)
		dir := t.TempDir()
		q := filepath.Join(dir, "q.fhm")
		if _, err := File(dense, q, Options{GroupSize: 16, Asymmetric: asym, ScaleDType: dtype.F16}); err != nil {
			t.Fatal(err)
		}
		f, err := fhm.Open(q)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		ct := filepath.Join(dir, "ct")
		if err := ExportHF(f, ct); err != nil {
			t.Fatal(err)
		}
		gdir := filepath.Join(dir, "gptq")
		writeGPTQ(t, f, ct, gdir, !asym)
		out := filepath.Join(dir, "imported.fhm")
		sum, err := ImportHF(gdir, out, ImportOptions{DType: dtype.F32})
		if err != nil {
			t.Fatal(err)
		}
		if sum.Format != "gptq-import" || sum.Packed != 14 {
			t.Errorf("summary %+v", sum)
		}
		g, err := fhm.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range f.Metadata.Quantization.Layers {
			ref, _, _ := int4.Find(f, l.Name)
			got, found, err := int4.Find(g, l.Name)
			if !found || err != nil {
				t.Fatalf("%s: %v %v", l.Name, found, err)
			}
			rd, gd := ref.Dequantize(), got.Dequantize()
			for i := range rd {
				if rd[i] != gd[i] {
					t.Fatalf("asym %v %s: dequantized %g, reference %g at %d", asym, l.Name, gd[i], rd[i], i)
				}
			}
			if (got.Zeros == nil) == asym {
				t.Errorf("%s: zeros present %v", l.Name, got.Zeros != nil)
			}
		}
		g.Close()
	}
	// A dense checkpoint is not a quantized one.
	if _, err := ImportHF(filepath.Join("..", "testdata", "fixtures", "llama-tiny"), filepath.Join(t.TempDir(), "x.fhm"), ImportOptions{}); err == nil || !strings.Contains(err.Error(), "not a quantized checkpoint") {
		t.Errorf("dense import: %v", err)
	}
}
