package main

import (
	"math"

	. "github.com/mmcloughlin/avo/build"
	"github.com/mmcloughlin/avo/ir"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// vpdpbusd emits VPDPBUSD s, u, d (Go operand order): d.i32[i] +=
// Σ_{j<4} u.u8[4i+j]·s.s8[4i+j], exact (no saturation). The Go assembler
// knows the instruction but avo v0.5.0 does not, so it is emitted as a raw
// instruction whose register use is declared, which keeps avo's liveness
// and allocation of the virtual registers right.
func vpdpbusd(s, u, d Register) {
	Instruction(&ir.Instruction{
		Opcode:   "VPDPBUSD",
		Operands: []Op{s, u, d},
		Inputs:   []Op{d, u, s},
		Outputs:  []Op{d},
		ISA:      []string{"AVX512_VNNI"},
	})
}

// q4VNNI generates the int4 kernel for CPUs with AVX512_VNNI, for groups of
// a multiple of 128 inputs (at most 1024, so no int32 sum can overflow; see
// below). The caller quantizes x once per product, per group g, to two int8
// levels: x ≈ d_g·(128·h + l) with d_g = max|x_g|/16256, h ∈ [−127, 127],
// l ∈ [−64, 64], so |x − x̂| ≤ d_g/2 (about 2^-15 of the group's largest
// |x|). The codes q ∈ [0, 15] are VPDPBUSD's unsigned bytes as they are:
// one AND gives the low nibbles (even inputs) of 64 code bytes, a word
// shift and an AND the high ones (odd inputs), and four VPDPBUSD multiply
// 128 codes by h and l with the sums of 4 products in int32, exactly. Per
// group the kernel forms t = 128·Σq·h + Σq·l − z·Σ(128h + l) in int32 (the
// last term from the caller, started in lane 0 of the l accumulator),
// converts it to float32 and adds t·d_g·s_g to the row's sum. Against the
// AVX512_BF16 kernel (eight VDPBF16PS and eight shifts and ternary ops per
// 128 codes and row) this takes four VPDPBUSD and three simple ops.
//
// Ranges: |Σq·h| ≤ 15·127·G and |Σq·l| ≤ 15·64·G, so |t| < 2^31 for
// G ≤ 1024 (128·15·127·1024 + 15·64·1024 + 8·16320·1024 < 2^31).
//
// x is laid out per 128 inputs as 256 bytes: the h of the even inputs
// (byte k = h(x[2k]), the input of the low nibble of code byte k), the h of
// the odd ones, then the l of the even and of the odd ones; nxs holds two
// 32-bit words per group: −z·Σ(128h + l) over the group as an int32 (z = 8
// when symmetric, 1 when not: the kernel multiplies by the zero point) and
// d_g as a float32.
func q4VNNI(st scaleType, asym bool, lowNibbles Mem) {
	l := avx512
	name := "mvQ4" + st.name + symName(asym) + "AVX512VNNI"
	TEXT(name, NOSPLIT, q4Sig)
	Pragma("noescape")
	q4Doc(name, st, asym, "Groups are a multiple of 128 inputs, at most 1024 (gbytes a multiple of 64). Needs AVX512_VNNI.",
		"x is per 128 inputs 256 int8: h of the even inputs, h of the odd ones, l of the even, l of the odd,",
		"with x ≈ d_g·(128h + l); nxs holds per group the int32 −k·Σ(128h + l) (k = 8 symmetric, else 1)",
		"and the float32 d_g.")
	mask := ZMM()
	VPBROADCASTD(lowNibbles, mask) // 0x0F per byte
	q4Rows(name, func(tag string, ptrs []Register, stride, next Register) {
		R := len(ptrs)
		acc := make([]VecVirtual, R)
		for i := range acc {
			acc[i] = ZMM()
			zero(l, acc[i])
		}
		xp, sp, nxp, zi, wo := q4Pointers(asym)

		Label(tag + "_g")
		ah, al := make([]VecVirtual, R), make([]VecVirtual, R)
		for i := 0; i < R; i++ {
			ah[i], al[i] = ZMM(), ZMM()
			VPXORD(ah[i], ah[i], ah[i])
			// VMOVD zeroes the other lanes: the correction sits in lane 0.
			if asym {
				c := GP32()
				MOVL(Mem{Base: nxp}, c)
				IMULL(zeroPoint(zi, i), c)
				VMOVD(c, al[i].AsX())
			} else {
				VMOVD(Mem{Base: nxp}, al[i].AsX())
			}
		}
		gend := GP64()
		MOVQ(wo, gend)
		ADDQ(arg("gbytes"), gend)

		Label(tag + "_b")
		xs := make([]VecVirtual, 4)
		for j := range xs {
			xs[j] = ZMM()
			VMOVDQU32(Mem{Base: xp, Disp: 64 * j}, xs[j])
		}
		for i, p := range ptrs {
			c, lo := ZMM(), ZMM()
			VMOVDQU32(Mem{Base: p, Index: wo, Scale: 1}, c)
			VPANDD(mask, c, lo)
			VPSRLW(U8(4), c, c)
			VPANDD(mask, c, c)
			vpdpbusd(xs[0], lo, ah[i])
			vpdpbusd(xs[1], c, ah[i])
			vpdpbusd(xs[2], lo, al[i])
			vpdpbusd(xs[3], c, al[i])
		}
		prefetchNextArg(tag, next, wo, R, 64)
		ADDQ(U32(64), wo)
		ADDQ(U32(256), xp)
		CMPQ(wo, gend)
		JB(LabelRef(tag + "_b"))

		ss := Load(Param("sstride"), GP64())
		for i := 0; i < R; i++ {
			VPSLLD(U8(7), ah[i], ah[i])
			VPADDD(al[i], ah[i], ah[i])
			VCVTDQ2PS(ah[i], ah[i])
			VMULPS_BCST(Mem{Base: nxp, Disp: 4}, ah[i], ah[i])
			s := ZMM()
			st.broadcast(l, scaleMem(sp, ss, i), s)
			VFMADD231PS(ah[i], s, acc[i])
		}
		ADDQ(U32(st.size), sp)
		ADDQ(U32(8), nxp)
		if asym {
			INCQ(zi)
		}
		CMPQ(wo, stride)
		JB(LabelRef(tag + "_g"))

		out := Load(Param("out"), GP64())
		parts := make([]VecVirtual, R)
		for i := range acc {
			parts[i] = halve(l, acc[i])
		}
		if R == 4 {
			VMOVUPS(sum4(parts[0], parts[1], parts[2], parts[3]), Mem{Base: out})
		} else {
			VMOVSS(sum1(parts[0]), Mem{Base: out})
		}
	})
}

// prepVNNI generates mvQ4PrepVNNI: the x layout of the AVX512_VNNI int4
// kernel, bit for bit as prepVNNIGo in runtime/cpu (which documents it),
// for groups of bpg blocks of 128 inputs. Per group one pass finds max|x|,
// a second quantizes: per 32 inputs, two VPERMT2PS split them into the 16
// even and the 16 odd ones, u = x·(16256/max), h = round(u/128) and l =
// round(u − 128h) by VCVTPS2DQ (nearest even, as the Go version's
// 1.5·2^23 trick; u/128 and u − 128h are exact), and VPMOVDB stores each
// as 16 bytes.
func prepVNNI() {
	TEXT("mvQ4PrepVNNI", NOSPLIT, "func(dst *int8, nxs *float32, x *float32, groups int, bpg int, k int32)")
	Pragma("noescape")
	Doc("mvQ4PrepVNNI is prepVNNIGo (the x layout of the AVX512_VNNI int4 kernels) in assembly,",
		"for groups of bpg blocks of 128 inputs; k is the zero-point factor of nxs (8 symmetric, else 1).")
	dst := Load(Param("dst"), GP64())
	nxs := Load(Param("nxs"), GP64())
	x := Load(Param("x"), GP64())
	groups := Load(Param("groups"), GP64())
	even, odd := GLOBL("mvEvenIdx", RODATA|NOPTR), Mem{}
	for i := 0; i < 16; i++ {
		DATA(4*i, U32(2*i))
	}
	odd = GLOBL("mvOddIdx", RODATA|NOPTR)
	for i := 0; i < 16; i++ {
		DATA(4*i, U32(2*i+1))
	}
	ie, io, absMask, c128, cInv128 := ZMM(), ZMM(), ZMM(), ZMM(), ZMM()
	VMOVDQU32(even, ie)
	VMOVDQU32(odd, io)
	VPBROADCASTD(ConstData("mvAbsMask", U32(0x7FFF_FFFF)), absMask)
	VBROADCASTSS(ConstData("mvF128", U32(math.Float32bits(128))), c128)
	VBROADCASTSS(ConstData("mvFInv128", U32(math.Float32bits(1.0/128))), cInv128)
	levels := XMM()
	VMOVSS(ConstData("mvVNNILevels", U32(math.Float32bits(127*128))), levels)

	Label("pv_g")
	TESTQ(groups, groups)
	JZ(LabelRef("pv_done"))
	// Pass 1: m = max|x| over the group.
	m := ZMM()
	VPXORD(m, m, m)
	xp := GP64()
	MOVQ(x, xp)
	blocks := Load(Param("bpg"), GP64())
	Label("pv_max")
	for j := 0; j < 8; j++ {
		t := ZMM()
		VPANDD(Mem{Base: xp, Disp: 64 * j}, absMask, t)
		VMAXPS(t, m, m)
	}
	ADDQ(U32(512), xp)
	DECQ(blocks)
	JNZ(LabelRef("pv_max"))
	y := YMM()
	VEXTRACTF64X4(U8(1), m, y)
	VMAXPS(y, m.AsY(), y)
	xm := XMM()
	VEXTRACTF32X4(U8(1), y, xm)
	VMAXPS(xm, y.AsX(), xm)
	t := XMM()
	VPERMILPS(U8(0x4E), xm, t)
	VMAXPS(t, xm, xm)
	VPERMILPS(U8(0xB1), xm, t)
	VMAXPS(t, xm, xm)
	// d = m/16256 and inv = 16256/m, both 0 when m is (all zeros).
	d, inv := XMM(), XMM()
	VXORPS(d, d, d)
	VXORPS(inv, inv, inv)
	VUCOMISS(d, xm)
	JE(LabelRef("pv_zero"))
	VDIVSS(levels, xm, d)
	VDIVSS(xm, levels, inv)
	Label("pv_zero")
	VMOVSS(d, Mem{Base: nxs, Disp: 4})
	iv := ZMM()
	VBROADCASTSS(inv, iv)

	// Pass 2: quantize and lay out.
	sum := ZMM()
	VPXORD(sum, sum, sum)
	blocks = Load(Param("bpg"), GP64())
	Label("pv_b")
	for j := 0; j < 4; j++ {
		a, b := ZMM(), ZMM()
		VMOVUPS(Mem{Base: x, Disp: 128 * j}, a)
		VMOVUPS(Mem{Base: x, Disp: 128*j + 64}, b)
		for par, idx := range []VecVirtual{ie, io} {
			u := ZMM()
			VMOVAPS(a, u)
			VPERMT2PS(b, idx, u) // the even (odd) inputs of the 32
			VMULPS(iv, u, u)
			h, hf, l := ZMM(), ZMM(), ZMM()
			VMULPS(cInv128, u, h)
			VCVTPS2DQ(h, h)
			VCVTDQ2PS(h, hf)
			VFNMADD231PS(c128, hf, u) // u − 128h, exact
			VCVTPS2DQ(u, l)
			VPMOVDB(h, Mem{Base: dst, Disp: 64*par + 16*j})
			VPMOVDB(l, Mem{Base: dst, Disp: 128 + 64*par + 16*j})
			VPSLLD(U8(7), h, h)
			VPADDD(l, h, h)
			VPADDD(h, sum, sum)
		}
	}
	ADDQ(U32(256), dst)
	ADDQ(U32(512), x)
	DECQ(blocks)
	JNZ(LabelRef("pv_b"))
	// nxs[2g] = −k·Σ(128h + l).
	ys := YMM()
	VEXTRACTI64X4(U8(1), sum, ys)
	VPADDD(ys, sum.AsY(), ys)
	xs := XMM()
	VEXTRACTI32X4(U8(1), ys, xs)
	VPADDD(xs, ys.AsX(), xs)
	ts := XMM()
	VPSHUFD(U8(0x4E), xs, ts)
	VPADDD(ts, xs, xs)
	VPSHUFD(U8(0xB1), xs, ts)
	VPADDD(ts, xs, xs)
	s := GP32()
	VMOVD(xs, s)
	IMULL(arg("k"), s)
	NEGL(s)
	MOVL(s, Mem{Base: nxs})
	ADDQ(U32(8), nxs)
	DECQ(groups)
	JMP(LabelRef("pv_g"))

	Label("pv_done")
	VZEROUPPER()
	RET()
}
