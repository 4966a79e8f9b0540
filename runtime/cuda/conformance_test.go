package cuda

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/fhkit/fhkit/convert"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/model"
	"github.com/fhkit/fhkit/runtime/verify"
)

// TestConformanceDevice runs every ../shared/conformance case with
// reference logits on the device (f32 weights): against the reference and
// against the CPU, top-1 agreement must be 1 and max |Δlogit| ≤ 1e-3 with
// an f32 KV cache (1e-2 against the CPU with bf16, see logitTol). Skips
// when the data is absent (fails with FHKIT_REQUIRE_SHARED set).
func TestConformanceDevice(t *testing.T) {
	if os.Getenv("FH_CUDA_CONFORMANCE") == "" {
		t.Skip("device conformance takes minutes in the emulator: set FH_CUDA_CONFORMANCE=1 (make cuda-test does)")
	}
	dir := os.Getenv("FHKIT_SHARED")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "shared")
	}
	refs, _ := filepath.Glob(filepath.Join(dir, "conformance", "*", "reference.safetensors"))
	if len(refs) == 0 {
		msg := "no conformance reference logits under " + filepath.Join(dir, "conformance") + " (set FHKIT_SHARED)"
		if os.Getenv("FHKIT_REQUIRE_SHARED") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dv := testDevice(t)
	pool := cpu.NewPool(1)
	defer pool.Close()
	for _, ref := range refs {
		name := filepath.Base(filepath.Dir(ref))
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "m.fhm")
			if _, err := convert.Dir(filepath.Join(filepath.Dir(ref), "model"), out, convert.Options{DType: dtype.F32}); err != nil {
				t.Fatal(err)
			}
			m, err := model.Load(out)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			seqs, err := verify.ReadBaseline(ref, m.Config.VocabSize)
			if err != nil {
				t.Fatal(err)
			}
			for _, kv := range []dtype.DType{dtype.F32, dtype.BF16} {
				r, err := NewRunner(dv, m, kv, 0)
				if err != nil {
					t.Fatal(err)
				}
				var vsRef, vsCPU verify.Stats
				for _, sq := range seqs {
					r.Reset()
					got, err := r.Forward(sq.Tokens, true)
					if err != nil {
						t.Fatal(err)
					}
					st, _ := m.NewState(0, kv)
					want, err := model.NewRunner(m, pool).Forward(st, sq.Tokens, true)
					if err != nil {
						t.Fatal(err)
					}
					var a, b verify.Stats
					a.Add(sq.Tokens, got, sq.Logits, m.Config.VocabSize)
					b.Add(sq.Tokens, got, want, m.Config.VocabSize)
					vsRef.Merge(&a)
					vsCPU.Merge(&b)
				}
				r.Close()
				t.Logf("%s kv %s: vs reference: top-1 %.4f, max |Δ| %.3g; vs CPU: top-1 %.4f, max |Δ| %.3g, mean KL %.3g",
					name, kv, vsRef.Top1Agreement, vsRef.MaxAbsDiff, vsCPU.Top1Agreement, vsCPU.MaxAbsDiff, vsCPU.MeanKL)
				if kv == dtype.F32 && (vsRef.Top1Agreement != 1 || vsRef.MaxAbsDiff > 1e-3) {
					t.Errorf("%s: device vs reference: top-1 %.4f, max |Δ| %.3g", name, vsRef.Top1Agreement, vsRef.MaxAbsDiff)
				}
				if vsCPU.Top1Agreement != 1 || vsCPU.MaxAbsDiff > logitTol(kv) {
					t.Errorf("%s kv %s: device vs CPU: top-1 %.4f, max |Δ| %.3g (bound %g)", name, kv, vsCPU.Top1Agreement, vsCPU.MaxAbsDiff, logitTol(kv))
				}
			}
		})
	}
}
