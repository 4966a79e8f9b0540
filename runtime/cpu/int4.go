package cpu

import (
	"fmt"
	"sync"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/int4"
)

// Int4 holds the group parameters of a packed int4 weight (W4A16; layout in
// formats/int4): W[r, c] = (q[r, c] − z[r, g]) · s[r, g] with g = c/GroupSize.
// The buffers alias the model file.
type Int4 struct {
	GroupSize int
	// Scales is [Rows, Cols/GroupSize] in ScaleDType (BF16, F16 or F32).
	Scales     []byte
	ScaleDType dtype.DType
	// Zeros is U4 [Rows, Cols/GroupSize]; nil means symmetric (z = 8).
	Zeros []byte

	// rowsInLanes is the weight repacked for the rows-in-lanes AVX512_VNNI
	// kernel, built on first use (vnni16.go).
	rowsInLanes     *vnni16
	rowsInLanesOnce sync.Once
}

// NewInt4Mat returns a Mat over a packed int4 weight after checking the
// sizes of its buffers.
func NewInt4Mat(w int4.Weight) (Mat, error) {
	if err := w.Check(); err != nil {
		return Mat{}, err
	}
	return Mat{Rows: w.Rows, Cols: w.Cols, DType: dtype.U4, Data: w.QWeight,
		Q4: &Int4{GroupSize: w.GroupSize, Scales: w.Scales, ScaleDType: w.ScaleDType, Zeros: w.Zeros}}, nil
}

// Weight returns the int4 view of m (m.DType must be U4).
func (m Mat) Weight() (int4.Weight, error) {
	if m.DType != dtype.U4 || m.Q4 == nil {
		return int4.Weight{}, fmt.Errorf("weight [%d, %d] %s is not packed int4", m.Rows, m.Cols, m.DType)
	}
	return int4.Weight{Rows: m.Rows, Cols: m.Cols, GroupSize: m.Q4.GroupSize, QWeight: m.Data,
		Scales: m.Q4.Scales, ScaleDType: m.Q4.ScaleDType, Zeros: m.Q4.Zeros}, nil
}

// int4RowF32 dequantizes row r into dst (len Cols).
func (m Mat) int4RowF32(dst []float32, r int) {
	s := make([]float32, m.groups())
	m.rowScales(s, r)
	m.int4Row(dst, r, s)
}

// groups returns the number of groups per row of m.
func (m Mat) groups() int { return m.Cols / m.Q4.GroupSize }

// rowScales decodes the scales of row r into dst (len groups).
func (m Mat) rowScales(dst []float32, r int) {
	q := m.Q4
	n := len(dst)
	sz := q.ScaleDType.Size()
	_ = dtype.DecodeFloats(dst, q.Scales[r*n*sz:(r+1)*n*sz], q.ScaleDType)
}

// int4Row dequantizes row r into dst (len Cols) with the row's scales s.
func (m Mat) int4Row(dst []float32, r int, s []float32) {
	q := m.Q4
	G, cols := q.GroupSize, m.Cols
	ng := len(s)
	base := r * cols
	if base%2 == 0 && G%2 == 0 {
		// Byte-aligned groups: two codes per byte, low nibble first.
		for g := 0; g < ng; g++ {
			z := float32(int4.SymmetricZero)
			if q.Zeros != nil {
				z = float32(int4.Nibble(q.Zeros, r*ng+g))
			}
			sc := s[g]
			b := m.Data[(base+g*G)/2 : (base+g*G+G)/2]
			d := dst[g*G : g*G+G]
			for j, v := range b {
				d[2*j] = (float32(v&0xF) - z) * sc
				d[2*j+1] = (float32(v>>4) - z) * sc
			}
		}
		return
	}
	for g := 0; g < ng; g++ {
		z := float32(int4.SymmetricZero)
		if q.Zeros != nil {
			z = float32(int4.Nibble(q.Zeros, r*ng+g))
		}
		sc := s[g]
		for c := g * G; c < g*G+G; c++ {
			dst[c] = (float32(int4.Nibble(m.Data, base+c)) - z) * sc
		}
	}
}

// int4DotRows computes out[r] = W[r,:] · x on the calling goroutine.
func (m Mat) int4DotRows(out, x []float32) {
	row := make([]float32, m.Cols)
	s := make([]float32, m.groups())
	for r := range out[:m.Rows] {
		m.rowScales(s, r)
		m.int4Row(row, r, s)
		out[r] = Dot(row, x)
	}
}

// int4MatMul is MatMul for a packed int4 weight: each row is dequantized
// once into float32 (exact: a 4-bit integer times a 16-bit scale fits in
// float32) and multiplied with all T inputs.
func int4MatMul(p *Pool, out []float32, w Mat, x []float32, T int) {
	rows, cols := w.Rows, w.Cols
	p.For(rows, rowGrain, func(lo, hi int) {
		row := make([]float32, cols)
		s := make([]float32, w.groups())
		for r := lo; r < hi; r++ {
			w.rowScales(s, r)
			w.int4Row(row, r, s)
			for t := 0; t < T; t++ {
				out[t*rows+r] = Dot(row, x[t*cols:(t+1)*cols])
			}
		}
	})
}
