// Package quantize turns the linear weights of a dense .fhm model into
// packed int4 weights (W4A16, layout in formats/int4) with round-to-nearest
// (RTN) or GPTQ, and reports the reconstruction error of every layer.
//
// The integer grid is compressed-tensors' (see the W4A16 formats document,
// section 4.0), stored unsigned with a +8 offset:
//
//	symmetric:  s = max(|min|, |max|) / 7.5 (min ≤ 0 ≤ max forced), z = 8
//	asymmetric: s = (max − min) / 15,        z = round(clamp(−min/s, 0, 15))
//	code:       q = clamp(round(w/s) + z, 0, 15)   (round half to even)
//	weight:     ŵ = (q − z) · s
//
// s is clamped to at least float32 epsilon, then rounded to the scale dtype
// (BF16 or F16) before the codes are computed, so ŵ is exactly what a
// kernel reading the stored scale reconstructs.
package quantize

import (
	"math"

	"github.com/fhkit/fhkit/formats/dtype"
)

// Scheme is the integer grid of a layer.
type Scheme struct {
	// Symmetric stores no zero points (z = 8).
	Symmetric bool
	// ScaleDType is BF16 or F16 (F32 is accepted for tests).
	ScaleDType dtype.DType
}

const eps32 = 1.1920928955078125e-07 // torch.finfo(torch.float32).eps

// roundScale rounds s to the scale dtype.
func (sc Scheme) roundScale(s float32) float32 {
	switch sc.ScaleDType {
	case dtype.BF16:
		return dtype.BF16ToF32(dtype.F32ToBF16(s))
	case dtype.F16:
		return dtype.F16ToF32(dtype.F32ToF16(s))
	}
	return s
}

// Params returns the scale (already rounded to the scale dtype) and the
// unsigned zero point of the group of weights w.
func (sc Scheme) Params(w []float32) (scale float32, zero int) {
	lo, hi := float32(0), float32(0) // min ≤ 0 ≤ max forced
	for _, v := range w {
		lo = min(lo, v)
		hi = max(hi, v)
	}
	return sc.paramsFromRange(lo, hi)
}

func (sc Scheme) paramsFromRange(lo, hi float32) (float32, int) {
	if sc.Symmetric {
		s := max(-lo, hi) / 7.5
		s = sc.roundScale(max(s, eps32))
		return s, 8
	}
	s := sc.roundScale(max((hi-lo)/15, eps32))
	z := roundEven(-lo / s)
	z = min(max(z, 0), 15)
	return s, int(z)
}

// roundEven rounds half to even, like torch.round.
func roundEven(x float32) float32 { return float32(math.RoundToEven(float64(x))) }

// Code returns the 4-bit code of w for scale s and zero z.
func Code(w, s float32, z int) uint8 {
	q := roundEven(w/s) + float32(z)
	return uint8(min(max(q, 0), 15))
}

// Dequant returns (q − z)·s.
func Dequant(q uint8, s float32, z int) float32 { return float32(int(q)-z) * s }
