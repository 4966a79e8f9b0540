package int4

import (
	"encoding/binary"
	"fmt"

	"github.com/fhkit/fhkit/formats/dtype"
)

// CompressedTensors is one Linear in compressed-tensors' pack-quantized
// format (W4A16 formats document §4.1): the tensors P.weight_packed,
// P.weight_scale, P.weight_shape and, when asymmetric,
// P.weight_zero_point.
type CompressedTensors struct {
	// Packed is I32 [out, ceil(in/8)]: word j of a row holds input columns
	// 8j..8j+7, column 8j+k in bits 4k..4k+3, value q+8 (our code).
	Packed []byte
	// Scale is [out, groups] in ScaleDType.
	Scale      []byte
	ScaleDType dtype.DType
	// Out and In are weight_shape.
	Out, In int
	// ZeroPoint is I32 [ceil(out/8), groups], packed along rows (dim 0),
	// value zp+8; nil when symmetric.
	ZeroPoint []byte
}

// PackedCols returns ceil(in/8), the words per row of weight_packed.
func (c *CompressedTensors) PackedCols() int { return (c.In + 7) / 8 }

// Groups returns the number of scale columns.
func (c *CompressedTensors) Groups() int {
	if c.Out == 0 || c.ScaleDType.Size() == 0 {
		return 0
	}
	return len(c.Scale) / c.ScaleDType.Size() / c.Out
}

// ToCompressedTensors re-packs w into compressed-tensors words. Codes and
// scales are copied bit for bit: our symmetric code is their q+8.
func ToCompressedTensors(w Weight) (*CompressedTensors, error) {
	if err := w.Check(); err != nil {
		return nil, err
	}
	c := &CompressedTensors{Out: w.Rows, In: w.Cols, ScaleDType: w.ScaleDType, Scale: append([]byte(nil), w.Scales...)}
	wc := c.PackedCols()
	c.Packed = make([]byte, 4*w.Rows*wc)
	for r := 0; r < w.Rows; r++ {
		for j := 0; j < wc; j++ {
			var word uint32
			for k := 0; k < 8 && 8*j+k < w.Cols; k++ {
				word |= uint32(Nibble(w.QWeight, r*w.Cols+8*j+k)) << (4 * k)
			}
			binary.LittleEndian.PutUint32(c.Packed[4*(r*wc+j):], word)
		}
	}
	if w.Zeros != nil {
		ng := w.Groups()
		zr := (w.Rows + 7) / 8
		c.ZeroPoint = make([]byte, 4*zr*ng)
		for r := 0; r < w.Rows; r++ {
			for g := 0; g < ng; g++ {
				i := 4 * ((r/8)*ng + g)
				word := binary.LittleEndian.Uint32(c.ZeroPoint[i:])
				word |= uint32(Nibble(w.Zeros, r*ng+g)) << (4 * (r % 8))
				binary.LittleEndian.PutUint32(c.ZeroPoint[i:], word)
			}
		}
	}
	return c, nil
}

// FromCompressedTensors re-packs a compressed-tensors Linear into our
// layout without dequantizing. gIdx (weight_g_idx, may be nil) must be the
// plain i/G mapping: group-indexed act-order has no contiguous groups.
func FromCompressedTensors(c *CompressedTensors, gIdx []int32) (Weight, error) {
	if c.Out <= 0 || c.In <= 0 {
		return Weight{}, fmt.Errorf("compressed-tensors: bad weight_shape [%d, %d]", c.Out, c.In)
	}
	wc := c.PackedCols()
	if len(c.Packed) != 4*c.Out*wc {
		return Weight{}, fmt.Errorf("compressed-tensors: weight_packed has %d bytes, want I32 [%d, %d]", len(c.Packed), c.Out, wc)
	}
	if sz := c.ScaleDType.Size(); !c.ScaleDType.IsFloat() || c.ScaleDType == dtype.F64 || len(c.Scale)%(sz*c.Out) != 0 {
		return Weight{}, fmt.Errorf("compressed-tensors: weight_scale (%s, %d bytes) is not [%d, groups] of BF16, F16 or F32", c.ScaleDType, len(c.Scale), c.Out)
	}
	ng := c.Groups()
	if ng <= 0 || c.In%ng != 0 {
		return Weight{}, fmt.Errorf("compressed-tensors: %d scale groups do not divide the width %d (a partial last group is not supported)", ng, c.In)
	}
	g := c.In / ng
	if gIdx != nil {
		if len(gIdx) != c.In {
			return Weight{}, fmt.Errorf("compressed-tensors: weight_g_idx has %d entries, want %d", len(gIdx), c.In)
		}
		for i, v := range gIdx {
			if int(v) != i/g {
				return Weight{}, fmt.Errorf("compressed-tensors: weight_g_idx[%d] = %d, want %d: group act-order (non-contiguous groups) is not supported without dequantizing", i, v, i/g)
			}
		}
	}
	w := Weight{Rows: c.Out, Cols: c.In, GroupSize: g, ScaleDType: c.ScaleDType, Scales: append([]byte(nil), c.Scale...)}
	w.QWeight = make([]byte, dtype.U4.ByteSize(int64(c.Out)*int64(c.In)))
	for r := 0; r < c.Out; r++ {
		for j := 0; j < wc; j++ {
			word := binary.LittleEndian.Uint32(c.Packed[4*(r*wc+j):])
			for k := 0; k < 8 && 8*j+k < c.In; k++ {
				SetNibble(w.QWeight, r*c.In+8*j+k, uint8(word>>(4*k))&0xF)
			}
		}
	}
	if c.ZeroPoint != nil {
		zr := (c.Out + 7) / 8
		if len(c.ZeroPoint) != 4*zr*ng {
			return Weight{}, fmt.Errorf("compressed-tensors: weight_zero_point has %d bytes, want I32 [%d, %d]", len(c.ZeroPoint), zr, ng)
		}
		w.Zeros = make([]byte, dtype.U4.ByteSize(int64(c.Out)*int64(ng)))
		for r := 0; r < c.Out; r++ {
			for gi := 0; gi < ng; gi++ {
				word := binary.LittleEndian.Uint32(c.ZeroPoint[4*((r/8)*ng+gi):])
				SetNibble(w.Zeros, r*ng+gi, uint8(word>>(4*(r%8)))&0xF)
			}
		}
	}
	return w, w.Check()
}

// GPTQ is one Linear in the AutoGPTQ/GPTQModel "gptq" format (§4.2).
type GPTQ struct {
	// QWeight is I32 [in/8, out]: word (i/8, o) holds input column i of
	// output o in bits 4(i%8)..4(i%8)+3.
	QWeight []byte
	// QZeros is I32 [groups, out/8]: word (g, o/8) holds the zero of
	// output o in bits 4(o%8)..; stored as zero−1 in format v1.
	QZeros []byte
	// Scales is [groups, out] in ScaleDType (usually F16).
	Scales     []byte
	ScaleDType dtype.DType
	// GIdx is I32 [in] (nil: i/G).
	GIdx []int32
	Out  int
	In   int
	// V2 is set for checkpoint_format "gptq_v2" (zeros stored as is).
	V2 bool
}

// FromGPTQ re-packs a GPTQ Linear into our layout without dequantizing.
// The zero points (v1: stored value + 1) are kept when any differs from 8,
// dropped otherwise (symmetric). Act-order checkpoints whose g_idx is not
// i/G are rejected.
func FromGPTQ(q *GPTQ) (Weight, error) {
	if q.Out <= 0 || q.In <= 0 || q.In%8 != 0 || q.Out%8 != 0 {
		return Weight{}, fmt.Errorf("gptq: shape [%d, %d]: both dimensions must be positive multiples of 8", q.Out, q.In)
	}
	if len(q.QWeight) != 4*(q.In/8)*q.Out {
		return Weight{}, fmt.Errorf("gptq: qweight has %d bytes, want I32 [%d, %d]", len(q.QWeight), q.In/8, q.Out)
	}
	sz := q.ScaleDType.Size()
	if !q.ScaleDType.IsFloat() || q.ScaleDType == dtype.F64 || len(q.Scales)%(sz*q.Out) != 0 || len(q.Scales) == 0 {
		return Weight{}, fmt.Errorf("gptq: scales (%s, %d bytes) are not [groups, %d] of F16, BF16 or F32", q.ScaleDType, len(q.Scales), q.Out)
	}
	ng := len(q.Scales) / sz / q.Out
	if q.In%ng != 0 {
		return Weight{}, fmt.Errorf("gptq: %d groups do not divide the width %d", ng, q.In)
	}
	g := q.In / ng
	if len(q.QZeros) != 4*ng*(q.Out/8) {
		return Weight{}, fmt.Errorf("gptq: qzeros has %d bytes, want I32 [%d, %d]", len(q.QZeros), ng, q.Out/8)
	}
	if q.GIdx != nil {
		if len(q.GIdx) != q.In {
			return Weight{}, fmt.Errorf("gptq: g_idx has %d entries, want %d", len(q.GIdx), q.In)
		}
		for i, v := range q.GIdx {
			if int(v) != i/g {
				return Weight{}, fmt.Errorf("gptq: g_idx[%d] = %d, want %d: act-order (desc_act) checkpoints are not supported without dequantizing", i, v, i/g)
			}
		}
	}
	w := Weight{Rows: q.Out, Cols: q.In, GroupSize: g, ScaleDType: q.ScaleDType}
	w.QWeight = make([]byte, dtype.U4.ByteSize(int64(q.Out)*int64(q.In)))
	for i8 := 0; i8 < q.In/8; i8++ {
		for o := 0; o < q.Out; o++ {
			word := binary.LittleEndian.Uint32(q.QWeight[4*(i8*q.Out+o):])
			for k := 0; k < 8; k++ {
				SetNibble(w.QWeight, o*q.In+8*i8+k, uint8(word>>(4*k))&0xF)
			}
		}
	}
	// Scales [groups, out] → [out, groups].
	w.Scales = make([]byte, len(q.Scales))
	for gi := 0; gi < ng; gi++ {
		for o := 0; o < q.Out; o++ {
			copy(w.Scales[(o*ng+gi)*sz:(o*ng+gi+1)*sz], q.Scales[(gi*q.Out+o)*sz:(gi*q.Out+o+1)*sz])
		}
	}
	zeros := make([]uint8, q.Out*ng)
	sym := true
	for gi := 0; gi < ng; gi++ {
		for o := 0; o < q.Out; o++ {
			word := binary.LittleEndian.Uint32(q.QZeros[4*(gi*(q.Out/8)+o/8):])
			z := int(word>>(4*(o%8))) & 0xF
			if !q.V2 {
				z++ // the v1 "+1" quirk
			}
			if z > 15 {
				return Weight{}, fmt.Errorf("gptq: zero point of output %d, group %d is %d after the v1 +1 offset (use checkpoint_format gptq_v2?)", o, gi, z)
			}
			zeros[o*ng+gi] = uint8(z)
			sym = sym && z == SymmetricZero
		}
	}
	if !sym {
		w.Zeros = Pack(zeros)
	}
	return w, w.Check()
}

// ToGPTQ re-packs w into the GPTQ v1 format (zeros stored minus 1, g_idx =
// i/G). Both dimensions must be multiples of 8.
func ToGPTQ(w Weight) (*GPTQ, error) {
	if err := w.Check(); err != nil {
		return nil, err
	}
	if w.Rows%8 != 0 || w.Cols%8 != 0 {
		return nil, fmt.Errorf("gptq: shape [%d, %d]: both dimensions must be multiples of 8", w.Rows, w.Cols)
	}
	ng, sz := w.Groups(), w.ScaleDType.Size()
	q := &GPTQ{Out: w.Rows, In: w.Cols, ScaleDType: w.ScaleDType}
	q.QWeight = make([]byte, 4*(w.Cols/8)*w.Rows)
	for i8 := 0; i8 < w.Cols/8; i8++ {
		for o := 0; o < w.Rows; o++ {
			var word uint32
			for k := 0; k < 8; k++ {
				word |= uint32(Nibble(w.QWeight, o*w.Cols+8*i8+k)) << (4 * k)
			}
			binary.LittleEndian.PutUint32(q.QWeight[4*(i8*w.Rows+o):], word)
		}
	}
	q.Scales = make([]byte, len(w.Scales))
	q.QZeros = make([]byte, 4*ng*(w.Rows/8))
	for gi := 0; gi < ng; gi++ {
		for o := 0; o < w.Rows; o++ {
			copy(q.Scales[(gi*w.Rows+o)*sz:(gi*w.Rows+o+1)*sz], w.Scales[(o*ng+gi)*sz:(o*ng+gi+1)*sz])
			z := w.Zero(o, gi) - 1 // the v1 "+1" quirk, stored as zero−1
			if z < 0 {
				return nil, fmt.Errorf("gptq: zero point 0 (output %d, group %d) cannot be stored in format v1", o, gi)
			}
			i := 4 * (gi*(w.Rows/8) + o/8)
			word := binary.LittleEndian.Uint32(q.QZeros[i:])
			word |= uint32(z) << (4 * (o % 8))
			binary.LittleEndian.PutUint32(q.QZeros[i:], word)
		}
	}
	q.GIdx = make([]int32, w.Cols)
	for i := range q.GIdx {
		q.GIdx[i] = int32(i / w.GroupSize)
	}
	return q, nil
}
