package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/runtime/cpu"
)

// denseBound is int4Bound's argument for 16/32-bit weights: the CPU rounds
// each product w·x to float32 and the GPU fuses it into an FMA, and both
// sum n terms in different orders: |Δ| ≤ 2(n+1)·u·Σ|w·x|.
func denseBound(m cpu.Mat, x []float32, T int) []float32 { return int4Bound(m, x, T) }

func randMat(r *rand.Rand, rows, cols int, dt dtype.DType) cpu.Mat {
	v := randFloats(r, rows*cols, 1)
	data := make([]byte, rows*cols*dt.Size())
	if err := dtype.EncodeFloats(data, v, dt); err != nil {
		panic(err)
	}
	m, err := cpu.NewMat(rows, cols, dt, data)
	if err != nil {
		panic(err)
	}
	return m
}

func TestDenseGEMM(t *testing.T) {
	dv := testDevice(t)
	pool := cpu.NewPool(1)
	defer pool.Close()
	r := rand.New(rand.NewPCG(11, 12))
	shapes := []struct{ rows, cols int }{{1, 1}, {37, 200}, {64, 172}, {9, 1152}, {100, 64}, {3, 4100}}
	for _, dt := range []dtype.DType{dtype.BF16, dtype.F16, dtype.F32} {
		for _, s := range shapes {
			for _, T := range []int{1, 5, 17} {
				t.Run(fmt.Sprintf("%s_%dx%d_T%d", dt, s.rows, s.cols, T), func(t *testing.T) {
					m := randMat(r, s.rows, s.cols, dt)
					x := randFloats(r, T*s.cols, 1)
					want := make([]float32, T*s.rows)
					cpu.MatMulRef(pool, want, m, x, T)
					dw := devBytes(t, dv, m.Data)
					dx := devF32(t, dv, x)
					out := devF32(t, dv, make([]float32, T*s.rows))
					name := map[dtype.DType]string{dtype.BF16: "fh_gemm_bf16", dtype.F16: "fh_gemm_f16", dtype.F32: "fh_gemm_f32"}[dt]
					got := schedules(t, dv, func() []float32 {
						launch(t, dv, name, Dim3{ceilDiv(s.rows, 8), ceilDiv(T, 8), 1}, D1(256), 0, out, dw, dx, s.rows, s.cols, T)
						return download(t, dv, out, T*s.rows)
					})
					checkClose(t, name, got, want, denseBound(m, x, T))
				})
			}
		}
	}
}

func TestGEMVInt8(t *testing.T) {
	dv := testDevice(t)
	r := rand.New(rand.NewPCG(13, 14))
	for _, s := range []struct{ rows, cols int }{{1, 3}, {45, 64}, {130, 1152}} {
		t.Run(fmt.Sprintf("%dx%d", s.rows, s.cols), func(t *testing.T) {
			q := make([]byte, s.rows*s.cols)
			for i := range q {
				q[i] = byte(int8(r.IntN(255) - 127))
			}
			scale := randFloats(r, s.rows, 0.01)
			x := randFloats(r, s.cols, 1)
			// Reference: runtime/head's int8 stage 1 (float32 sum, then the scale).
			want := make([]float32, s.rows)
			bound := make([]float32, s.rows)
			for k := 0; k < s.rows; k++ {
				var sum float32
				var abs float64
				for i := 0; i < s.cols; i++ {
					sum += float32(int8(q[k*s.cols+i])) * x[i]
					abs += math.Abs(float64(int8(q[k*s.cols+i])) * float64(x[i]))
				}
				want[k] = sum * scale[k]
				bound[k] = float32((2*float64(s.cols+1)*u32*abs+0)*math.Abs(float64(scale[k]))) + 2*u32*float32(math.Abs(float64(want[k]))) + 1e-30
			}
			dq, ds, dx := devBytes(t, dv, q), devF32(t, dv, scale), devF32(t, dv, x)
			out := devF32(t, dv, make([]float32, s.rows))
			got := schedules(t, dv, func() []float32 {
				launch(t, dv, "fh_gemv_i8", D1(ceilDiv(s.rows, 8)), D1(256), 0, out, dq, ds, dx, s.rows, s.cols)
				return download(t, dv, out, s.rows)
			})
			checkClose(t, "gemv_i8", got, want, bound)
		})
	}
}
