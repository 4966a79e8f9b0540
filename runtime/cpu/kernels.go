package cpu

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/fhkit/fhkit/formats/dtype"
)

// Mat is a row-major weight matrix [Rows, Cols] stored in DType (F32, F16 or
// BF16), read in place (usually from the memory-mapped model file).
//
// A packed int4 weight (see formats/int4) has DType U4, its codes in Data
// and its scales and zero points in Q4 (built by NewInt4Mat); MatMul,
// DotRows and RowF32 dispatch to the kernels of int4.go.
type Mat struct {
	Rows, Cols int
	DType      dtype.DType
	Data       []byte
	Q4         *Int4 // non-nil exactly when DType is U4
	// Observe, when set, is called by MatMul with its T input rows before
	// the product (calibration hook of fh-quantize's GPTQ; nil otherwise).
	Observe func(x []float32, T int)
	// panels holds a small float weight's panels for the matrix-matrix
	// kernels, widened once (gemmPanels); NewMat sets it.
	panels *panelCache
	// tiles holds a wide float weight's copy in column tiles for the
	// matrix-vector kernels (densetiles.go); NewMat sets it,
	// PrepareMatVec fills it.
	tiles *tileHolder
}

// Bytes is the storage one product with m reads: the elements, and an
// int4 weight's scales and zero points.
func (m Mat) Bytes() int64 {
	n := int64(len(m.Data))
	if m.Q4 != nil {
		n += int64(len(m.Q4.Scales) + len(m.Q4.Zeros))
	}
	return n
}

// NewMat checks that data holds rows x cols elements of dt.
func NewMat(rows, cols int, dt dtype.DType, data []byte) (Mat, error) {
	if dt != dtype.F32 && dt != dtype.F16 && dt != dtype.BF16 {
		return Mat{}, fmt.Errorf("weight dtype %s not supported (want F32, F16 or BF16)", dt)
	}
	if int64(len(data)) != int64(rows)*int64(cols)*int64(dt.Size()) {
		return Mat{}, fmt.Errorf("weight [%d, %d] %s needs %d bytes, has %d", rows, cols, dt, rows*cols*dt.Size(), len(data))
	}
	return Mat{Rows: rows, Cols: cols, DType: dt, Data: data, panels: new(panelCache), tiles: new(tileHolder)}, nil
}

// RowF32 widens row r into dst (len Cols).
func (m Mat) RowF32(dst []float32, r int) {
	n := m.Cols
	switch m.DType {
	case dtype.U4:
		m.int4RowF32(dst, r)
	case dtype.F32:
		copy(dst[:n], f32s(m.Data[r*n*4:(r+1)*n*4]))
	case dtype.BF16:
		src := u16s(m.Data[r*n*2 : (r+1)*n*2])
		for i, b := range src {
			dst[i] = math.Float32frombits(uint32(b) << 16)
		}
	case dtype.F16:
		src := u16s(m.Data[r*n*2 : (r+1)*n*2])
		for i, b := range src {
			dst[i] = dtype.F16ToF32(b)
		}
	}
}

// f32s and u16s view little-endian bytes as numbers in place. Tensor data is
// 64-byte aligned in .fhm files and the supported CPUs are little-endian.
func f32s(b []byte) []float32 {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
}

func u16s(b []byte) []uint16 {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(&b[0])), len(b)/2)
}

// Dot returns the float32 dot product of a and b (a's length; b at least
// as long), with the SIMD kernel of the CPU (attention runs it over every
// cached position of every head).
func Dot(a, b []float32) float32 { return dotISA(isa, a, b) }

// dotGeneric is Dot in plain Go, summed in eight interleaved partial sums
// (the reference of the SIMD kernels).
func dotGeneric(a, b []float32) float32 {
	var s [8]float32
	n := len(a)
	b = b[:n]
	i := 0
	for ; i+8 <= n; i += 8 {
		s[0] += a[i] * b[i]
		s[1] += a[i+1] * b[i+1]
		s[2] += a[i+2] * b[i+2]
		s[3] += a[i+3] * b[i+3]
		s[4] += a[i+4] * b[i+4]
		s[5] += a[i+5] * b[i+5]
		s[6] += a[i+6] * b[i+6]
		s[7] += a[i+7] * b[i+7]
	}
	for ; i < n; i++ {
		s[i&7] += a[i] * b[i]
	}
	return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]))
}

// DotBF16 is Dot (plain Go, the same eight-lane order) with a bfloat16
// first operand.
func DotBF16(w []uint16, x []float32) float32 {
	var s [8]float32
	n := len(w)
	x = x[:n]
	i := 0
	for ; i+8 <= n; i += 8 {
		s[0] += math.Float32frombits(uint32(w[i])<<16) * x[i]
		s[1] += math.Float32frombits(uint32(w[i+1])<<16) * x[i+1]
		s[2] += math.Float32frombits(uint32(w[i+2])<<16) * x[i+2]
		s[3] += math.Float32frombits(uint32(w[i+3])<<16) * x[i+3]
		s[4] += math.Float32frombits(uint32(w[i+4])<<16) * x[i+4]
		s[5] += math.Float32frombits(uint32(w[i+5])<<16) * x[i+5]
		s[6] += math.Float32frombits(uint32(w[i+6])<<16) * x[i+6]
		s[7] += math.Float32frombits(uint32(w[i+7])<<16) * x[i+7]
	}
	for ; i < n; i++ {
		s[i&7] += math.Float32frombits(uint32(w[i])<<16) * x[i]
	}
	return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]))
}

// DotRows computes out[r] = W[r,:] · x for every row on the calling
// goroutine (for small blocks, where a parallel loop costs more than it
// saves).
func (m Mat) DotRows(out, x []float32) {
	if mvSupported(isa, m) {
		if m.DType != dtype.U4 {
			denseRows(isa, out, m, x, 0, m.Rows)
			return
		}
		if q4DotRows(m, out, x) {
			return
		}
	}
	m.dotRowsGeneric(out, x)
}

// dotRowsGeneric is DotRows in plain Go.
func (m Mat) dotRowsGeneric(out, x []float32) {
	cols := m.Cols
	switch m.DType {
	case dtype.U4:
		m.int4DotRows(out, x)
	case dtype.F32:
		for r := range out[:m.Rows] {
			out[r] = dotGeneric(f32s(m.Data[r*cols*4:(r+1)*cols*4]), x)
		}
	case dtype.BF16:
		for r := range out[:m.Rows] {
			out[r] = DotBF16(u16s(m.Data[r*cols*2:(r+1)*cols*2]), x)
		}
	case dtype.F16:
		row := make([]float32, cols)
		for r := range out[:m.Rows] {
			m.RowF32(row, r)
			out[r] = dotGeneric(row, x)
		}
	}
}

// rowGrain is how many output rows a thread takes at a time.
const rowGrain = 16

// MatVec computes out[r] = W[r,:] · x for every row (out has Rows entries,
// x has Cols).
func MatVec(p *Pool, out []float32, w Mat, x []float32) {
	MatMul(p, out, w, x, 1)
}

// MatMul computes out[t*Rows + r] = W[r,:] · x[t*Cols : (t+1)*Cols] for the
// T input vectors packed in x: Y = X Wᵀ. Each weight row is read once for
// all T inputs (prefill reads the weights once per batch, not per token).
// One input (decode) goes to the matrix-vector kernels of matvec.go, more
// to the matrix-matrix kernels of gemm.go; both fall back to MatMulRef.
func MatMul(p *Pool, out []float32, w Mat, x []float32, T int) {
	rows, cols := w.Rows, w.Cols
	_ = out[T*rows-1]
	_ = x[T*cols-1]
	if w.Observe != nil {
		w.Observe(x[:T*cols], T)
	}
	if T == 1 {
		matVec(p, out, w, x)
		return
	}
	gemm(p, out, w, x, T)
}

// MatMulRef is MatMul in plain Go: the reference the SIMD kernels are
// tested against, and the fallback on CPUs without them.
func MatMulRef(p *Pool, out []float32, w Mat, x []float32, T int) {
	rows, cols := w.Rows, w.Cols
	if w.DType == dtype.U4 {
		int4MatMul(p, out, w, x, T)
		return
	}
	p.For(rows, rowGrain, func(lo, hi int) {
		var scratch []float32
		if w.DType == dtype.F16 {
			scratch = make([]float32, cols)
		}
		for r := lo; r < hi; r++ {
			switch w.DType {
			case dtype.F32:
				row := f32s(w.Data[r*cols*4 : (r+1)*cols*4])
				for t := 0; t < T; t++ {
					out[t*rows+r] = dotGeneric(row, x[t*cols:(t+1)*cols])
				}
			case dtype.BF16:
				row := u16s(w.Data[r*cols*2 : (r+1)*cols*2])
				for t := 0; t < T; t++ {
					out[t*rows+r] = DotBF16(row, x[t*cols:(t+1)*cols])
				}
			case dtype.F16:
				w.RowF32(scratch, r)
				for t := 0; t < T; t++ {
					out[t*rows+r] = dotGeneric(scratch, x[t*cols:(t+1)*cols])
				}
			}
		}
	})
}

// denseTail returns Σ row[c]·x[c] for c >= from, row being one row of a
// dense weight of type dt (the columns after the kernels' whole vectors).
func denseTail(dt dtype.DType, row []byte, x []float32, from int) float32 {
	n := len(x)
	switch dt {
	case dtype.F32:
		return dotGeneric(f32s(row)[from:n], x[from:n])
	case dtype.BF16:
		return DotBF16(u16s(row)[from:n], x[from:n])
	}
	var s float32
	for i, h := range u16s(row)[from:n] {
		s += dtype.F16ToF32(h) * x[from+i]
	}
	return s
}
