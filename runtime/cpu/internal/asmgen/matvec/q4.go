package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// scaleType is the element type of the int4 group scales.
type scaleType struct {
	name string
	size int
}

var (
	scaleBF16 = scaleType{"BF16", 2}
	scaleF16  = scaleType{"F16", 2}
	scaleF32  = scaleType{"F32", 4}
)

// broadcast loads the scale at m into every lane of dst as a float32.
func (s scaleType) broadcast(l level, m Mem, dst VecVirtual) {
	switch s {
	case scaleBF16:
		// Every word is the bf16; shifting each dword left 16 drops the
		// copy in the high word and leaves the float32 bits.
		VPBROADCASTW(m, dst)
		VPSLLD(U8(16), dst, dst)
	case scaleF16:
		h := XMM()
		if l.wide {
			h = YMM()
		}
		VPBROADCASTW(m, h)
		VCVTPH2PS(h, dst)
	default:
		VBROADCASTSS(m, dst)
	}
}

// q4Tables are the constant tables of the AVX-512 int4 kernels.
type q4Tables struct {
	sym  Mem // q − 8 for q = 0..15
	iota Mem // q for q = 0..15
}

const q4Sig = "func(out *float32, w *byte, stride int, scales *byte, sstride int, zeros *byte, zidx int, ng int, x *float32, gbytes int, rows int)"

// q4Doc documents the arguments shared by the int4 kernels.
func q4Doc(name string, st scaleType, asym bool, layout ...string) {
	zp := "symmetric (zero point 8; zeros and zidx unused)"
	if asym {
		zp = "zero point of (row r, group g) at U4 element zidx + r·ng + g of zeros"
	}
	Doc(append([]string{name + " is the W4A16 matrix-vector product out[r] = Σ_c (q[r,c] − z[r,g])·s[r,g]·x[c] for r < rows.",
		"Row r of codes (formats/int4 layout) is at w + r·stride bytes and spans stride bytes;",
		"its groups of gbytes bytes (a multiple of 16) have " + st.name + " scales at scales + r·sstride;",
		zp + "."}, layout...)...)
}

// zeroPoint loads the zero point of row k (relative to the pass) and the
// current group into a GP register: U4 element zi + k·ng of zeros.
func zeroPoint(zi Register, k int) Register {
	u := GP64()
	MOVQ(zi, u)
	for j := 0; j < k; j++ {
		ADDQ(arg("ng"), u)
	}
	v := GP64()
	MOVQ(u, v)
	SHRQ(U8(1), v)
	zp := Load(Param("zeros"), GP64())
	b := GP32()
	MOVBLZX(Mem{Base: zp, Index: v, Scale: 1}, b)
	h := GP32()
	MOVL(b, h)
	SHRL(U8(4), h)
	// Odd elements are the high nibble: a conditional move, no variable
	// shift (BMI2 is not part of the AVX2 level).
	TESTQ(U32(1), u)
	CMOVLNE(h, b)
	ANDL(U32(15), b)
	return b
}

// scaleMem returns the address of row k's scale in the current group.
func scaleMem(sp, ss Register, k int) Mem {
	switch k {
	case 0:
		return Mem{Base: sp}
	case 1:
		return Mem{Base: sp, Index: ss, Scale: 1}
	case 2:
		return Mem{Base: sp, Index: ss, Scale: 2}
	}
	t := GP64()
	LEAQ(Mem{Base: sp, Index: ss, Scale: 2}, t)
	return Mem{Base: t, Index: ss, Scale: 1}
}

// q4Rows emits the row-pass loops shared by both levels: passes of four
// rows, then single rows. pass emits one pass over R rows at w (row k at
// w + k·stride) writing R results at out; the per-pass arguments (out,
// scales, zidx, rows) live in the argument slots and advance there.
func q4Rows(name string, pass func(tag string, ptrs []Register, stride Register)) {
	w := Load(Param("w"), GP64())
	stride := Load(Param("stride"), GP64())
	for _, R := range []int{4, 1} {
		tag := fmt.Sprintf("%s_r%d", name, R)
		Label(tag)
		CMPQ(arg("rows"), U32(R))
		if R == 4 {
			JL(LabelRef(name + "_r1"))
		} else {
			JL(LabelRef(name + "_done"))
		}
		ptrs := []Register{w}
		if R == 4 {
			p1, p2, p3 := GP64(), GP64(), GP64()
			LEAQ(Mem{Base: w, Index: stride, Scale: 1}, p1)
			LEAQ(Mem{Base: w, Index: stride, Scale: 2}, p2)
			LEAQ(Mem{Base: p1, Index: stride, Scale: 2}, p3)
			ptrs = append(ptrs, p1, p2, p3)
		}
		pass(tag, ptrs, stride)
		// Advance the pass arguments by R rows.
		ADDQ(U32(4*R), arg("out"))
		t := Load(Param("sstride"), GP64())
		if R == 4 {
			SHLQ(U8(2), t)
			LEAQ(Mem{Base: w, Index: stride, Scale: 4}, w)
		} else {
			ADDQ(stride, w)
		}
		ADDQ(t, arg("scales"))
		t = Load(Param("ng"), GP64())
		if R == 4 {
			SHLQ(U8(2), t)
		}
		ADDQ(t, arg("zidx"))
		SUBQ(U32(R), arg("rows"))
		JMP(LabelRef(tag))
	}
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// q4AVX512 generates the AVX-512 int4 kernel. Each (row, group) gets a
// 16-entry table T[q] = (q − z)·s, the dequantized value of every code, so
// the inner loop is a table lookup: VPMOVZXBD widens 16 code bytes to
// dwords, VPERMPS looks up the low nibble (it only reads index bits 0-3,
// so no mask is needed), VPSRLD 4 + VPERMPS the high nibble. The products
// are then exactly the reference's dequantized weight times x (T is exact
// in float32 for 16-bit scales), with no per-group zero-point correction.
// x must be rearranged per 32 inputs as the 16 even-index inputs then the
// 16 odd-index ones (the low and high nibbles of 16 bytes).
func q4AVX512(st scaleType, asym bool, tab q4Tables) {
	l := avx512
	name := "mvQ4" + st.name + symName(asym) + l.name
	TEXT(name, NOSPLIT, q4Sig)
	Pragma("noescape")
	q4Doc(name, st, asym, "x is the input rearranged per 32 elements: the 16 even-index then the 16 odd-index ones.")
	base := ZMM()
	if asym {
		VMOVUPS(tab.iota, base)
	} else {
		VMOVUPS(tab.sym, base)
	}
	q4Rows(name, func(tag string, ptrs []Register, stride Register) {
		R := len(ptrs)
		acc := make([][]VecVirtual, R)
		for k := range acc {
			acc[k] = []VecVirtual{ZMM(), ZMM()}
			zero(l, acc[k]...)
		}
		xp := Load(Param("x"), GP64())
		sp := Load(Param("scales"), GP64())
		var ss, zi Register
		if R > 1 {
			ss = Load(Param("sstride"), GP64())
		}
		if asym {
			zi = Load(Param("zidx"), GP64())
		}
		wo := GP64()
		XORQ(wo, wo)

		Label(tag + "_g")
		tbl := make([]VecVirtual, R)
		for k := range tbl {
			s := ZMM()
			st.broadcast(l, scaleMem(sp, ss, k), s)
			tbl[k] = ZMM()
			if asym {
				z := ZMM()
				VPBROADCASTD(zeroPoint(zi, k), z)
				VCVTDQ2PS(z, z)
				VSUBPS(z, base, z) // q − z
				VMULPS(z, s, tbl[k])
			} else {
				VMULPS(base, s, tbl[k])
			}
		}
		gend := GP64()
		MOVQ(wo, gend)
		ADDQ(arg("gbytes"), gend)

		Label(tag + "_b")
		xl, xh := ZMM(), ZMM()
		VMOVUPS(Mem{Base: xp}, xl)
		VMOVUPS(Mem{Base: xp, Disp: 64}, xh)
		for k, p := range ptrs {
			c, lo, hi := ZMM(), ZMM(), ZMM()
			VPMOVZXBD(Mem{Base: p, Index: wo, Scale: 1}, c)
			VPERMPS(tbl[k], c, lo)
			VFMADD231PS(xl, lo, acc[k][0])
			VPSRLD(U8(4), c, c)
			VPERMPS(tbl[k], c, hi)
			VFMADD231PS(xh, hi, acc[k][1])
		}
		ADDQ(U32(16), wo)
		ADDQ(U32(128), xp)
		CMPQ(wo, gend)
		JB(LabelRef(tag + "_b"))

		ADDQ(U32(st.size), sp)
		if asym {
			INCQ(zi)
		}
		CMPQ(wo, stride)
		JB(LabelRef(tag + "_g"))
		out := Load(Param("out"), GP64())
		storeSums(l, out, acc)
	})
}

// q4AVX2 generates the AVX2 int4 kernel. AVX2 has no 16-entry permute, so
// codes are converted: per 8 code bytes (16 inputs) VPMOVZXBD, AND 0xF and
// VPSRLD 4 give the low and high nibbles as dwords, VCVTDQ2PS makes them
// floats, and two FMAs add q·x into a per-group accumulator. The group's
// zero point enters through nxs, the lane-wise −Σx of the group (times 8
// when symmetric, precomputed by the caller): the group accumulator starts
// at z·nxs, so it ends at Σ(q − z)·x lane by lane, and is then scaled by s.
// x must be rearranged per 16 inputs as the 8 even-index then the 8
// odd-index ones.
func q4AVX2(st scaleType, asym bool, lowNibble Mem) {
	l := avx2
	name := "mvQ4" + st.name + symName(asym) + l.name
	TEXT(name, NOSPLIT, q4SigAVX2)
	Pragma("noescape")
	q4Doc(name, st, asym, "x is the input rearranged per 16 elements: the 8 even-index then the 8 odd-index ones;",
		"nxs holds 8 floats per group, lane j = −Σ over the group's 16-element blocks of x[j] + x[8+j]",
		"(rearranged), times 8 when symmetric.")
	mask := YMM()
	VPBROADCASTD(lowNibble, mask)
	q4Rows(name, func(tag string, ptrs []Register, stride Register) {
		R := len(ptrs)
		acc := make([]VecVirtual, R)
		for k := range acc {
			acc[k] = YMM()
			zero(l, acc[k])
		}
		xp := Load(Param("x"), GP64())
		sp := Load(Param("scales"), GP64())
		nxp := Load(Param("nxs"), GP64())
		var ss, zi Register
		if R > 1 {
			ss = Load(Param("sstride"), GP64())
		}
		if asym {
			zi = Load(Param("zidx"), GP64())
		}
		wo := GP64()
		XORQ(wo, wo)

		Label(tag + "_g")
		gacc := make([]VecVirtual, R)
		for k := range gacc {
			gacc[k] = YMM()
			if asym {
				zx, z := XMM(), YMM()
				VMOVD(zeroPoint(zi, k), zx)
				VPBROADCASTD(zx, z)
				VCVTDQ2PS(z, z)
				VMULPS(Mem{Base: nxp}, z, gacc[k])
			} else {
				VMOVUPS(Mem{Base: nxp}, gacc[k])
			}
		}
		gend := GP64()
		MOVQ(wo, gend)
		ADDQ(arg("gbytes"), gend)

		Label(tag + "_b")
		xl, xh := YMM(), YMM()
		VMOVUPS(Mem{Base: xp}, xl)
		VMOVUPS(Mem{Base: xp, Disp: 32}, xh)
		for k, p := range ptrs {
			c, lo := YMM(), YMM()
			VPMOVZXBD(Mem{Base: p, Index: wo, Scale: 1}, c)
			VPAND(mask, c, lo)
			VPSRLD(U8(4), c, c)
			VCVTDQ2PS(lo, lo)
			VCVTDQ2PS(c, c)
			VFMADD231PS(xl, lo, gacc[k])
			VFMADD231PS(xh, c, gacc[k])
		}
		ADDQ(U32(8), wo)
		ADDQ(U32(64), xp)
		CMPQ(wo, gend)
		JB(LabelRef(tag + "_b"))

		for k := range gacc {
			s := YMM()
			st.broadcast(l, scaleMem(sp, ss, k), s)
			VFMADD231PS(gacc[k], s, acc[k])
		}
		ADDQ(U32(st.size), sp)
		ADDQ(U32(32), nxp)
		if asym {
			INCQ(zi)
		}
		CMPQ(wo, stride)
		JB(LabelRef(tag + "_g"))
		out := Load(Param("out"), GP64())
		if R == 4 {
			VMOVUPS(sum4(halve(l, acc[0]), halve(l, acc[1]), halve(l, acc[2]), halve(l, acc[3])), Mem{Base: out})
		} else {
			VMOVSS(sum1(halve(l, acc[0])), Mem{Base: out})
		}
	})
}

const q4SigAVX2 = "func(out *float32, w *byte, stride int, scales *byte, sstride int, zeros *byte, zidx int, ng int, x *float32, nxs *float32, gbytes int, rows int)"

func symName(asym bool) string {
	if asym {
		return "Asym"
	}
	return "Sym"
}
