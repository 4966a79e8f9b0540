package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	"github.com/mmcloughlin/avo/ir"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// vdpbf16ps emits VDPBF16PS d, a, b (AVX512_BF16, Intel operand order):
// d.f32[i] += a.bf16[2i]·b.bf16[2i] + a.bf16[2i+1]·b.bf16[2i+1]. Neither
// the Go assembler nor avo knows the instruction, so it is written as its
// EVEX encoding (EVEX.512.F3.0F38.W0 52 /r, register form), which needs
// physical registers. The instruction records its register use so avo's
// liveness (and the allocation of the virtual registers around it) stays
// right.
func vdpbf16ps(d, a, b VecPhysical) {
	dn, an, bn := int(d.PhysicalIndex()), int(a.PhysicalIndex()), int(b.PhysicalIndex())
	bit := func(v, i int) int { return (v >> i) & 1 }
	p0 := (1-bit(dn, 3))<<7 | (1-bit(bn, 4))<<6 | (1-bit(bn, 3))<<5 | (1-bit(dn, 4))<<4 | 0b0010
	p1 := (^an&15)<<3 | 1<<2 | 0b10
	p2 := 0b10<<5 | (1-bit(an, 4))<<3
	modrm := 0xC0 | (dn&7)<<3 | bn&7
	Comment(fmt.Sprintf("VDPBF16PS Z%d, Z%d, Z%d (Intel order)", dn, an, bn))
	Instruction(&ir.Instruction{
		Opcode:   "LONG",
		Operands: []Op{U32(uint32(0x62 | p0<<8 | p1<<16 | p2<<24))},
		Inputs:   []Op{d, a, b},
		Outputs:  []Op{d},
		ISA:      []string{"AVX512_BF16"},
	})
	Instruction(&ir.Instruction{Opcode: "WORD", Operands: []Op{U16(uint16(0x52 | modrm<<8))}})
}

// z returns physical zmm register i.
func z(i int) VecPhysical {
	return []VecPhysical{Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z8, Z9, Z10, Z11, Z12, Z13, Z14, Z15,
		Z16, Z17, Z18, Z19, Z20, Z21, Z22, Z23, Z24, Z25, Z26, Z27, Z28, Z29, Z30, Z31}[i]
}

// bf16Consts are the constants of the AVX512_BF16 int4 kernel.
type bf16Consts struct {
	mask16  Mem // 0x0078 per word: a code at bf16 mantissa bits 3-6
	one16   Mem // bf16 1.0 per word
	one     Mem // float32 1.0
	sixteen Mem // float32 16.0
}

// q4AVX512BF16 generates the int4 kernel for CPUs with AVX512_BF16, for
// groups of a multiple of 128 inputs. It is the AVX-512 kernel with 16-bit
// lanes: each 16-bit word of 64 code bytes holds 4 codes (inputs 4w..4w+3),
// a word shift and VPTERNLOGD make the bf16 v = 1 + q/16 (exact) of one of
// them in every word, and VDPBF16PS multiplies 32 of them by 32 bf16
// inputs and adds pairs into 16 float32 lanes: one multiply instruction per
// 32 codes instead of 16, and half the shifts. On Zen 4 this takes the
// kernel from 16 to about 8 cycles per 128 codes and row, which a single
// core needs to keep up with DRAM (the float32 kernel is compute-bound
// there).
//
// x is split into bf16 halves, x ≈ hi + lo with |x − hi − lo| ≤ 2^-18|x|,
// both multiplied (two VDPBF16PS into two accumulators), so the product is
// that of x rounded to about 17 bits: the kernel is float32-accurate to
// 2^-18 relative, far below bf16 activations. The zero-point correction
// (−(1 + z/16)·Σ(hi + lo), lanes from the caller) uses the same values, and
// products of bf16 numbers are exact in float32; VDPBF16PS rounds each
// accumulation to nearest even and flushes denormals (values below 1e-38).
//
// Register plan (physical, since VDPBF16PS is hand-encoded): Z0 word mask,
// Z1 bf16 one, Z2-Z5 the hi vectors of codes 0-3, Z6-Z9 the lo vectors,
// Z10-Z13 row sums, Z14-Z17 and Z18-Z21 the group sums against hi and lo,
// Z22 codes, Z23 the code values, Z24-Z25 scale and zero-point temporaries,
// Z26 float32 one.
func q4AVX512BF16(st scaleType, asym bool, k bf16Consts) {
	l := avx512
	name := "mvQ4" + st.name + symName(asym) + "AVX512BF16"
	TEXT(name, NOSPLIT, q4Sig)
	Pragma("noescape")
	q4Doc(name, st, asym, "Groups are a multiple of 128 inputs (gbytes a multiple of 64). Needs AVX512_BF16.",
		"x is the input per 128 elements as 8 vectors of 32 bf16: vector c (c < 4) holds hi(x[4w+c]),",
		"vector 4+c holds lo(x[4w+c]) for w = 0..31, with hi = bf16(x), lo = bf16(x − hi);",
		"nxs holds 16 floats per group, lane i = −Σ over the group's 128-element blocks b of",
		"Σ_j (hi + lo)(x[128b+8i+j]), times 1.5 (1 + 8/16) when symmetric.")
	mask, one16 := z(0), z(1)
	VPBROADCASTD(k.mask16, mask)
	VPBROADCASTD(k.one16, one16)
	if asym {
		VPBROADCASTD(k.one, z(26))
	}
	q4Rows(name, func(tag string, ptrs []Register, stride, next Register) {
		R := len(ptrs)
		acc := func(i int) VecPhysical { return z(10 + i) }
		gh := func(i int) VecPhysical { return z(14 + i) }
		gl := func(i int) VecPhysical { return z(18 + i) }
		for i := 0; i < R; i++ {
			VPXORD(acc(i), acc(i), acc(i))
		}
		xp, sp, nxp, zi, wo := q4Pointers(asym)

		Label(tag + "_g")
		for i := 0; i < R; i++ {
			if asym {
				t := z(24)
				VPBROADCASTD(zeroPoint(zi, i), t)
				VPSLLD(U8(19), t, t)
				VPORD(z(26), t, t) // 1 + z/16
				VMULPS(Mem{Base: nxp}, t, gh(i))
			} else {
				VMOVUPS(Mem{Base: nxp}, gh(i))
			}
			VPXORD(gl(i), gl(i), gl(i))
		}
		gend := GP64()
		MOVQ(wo, gend)
		ADDQ(arg("gbytes"), gend)

		Label(tag + "_b")
		for c := 0; c < 8; c++ {
			VMOVDQU32(Mem{Base: xp, Disp: 64 * c}, z(2+c))
		}
		for i, p := range ptrs {
			codes, v := z(22), z(23)
			VMOVDQU32(Mem{Base: p, Index: wo, Scale: 1}, codes)
			for c := 0; c < 4; c++ {
				// Code c of each word to bits 3-6.
				if c == 0 {
					VPSLLW(U8(3), codes, v)
				} else {
					VPSRLW(U8(4*c-3), codes, v)
				}
				VPTERNLOGD(U8(0xEA), one16, mask, v) // (v & mask) | one
				vdpbf16ps(gh(i), v, z(2+c))
				vdpbf16ps(gl(i), v, z(6+c))
			}
		}
		prefetchNextArg(tag, next, wo, R, 64)
		ADDQ(U32(64), wo)
		ADDQ(U32(512), xp)
		CMPQ(wo, gend)
		JB(LabelRef(tag + "_b"))

		ss := Load(Param("sstride"), GP64())
		for i := 0; i < R; i++ {
			s := z(25)
			st.broadcast(l, scaleMem(sp, ss, i), s)
			VADDPS(gl(i), gh(i), gh(i))
			VFMADD231PS(gh(i), s, acc(i))
		}
		ADDQ(U32(st.size), sp)
		ADDQ(U32(64), nxp)
		if asym {
			INCQ(zi)
		}
		CMPQ(wo, stride)
		JB(LabelRef(tag + "_g"))

		out := Load(Param("out"), GP64())
		sixteen := XMM()
		VBROADCASTSS(k.sixteen, sixteen)
		parts := make([]VecVirtual, R)
		for i := 0; i < R; i++ {
			parts[i] = halve(l, acc(i))
		}
		if R == 4 {
			r := sum4(parts[0], parts[1], parts[2], parts[3])
			VMULPS(sixteen, r, r)
			VMOVUPS(r, Mem{Base: out})
		} else {
			r := sum1(parts[0])
			VMULPS(sixteen, r, r)
			VMOVSS(r, Mem{Base: out})
		}
	})
}

// prepBF16 generates mvQ4PrepBF16: the x layout of the AVX512_BF16 int4
// kernel (see q4AVX512BF16) and its per-group lane sums, for groups of bpg
// blocks of 128 inputs:
//
//	for each block: dst words [32c + w] = hi(x[4w+c]), [128 + 32c + w] = lo(x[4w+c]);
//	nxs[16g + i] = k · Σ over group g's blocks, then j = 0..7, of (hi + lo)(x[8i+j]).
//
// A gather per j (stride 8) gives T_j[i] = x[8i+j]; word w = 2i+h of code c
// is T_{4h+c}[i], so each dword of the output holds T_c[i] in its low half
// and T_{4+c}[i] in its high half. hi and lo round to nearest even like
// dtype.F32ToBF16 (NaN aside: a NaN input gives a NaN sum either way).
func prepBF16() {
	TEXT("mvQ4PrepBF16", NOSPLIT, "func(dst *uint16, nxs *float32, x *float32, groups int, bpg int, k float32)")
	Pragma("noescape")
	Doc("mvQ4PrepBF16 lays x out for the AVX512_BF16 int4 kernels: per block of 128 inputs,",
		"dst words 32c+w = hi(x[4w+c]) and 128+32c+w = lo(x[4w+c]) (hi = bf16(x), lo = bf16(x − hi)),",
		"and nxs[16g+i] = k·Σ over group g's bpg blocks and j < 8 of (hi + lo)(x[8i+j]).")
	dst := Load(Param("dst"), GP64())
	nxs := Load(Param("nxs"), GP64())
	x := Load(Param("x"), GP64())
	groups := Load(Param("groups"), GP64())
	idx, low, round, keepHi, kv := ZMM(), ZMM(), ZMM(), ZMM(), ZMM()
	stride8 := GLOBL("mvStride8", RODATA|NOPTR)
	for i := 0; i < 16; i++ {
		DATA(4*i, U32(8*i))
	}
	VMOVDQU32(stride8, idx)
	VPBROADCASTD(ConstData("mvLowBit", U32(1)), low)
	VPBROADCASTD(ConstData("mvRound", U32(0x7FFF)), round)
	VPBROADCASTD(ConstData("mvHighHalf", U32(0xFFFF0000)), keepHi)
	VBROADCASTSS(arg("k"), kv)
	mask := K()

	// toBF16 rounds the floats of v to bf16 (nearest, ties to even), kept
	// in the high halves with zero low halves: a float32 vector too.
	toBF16 := func(v VecVirtual) VecVirtual {
		t, r := ZMM(), ZMM()
		VPSRLD(U8(16), v, t)
		VPANDD(low, t, t)
		VPADDD(round, v, r)
		VPADDD(t, r, r)
		VPANDD(keepHi, r, r)
		return r
	}

	Label("prep_g")
	TESTQ(groups, groups)
	JZ(LabelRef("prep_done"))
	sum := ZMM()
	VPXORD(sum, sum, sum)
	blocks := Load(Param("bpg"), GP64())
	Label("prep_b")
	hi, lo := make([]VecVirtual, 8), make([]VecVirtual, 8)
	for j := 0; j < 8; j++ {
		t := ZMM()
		KXNORW(mask, mask, mask)
		VGATHERDPS(Mem{Base: x, Index: idx, Scale: 4, Disp: 4 * j}, mask, t)
		hi[j] = toBF16(t)
		VSUBPS(hi[j], t, t) // exact: x − hi
		lo[j] = toBF16(t)
		VADDPS(lo[j], hi[j], t)
		VADDPS(t, sum, sum)
	}
	for c := 0; c < 4; c++ {
		for half, src := range [][]VecVirtual{hi, lo} {
			// Low words from T_c, high words from T_{4+c}.
			w := ZMM()
			VPSRLD(U8(16), src[c], w)
			VPTERNLOGD(U8(0xEA), w, keepHi, src[4+c]) // (T4c & keepHi) | w
			VMOVDQU32(src[4+c], Mem{Base: dst, Disp: 256*half + 64*c})
		}
	}
	ADDQ(U32(512), dst)
	ADDQ(U32(512), x)
	DECQ(blocks)
	JNZ(LabelRef("prep_b"))
	VMULPS(kv, sum, sum)
	VMOVUPS(sum, Mem{Base: nxs})
	ADDQ(U32(64), nxs)
	DECQ(groups)
	JMP(LabelRef("prep_g"))

	Label("prep_done")
	VZEROUPPER()
	RET()
}
