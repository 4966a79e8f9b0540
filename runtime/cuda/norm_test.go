package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fhkit/fhkit/runtime/cpu"
)

// normBound: the sum of squares is a sum of n positive terms (relative
// error ≤ n·u in any order), which moves 1/sqrt by at most n·u/2; the
// division, square root and two products add a few u. The bound is
// (n/2 + 8)·u·|x·inv·s| per element, doubled because the reference has
// the same error budget.
func normBound(want []float32, n int) []float32 {
	b := make([]float32, len(want))
	for i, v := range want {
		b[i] = float32(2*(float64(n)/2+8)*u32*math.Abs(float64(v))) + 1e-30
	}
	return b
}

var normShapes = []struct{ rows, n, threads int }{
	{1, 1, 32},
	{3, 100, 64}, // n not a multiple of the block
	{7, 1152, 256},
	{16, 64, 32}, // per-head norm shape
	{2, 4097, 1024},
}

func TestRMSNorm(t *testing.T) {
	dv := testDevice(t)
	r := rand.New(rand.NewPCG(7, 8))
	for _, s := range normShapes {
		for _, plusOne := range []int{0, 1} {
			t.Run(fmt.Sprintf("%dx%d_t%d_plus%d", s.rows, s.n, s.threads, plusOne), func(t *testing.T) {
				x := randFloats(r, s.rows*s.n, 3)
				w := randFloats(r, s.n, 1)
				eps := float32(1e-6)
				scale := make([]float32, s.n)
				for i := range w {
					scale[i] = w[i]
					if plusOne == 1 {
						scale[i] = 1 + w[i]
					}
				}
				want := make([]float32, len(x))
				for row := 0; row < s.rows; row++ {
					cpu.RMSNorm(want[row*s.n:(row+1)*s.n], x[row*s.n:(row+1)*s.n], scale, eps)
				}
				dx, dw := devF32(t, dv, x), devF32(t, dv, w)
				out := devF32(t, dv, make([]float32, len(x)))
				got := schedules(t, dv, func() []float32 {
					launch(t, dv, "fh_rmsnorm", D1(s.rows), D1(s.threads), 0, out, dx, dw, s.n, eps, plusOne)
					return download(t, dv, out, len(x))
				})
				checkClose(t, "rmsnorm", got, want, normBound(want, s.n))

				// In place (out == x), as the per-head q/k norms run.
				inPlace := schedules(t, dv, func() []float32 {
					if err := dv.UploadF32(dx, 0, x); err != nil {
						t.Fatal(err)
					}
					launch(t, dv, "fh_rmsnorm", D1(s.rows), D1(s.threads), 0, dx, dx, dw, s.n, eps, plusOne)
					return download(t, dv, dx, len(x))
				})
				checkClose(t, "rmsnorm in place", inPlace, want, normBound(want, s.n))
			})
		}
	}
}

func TestRMSNormResidualVariants(t *testing.T) {
	dv := testDevice(t)
	r := rand.New(rand.NewPCG(9, 10))
	for _, s := range normShapes {
		t.Run(fmt.Sprintf("%dx%d", s.rows, s.n), func(t *testing.T) {
			x := randFloats(r, s.rows*s.n, 3)
			y := randFloats(r, s.rows*s.n, 3)
			w := randFloats(r, s.n, 1)
			eps := float32(1e-6)
			// Reference for x += norm(y)·w.
			normY := make([]float32, len(y))
			sum := make([]float32, len(x))
			normSum := make([]float32, len(x))
			for row := 0; row < s.rows; row++ {
				lo, hi := row*s.n, (row+1)*s.n
				cpu.RMSNorm(normY[lo:hi], y[lo:hi], w, eps)
				for i := lo; i < hi; i++ {
					sum[i] = x[i] + y[i]
				}
				cpu.RMSNorm(normSum[lo:hi], sum[lo:hi], w, eps)
			}
			wantAdd := make([]float32, len(x))
			addBound := make([]float32, len(x))
			nb := normBound(normY, s.n)
			for i := range x {
				wantAdd[i] = x[i] + normY[i]
				// The normalized term's error, plus the final sum's rounding.
				addBound[i] = nb[i] + 2*u32*float32(math.Abs(float64(wantAdd[i])))
			}
			dx, dy, dw := devF32(t, dv, x), devF32(t, dv, y), devF32(t, dv, w)
			got := schedules(t, dv, func() []float32 {
				if err := dv.UploadF32(dx, 0, x); err != nil {
					t.Fatal(err)
				}
				launch(t, dv, "fh_rmsnorm_add", D1(s.rows), D1(s.threads), 0, dx, dy, dw, s.n, eps, 0)
				return download(t, dv, dx, len(x))
			})
			checkClose(t, "rmsnorm_add", got, wantAdd, addBound)

			out := devF32(t, dv, make([]float32, len(x)))
			var gotSum []float32
			gotNorm := schedules(t, dv, func() []float32 {
				if err := dv.UploadF32(dx, 0, x); err != nil {
					t.Fatal(err)
				}
				launch(t, dv, "fh_add_rmsnorm", D1(s.rows), D1(s.threads), 0, out, dx, dy, dw, s.n, eps, 0)
				gotSum = download(t, dv, dx, len(x))
				return download(t, dv, out, len(x))
			})
			for i := range sum {
				if gotSum[i] != sum[i] {
					t.Fatalf("add_rmsnorm residual [%d] = %g, want %g (one exact float32 add)", i, gotSum[i], sum[i])
				}
			}
			checkClose(t, "add_rmsnorm", gotNorm, normSum, normBound(normSum, s.n))
		})
	}
}
