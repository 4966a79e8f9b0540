package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/int4"
	"github.com/fhkit/fhkit/runtime/cpu"
)

// randInt4 returns a random packed int4 weight (bf16 scales; random zero
// points when asym).
func randInt4(r *rand.Rand, rows, cols, group int, asym bool) int4.Weight {
	codes := make([]uint8, rows*cols)
	for i := range codes {
		codes[i] = uint8(r.IntN(16))
	}
	ng := rows * cols / group
	sc := make([]float32, ng)
	for i := range sc {
		sc[i] = (0.5 + r.Float32()) / 16
	}
	scales := make([]byte, 2*ng)
	if err := dtype.EncodeFloats(scales, sc, dtype.BF16); err != nil {
		panic(err)
	}
	w := int4.Weight{Rows: rows, Cols: cols, GroupSize: group, QWeight: int4.Pack(codes), Scales: scales, ScaleDType: dtype.BF16}
	if asym {
		z := make([]uint8, ng)
		for i := range z {
			z[i] = uint8(r.IntN(16))
		}
		w.Zeros = int4.Pack(z)
	}
	return w
}

// int4Bound is the tolerance of a W4A16 product against cpu.MatMulRef:
// both sum the same exactly-representable products w·x (a 4-bit integer
// times a bf16 scale is exact in float32) in different orders, and any
// order of an n-term float32 sum is within (n−1)·u·Σ|terms| of the exact
// value (plus u per product rounding), so the two differ by at most
// 2(n+1)·u·Σ|w·x|.
func int4Bound(m cpu.Mat, x []float32, T int) []float32 {
	row := make([]float32, m.Cols)
	b := make([]float32, T*m.Rows)
	for r := 0; r < m.Rows; r++ {
		m.RowF32(row, r)
		for t := 0; t < T; t++ {
			var s float64
			for c, w := range row {
				s += math.Abs(float64(w) * float64(x[t*m.Cols+c]))
			}
			b[t*m.Rows+r] = float32(2*float64(m.Cols+1)*u32*s) + 1e-30
		}
	}
	return b
}

var int4Shapes = []struct {
	rows, cols, group int
	asym              bool
}{
	{1, 8, 8, false},
	{37, 200, 40, false}, // rows not a multiple of the 8 rows per block, cols not of 256
	{64, 256, 32, true},
	{13, 1000, 8, true},
	{70, 1152, 128, false},
	{9, 6912, 128, true},
}

func TestW4A16GEMV(t *testing.T) {
	dv := testDevice(t)
	pool := cpu.NewPool(1)
	defer pool.Close()
	r := rand.New(rand.NewPCG(1, 2))
	for _, s := range int4Shapes {
		t.Run(fmt.Sprintf("%dx%d_g%d_asym%v", s.rows, s.cols, s.group, s.asym), func(t *testing.T) {
			w := randInt4(r, s.rows, s.cols, s.group, s.asym)
			m, err := cpu.NewInt4Mat(w)
			if err != nil {
				t.Fatal(err)
			}
			x := randFloats(r, s.cols, 1)
			want := make([]float32, s.rows)
			cpu.MatMulRef(pool, want, m, x, 1)
			dw, err := dv.UploadInt4(w)
			if err != nil {
				t.Fatal(err)
			}
			defer dv.FreeInt4(dw)
			dx := devF32(t, dv, x)
			out := devF32(t, dv, make([]float32, s.rows))
			got := schedules(t, dv, func() []float32 {
				launch(t, dv, "fh_w4a16_gemv", D1(ceilDiv(s.rows, 8)), D1(256), 0,
					out, dw.Codes, dw.Scales, dw.Zeros, dx, s.rows, s.cols, s.group)
				return download(t, dv, out, s.rows)
			})
			checkClose(t, "gemv", got, want, int4Bound(m, x, 1))
		})
	}
}

func TestW4A16GEMM(t *testing.T) {
	dv := testDevice(t)
	pool := cpu.NewPool(1)
	defer pool.Close()
	r := rand.New(rand.NewPCG(3, 4))
	for _, s := range int4Shapes[:5] {
		for _, T := range []int{2, 8, 13} {
			t.Run(fmt.Sprintf("%dx%d_g%d_asym%v_T%d", s.rows, s.cols, s.group, s.asym, T), func(t *testing.T) {
				w := randInt4(r, s.rows, s.cols, s.group, s.asym)
				m, err := cpu.NewInt4Mat(w)
				if err != nil {
					t.Fatal(err)
				}
				x := randFloats(r, T*s.cols, 1)
				want := make([]float32, T*s.rows)
				cpu.MatMulRef(pool, want, m, x, T)
				dw, err := dv.UploadInt4(w)
				if err != nil {
					t.Fatal(err)
				}
				defer dv.FreeInt4(dw)
				dx := devF32(t, dv, x)
				out := devF32(t, dv, make([]float32, T*s.rows))
				got := schedules(t, dv, func() []float32 {
					launch(t, dv, "fh_w4a16_gemm", Dim3{ceilDiv(s.rows, 8), ceilDiv(T, 8), 1}, D1(256), 0,
						out, dw.Codes, dw.Scales, dw.Zeros, dx, s.rows, s.cols, s.group, T)
					return download(t, dv, out, T*s.rows)
				})
				checkClose(t, "gemm", got, want, int4Bound(m, x, T))
			})
		}
	}
}

func TestUploadInt4RejectsUnalignedWidth(t *testing.T) {
	dv := testDevice(t)
	w := randInt4(rand.New(rand.NewPCG(5, 6)), 4, 12, 4, false)
	if _, err := dv.UploadInt4(w); err == nil {
		t.Fatal("UploadInt4 accepted a width of 12 (not a multiple of 8)")
	}
}
