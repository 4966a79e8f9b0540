// Package int4 defines the packed int4 (W4A16) weight layout of .fhm files
// and the helpers that read and write it. The layout is also described in
// formats/fhm/SPEC.md, section "Packed int4 weights".
//
// A quantized linear weight `P.weight` (float, [out, in]) is replaced by
// two or three tensors with the same prefix P:
//
//	P.qweight  U4    [out, in]        the 4-bit codes q, unsigned 0..15
//	P.scales   BF16 or F16 [out, in/G] one scale s per (row, group)
//	P.zeros    U4    [out, in/G]      zero point z per (row, group);
//	                                  absent when symmetric (z = 8)
//
// and the weight is W[o, i] = (q[o, i] − z[o, i/G]) · s[o, i/G].
//
// Codes are row-major with the nibbles running along the input dimension,
// element 2j in the low nibble of byte j (dtype.U4). For an even `in`
// (every quantized layer fhkit writes) each row starts on a byte, and a
// group of G (even) columns is G/2 consecutive bytes:
//
//	row o of P.qweight (in/2 bytes):
//	byte:   0          1          2              in/2-1
//	      +----+----+----+----+----+----+     +----+----+
//	      | q1 | q0 | q3 | q2 | q5 | q4 | ... |q-1 |q-2 |
//	      +----+----+----+----+----+----+     +----+----+
//	       hi   lo   hi   lo   hi   lo
//	      |<---- group 0: G/2 bytes ---->|<-- group 1 ...
//
//	P.scales[o, g] scales columns g·G .. g·G+G−1 of row o.
//
// A kernel streams a row's bytes once and needs one scale (and zero) per G
// inputs; a GPU thread block reads whole rows or 16-byte slices of them.
// The symmetric codes equal compressed-tensors' `q+8` and GPTQ's nibbles,
// so import and export only re-pack words (see formats/int4/interop.go).
//
// The group size of a layer is in/scales.Shape[1]; it may differ between
// layers (fh-quantize's fallback for widths the requested size does not
// divide), and the file's metadata records the requested size.
package int4

import (
	"fmt"
	"strings"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/fhm"
)

// Tensor name suffixes of a packed weight, replacing ".weight".
const (
	QWeightSuffix = ".qweight"
	ScalesSuffix  = ".scales"
	ZerosSuffix   = ".zeros"
	// SymmetricZero is the implicit zero point of a symmetric layer.
	SymmetricZero = 8
)

// Names returns the packed tensor names for the dense weight name
// (`P.weight`); ok is false when name does not end in ".weight".
func Names(weight string) (qweight, scales, zeros string, ok bool) {
	p, found := strings.CutSuffix(weight, ".weight")
	if !found {
		return "", "", "", false
	}
	return p + QWeightSuffix, p + ScalesSuffix, p + ZerosSuffix, true
}

// IsPackedName reports whether name is one of the packed tensors and
// returns the dense weight name it stands for.
func IsPackedName(name string) (weight string, ok bool) {
	for _, s := range []string{QWeightSuffix, ScalesSuffix, ZerosSuffix} {
		if p, found := strings.CutSuffix(name, s); found {
			return p + ".weight", true
		}
	}
	return "", false
}

// Weight is a packed int4 weight viewed in place.
type Weight struct {
	Rows, Cols int
	// GroupSize is Cols / number of groups.
	GroupSize int
	// QWeight holds Rows*Cols U4 codes (dtype.U4 layout).
	QWeight []byte
	// Scales holds Rows x Cols/GroupSize values of ScaleDType, row-major.
	Scales     []byte
	ScaleDType dtype.DType
	// Zeros holds Rows x Cols/GroupSize U4 zero points; nil when symmetric.
	Zeros []byte
}

// Groups returns the number of groups per row.
func (w *Weight) Groups() int { return w.Cols / w.GroupSize }

// Check validates the sizes of w's buffers.
func (w *Weight) Check() error {
	if w.Rows <= 0 || w.Cols <= 0 {
		return fmt.Errorf("int4 weight: bad shape [%d, %d]", w.Rows, w.Cols)
	}
	if w.GroupSize <= 0 || w.Cols%w.GroupSize != 0 {
		return fmt.Errorf("int4 weight [%d, %d]: group size %d does not divide the width", w.Rows, w.Cols, w.GroupSize)
	}
	if w.ScaleDType != dtype.BF16 && w.ScaleDType != dtype.F16 && w.ScaleDType != dtype.F32 {
		return fmt.Errorf("int4 weight: scale dtype %s not supported (want BF16, F16 or F32)", w.ScaleDType)
	}
	n := int64(w.Rows) * int64(w.Cols)
	if int64(len(w.QWeight)) != dtype.U4.ByteSize(n) {
		return fmt.Errorf("int4 weight [%d, %d]: %d code bytes, want %d", w.Rows, w.Cols, len(w.QWeight), dtype.U4.ByteSize(n))
	}
	ng := int64(w.Rows) * int64(w.Groups())
	if int64(len(w.Scales)) != ng*int64(w.ScaleDType.Size()) {
		return fmt.Errorf("int4 weight [%d, %d] group %d: %d scale bytes, want %d", w.Rows, w.Cols, w.GroupSize, len(w.Scales), ng*int64(w.ScaleDType.Size()))
	}
	if w.Zeros != nil && int64(len(w.Zeros)) != dtype.U4.ByteSize(ng) {
		return fmt.Errorf("int4 weight [%d, %d] group %d: %d zero-point bytes, want %d", w.Rows, w.Cols, w.GroupSize, len(w.Zeros), dtype.U4.ByteSize(ng))
	}
	return nil
}

// Find looks up the packed tensors standing for the dense weight name in f.
// found is false when f has no `P.qweight`; err reports a malformed set.
func Find(f *fhm.File, weight string) (w Weight, found bool, err error) {
	qn, sn, zn, ok := Names(weight)
	if !ok {
		return Weight{}, false, nil
	}
	q, ok := f.Tensor(qn)
	if !ok {
		return Weight{}, false, nil
	}
	if q.Info.DType != dtype.U4 || len(q.Info.Shape) != 2 {
		return Weight{}, true, fmt.Errorf("%s: %q is %s%v, want U4 [out, in]", f.Path, qn, q.Info.DType, q.Info.Shape)
	}
	s, ok := f.Tensor(sn)
	if !ok {
		return Weight{}, true, fmt.Errorf("%s: %q has no scales tensor %q", f.Path, qn, sn)
	}
	rows, cols := q.Info.Shape[0], q.Info.Shape[1]
	if len(s.Info.Shape) != 2 || s.Info.Shape[0] != rows || s.Info.Shape[1] <= 0 || cols%s.Info.Shape[1] != 0 {
		return Weight{}, true, fmt.Errorf("%s: %q has shape %v, want [%d, groups] with groups dividing %d", f.Path, sn, s.Info.Shape, rows, cols)
	}
	w = Weight{Rows: int(rows), Cols: int(cols), GroupSize: int(cols / s.Info.Shape[1]),
		QWeight: q.Data, Scales: s.Data, ScaleDType: s.Info.DType}
	if z, ok := f.Tensor(zn); ok {
		if z.Info.DType != dtype.U4 || len(z.Info.Shape) != 2 || z.Info.Shape[0] != rows || z.Info.Shape[1] != s.Info.Shape[1] {
			return Weight{}, true, fmt.Errorf("%s: %q is %s%v, want U4 %v", f.Path, zn, z.Info.DType, z.Info.Shape, s.Info.Shape)
		}
		w.Zeros = z.Data
	}
	if err := w.Check(); err != nil {
		return Weight{}, true, fmt.Errorf("%s: %s: %w", f.Path, qn, err)
	}
	return w, true, nil
}

// Nibble returns U4 element i of data.
func Nibble(data []byte, i int) uint8 { return data[i>>1] >> ((i & 1) << 2) & 0xF }

// SetNibble sets U4 element i of data to v (0..15).
func SetNibble(data []byte, i int, v uint8) {
	sh := uint(i&1) << 2
	data[i>>1] = data[i>>1]&^(0xF<<sh) | (v&0xF)<<sh
}

// Pack packs codes (each 0..15) into U4 bytes.
func Pack(codes []uint8) []byte {
	out := make([]byte, dtype.U4.ByteSize(int64(len(codes))))
	for i, v := range codes {
		SetNibble(out, i, v)
	}
	return out
}

// Unpack returns the n U4 codes of data.
func Unpack(data []byte, n int) []uint8 {
	out := make([]uint8, n)
	for i := range out {
		out[i] = Nibble(data, i)
	}
	return out
}

// ScalesF32 decodes all scales of w (Rows x Groups, row-major).
func (w *Weight) ScalesF32() []float32 {
	out := make([]float32, w.Rows*w.Groups())
	// Sizes were checked by Check; DecodeFloats cannot fail then.
	_ = dtype.DecodeFloats(out, w.Scales, w.ScaleDType)
	return out
}

// Zero returns the zero point of (row, group).
func (w *Weight) Zero(row, group int) int {
	if w.Zeros == nil {
		return SymmetricZero
	}
	return int(Nibble(w.Zeros, row*w.Groups()+group))
}

// Dequantize returns W as float32 [Rows x Cols], row-major. It is the
// reference every kernel and exporter is tested against.
func (w *Weight) Dequantize() []float32 {
	s := w.ScalesF32()
	g := w.Groups()
	out := make([]float32, w.Rows*w.Cols)
	for r := 0; r < w.Rows; r++ {
		for c := 0; c < w.Cols; c++ {
			gi := c / w.GroupSize
			q := int(Nibble(w.QWeight, r*w.Cols+c))
			out[r*w.Cols+c] = float32(q-w.Zero(r, gi)) * s[r*g+gi]
		}
	}
	return out
}
