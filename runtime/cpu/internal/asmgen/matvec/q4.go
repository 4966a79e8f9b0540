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
func (s scaleType) broadcast(l level, m Mem, dst vreg) {
	switch s {
	case scaleBF16:
		// Every word is the bf16; shifting each dword left 16 drops the
		// copy in the high word and leaves the float32 bits.
		VPBROADCASTW(m, dst)
		VPSLLD(U8(16), dst, dst)
	case scaleF16:
		h := XMM()
		if l.Wide {
			h = YMM()
		}
		VPBROADCASTW(m, h)
		VCVTPH2PS(h, dst)
	default:
		VBROADCASTSS(m, dst)
	}
}

// q4Consts are the constants of the AVX-512 int4 kernel.
type q4Consts struct {
	mask    Mem // 0xF << 19: a code moved to the top of the float32 mantissa
	one     Mem // 1.0f
	sixteen Mem // 16.0f
}

// q4Doc documents the arguments shared by the int4 kernels.
func q4Doc(name string, st scaleType, asym bool, layout ...string) {
	zp := "symmetric (zero point 8; zeros and zidx unused)"
	if asym {
		zp = "zero point of (row r, group g) at U4 element zidx + r·ng + g of zeros"
	}
	Doc(append([]string{name + " is the W4A16 matrix-vector product out[r] = Σ_c (q[r,c] − z[r,g])·s[r,g]·x[c] for r < rows.",
		"Row r of codes (formats/int4 layout) is at w + r·stride bytes and spans stride bytes;",
		"its groups of gbytes bytes (a multiple of 16) have " + st.name + " scales at scales + r·sstride;",
		zp + ".",
		"l1 nonzero prefetches the following rows into L1 (else into L2 only)."}, layout...)...)
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

// prefetchNext prefetches the part of the next pass's rows that corresponds
// to the bytes [wo, wo+step) of this pass's rows: the R rows of the next
// pass are R·stride contiguous bytes, read here R times as fast as wo
// advances. Without it every pass starts R-1 cold streams, which the
// hardware prefetchers only pick up after several misses (rows are short:
// 576 bytes of codes for 1152 inputs).
//
// PREFETCHT1 fills L2 only, so the prefetched rows do not evict x from L1
// (27 KiB for the 6912-wide down projection); the int4 kernels choose at
// run time (argument l1) because a narrow x leaves room in L1 and their
// code loads then gain from arriving in L1 (measured on Zen 4: T0 +15% on
// 1152-wide rows, T1 +25% on 6912-wide ones; dense rows gain from T1 on
// both).
func prefetchNext(next, wo Register, R, step int, l1 bool) {
	for d := 0; d < R*step; d += 64 {
		m := Mem{Base: next, Index: wo, Scale: uint8(R), Disp: d}
		if l1 {
			PREFETCHT0(m)
		} else {
			PREFETCHT1(m)
		}
	}
}

// prefetchGuard jumps to skip when the pass prefetchNext would read is not
// part of the product (rows left, this pass included, is the register or
// argument slot rows): prefetching past the last row would read memory
// nobody uses, 50% more traffic on FlashHead's 16-row blocks.
func prefetchGuard(rows Op, R int, skip string) {
	CMPQ(rows, U32(R*passesAhead+1))
	JB(LabelRef(skip))
}

// prefetchNextArg is prefetchNext with the level chosen by argument l1.
func prefetchNextArg(tag string, next, wo Register, R, step int) {
	prefetchGuard(arg("rows"), R, tag+"_pfdone")
	CMPQ(arg("l1"), U32(0))
	JE(LabelRef(tag + "_pf2"))
	prefetchNext(next, wo, R, step, true)
	JMP(LabelRef(tag + "_pfdone"))
	Label(tag + "_pf2")
	prefetchNext(next, wo, R, step, false)
	Label(tag + "_pfdone")
}

// passesAhead is how many passes ahead prefetchNext reads.
const passesAhead = 2

// nextPass returns the start of the pass passesAhead passes after the one
// whose row pointers are ptrs.
func nextPass(ptrs []Register, stride Register) Register {
	R := len(ptrs)
	next := GP64()
	LEAQ(Mem{Base: ptrs[R-1], Index: stride, Scale: 1}, next)
	for i := 1; i < passesAhead; i++ {
		LEAQ(Mem{Base: next, Index: stride, Scale: uint8(R)}, next)
	}
	return next
}

// q4Pointers loads the registers every int4 kernel walks a pass with: x,
// the scales, nxs, the zero-point index (asymmetric only, else nil) and
// the byte offset wo into the rows, zeroed.
func q4Pointers(asym bool) (xp, sp, nxp, zi, wo Register) {
	xp = Load(Param("x"), GP64())
	sp = Load(Param("scales"), GP64())
	nxp = Load(Param("nxs"), GP64())
	if asym {
		zi = Load(Param("zidx"), GP64())
	}
	wo = GP64()
	XORQ(wo, wo)
	return xp, sp, nxp, zi, wo
}

// q4Rows emits the row-pass loops shared by both levels: passes of four
// rows, then single rows. pass emits one pass over R rows at w (row k at
// w + k·stride) writing R results at out; the per-pass arguments (out,
// scales, zidx, rows) live in the argument slots and advance there.
func q4Rows(name string, pass func(tag string, ptrs []Register, stride, next Register)) {
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
		// next is where the following pass starts: the pass prefetches it
		// as it goes (see prefetchNext).
		next := nextPass(ptrs, stride)
		pass(tag, ptrs, stride, next)
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

// q4AVX512 generates the AVX-512 int4 kernel, for groups of a multiple of
// 128 inputs. It loads 64 code bytes per row at once: dword i holds the
// codes of inputs 8i..8i+7, code j in bits 4j..4j+3. For each j, a shift
// moves code j to mantissa bits 19-22 and VPTERNLOGD keeps those bits and
// sets the exponent of 1.0, which gives the float v = 1 + q/16 without a
// conversion or a shuffle (the shuffle ports are the bottleneck of a
// VPMOVZXBD + VPERMPS kernel on Zen 4). With x rearranged so that vector j
// holds the x of code j of every dword, one FMA per 16 codes adds v·x into
// a per-group accumulator that starts at −(1 + z/16)·Σx lane by lane
// (nxs, from the caller; the kernel multiplies by 1 + z/16, made by the
// same bit trick), so it ends at Σ (q − z)/16 · x. Groups are scaled by s
// and the row by 16 at the end (exact).
//
// Accuracy: the accumulated terms are up to (1 + q/16)|x| and (1 + z/16)|x|
// while the result is (q − z)/16·x, so rounding errors are relative to
// Σ s(32 + q + z)|x| rather than Σ s|q − z||x| (about 8× the error of
// dequantizing first, still ~1e-6 relative on typical rows: far below the
// int4 quantization error).
func q4AVX512(st scaleType, asym bool, k q4Consts) {
	l := avx512
	name := "mvQ4" + st.name + symName(asym) + l.Name
	TEXT(name, NOSPLIT, q4Sig)
	Pragma("noescape")
	q4Doc(name, st, asym, "Groups are a multiple of 128 inputs (gbytes a multiple of 64).",
		"x is the input rearranged per 128 elements: 8 vectors, vector j holding x[8i+j] for i = 0..15;",
		"nxs holds 16 floats per group, lane i = −Σ over the group's 128-element blocks b of Σ_j x[128b+8i+j],",
		"times 1.5 (1 + 8/16) when symmetric.")
	mask, one := ZMM(), ZMM()
	VPBROADCASTD(k.mask, mask)
	VPBROADCASTD(k.one, one)
	q4Rows(name, func(tag string, ptrs []Register, stride, next Register) {
		R := len(ptrs)
		acc := make([]VecVirtual, R)
		for i := range acc {
			acc[i] = ZMM()
			zero(l, acc[i])
		}
		xp, sp, nxp, zi, wo := q4Pointers(asym)

		Label(tag + "_g")
		// One accumulator per row and group: its chain of 8 FMAs per block
		// (32 cycles) is shorter than the 4 rows' work per block, and the
		// per-group cost (init, scale, add) is a sixth of the work at G=128.
		gacc := make([]VecVirtual, R)
		for i := range gacc {
			gacc[i] = ZMM()
			if asym {
				z := ZMM()
				VPBROADCASTD(zeroPoint(zi, i), z)
				VPSLLD(U8(19), z, z)
				VPORD(one, z, z) // 1 + z/16
				VMULPS(Mem{Base: nxp}, z, gacc[i])
			} else {
				VMOVUPS(Mem{Base: nxp}, gacc[i])
			}
		}
		gend := GP64()
		MOVQ(wo, gend)
		ADDQ(arg("gbytes"), gend)

		Label(tag + "_b")
		xs := make([]VecVirtual, 8)
		for j := range xs {
			xs[j] = ZMM()
			VMOVUPS(Mem{Base: xp, Disp: 64 * j}, xs[j])
		}
		for i, p := range ptrs {
			c := ZMM()
			VMOVDQU32(Mem{Base: p, Index: wo, Scale: 1}, c)
			for j := 0; j < 8; j++ {
				v := ZMM()
				if sh := 19 - 4*j; sh > 0 {
					VPSLLD(U8(sh), c, v)
				} else {
					VPSRLD(U8(-sh), c, v)
				}
				VPTERNLOGD(U8(0xEA), one, mask, v) // (v & mask) | one
				VFMADD231PS(xs[j], v, gacc[i])
			}
		}
		prefetchNextArg(tag, next, wo, R, 64)
		ADDQ(U32(64), wo)
		ADDQ(U32(512), xp)
		CMPQ(wo, gend)
		JB(LabelRef(tag + "_b"))

		ss := Load(Param("sstride"), GP64())
		for i := range gacc {
			s := ZMM()
			st.broadcast(l, scaleMem(sp, ss, i), s)
			VFMADD231PS(gacc[i], s, acc[i])
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
		for i := range acc {
			parts[i] = halve(l, acc[i])
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
	name := "mvQ4" + st.name + symName(asym) + l.Name
	TEXT(name, NOSPLIT, q4Sig)
	Pragma("noescape")
	q4Doc(name, st, asym, "x is the input rearranged per 16 elements: the 8 even-index then the 8 odd-index ones;",
		"nxs holds 8 floats per group, lane j = −Σ over the group's 16-element blocks of x[j] + x[8+j]",
		"(rearranged), times 8 when symmetric.")
	mask := YMM()
	VPBROADCASTD(lowNibble, mask)
	q4Rows(name, func(tag string, ptrs []Register, stride, next Register) {
		R := len(ptrs)
		acc := make([]VecVirtual, R)
		for k := range acc {
			acc[k] = YMM()
			zero(l, acc[k])
		}
		xp, sp, nxp, zi, wo := q4Pointers(asym)

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
		prefetchNextArg(tag, next, wo, R, 8)
		ADDQ(U32(8), wo)
		ADDQ(U32(64), xp)
		CMPQ(wo, gend)
		JB(LabelRef(tag + "_b"))

		ss := Load(Param("sstride"), GP64())
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

const q4Sig = "func(out *float32, w *byte, stride int, scales *byte, sstride int, zeros *byte, zidx int, ng int, x *float32, nxs *float32, gbytes int, rows int, l1 int)"

func symName(asym bool) string {
	if asym {
		return "Asym"
	}
	return "Sym"
}
