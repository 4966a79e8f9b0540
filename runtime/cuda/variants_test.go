package cuda

import (
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/fhkit/fhkit/convert"
	"github.com/fhkit/fhkit/flashhead-build"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/quantize"
	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/head"
	"github.com/fhkit/fhkit/runtime/model"
	"github.com/fhkit/fhkit/runtime/sample"
)

// variantFiles writes the embedded default (gemma3-tiny, bf16), its
// FlashHead variant and its W4A16 variants (symmetric, and asymmetric with
// the FlashHead) into a temporary directory.
func variantFiles(t *testing.T) map[string]string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{"dense": filepath.Join(dir, "model.fhm")}
	if _, err := convert.Dir(filepath.Join("..", "..", "testdata", "fixtures", "gemma3-tiny"), files["dense"], convert.Options{}); err != nil {
		t.Fatal(err)
	}
	f, err := fhm.Open(files["dense"])
	if err != nil {
		t.Fatal(err)
	}
	rows, _, err := flashhead.HeadMatrix(f)
	if err != nil {
		t.Fatal(err)
	}
	h, err := flashhead.Build(rows, flashhead.Options{Seed: 1, Threads: 1, SpecialTokenIDs: f.Metadata.Model.EOSTokenIDs})
	if err != nil {
		t.Fatal(err)
	}
	files["flashhead"] = filepath.Join(dir, "model-fh.fhm")
	if err := flashhead.Write(f, files["flashhead"], h, h.Metadata(), flashhead.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	files["w4a16"] = filepath.Join(dir, "model-w4.fhm")
	if _, err := quantize.File(files["dense"], files["w4a16"], quantize.Options{GroupSize: 16}); err != nil {
		t.Fatal(err)
	}
	files["w4a16-asym-flashhead"] = filepath.Join(dir, "model-w4-fh.fhm")
	if _, err := quantize.File(files["flashhead"], files["w4a16-asym-flashhead"], quantize.Options{GroupSize: 16, Asymmetric: true}); err != nil {
		t.Fatal(err)
	}
	return files
}

// TestVariantsMatchCPU runs the dense, FlashHead and W4A16 variants of the
// embedded default on the device and on the CPU: logits within 1e-3 with
// top-1 agreement 1, the FlashHead's argmax identical at every position,
// and identical greedy continuations.
func TestVariantsMatchCPU(t *testing.T) {
	dv := testDevice(t)
	pool := cpu.NewPool(1)
	defer pool.Close()
	for name, path := range variantFiles(t) {
		t.Run(name, func(t *testing.T) {
			m, err := model.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			V := m.Config.VocabSize
			r := rand.New(rand.NewPCG(3, 4))
			tokens := make([]int, 90)
			for i := range tokens {
				tokens[i] = 3 + r.IntN(V-3)
			}
			st, _ := m.NewState(0, dtype.F32)
			cr := model.NewRunner(m, pool)
			want, err := cr.Forward(st, tokens, true)
			if err != nil {
				t.Fatal(err)
			}
			dr, err := NewRunner(dv, m, dtype.F32, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer dr.Close()
			got, err := dr.Forward(tokens, true)
			if err != nil {
				t.Fatal(err)
			}
			compareLogits(t, name, got, want, V, logitTol(dtype.F32))

			var fh *head.FlashHead
			if m.File.Metadata.FlashHead != nil {
				if fh, err = head.Load(m.File, m.Head, 0, head.Stage1BF16, m.Config.FinalLogitSoftcap); err != nil {
					t.Fatal(err)
				}
				if err := dr.LoadFlashHead(fh, false); err != nil {
					t.Fatal(err)
				}
				dr.Reset()
				gotIDs, err := dr.FlashArgmaxAll(tokens)
				if err != nil {
					t.Fatal(err)
				}
				st.Reset()
				hidden, err := cr.ForwardHidden(st, tokens, true)
				if err != nil {
					t.Fatal(err)
				}
				H := m.Config.HiddenSize
				for i := range tokens {
					if w := fh.Argmax(pool, hidden[i*H:(i+1)*H]); gotIDs[i] != w {
						t.Fatalf("position %d: device FlashHead chose %d, CPU FlashHead %d", i, gotIDs[i], w)
					}
				}
				t.Logf("%s: FlashHead argmax identical at %d positions", name, len(tokens))
			}

			// Greedy continuation: 12 tokens after a 20-token prompt.
			dr.Reset()
			st.Reset()
			prompt := tokens[:20]
			devTok, err := dr.Greedy(prompt)
			if err != nil {
				t.Fatal(err)
			}
			hidden, err := cr.ForwardHidden(st, prompt, false)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 12; i++ {
				var cpuTok int
				if fh != nil {
					cpuTok = fh.Argmax(pool, hidden)
				} else {
					cpuTok = sample.Argmax(cr.DenseLogits(hidden))
				}
				if devTok != cpuTok {
					t.Fatalf("greedy step %d: device %d, CPU %d", i, devTok, cpuTok)
				}
				if devTok, err = dr.Greedy([]int{devTok}); err != nil {
					t.Fatal(err)
				}
				if hidden, err = cr.ForwardHidden(st, []int{cpuTok}, false); err != nil {
					t.Fatal(err)
				}
			}
			if len(dr.graphs) != 1 {
				t.Fatalf("decode steps used %d captured graphs, want 1", len(dr.graphs))
			}
		})
	}
}
