// Package simd holds what the avo generators of runtime/cpu
// (internal/asmgen/matvec, ops) share: the instruction-set levels their
// kernels are generated for.
package simd

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/reg"
)

// Level is one instruction-set level the kernels are generated for.
type Level struct {
	Name  string // suffix of the kernel names
	Lanes int    // float32 lanes of a vector
	Wide  bool   // AVX-512 (zmm) rather than AVX2 (ymm)
}

// Vec returns a new virtual vector register of the level's width.
func (l Level) Vec() VecVirtual {
	if l.Wide {
		return ZMM()
	}
	return YMM()
}

// VBytes is the size of one vector in bytes.
func (l Level) VBytes() int { return 4 * l.Lanes }

var (
	// AVX2 is AVX2+FMA+F16C: ymm, registers 0-15 only, VEX encodings.
	AVX2 = Level{Name: "AVX2", Lanes: 8}
	// AVX512 is AVX-512 F/BW/VL: zmm.
	AVX512 = Level{Name: "AVX512", Lanes: 16, Wide: true}
)
