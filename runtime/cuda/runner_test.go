package cuda

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/fhkit/fhkit/convert"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/model"
	"github.com/fhkit/fhkit/runtime/sample"
)

func loadFixture(t *testing.T, preset string, dt dtype.DType) *model.Model {
	t.Helper()
	out := filepath.Join(t.TempDir(), preset+".fhm")
	if _, err := convert.Dir(filepath.Join("..", "..", "testdata", "fixtures", preset), out, convert.Options{DType: dt}); err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// logitTol is the largest |Δlogit| accepted between the device and the
// CPU. With a float32 KV cache both compute in float32 and differ only in
// summation order (and FMA contraction), which for these small models
// moves logits by ~1e-6; 1e-3 is the bound for float32 paths.
// With a bf16 (or f16) KV cache a last-bit difference in a key or value
// before it is rounded can flip that rounding, a relative 2^-8 change of
// one cache element, which the following layers carry on. The bound for
// these paths is 5e-2: measured 1.4e-3 on the fixtures and 3.7e-3 /
// 3.6e-2 on the gemma3-tiny / stories260K conformance models, where the
// bf16 cache itself moves logits by 0.025 / 0.15 from the f32 cache.
func logitTol(kv dtype.DType) float64 {
	if kv == dtype.F32 {
		return 1e-3
	}
	return 5e-2
}

func compareLogits(t *testing.T, what string, got, want []float32, V int, tol float64) {
	t.Helper()
	var worst float64
	for i := range want {
		worst = max(worst, math.Abs(float64(got[i])-float64(want[i])))
	}
	agree := 0
	for p := 0; p < len(want)/V; p++ {
		if sample.Argmax(got[p*V:(p+1)*V]) == sample.Argmax(want[p*V:(p+1)*V]) {
			agree++
		}
	}
	t.Logf("%s: %d positions, top-1 agreement %d/%d, max |Δlogit| %.3g", what, len(want)/V, agree, len(want)/V, worst)
	if worst > tol || agree != len(want)/V {
		t.Fatalf("%s: device logits differ from the CPU's: max |Δ| %.3g (bound %g), top-1 %d/%d", what, worst, tol, agree, len(want)/V)
	}
}

func TestRunnerMatchesCPU(t *testing.T) {
	dv := testDevice(t)
	pool := cpu.NewPool(1)
	defer pool.Close()
	for _, c := range []struct {
		preset string
		wdt    dtype.DType
		kvs    []dtype.DType
	}{
		{"gemma3-tiny", dtype.F32, []dtype.DType{dtype.F32}},
		{"gemma3-tiny", dtype.BF16, []dtype.DType{dtype.F32, dtype.BF16}},
		{"llama-tiny", dtype.F32, []dtype.DType{dtype.F32}},
		{"qwen3-tiny", dtype.BF16, []dtype.DType{dtype.F32, dtype.F16}},
	} {
		{
			preset, wdt := c.preset, c.wdt
			m := loadFixture(t, preset, wdt)
			V := m.Config.VocabSize
			// Longer than the sliding window and than one chunk, so the
			// ring wraps and prefill is split.
			n := 40
			if preset == "gemma3-tiny" && wdt == dtype.F32 {
				n = MaxChunk + 40 // one case where prefill is split in chunks
			}
			tokens := make([]int, n)
			r := rand.New(rand.NewPCG(1, 2))
			for i := range tokens {
				tokens[i] = 3 + r.IntN(V-3)
			}
			for _, kv := range c.kvs {
				st, err := m.NewState(0, kv)
				if err != nil {
					t.Fatal(err)
				}
				want, err := model.NewRunner(m, pool).Forward(st, tokens, true)
				if err != nil {
					t.Fatal(err)
				}
				dr, err := NewRunner(dv, m, kv, 0)
				if err != nil {
					t.Fatal(err)
				}
				got, err := dr.Forward(tokens, true)
				if err != nil {
					t.Fatal(err)
				}
				name := preset + "/" + wdt.String() + "/kv-" + kv.String()
				compareLogits(t, name+" prefill", got, want, V, logitTol(kv))
				// Decode: the last 5 tokens one at a time after a prefill.
				dr.Reset()
				n := len(tokens) - 5
				if _, err := dr.Forward(tokens[:n], false); err != nil {
					t.Fatal(err)
				}
				for i := n; i < len(tokens); i++ {
					last, err := dr.Forward(tokens[i:i+1], false)
					if err != nil {
						t.Fatal(err)
					}
					compareLogits(t, name+" decode", last, want[i*V:(i+1)*V], V, logitTol(kv))
				}
				if _, err := dr.Forward([]int{V}, false); err == nil {
					t.Fatal("a token id outside the vocabulary was accepted")
				}
				dr.Close()
			}
		}
	}
}
