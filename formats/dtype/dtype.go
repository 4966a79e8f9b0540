// Package dtype names the element types of tensors stored in safetensors and
// .fhm files and converts between the floating-point ones.
//
// Conversions follow PyTorch: widening is exact; narrowing float32 to float16
// or bfloat16 rounds to nearest, ties to even, and keeps NaN a NaN.
package dtype

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/x448/float16"
)

// DType is the element type of a tensor. The zero value is Invalid.
type DType uint8

// The element types. The numeric values are stored in .fhm tensor tables and
// must never change; new types are appended.
const (
	Invalid DType = iota
	F32
	F16
	BF16
	F64
	I8
	U8
	I16
	U16
	I32
	U32
	I64
	U64
	Bool
	// U4 is 4-bit unsigned integers, two per byte: element 2j in the low
	// nibble (bits 0-3) of byte j, element 2j+1 in the high nibble. A tensor
	// with an odd element count has a zero high nibble in its last byte.
	// Packed int4 weight layouts (issue W4A16) are built on it.
	U4
)

var names = [...]string{
	Invalid: "INVALID",
	F32:     "F32",
	F16:     "F16",
	BF16:    "BF16",
	F64:     "F64",
	I8:      "I8",
	U8:      "U8",
	I16:     "I16",
	U16:     "U16",
	I32:     "I32",
	U32:     "U32",
	I64:     "I64",
	U64:     "U64",
	Bool:    "BOOL",
	U4:      "U4",
}

var sizes = [...]int{
	F32: 4, F16: 2, BF16: 2, F64: 8,
	I8: 1, U8: 1, I16: 2, U16: 2, I32: 4, U32: 4, I64: 8, U64: 8, Bool: 1,
}

// Bits returns the width of one element in bits, or 0 for an invalid type.
func (d DType) Bits() int {
	if d == U4 {
		return 4
	}
	return 8 * d.Size()
}

// ByteSize returns the storage size of n elements of d: n*Size(), or
// ceil(n/2) for U4. It returns -1 for an invalid type or on overflow.
func (d DType) ByteSize(n int64) int64 {
	if !d.Valid() || n < 0 {
		return -1
	}
	if d == U4 {
		return n/2 + n%2
	}
	s := int64(d.Size())
	if n > (1<<62)/s {
		return -1
	}
	return n * s
}

// Valid reports whether d is one of the defined element types.
func (d DType) Valid() bool { return d != Invalid && int(d) < len(names) }

// String returns the safetensors spelling of d ("F32", "BF16", ...).
func (d DType) String() string {
	if int(d) < len(names) {
		return names[d]
	}
	return fmt.Sprintf("DType(%d)", uint8(d))
}

// Size returns the size of one element in bytes, or 0 for an invalid type
// and for the sub-byte type U4 (use ByteSize).
func (d DType) Size() int {
	if !d.Valid() || d == U4 {
		return 0
	}
	return sizes[d]
}

// IsFloat reports whether d is a floating-point type.
func (d DType) IsFloat() bool { return d == F32 || d == F16 || d == BF16 || d == F64 }

// Parse returns the DType spelled s (safetensors spelling, case-sensitive).
func Parse(s string) (DType, error) {
	for i, n := range names {
		if i != int(Invalid) && n == s {
			return DType(i), nil
		}
	}
	return Invalid, fmt.Errorf("unknown dtype %q", s)
}

// ParseFloat accepts the user-facing spellings of the float types used for
// weights: "f32", "float32", "f16", "float16", "bf16", "bfloat16" (any case).
func ParseFloat(s string) (DType, error) {
	switch s {
	case "f32", "F32", "float32":
		return F32, nil
	case "f16", "F16", "float16":
		return F16, nil
	case "bf16", "BF16", "bfloat16":
		return BF16, nil
	}
	return Invalid, fmt.Errorf("unknown float dtype %q (want bf16, f16 or f32)", s)
}

// BF16ToF32 widens a bfloat16 bit pattern exactly.
func BF16ToF32(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// F32ToBF16 rounds f to the nearest bfloat16, ties to even. NaN stays NaN
// (quiet, sign kept); infinities and overflow to infinity follow IEEE rules.
func F32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 { // NaN: truncating could give Inf
		return uint16(u>>16) | 0x0040
	}
	return uint16((u + 0x7fff + (u>>16)&1) >> 16)
}

// F16ToF32 widens an IEEE half bit pattern exactly.
func F16ToF32(h uint16) float32 { return float16.Frombits(h).Float32() }

// F32ToF16 rounds f to the nearest IEEE half, ties to even.
func F32ToF16(f float32) uint16 { return float16.Fromfloat32(f).Bits() }

// DecodeFloats widens the little-endian elements of type from in src to
// float32 in dst. len(dst) must equal len(src)/from.Size().
func DecodeFloats(dst []float32, src []byte, from DType) error {
	if len(src) != len(dst)*from.Size() {
		return fmt.Errorf("decode %s: %d bytes for %d elements", from, len(src), len(dst))
	}
	switch from {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case BF16:
		for i := range dst {
			dst[i] = BF16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case F16:
		for i := range dst {
			dst[i] = F16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case F64:
		for i := range dst {
			dst[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(src[8*i:])))
		}
	default:
		return fmt.Errorf("decode: %s is not a float type", from)
	}
	return nil
}

// EncodeFloats rounds src to type to and writes the little-endian elements
// into dst. len(dst) must equal len(src)*to.Size().
func EncodeFloats(dst []byte, src []float32, to DType) error {
	if len(dst) != len(src)*to.Size() {
		return fmt.Errorf("encode %s: %d bytes for %d elements", to, len(dst), len(src))
	}
	switch to {
	case F32:
		for i, v := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	case BF16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], F32ToBF16(v))
		}
	case F16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], F32ToF16(v))
		}
	default:
		return fmt.Errorf("encode: %s is not a supported target float type", to)
	}
	return nil
}

// ConvertFloats converts elements of type from in src to type to in dst
// without a float32 slice in between. It is exact when to is at least as
// wide as from, and rounds to nearest even otherwise. It returns the index of
// the first non-finite element, or -1 when all are finite.
func ConvertFloats(dst []byte, to DType, src []byte, from DType) (firstNonFinite int, err error) {
	if !from.IsFloat() || !(to == F32 || to == F16 || to == BF16) {
		return -1, fmt.Errorf("convert %s to %s: unsupported", from, to)
	}
	n := len(src) / from.Size()
	if len(src) != n*from.Size() || len(dst) != n*to.Size() {
		return -1, fmt.Errorf("convert %s to %s: %d source bytes, %d destination bytes", from, to, len(src), len(dst))
	}
	if from == to {
		copy(dst, src)
		return FirstNonFinite(src, from), nil
	}
	firstNonFinite = -1
	var buf [1024]float32
	for start := 0; start < n; start += len(buf) {
		end := min(start+len(buf), n)
		chunk := buf[:end-start]
		if err := DecodeFloats(chunk, src[start*from.Size():end*from.Size()], from); err != nil {
			return -1, err
		}
		if firstNonFinite < 0 {
			for i, v := range chunk {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					firstNonFinite = start + i
					break
				}
			}
		}
		if err := EncodeFloats(dst[start*to.Size():end*to.Size()], chunk, to); err != nil {
			return -1, err
		}
	}
	return firstNonFinite, nil
}

// FirstNonFinite returns the index of the first NaN or infinite element of
// the float tensor data src of type t, or -1 when all are finite (or t is not
// a float type). It tests exponent bits only, four 16-bit or two 32-bit
// elements per 64-bit word, since converters scan every weight with it.
func FirstNonFinite(src []byte, t DType) int {
	var mask, ones uint64 // exponent mask per lane; lane sign bits
	var lane int
	switch t {
	case BF16:
		mask, ones, lane = 0x7f807f807f807f80, 0x8000800080008000, 2
	case F16:
		mask, ones, lane = 0x7c007c007c007c00, 0x8000800080008000, 2
	case F32:
		mask, ones, lane = 0x7f8000007f800000, 0x8000000080000000, 4
	case F64:
		for i := 0; i+7 < len(src); i += 8 {
			if binary.LittleEndian.Uint64(src[i:])&0x7ff0000000000000 == 0x7ff0000000000000 {
				return i / 8
			}
		}
		return -1
	default:
		return -1
	}
	low := ones >> (8*lane - 1) // 1 in the lowest bit of each lane
	i := 0
	for ; i+8 <= len(src); i += 8 {
		// y has a zero lane exactly where a lane's exponent is all ones;
		// y's lane sign bits are clear, so the zero-lane test is exact.
		y := binary.LittleEndian.Uint64(src[i:])&mask ^ mask
		if (y-low)&^y&ones != 0 {
			break
		}
	}
	for ; i+lane <= len(src); i += lane {
		var e uint64
		if lane == 2 {
			e = uint64(binary.LittleEndian.Uint16(src[i:]))
		} else {
			e = uint64(binary.LittleEndian.Uint32(src[i:]))
		}
		m := mask & (1<<(8*lane) - 1)
		if e&m == m {
			return i / lane
		}
	}
	return -1
}
