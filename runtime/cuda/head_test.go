package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/head"
	"github.com/fhkit/fhkit/runtime/sample"
)

func downloadI32(t *testing.T, dv *Device, b Buffer, n int) []int32 {
	t.Helper()
	v := make([]int32, n)
	if err := dv.DownloadI32(v, b, 0); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestArgmaxRows(t *testing.T) {
	dv := testDevice(t)
	r := rand.New(rand.NewPCG(27, 28))
	for _, n := range []int{1, 31, 512, 5000} {
		rows := 3
		x := randFloats(r, rows*n, 10)
		// Row 1: the maximum twice, so the smaller index must win.
		if n > 3 {
			x[n+n-1], x[n+2] = 100, 100
		}
		dx := devF32(t, dv, x)
		ids := devI32(t, dv, make([]int32, rows))
		launch(t, dv, "fh_argmax_rows", D1(rows), D1(1024), 0, ids, dx, n)
		got := downloadI32(t, dv, ids, rows)
		for row := 0; row < rows; row++ {
			if want := sample.Argmax(x[row*n : (row+1)*n]); int(got[row]) != want {
				t.Fatalf("n %d row %d: argmax %d, want %d", n, row, got[row], want)
			}
		}
	}
}

func TestTopK(t *testing.T) {
	dv := testDevice(t)
	r := rand.New(rand.NewPCG(29, 30))
	for _, s := range []struct{ n, k, levels, threads int }{
		{1, 1, 0, 32}, {100, 7, 0, 64}, {1000, 256, 0, 1024}, {4096, 100, 5, 256}, {3000, 2999, 3, 1024}, {16384, 256, 0, 1024},
	} {
		t.Run(fmt.Sprintf("n%d_k%d_levels%d", s.n, s.k, s.levels), func(t *testing.T) {
			scores := randFloats(r, s.n, 5)
			if s.levels > 0 {
				// Few distinct values: ties decide the selection.
				for i := range scores {
					scores[i] = float32(r.IntN(s.levels)) - 1
				}
			}
			want := head.TopClusters(scores, s.k)
			slices.Sort(want)
			ds := devF32(t, dv, scores)
			out := devI32(t, dv, make([]int32, s.k))
			var got []int32
			schedules(t, dv, func() []float32 {
				launch(t, dv, "fh_topk", D1(1), D1(s.threads), 0, out, ds, s.n, s.k)
				got = downloadI32(t, dv, out, s.k)
				f := make([]float32, len(got))
				for i, v := range got {
					f[i] = float32(v)
				}
				return f
			})
			for i := range want {
				if int(got[i]) != want[i] {
					t.Fatalf("top-%d of %d: [%d] = %d, want %d (head.TopClusters, sorted)", s.k, s.n, i, got[i], want[i])
				}
			}
		})
	}
}

func TestFlashHeadStage2(t *testing.T) {
	dv := testDevice(t)
	r := rand.New(rand.NewPCG(31, 32))
	for _, dt := range []dtype.DType{dtype.BF16, dtype.F16, dtype.F32} {
		for _, s := range []struct{ K, cap, D, P, nspecial int }{{8, 16, 64, 3, 0}, {50, 16, 200, 20, 3}, {33, 7, 172, 33, 9}} {
			t.Run(fmt.Sprintf("%s_K%d_cap%d_D%d_P%d_s%d", dt, s.K, s.cap, s.D, s.P, s.nspecial), func(t *testing.T) {
				V := s.K*s.cap - s.K/2
				wperm := randMat(r, s.K*s.cap, s.D, dt)
				perm := r.Perm(s.K * s.cap)
				vmap := make([]int32, s.K*s.cap)
				for i, p := range perm {
					vmap[i] = int32(p)
					if p >= V {
						vmap[i] = -1 // padding slots
					}
				}
				clusters := r.Perm(s.K)[:s.P]
				special := randMat(r, s.nspecial, s.D, dtype.F32)
				specialIDs := make([]int32, s.nspecial)
				for i := range specialIDs {
					specialIDs[i] = int32(V + 100 + i)
				}
				hidden := randFloats(r, s.D, 1)
				// Reference: runtime/head's fused path (a running best over
				// the probed blocks, then the special tokens).
				type cand struct {
					id    int32
					logit float32
					bound float32
				}
				var cands []cand
				row := make([]float32, s.D)
				logitsOf := func(m cpu.Mat, rr int) (float32, float32) {
					out := []float32{0}
					one := cpu.Mat{Rows: 1, Cols: m.Cols, DType: m.DType, Data: m.Data[rr*m.Cols*m.DType.Size() : (rr+1)*m.Cols*m.DType.Size()]}
					one.DotRows(out, hidden)
					m.RowF32(row, rr)
					var abs float64
					for i := range row {
						abs += math.Abs(float64(row[i]) * float64(hidden[i]))
					}
					return out[0], float32(2 * float64(s.D+1) * u32 * abs)
				}
				for _, k := range clusters {
					for sl := 0; sl < s.cap; sl++ {
						if id := vmap[k*s.cap+sl]; id >= 0 {
							l, b := logitsOf(wperm, k*s.cap+sl)
							cands = append(cands, cand{id, l, b})
						}
					}
				}
				for j := 0; j < s.nspecial; j++ {
					l, b := logitsOf(special, j)
					cands = append(cands, cand{specialIDs[j], l, b})
				}
				best := cands[0]
				for _, c := range cands[1:] {
					if c.logit > best.logit || (c.logit == best.logit && c.id < best.id) {
						best = c
					}
				}
				nblocks := s.P + ceilDiv(s.nspecial, 8)
				pl, pid := devF32(t, dv, make([]float32, nblocks)), devI32(t, dv, make([]int32, nblocks))
				ids := devI32(t, dv, []int32{0})
				cl := make([]int32, len(clusters))
				for i, c := range clusters {
					cl[i] = int32(c)
				}
				sw := Buffer{}
				if s.nspecial > 0 {
					sw = devBytes(t, dv, special.Data)
				}
				dsid := devI32(t, dv, append(specialIDs, 0))
				name := "fh_flashhead_stage2_" + map[dtype.DType]string{dtype.BF16: "bf16", dtype.F16: "f16", dtype.F32: "f32"}[dt]
				var got int32
				schedules(t, dv, func() []float32 {
					launch(t, dv, name, D1(nblocks), D1(256), 0, pl, pid, devBytes(t, dv, wperm.Data), devI32(t, dv, vmap),
						devI32(t, dv, cl), s.P, sw, dsid, s.nspecial, devF32(t, dv, hidden), s.cap, s.D)
					launch(t, dv, "fh_argmax_parts", D1(1), D1(256), 0, ids, pl, pid, nblocks)
					got = downloadI32(t, dv, ids, 1)[0]
					return []float32{float32(got)}
				})
				if got == best.id {
					return
				}
				// A different winner is only acceptable when the two logits
				// are within the rounding bound of each other.
				for _, c := range cands {
					if c.id == got && math.Abs(float64(c.logit-best.logit)) <= float64(c.bound+best.bound) {
						t.Logf("winner %d instead of %d: logits %g and %g within rounding", got, best.id, c.logit, best.logit)
						return
					}
				}
				t.Fatalf("stage 2 picked token %d, want %d (logit %g)", got, best.id, best.logit)
			})
		}
	}
}

func TestFlashHeadStage2Ties(t *testing.T) {
	dv := testDevice(t)
	r := rand.New(rand.NewPCG(33, 34))
	// Every row of the two probed clusters is the same: all logits tie,
	// and the smallest token id must win whatever the block order.
	const K, cap, D = 4, 8, 64
	one := randMat(r, 1, D, dtype.BF16)
	data := make([]byte, 0, K*cap*D*2)
	for i := 0; i < K*cap; i++ {
		data = append(data, one.Data...)
	}
	vmap := make([]int32, K*cap)
	for i := range vmap {
		vmap[i] = int32(K*cap - i) // decreasing ids: the smallest is in the last cluster
	}
	pl, pid := devF32(t, dv, make([]float32, 2)), devI32(t, dv, make([]int32, 2))
	ids := devI32(t, dv, []int32{0})
	launch(t, dv, "fh_flashhead_stage2_bf16", D1(2), D1(128), 0, pl, pid, devBytes(t, dv, data), devI32(t, dv, vmap),
		devI32(t, dv, []int32{3, 1}), 2, Buffer{}, devI32(t, dv, []int32{0}), 0, devF32(t, dv, randFloats(r, D, 1)), cap, D)
	launch(t, dv, "fh_argmax_parts", D1(1), D1(64), 0, ids, pl, pid, 2)
	if got := downloadI32(t, dv, ids, 1)[0]; got != 1 {
		t.Fatalf("tied logits: token %d, want 1 (the smallest id)", got)
	}
}

func TestSample(t *testing.T) {
	dv := testDevice(t)
	r := rand.New(rand.NewPCG(35, 36))
	for _, n := range []int{1, 50, 3000} {
		logits := randFloats(r, n, 4)
		dl := devF32(t, dv, logits)
		out := devI32(t, dv, []int32{0})
		du := devF32(t, dv, []float32{0})
		invT := float32(1 / 0.8)
		// float64 CDF of the same distribution.
		mx := float32(math.Inf(-1))
		for _, v := range logits {
			mx = max(mx, v)
		}
		cdf := make([]float64, n)
		var run float64
		for i, v := range logits {
			run += math.Exp(float64((v - mx) * invT))
			cdf[i] = run
		}
		for trial := 0; trial < 20; trial++ {
			u := r.Float32()
			if err := dv.UploadF32(du, 0, []float32{u}); err != nil {
				t.Fatal(err)
			}
			launch(t, dv, "fh_sample", D1(1), D1(256), 0, out, dl, n, invT, du)
			got := int(downloadI32(t, dv, out, 1)[0])
			target := float64(u) * run
			// The pick's CDF interval must contain u·total, up to float32
			// rounding of the partial sums (relative (n+2)·u).
			slack := float64(n+2) * u32 * run * 2
			lo := 0.0
			if got > 0 {
				lo = cdf[got-1]
			}
			if got < 0 || got >= n || target < lo-slack || target > cdf[got]+slack {
				t.Fatalf("n %d u %g: picked %d with CDF interval [%g, %g], target %g", n, u, got, lo, cdf[max(got, 0)], target)
			}
		}
	}
}
