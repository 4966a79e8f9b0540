package quantize

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fhkit/fhkit/convert"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/formats/int4"
	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/model"
	"github.com/fhkit/fhkit/runtime/verify"
)

func TestGridCompressedTensors(t *testing.T) {
	sym := Scheme{Symmetric: true, ScaleDType: dtype.F32}
	// absmax 7.5 → scale 1; 7.5 rounds (half to even) to 8, clamped to 7;
	// -7.5 → -8 (code 0); 2.5 → 2 (even); 3.5 → 4.
	s, z := sym.Params([]float32{7.5, -7.5, 2.5, 3.5})
	if s != 1 || z != 8 {
		t.Fatalf("symmetric params = %g, %d", s, z)
	}
	for _, c := range []struct {
		w    float32
		code uint8
	}{{7.5, 15}, {-7.5, 0}, {2.5, 10}, {3.5, 12}, {-0.5, 8}, {100, 15}, {-100, 0}} {
		if got := Code(c.w, s, z); got != c.code {
			t.Errorf("Code(%g) = %d, want %d", c.w, got, c.code)
		}
	}
	// min ≤ 0 ≤ max forced: all-positive group still uses absmax/7.5.
	if s, _ := sym.Params([]float32{3, 1.5}); s != 0.4 {
		t.Errorf("positive group scale = %g, want 0.4", s)
	}
	// all-zero group: scale clamps to float32 epsilon.
	if s, _ := sym.Params([]float32{0, 0}); s != eps32 {
		t.Errorf("zero group scale = %g", s)
	}
	asym := Scheme{ScaleDType: dtype.F32}
	s, z = asym.Params([]float32{1, 16}) // min forced to 0: (16-0)/15
	if math.Abs(float64(s)-16.0/15) > 1e-7 || z != 0 {
		t.Errorf("asym params = %g, %d", s, z)
	}
	s, z = asym.Params([]float32{-3, 12}) // scale 1, zero 3
	if s != 1 || z != 3 || Code(-3, s, z) != 0 || Code(12, s, z) != 15 || Dequant(Code(5, s, z), s, z) != 5 {
		t.Errorf("asym [-3,12]: s %g z %d", s, z)
	}
	bf := Scheme{Symmetric: true, ScaleDType: dtype.BF16}
	if s, _ := bf.Params([]float32{1}); s != dtype.BF16ToF32(dtype.F32ToBF16(1/7.5)) {
		t.Errorf("bf16 scale %g not rounded", s)
	}
}

// Round trip: every dequantized weight is within half a step of the
// original, plus 7.5·u steps at a group's extreme when rounding the scale
// to 16 bits (unit roundoff u: 2⁻⁸ bf16, 2⁻¹¹ f16) pushes it past the grid;
// packing preserves every code.
func TestRTNRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	for _, c := range []struct{ rows, cols, g int }{{5, 64, 64}, {7, 172, 43}, {3, 96, 32}, {11, 40, 8}} {
		for _, sc := range []Scheme{{true, dtype.BF16}, {false, dtype.BF16}, {true, dtype.F16}, {false, dtype.F16}} {
			w := make([]float32, c.rows*c.cols)
			for i := range w {
				w[i] = float32(r.NormFloat64() * 0.05)
			}
			q, err := RTN(w, c.rows, c.cols, c.g, sc, 3)
			if err != nil {
				t.Fatal(err)
			}
			wd := q.Dequantize()
			ng := c.cols / c.g
			for i, v := range w {
				s := q.Scales[(i/c.cols)*ng+(i%c.cols)/c.g]
				u := 1.0 / 256
				if sc.ScaleDType == dtype.F16 {
					u = 1.0 / 2048
				}
				if d := math.Abs(float64(v - wd[i])); d > (0.5+7.5*u+1e-6)*float64(s) {
					t.Fatalf("%+v %+v: |w - ŵ| = %g > half step %g", c, sc, d, s/2)
				}
			}
			pk, err := q.Pack()
			if err != nil {
				t.Fatal(err)
			}
			if (pk.Zeros == nil) != sc.Symmetric {
				t.Fatalf("zeros present = %v for symmetric %v", pk.Zeros != nil, sc.Symmetric)
			}
			back := pk.Dequantize()
			for i := range back {
				if back[i] != wd[i] {
					t.Fatalf("%+v: packed dequant %g != %g at %d", c, back[i], wd[i], i)
				}
			}
			if e := RelError(w, wd); e <= 0 || e > 0.2 {
				t.Errorf("%+v %+v: relative error %g", c, sc, e)
			}
		}
	}
	if _, err := RTN([]float32{1, float32(math.NaN())}, 1, 2, 2, Scheme{true, dtype.BF16}, 1); err == nil || !strings.Contains(err.Error(), "NaN") {
		t.Errorf("NaN weight: %v", err)
	}
	if _, err := RTN(make([]float32, 12), 1, 12, 5, Scheme{true, dtype.BF16}, 1); err == nil {
		t.Error("group 5 of width 12 accepted")
	}
}

func TestGroupFor(t *testing.T) {
	for _, c := range []struct{ cols, g, want int }{
		{64, 64, 64}, {172, 64, 43}, {64, 128, 64}, {1152, 128, 128}, {6912, 128, 128}, {96, 64, 48}, {22, 16, 11}, {2 * 13, 8, 0}, {65, 64, 0},
	} {
		got, ok := GroupFor(c.cols, c.g)
		if got != c.want || ok != (c.want > 0) {
			t.Errorf("GroupFor(%d, %d) = %d, %v; want %d", c.cols, c.g, got, ok, c.want)
		}
	}
}

func fixtureFHM(t *testing.T, preset string, dt dtype.DType) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), preset+".fhm")
	if _, err := convert.Dir(filepath.Join("..", "testdata", "fixtures", preset), out, convert.Options{DType: dt}); err != nil {
		t.Fatal(err)
	}
	return out
}

// compare runs verify on random sequences of the quantized model against
// the dense one.
func compare(t *testing.T, qpath, dpath string, seqs []verify.Sequence) *verify.Report {
	t.Helper()
	pool := cpu.NewPool(2)
	defer pool.Close()
	qm, err := model.Load(qpath)
	if err != nil {
		t.Fatal(err)
	}
	defer qm.Close()
	dm, err := model.Load(dpath)
	if err != nil {
		t.Fatal(err)
	}
	defer dm.Close()
	if seqs == nil {
		seqs = verify.RandomSequences(3, 40, dm.Config.VocabSize, -1, 3, 7)
	}
	rep, err := verify.Run(model.NewRunner(qm, pool), model.NewRunner(dm, pool), seqs, dtype.F32)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestFileFixtures(t *testing.T) {
	for _, preset := range []string{"gemma3-tiny", "llama-tiny", "qwen3-tiny", "llama-sharded"} {
		t.Run(preset, func(t *testing.T) {
			dense := fixtureFHM(t, preset, dtype.BF16)
			for _, asym := range []bool{false, true} {
				out := filepath.Join(t.TempDir(), "q.fhm")
				sum, err := File(dense, out, Options{GroupSize: 16, Asymmetric: asym, Threads: 2})
				if err != nil {
					t.Fatal(err)
				}
				f, err := fhm.Open(out)
				if err != nil {
					t.Fatal(err)
				}
				if err := f.Verify(); err != nil {
					t.Fatal(err)
				}
				qm := f.Metadata.Quantization
				if qm == nil || qm.Bits != 4 || qm.GroupSize != 16 || qm.Symmetric == asym || len(qm.Layers) != 7*f.Metadata.Model.NumLayers {
					t.Fatalf("metadata %+v", qm)
				}
				for _, l := range qm.Layers {
					if _, ok := f.Tensor(l.Name); ok {
						t.Errorf("dense %s still present", l.Name)
					}
					w, found, err := int4.Find(f, l.Name)
					if !found || err != nil || (w.Zeros != nil) != asym || w.GroupSize != 16 {
						t.Errorf("%s: found %v err %v zeros %v group %d", l.Name, found, err, w.Zeros != nil, w.GroupSize)
					}
					if l.WeightRelError <= 0 || l.WeightRelError > 0.25 {
						t.Errorf("%s: relative error %g", l.Name, l.WeightRelError)
					}
				}
				for _, n := range []string{"model.embed_tokens.weight", "model.norm.weight", "model.layers.0.input_layernorm.weight"} {
					if _, ok := f.Tensor(n); !ok {
						t.Errorf("%s missing", n)
					}
				}
				f.Close()
				want := 4 + 16.0/16 // codes + bf16 scale per 16
				if asym {
					want += 4.0 / 16
				}
				if math.Abs(sum.BitsPerWeight-want) > 1e-9 {
					t.Errorf("bits per weight %g, want %g", sum.BitsPerWeight, want)
				}
				rep := compare(t, out, dense, nil)
				if rep.MeanKL > 0.1 || rep.Top1Agreement < 0.5 {
					t.Errorf("asym %v: quantized vs dense: KL %g, top-1 %g", asym, rep.MeanKL, rep.Top1Agreement)
				}
				t.Logf("asym %v: KL %.4g top-1 %.3f bits/weight %.3f", asym, rep.MeanKL, rep.Top1Agreement, sum.BitsPerWeight)
			}
		})
	}
}

func TestFileBadInput(t *testing.T) {
	dense := fixtureFHM(t, "llama-tiny", dtype.F32) // hidden 32, intermediate 96
	dir := t.TempDir()
	q := filepath.Join(dir, "q.fhm")
	if _, err := File(dense, q, Options{GroupSize: 32}); err != nil {
		t.Fatal(err)
	}
	// An already-quantized input.
	if _, err := File(q, filepath.Join(dir, "qq.fhm"), Options{}); err == nil || !strings.Contains(err.Error(), "already quantized") {
		t.Errorf("quantized input: %v", err)
	}
	// Strict group: 64 does not divide 96.
	bad := filepath.Join(dir, "bad.fhm")
	if _, err := File(dense, bad, Options{GroupSize: 64, StrictGroup: true}); err == nil || !strings.Contains(err.Error(), "does not divide") {
		t.Errorf("strict group: %v", err)
	}
	for _, o := range []Options{{Method: "awq"}, {ScaleDType: dtype.F32}, {GroupSize: -1}, {Ignore: []string{"re:("}}, {Ignore: []string{"[x"}}} {
		if _, err := File(dense, bad, o); err == nil {
			t.Errorf("options %+v accepted", o)
		}
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("a failed run left %s", bad)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	// Fallback: group 64 on width 96 uses 48 for down_proj (recorded).
	sum, err := File(dense, bad, Options{GroupSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range sum.Layers {
		want := 32 // hidden 32 < 64: the whole width
		if strings.HasSuffix(l.Name, "down_proj.weight") {
			want = 48
		}
		if l.GroupSize != want {
			t.Errorf("%s: group %d, want %d", l.Name, l.GroupSize, want)
		}
	}
	// Ignore patterns: exact module, glob and regexp.
	sum, err = File(dense, filepath.Join(dir, "ign.fhm"), Options{GroupSize: 32, Ignore: []string{
		"model.layers.0.mlp.down_proj", "model.layers.*.self_attn.o_proj", "re:layers\\.1\\.mlp\\.(gate|up)"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"model.layers.0.mlp.down_proj.weight", "model.layers.0.self_attn.o_proj.weight", "model.layers.1.self_attn.o_proj.weight",
		"model.layers.1.mlp.gate_proj.weight", "model.layers.1.mlp.up_proj.weight"}
	if len(sum.Ignored) != len(want) || len(sum.Layers) != 14-len(want) {
		t.Fatalf("ignored %v", sum.Ignored)
	}
	for _, n := range want {
		if _, ok := sum.Ignored[n]; !ok {
			t.Errorf("%s not ignored", n)
		}
	}
	m, err := model.Load(filepath.Join(dir, "ign.fhm"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Layers[0].Down.DType != dtype.F32 || m.Layers[0].Up.DType != dtype.U4 {
		t.Errorf("loaded dtypes down %s up %s", m.Layers[0].Down.DType, m.Layers[0].Up.DType)
	}
	m.Close()
}

// sharedDir returns ../shared/conformance/<name> or skips.
func sharedDir(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join("..", "..", "shared", "conformance", name)
	if env := os.Getenv("FHKIT_SHARED"); env != "" {
		dir = filepath.Join(env, "conformance", name)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("shared conformance data not found at %s (set FHKIT_SHARED): skipping", dir)
	}
	return dir
}

// TestStories260K quantizes real trained weights with group 64 (width 172
// falls back to 43) and compares with the dense model on the reference
// sequences.
func TestStories260K(t *testing.T) {
	dir := sharedDir(t, "stories260K")
	dense := filepath.Join(t.TempDir(), "st.fhm")
	if _, err := convert.Dir(filepath.Join(dir, "model"), dense, convert.Options{DType: dtype.F32}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "st-q.fhm")
	sum, err := File(dense, out, Options{GroupSize: 64, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Ignored) != 0 {
		t.Errorf("ignored %v", sum.Ignored)
	}
	seqs, err := verify.ReadBaseline(filepath.Join(dir, "reference.safetensors"), 512)
	if err != nil {
		t.Fatal(err)
	}
	for i := range seqs {
		seqs[i].Logits = nil
	}
	rep := compare(t, out, dense, seqs)
	t.Logf("stories260K RTN g64: KL %.4f top-1 %.3f, mean weight error %.4f", rep.MeanKL, rep.Top1Agreement, sum.MeanWeightRelError)
	if rep.MeanKL > 0.3 || rep.Top1Agreement < 0.6 {
		t.Errorf("quantized vs dense: KL %g top-1 %g", rep.MeanKL, rep.Top1Agreement)
	}
}

func TestIsTarget(t *testing.T) {
	for name, want := range map[string]bool{
		"model.layers.0.self_attn.q_proj.weight": true, "model.layers.12.mlp.down_proj.weight": true,
		"model.layers.x.mlp.up_proj.weight": false, "model.layers..mlp.up_proj.weight": false,
		"model.layers.3.self_attn.q_norm.weight": false, "model.embed_tokens.weight": false, "lm_head.weight": false,
		"model.layers.3.mlp.up_proj.weight.x": false, "model.layers.3.mlp.up_proj.qweight": false,
	} {
		if IsTarget(name) != want {
			t.Errorf("IsTarget(%q) = %v", name, !want)
		}
	}
}
