package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/int4"
)

// randInt4 builds a random packed weight: random codes, scales and (when
// asym) zero points.
func randInt4(r *rand.Rand, rows, cols, g int, sdt dtype.DType, asym bool) int4.Weight {
	codes := make([]uint8, rows*cols)
	for i := range codes {
		codes[i] = uint8(r.IntN(16))
	}
	ng := rows * (cols / g)
	sc := make([]float32, ng)
	for i := range sc {
		sc[i] = float32(r.Float64()*0.1 + 1e-3)
	}
	w := int4.Weight{Rows: rows, Cols: cols, GroupSize: g, QWeight: int4.Pack(codes), ScaleDType: sdt}
	w.Scales = make([]byte, ng*sdt.Size())
	if err := dtype.EncodeFloats(w.Scales, sc, sdt); err != nil {
		panic(err)
	}
	if asym {
		z := make([]uint8, ng)
		for i := range z {
			z[i] = uint8(r.IntN(16))
		}
		w.Zeros = int4.Pack(z)
	}
	return w
}

// refMatMul is the float64 dequantize-then-multiply reference.
func refInt4MatMul(w int4.Weight, x []float64, T int) []float64 {
	wd := w.Dequantize()
	out := make([]float64, T*w.Rows)
	for t := 0; t < T; t++ {
		for r := 0; r < w.Rows; r++ {
			var s float64
			for c := 0; c < w.Cols; c++ {
				s += float64(wd[r*w.Cols+c]) * x[t*w.Cols+c]
			}
			out[t*w.Rows+r] = s
		}
	}
	return out
}

// TestInt4KernelsMatchReference checks MatMul, MatVec, DotRows and RowF32
// of packed int4 weights against a float64 reference, on odd sizes (rows
// that start mid-byte, odd groups), both grids and both scale dtypes.
func TestInt4KernelsMatchReference(t *testing.T) {
	pool := NewPool(3)
	defer pool.Close()
	r := rand.New(rand.NewPCG(4, 5))
	cases := []struct{ rows, cols, g int }{
		{1, 8, 8}, {7, 12, 4}, {33, 64, 64}, {17, 172, 43}, {5, 9, 3}, {40, 96, 32}, {3, 15, 15}, {130, 256, 128},
	}
	for _, c := range cases {
		for _, sdt := range []dtype.DType{dtype.BF16, dtype.F16, dtype.F32} {
			for _, asym := range []bool{false, true} {
				w := randInt4(r, c.rows, c.cols, c.g, sdt, asym)
				m, err := NewInt4Mat(w)
				if err != nil {
					t.Fatal(err)
				}
				for _, T := range []int{1, 3} {
					x := make([]float32, T*c.cols)
					x64 := make([]float64, len(x))
					for i := range x {
						x[i] = float32(r.NormFloat64())
						x64[i] = float64(x[i])
					}
					want := refInt4MatMul(w, x64, T)
					got := make([]float32, T*c.rows)
					MatMul(pool, got, m, x, T)
					// Dequantized values are exact in float32, so the only
					// error is float32 summation: bound it by cols·eps·Σ|w x|.
					wd := w.Dequantize()
					for tt := 0; tt < T; tt++ {
						for row := 0; row < c.rows; row++ {
							var mag float64
							for col := 0; col < c.cols; col++ {
								mag += math.Abs(float64(wd[row*c.cols+col]) * x64[tt*c.cols+col])
							}
							tol := float64(c.cols)*1.2e-7*mag + 1e-12
							if d := math.Abs(float64(got[tt*c.rows+row]) - want[tt*c.rows+row]); d > tol {
								t.Fatalf("%+v %s asym=%v T=%d: out[%d,%d] = %g, want %g (tol %g)", c, sdt, asym, T, tt, row, got[tt*c.rows+row], want[tt*c.rows+row], tol)
							}
						}
					}
					if T == 1 {
						mv := make([]float32, c.rows)
						MatVec(pool, mv, m, x)
						dr := make([]float32, c.rows)
						m.DotRows(dr, x)
						for i := range mv {
							if mv[i] != got[i] || dr[i] != got[i] {
								t.Fatalf("%+v: MatVec %g / DotRows %g differ from MatMul %g at %d", c, mv[i], dr[i], got[i], i)
							}
						}
					}
				}
				row := make([]float32, c.cols)
				wd := w.Dequantize()
				for rr := 0; rr < c.rows; rr++ {
					m.RowF32(row, rr)
					for col, v := range row {
						if v != wd[rr*c.cols+col] {
							t.Fatalf("%+v: RowF32(%d)[%d] = %g, want %g", c, rr, col, v, wd[rr*c.cols+col])
						}
					}
				}
			}
		}
	}
}

func TestNewInt4MatRejectsBadSizes(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	good := randInt4(r, 4, 16, 8, dtype.BF16, true)
	bad := []int4.Weight{good, good, good, good, good}
	bad[0].GroupSize = 5
	bad[1].QWeight = good.QWeight[1:]
	bad[2].Scales = good.Scales[2:]
	bad[3].Zeros = good.Zeros[:1]
	bad[4].ScaleDType = dtype.I8
	for i, w := range bad {
		if _, err := NewInt4Mat(w); err == nil {
			t.Errorf("case %d: accepted %+v", i, w)
		}
	}
	if _, err := NewInt4Mat(good); err != nil {
		t.Fatal(err)
	}
	dense, _ := NewMat(1, 1, dtype.F32, make([]byte, 4))
	if _, err := dense.Weight(); err == nil {
		t.Error("Weight() of a dense Mat succeeded")
	}
}
