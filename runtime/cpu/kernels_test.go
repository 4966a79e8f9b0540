package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fhkit/fhkit/formats/dtype"
)

// refMatMul is the textbook triple loop in float64.
func refMatMul(w [][]float64, x []float64, T int) []float64 {
	rows, cols := len(w), len(w[0])
	out := make([]float64, T*rows)
	for t := 0; t < T; t++ {
		for r := 0; r < rows; r++ {
			var s float64
			for c := 0; c < cols; c++ {
				s += w[r][c] * x[t*cols+c]
			}
			out[t*rows+r] = s
		}
	}
	return out
}

func TestMatMulAgainstReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, threads := range []int{1, 2, 3} {
		p := NewPool(threads)
		for _, dt := range []dtype.DType{dtype.F32, dtype.BF16, dtype.F16} {
			for _, shape := range [][3]int{{1, 1, 1}, {17, 33, 1}, {64, 70, 3}, {129, 257, 5}} {
				rows, cols, T := shape[0], shape[1], shape[2]
				wf := make([]float32, rows*cols)
				for i := range wf {
					wf[i] = float32(r.NormFloat64())
				}
				data := make([]byte, rows*cols*dt.Size())
				dtype.EncodeFloats(data, wf, dt)
				m, err := NewMat(rows, cols, dt, data)
				if err != nil {
					t.Fatal(err)
				}
				w64 := make([][]float64, rows)
				row := make([]float32, cols)
				for i := range w64 {
					m.RowF32(row, i)
					w64[i] = make([]float64, cols)
					for j, v := range row {
						w64[i][j] = float64(v)
					}
				}
				x := make([]float32, T*cols)
				x64 := make([]float64, T*cols)
				for i := range x {
					x[i] = float32(r.NormFloat64())
					x64[i] = float64(x[i])
				}
				out := make([]float32, T*rows)
				MatMul(p, out, m, x, T)
				want := refMatMul(w64, x64, T)
				// float32 accumulation of cols products of N(0,1) values:
				// error grows like sqrt(cols) * eps * |terms|.
				tol := 8 * math.Sqrt(float64(cols)) * 6e-8 * math.Sqrt(float64(cols))
				for i := range out {
					if d := math.Abs(float64(out[i]) - want[i]); d > tol+1e-6 {
						t.Fatalf("%s %v threads %d: out[%d] = %g, want %g (diff %g > %g)", dt, shape, threads, i, out[i], want[i], d, tol)
					}
				}
			}
		}
		p.Close()
	}
}

func TestPoolCoversRangeOnce(t *testing.T) {
	p := NewPool(3)
	defer p.Close()
	for _, n := range []int{0, 1, 15, 16, 17, 100, 1000} {
		for _, grain := range []int{1, 7, 16} {
			hits := make([]int32, n)
			p.For(n, grain, func(lo, hi int) {
				for i := lo; i < hi; i++ {
					hits[i]++
				}
			})
			for i, h := range hits {
				if h != 1 {
					t.Fatalf("n=%d grain=%d: index %d run %d times", n, grain, i, h)
				}
			}
		}
	}
}

func TestOps(t *testing.T) {
	// RMSNorm of a constant vector is scale (times the constant's sign).
	x := []float32{3, 3, 3, 3}
	out := make([]float32, 4)
	RMSNorm(out, x, []float32{1, 2, 3, 4}, 0)
	for i, v := range out {
		if math.Abs(float64(v)-float64(i+1)) > 1e-6 {
			t.Errorf("RMSNorm = %v", out)
		}
	}
	// RoPE at angle 0 is the identity; at pi/2 it maps (a, b) to (-b, a).
	v := []float32{1, 2, 3, 4}
	RoPE(v, []float32{0, 1}, []float32{1, 0})
	if v[0] != -3 || v[2] != 1 || v[1] != 2 || v[3] != 4 {
		t.Errorf("RoPE = %v", v)
	}
	s := []float32{1, 2, 3}
	Softmax(s)
	if math.Abs(float64(s[0]+s[1]+s[2])-1) > 1e-6 || !(s[2] > s[1] && s[1] > s[0]) {
		t.Errorf("Softmax = %v", s)
	}
	for _, gelu := range []bool{true, false} {
		want := float32(0.7310586) // SiLU(1)
		if gelu {
			want = 0.8411920
		}
		g, ref := []float32{1}, []float32{1}
		GatedActivation(g, []float32{1}, gelu)
		GatedActivationRef(ref, []float32{1}, gelu)
		if math.Abs(float64(g[0]-want)) > 1e-6 || math.Abs(float64(ref[0]-want)) > 1e-6 {
			t.Errorf("gelu %t: act(1) = %v, reference %v, want %v", gelu, g[0], ref[0], want)
		}
	}
}

func TestMatBytesCountsScales(t *testing.T) {
	w := Mat{Rows: 4, Cols: 32, DType: dtype.U4, Data: make([]byte, 64), Q4: &Int4{GroupSize: 16, Scales: make([]byte, 16), Zeros: make([]byte, 4)}}
	if got := w.Bytes(); got != 84 {
		t.Errorf("Bytes = %d, want 84 (codes + scales + zeros)", got)
	}
	d := Mat{Rows: 3, Cols: 5, DType: dtype.BF16, Data: make([]byte, 30)}
	if got := d.Bytes(); got != 30 {
		t.Errorf("Bytes = %d, want 30", got)
	}
}
