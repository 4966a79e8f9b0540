// Command matvec generates the matrix-vector, dot and axpy kernels of
// runtime/cpu (matvec_amd64.s and its Go declarations) with avo. Run it
// through `go generate` in runtime/cpu:
//
//	go run ./internal/asmgen/matvec -out matvec_amd64.s -stubs matvec_stub_amd64.go
//
// Every kernel exists twice, for AVX2+FMA+F16C (ymm, registers 0-15 only,
// VEX encodings) and for AVX-512 F/BW/VL (zmm). Kernels process whole
// vectors only; the Go callers (runtime/cpu/matvec_amd64.go) handle the
// column tails and check every size, so no kernel reads out of bounds.
// Every kernel ends with VZEROUPPER: Go's compiled code uses legacy SSE
// encodings, and a dirty upper state makes each transition cost hundreds of
// nanoseconds on the CPUs we run on.
package main

import (
	"github.com/fhkit/fhkit/runtime/cpu/internal/asmgen/simd"
	"math"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// level is one instruction-set level the kernels are generated for.
type level = simd.Level

var avx2, avx512 = simd.AVX2, simd.AVX512

func main() {
	// Float constants are written as their bits: avo prints a whole F32 as
	// an integer literal ($(-8)), which the Go assembler stores as an
	// integer.
	consts := q4Consts{
		mask:    ConstData("mvQ4Mantissa", U32(0xF<<19)),
		one:     ConstData("mvOne", U32(math.Float32bits(1))),
		sixteen: ConstData("mvSixteen", U32(math.Float32bits(16))),
	}
	lowNibble := ConstData("mvLowNibble", U32(0xF))
	lowNibbles := ConstData("mvLowNibbles", U32(0x0F0F_0F0F))
	bf := bf16Consts{
		mask16:  ConstData("mvBF16Code", U32(0x0078_0078)),
		one16:   ConstData("mvBF16One", U32(0x3F80_3F80)),
		one:     consts.one,
		sixteen: consts.sixteen,
	}

	prepBF16()
	prepVNNI()
	for _, bf16 := range []bool{true, false} {
		for _, asym := range []bool{false, true} {
			for T := 1; T <= vnni16MaxT; T++ {
				q4VNNI16T(T, bf16, asym, lowNibbles)
			}
		}
	}
	for _, l := range []level{avx2, avx512} {
		dot(l)
		axpy(l)
		for _, dt := range []denseType{f32, bf16, f16, i8} {
			dense(l, dt, false)
			dense(l, dt, true)
		}
		for _, st := range []scaleType{scaleBF16, scaleF16, scaleF32} {
			for _, asym := range []bool{false, true} {
				if l.Wide {
					q4AVX512(st, asym, consts)
					q4AVX512BF16(st, asym, bf)
					q4VNNI(st, asym, lowNibbles)
				} else {
					q4AVX2(st, asym, lowNibble)
				}
			}
		}
	}
	Generate()
}

// vreg is a vector register, virtual or physical (the AVX512_BF16 kernel
// names its registers itself).
type vreg interface {
	Register
	Vec
}

// arg returns the stack slot of the named argument, for values a kernel
// reads or updates rarely (keeping them out of the scarce GP registers).
func arg(name string) Mem {
	b, err := Param(name).Resolve()
	if err != nil {
		panic(err)
	}
	return b.Addr
}

// halve sums the halves of v down to one xmm of 4 partial sums. Only
// EVEX-encodable instructions are used on AVX-512, because the allocator may
// place v in registers 16-31 (which VEX cannot address).
func halve(l level, v vreg) VecVirtual {
	var y vreg = v
	if l.Wide {
		y = YMM()
		VEXTRACTF64X4(U8(1), v, y)
		VADDPS(y, v.AsY(), y)
	}
	x := XMM()
	if l.Wide {
		VEXTRACTF32X4(U8(1), y, x)
	} else {
		VEXTRACTF128(U8(1), y, x)
	}
	VADDPS(x, y.AsX(), x)
	return x
}

// sum4 returns the xmm [Σa, Σb, Σc, Σd] of four 4-lane partial sums (a
// transpose-and-add, in place of VHADDPS, which has no EVEX form).
func sum4(a, b, c, d vreg) VecVirtual {
	t0, t1, t2, t3 := XMM(), XMM(), XMM(), XMM()
	VUNPCKLPS(b, a, t0) // a0 b0 a1 b1
	VUNPCKHPS(b, a, t1) // a2 b2 a3 b3
	VADDPS(t1, t0, t0)  // a02 b02 a13 b13
	VUNPCKLPS(d, c, t2)
	VUNPCKHPS(d, c, t3)
	VADDPS(t3, t2, t2) // c02 d02 c13 d13
	r, s := XMM(), XMM()
	VSHUFPS(U8(0x44), t2, t0, r) // a02 b02 c02 d02
	VSHUFPS(U8(0xEE), t2, t0, s) // a13 b13 c13 d13
	VADDPS(s, r, r)
	return r
}

// sum1 folds a 4-lane partial sum into lane 0.
func sum1(x vreg) vreg {
	t := XMM()
	VPERMILPS(U8(0x4E), x, t) // x2 x3 x0 x1
	VADDPS(t, x, x)
	VPERMILPS(U8(0xB1), x, t) // pairs swapped
	VADDPS(t, x, x)
	return x
}

// storeSums reduces the per-row accumulators (R = 4 or 1, each a list of
// vectors to add first) and stores R float32 results at out.
func storeSums(l level, out Register, acc [][]VecVirtual) {
	parts := make([]VecVirtual, len(acc))
	for k, a := range acc {
		for _, v := range a[1:] {
			VADDPS(v, a[0], a[0])
		}
		parts[k] = halve(l, a[0])
	}
	if len(parts) == 4 {
		VMOVUPS(sum4(parts[0], parts[1], parts[2], parts[3]), Mem{Base: out})
		return
	}
	VMOVSS(sum1(parts[0]), Mem{Base: out})
}

// zero clears vectors (VPXORD on zmm: VXORPS zmm would need AVX512DQ).
func zero(l level, vs ...vreg) {
	for _, v := range vs {
		if l.Wide {
			VPXORD(v, v, v)
		} else {
			VXORPS(v, v, v)
		}
	}
}
