package quantize

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fhkit/fhkit/convert"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/runtime/verify"
)

func TestUpperCholInverse(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	for _, n := range []int{1, 2, 7, 40, 75} {
		x := make([]float32, 3*n*n)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		hs := NewHessian(n)
		if err := hs.Add(x, 3*n, 2); err != nil {
			t.Fatal(err)
		}
		h := hs.Sym()
		orig := append([]float64(nil), h...)
		u, err := upperCholInverse(h, n, 2)
		if err != nil {
			t.Fatal(err)
		}
		// (UᵀU)·H = I and U is upper triangular with a positive diagonal.
		for i := 0; i < n; i++ {
			if u[i*n+i] <= 0 {
				t.Fatalf("n %d: U[%d][%d] = %g", n, i, i, u[i*n+i])
			}
			for j := 0; j < i; j++ {
				if u[i*n+j] != 0 {
					t.Fatalf("n %d: U not upper at (%d,%d)", n, i, j)
				}
			}
		}
		for i := 0; i < n; i++ {
			for j := 0; j < n; j++ {
				var s float64
				for k := 0; k < n; k++ {
					var hinv float64 // (UᵀU)[i][k]
					for m := 0; m < n; m++ {
						hinv += u[m*n+i] * u[m*n+k]
					}
					s += hinv * orig[k*n+j]
				}
				want := 0.0
				if i == j {
					want = 1
				}
				if math.Abs(s-want) > 1e-8 {
					t.Fatalf("n %d: (UᵀU H)[%d][%d] = %g", n, i, j, s)
				}
			}
		}
	}
	bad := []float64{1, 2, 2, 1}
	if _, err := upperCholInverse(bad, 2, 1); err == nil {
		t.Error("indefinite matrix accepted")
	}
	if err := NewHessian(2).Add([]float32{1, float32(math.NaN())}, 1, 1); err == nil {
		t.Error("NaN activation accepted")
	}
}

// correlated returns T rows of width n with strongly correlated columns
// and uneven scales (what makes GPTQ beat RTN).
func correlated(r *rand.Rand, T, n int) []float32 {
	x := make([]float32, T*n)
	for t := 0; t < T; t++ {
		base := r.NormFloat64()
		for c := 0; c < n; c++ {
			x[t*n+c] = float32((0.8*base + 0.6*r.NormFloat64()) * (1 + float64(c%5)))
		}
	}
	return x
}

func TestGPTQBeatsRTN(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, c := range []struct {
		rows, cols, g, block int
		act, asym            bool
	}{{16, 64, 16, 128, false, false}, {12, 96, 32, 16, false, true}, {9, 86, 43, 20, true, false}, {20, 128, 128, 32, true, true}} {
		w := make([]float32, c.rows*c.cols)
		for i := range w {
			w[i] = float32(r.NormFloat64() * 0.1)
		}
		x := correlated(r, 4*c.cols, c.cols)
		hs := NewHessian(c.cols)
		if err := hs.Add(x, 4*c.cols, 2); err != nil {
			t.Fatal(err)
		}
		a := hs.Sym()
		sc := Scheme{Symmetric: !c.asym, ScaleDType: dtype.BF16}
		rq, _ := RTN(w, c.rows, c.cols, c.g, sc, 1)
		gq, err := GPTQ(w, c.rows, c.cols, a, GPTQConfig{GroupSize: c.g, Scheme: sc, Damping: 0.01, BlockSize: c.block, ActOrder: c.act, Threads: 2})
		if err != nil {
			t.Fatal(err)
		}
		re := OutputRelError(w, rq.Dequantize(), c.rows, c.cols, a, 2)
		ge := OutputRelError(w, gq.Dequantize(), c.rows, c.cols, a, 2)
		t.Logf("%+v: output error RTN %.4f GPTQ %.4f", c, re, ge)
		if !(ge < re) {
			t.Errorf("%+v: GPTQ output error %g not below RTN's %g", c, ge, re)
		}
		// Codes are on the grid: the packed weight dequantizes to the same.
		pk, err := gq.Pack()
		if err != nil {
			t.Fatal(err)
		}
		back, deq := pk.Dequantize(), gq.Dequantize()
		for i := range back {
			if back[i] != deq[i] {
				t.Fatal("packed GPTQ weight differs")
			}
		}
	}
	// With H = I, GPTQ is RTN.
	n := 32
	w := make([]float32, 4*n)
	for i := range w {
		w[i] = float32(r.NormFloat64())
	}
	id := make([]float64, n*n)
	for i := 0; i < n; i++ {
		id[i*n+i] = 1
	}
	sc := Scheme{Symmetric: true, ScaleDType: dtype.BF16}
	gq, err := GPTQ(w, 4, n, id, GPTQConfig{GroupSize: 8, Scheme: sc, Damping: 0.01, BlockSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	rq, _ := RTN(w, 4, n, 8, sc, 1)
	for i := range gq.Codes {
		if gq.Codes[i] != rq.Codes[i] {
			t.Fatalf("H = I: GPTQ code %d differs from RTN at %d", gq.Codes[i], i)
		}
	}
}

// gptqVsRTN quantizes dense both ways and checks that GPTQ's output error
// is below RTN's on every layer and its KL to the dense model lower.
func gptqVsRTN(t *testing.T, dense string, g int, opts GPTQOptions, seqs []verify.Sequence) {
	t.Helper()
	dir := t.TempDir()
	rq, gq := filepath.Join(dir, "rtn.fhm"), filepath.Join(dir, "gptq.fhm")
	if _, err := File(dense, rq, Options{GroupSize: g, Threads: 2}); err != nil {
		t.Fatal(err)
	}
	sum, err := File(dense, gq, Options{GroupSize: g, Threads: 2, Method: MethodGPTQ, GPTQ: opts})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Calibration == nil || sum.Calibration.Tokens == 0 || sum.Calibration.Warning != "" {
		t.Fatalf("calibration %+v", sum.Calibration)
	}
	for _, l := range sum.Layers {
		if !(l.OutputRelError > 0 && l.OutputRelError < l.RTNOutputRelError) {
			t.Errorf("%s: GPTQ output error %g, RTN %g", l.Name, l.OutputRelError, l.RTNOutputRelError)
		}
	}
	f, err := fhm.Open(gq)
	if err != nil {
		t.Fatal(err)
	}
	if q := f.Metadata.Quantization; q.Method != MethodGPTQ || q.Calibration == nil || len(q.Layers) != len(sum.Layers) {
		t.Errorf("metadata %+v", q)
	}
	f.Close()
	rr, gr := compare(t, rq, dense, seqs), compare(t, gq, dense, seqs)
	t.Logf("KL to dense: RTN %.4f GPTQ %.4f; top-1 RTN %.3f GPTQ %.3f (%d calibration tokens, %s)", rr.MeanKL, gr.MeanKL, rr.Top1Agreement, gr.Top1Agreement, sum.Calibration.Tokens, sum.Calibration.Source)
	if !(gr.MeanKL < rr.MeanKL) {
		t.Errorf("GPTQ KL %g not below RTN's %g", gr.MeanKL, rr.MeanKL)
	}
}

func TestGPTQFixtures(t *testing.T) {
	for _, preset := range []string{"llama-tiny", "gemma3-tiny", "qwen3-tiny"} {
		t.Run(preset, func(t *testing.T) {
			dense := fixtureFHM(t, preset, dtype.F32)
			gptqVsRTN(t, dense, 16, GPTQOptions{Samples: 32, SeqLen: 64, Seed: 3}, nil)
		})
	}
}

func TestGPTQStories260K(t *testing.T) {
	dir := sharedDir(t, "stories260K")
	dense := filepath.Join(t.TempDir(), "st.fhm")
	if _, err := convert.Dir(filepath.Join(dir, "model"), dense, convert.Options{DType: dtype.F32}); err != nil {
		t.Fatal(err)
	}
	seqs, err := verify.ReadBaseline(filepath.Join(dir, "reference.safetensors"), 512)
	if err != nil {
		t.Fatal(err)
	}
	for i := range seqs {
		seqs[i].Logits = nil
	}
	gptqVsRTN(t, dense, 64, GPTQOptions{Samples: 32, SeqLen: 128, Seed: 1}, seqs)
	// act-order and the asymmetric grid also run.
	out := filepath.Join(t.TempDir(), "ao.fhm")
	sum, err := File(dense, out, Options{GroupSize: 64, Asymmetric: true, Method: MethodGPTQ, GPTQ: GPTQOptions{Samples: 8, SeqLen: 64, ActOrder: true}})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range sum.Layers {
		if !(l.OutputRelError < l.RTNOutputRelError) {
			t.Errorf("act-order %s: GPTQ %g RTN %g", l.Name, l.OutputRelError, l.RTNOutputRelError)
		}
	}
}

func TestGPTQCalibFiles(t *testing.T) {
	dense := fixtureFHM(t, "llama-tiny", dtype.F32)
	dir := t.TempDir()
	text := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 40)
	plain := filepath.Join(dir, "c.txt")
	os.WriteFile(plain, []byte(text+"\n\n"+text), 0o644)
	jsonl := filepath.Join(dir, "c.jsonl")
	os.WriteFile(jsonl, []byte(`{"text": "`+text+`"}`+"\n"+`{"id": 2, "text": "`+text+`"}`+"\n"), 0o644)
	for _, c := range []string{plain, jsonl} {
		sum, err := File(dense, filepath.Join(dir, "q.fhm"), Options{GroupSize: 16, Method: MethodGPTQ, GPTQ: GPTQOptions{Calib: c, Samples: 4, SeqLen: 32}})
		if err != nil {
			t.Fatal(err)
		}
		if sum.Calibration.Source != c || sum.Calibration.Sequences != 4 || sum.Calibration.Tokens != 128 || !strings.Contains(sum.Calibration.Warning, "rank-deficient") {
			t.Errorf("%s: calibration %+v", c, sum.Calibration)
		}
	}
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte("{\"text\": 1}\n"), 0o644)
	empty := filepath.Join(dir, "empty.txt")
	os.WriteFile(empty, []byte(" \n"), 0o644)
	for _, c := range []string{bad, empty, filepath.Join(dir, "missing.txt")} {
		out := filepath.Join(dir, "never.fhm")
		if _, err := File(dense, out, Options{GroupSize: 16, Method: MethodGPTQ, GPTQ: GPTQOptions{Calib: c}}); err == nil {
			t.Errorf("%s accepted", c)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%s: output left behind", c)
		}
	}
}

// A NaN activation (here from a NaN norm weight) fails GPTQ with a clear
// error and no output.
func TestGPTQNaNActivation(t *testing.T) {
	dense := fixtureFHM(t, "llama-tiny", dtype.F32)
	f, err := fhm.Open(dense)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	nan := filepath.Join(dir, "nan.fhm")
	w, err := fhm.Create(nan)
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range f.Tensors {
		tt, _ := f.Tensor(ti.Name)
		data := tt.Data
		if ti.Name == "model.layers.1.post_attention_layernorm.weight" {
			data = append([]byte(nil), data...)
			binary.LittleEndian.PutUint32(data[4:], math.Float32bits(float32(math.NaN())))
		}
		if err := w.WriteTensorBytes(ti.Name, ti.DType, ti.Shape, data); err != nil {
			t.Fatal(err)
		}
	}
	meta := f.Metadata
	if err := w.Commit(&meta); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "q.fhm")
	_, err = File(nan, out, Options{GroupSize: 16, Method: MethodGPTQ, GPTQ: GPTQOptions{Samples: 2, SeqLen: 8}})
	if err == nil || !strings.Contains(err.Error(), "NaN") || !strings.Contains(err.Error(), "model.layers.1.mlp") {
		t.Errorf("NaN activation: %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Error("output left behind")
	}
}
