package quantize

import (
	"fmt"
	"math"
	"sync"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/int4"
)

// Quantized is one quantized weight matrix [Rows, Cols] before packing.
type Quantized struct {
	Rows, Cols, GroupSize int
	Scheme                Scheme
	// Codes holds Rows*Cols codes 0..15, row-major.
	Codes []uint8
	// Scales holds Rows x Groups scales (already rounded to the scale
	// dtype), Zeros the matching zero points.
	Scales []float32
	Zeros  []uint8
}

// Groups returns the number of groups per row.
func (q *Quantized) Groups() int { return q.Cols / q.GroupSize }

func newQuantized(rows, cols, g int, sc Scheme) *Quantized {
	ng := cols / g
	return &Quantized{Rows: rows, Cols: cols, GroupSize: g, Scheme: sc,
		Codes: make([]uint8, rows*cols), Scales: make([]float32, rows*ng), Zeros: make([]uint8, rows*ng)}
}

// Dequantize returns Ŵ [Rows x Cols] in float32.
func (q *Quantized) Dequantize() []float32 {
	out := make([]float32, len(q.Codes))
	ng := q.Groups()
	for r := 0; r < q.Rows; r++ {
		for c := 0; c < q.Cols; c++ {
			gi := r*ng + c/q.GroupSize
			out[r*q.Cols+c] = Dequant(q.Codes[r*q.Cols+c], q.Scales[gi], int(q.Zeros[gi]))
		}
	}
	return out
}

// Pack returns the packed tensors (formats/int4 layout); Zeros is nil for a
// symmetric scheme.
func (q *Quantized) Pack() (int4.Weight, error) {
	w := int4.Weight{Rows: q.Rows, Cols: q.Cols, GroupSize: q.GroupSize, QWeight: int4.Pack(q.Codes), ScaleDType: q.Scheme.ScaleDType}
	w.Scales = make([]byte, len(q.Scales)*q.Scheme.ScaleDType.Size())
	if err := dtype.EncodeFloats(w.Scales, q.Scales, q.Scheme.ScaleDType); err != nil {
		return int4.Weight{}, err
	}
	if !q.Scheme.Symmetric {
		w.Zeros = int4.Pack(q.Zeros)
	}
	return w, w.Check()
}

// RTN quantizes w [rows x cols] to the nearest grid point of each group of
// g columns, using up to threads goroutines.
func RTN(w []float32, rows, cols, g int, sc Scheme, threads int) (*Quantized, error) {
	if err := checkMatrix(w, rows, cols, g); err != nil {
		return nil, err
	}
	q := newQuantized(rows, cols, g, sc)
	parallelRows(rows, threads, func(lo, hi int) {
		ng := cols / g
		for r := lo; r < hi; r++ {
			for gi := 0; gi < ng; gi++ {
				grp := w[r*cols+gi*g : r*cols+gi*g+g]
				s, z := sc.Params(grp)
				q.Scales[r*ng+gi], q.Zeros[r*ng+gi] = s, uint8(z)
				codes := q.Codes[r*cols+gi*g:]
				for j, v := range grp {
					codes[j] = Code(v, s, z)
				}
			}
		}
	})
	return q, nil
}

func checkMatrix(w []float32, rows, cols, g int) error {
	if rows <= 0 || cols <= 0 || len(w) != rows*cols {
		return fmt.Errorf("weight: %d values for shape [%d, %d]", len(w), rows, cols)
	}
	if g <= 0 || cols%g != 0 {
		return fmt.Errorf("weight [%d, %d]: group size %d does not divide the width %d", rows, cols, g, cols)
	}
	for i, v := range w {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("weight [%d, %d]: element (%d, %d) is %v", rows, cols, i/cols, i%cols, v)
		}
	}
	return nil
}

// parallelRows runs fn over [0, rows) split into threads contiguous parts.
func parallelRows(rows, threads int, fn func(lo, hi int)) {
	threads = max(1, min(threads, rows))
	per := (rows + threads - 1) / threads
	var wg sync.WaitGroup
	for lo := 0; lo < rows; lo += per {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			fn(lo, hi)
		}(lo, min(rows, lo+per))
	}
	wg.Wait()
}

// RelError returns ‖a − b‖ / ‖a‖ (Frobenius norm, float64); 0 when a is 0.
func RelError(a, b []float32) float64 {
	var num, den float64
	for i, v := range a {
		d := float64(v) - float64(b[i])
		num += d * d
		den += float64(v) * float64(v)
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

// GroupFor returns the group size a layer of width cols uses when g is
// requested: g when it divides cols, otherwise the largest divisor of cols
// below g that is at least MinGroupSize (ok false when there is none, or
// when cols is odd: such a layer stays dense).
func GroupFor(cols, g int) (int, bool) {
	if cols <= 0 || g <= 0 || cols%2 != 0 {
		return 0, false
	}
	if cols%g == 0 {
		return g, true
	}
	for d := min(g, cols); d >= MinGroupSize; d-- {
		if cols%d == 0 {
			return d, true
		}
	}
	return 0, false
}

// MinGroupSize is the smallest group size the fallback of GroupFor picks:
// smaller groups would cost more in scales than the 4-bit codes save.
const MinGroupSize = 8
