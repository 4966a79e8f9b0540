package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// Small-T int4 kernels (batched decode): for a handful of inputs the panel
// packing costs more than the products, so these dequantize in registers
// and multiply each weight vector with all T inputs at once, reading the
// weights once (T matrix-vector products would read them T times). Lanes
// run along the input dimension, as in a matrix-vector kernel: the
// symmetric int4 codes of 16 bytes are widened to dwords (VPMOVZXBD) and
// turned into weights by a table lookup, T[q] = (q − 8)·s per (row, group)
// (VPERMPS reads only the low 4 bits of each index, so the high nibble
// needs a shift and nothing else). Each row's T sums are reduced across
// lanes at the end of the row. x is rearranged per 32 inputs as the 16
// even-index then the 16 odd-index ones, the order of the low and high
// nibbles.

const smallSig = "func(out *float32, outStride int, w *byte, stride int, scales *byte, sstride int, ng int, gbytes int, x *float32, xStride int, rows int)"

// scaleType is the element type of the int4 group scales.
type scaleType struct {
	name string
	size int
}

var scaleTypes = []scaleType{{"BF16", 2}, {"F16", 2}, {"F32", 4}}

// broadcast loads the scale at m into every lane of dst as a float32.
func (s scaleType) broadcast(m Mem, dst VecVirtual, z bool) {
	switch s.name {
	case "BF16":
		// Each dword holds the bf16 twice; shifting left 16 leaves the
		// float32 bits.
		VPBROADCASTW(m, dst)
		VPSLLD(U8(16), dst, dst)
	case "F16":
		h := XMM()
		if z {
			h = YMM()
		}
		VPBROADCASTW(m, h)
		VCVTPH2PS(h, dst)
	default:
		VBROADCASTSS(m, dst)
	}
}

// arg returns the stack slot of a parameter, for values a kernel updates
// once per row pass (GP registers are scarce).
func arg(name string) Mem {
	b, err := Param(name).Resolve()
	if err != nil {
		panic(err)
	}
	return b.Addr
}

// prefetchNext prefetches the bytes of the next pass that match an
// iteration consuming step bytes of each of R rows at offset wo, unless
// this pass is the call's last: past the last row is memory this call does
// not read (another thread's block, or the end of the weight).
func prefetchNext(tag string, next, wo Register, R, step int) {
	CMPQ(arg("rows"), U32(R))
	JBE(LabelRef(tag + "_nopf"))
	for d := 0; d < R*step; d += 64 {
		PREFETCHT0(Mem{Base: next, Index: wo, Scale: uint8(R), Disp: d})
	}
	Label(tag + "_nopf")
}

// tokenAddr returns the address of input t (t < 4) at byte offset disp.
func tokenAddr(xp, xs, xs3 Register, t, disp int) Mem {
	m := Mem{Base: xp, Disp: disp}
	switch t {
	case 1:
		m.Index, m.Scale = xs, 1
	case 2:
		m.Index, m.Scale = xs, 2
	case 3:
		m.Index, m.Scale = xs3, 1
	}
	return m
}

// reduce sums the lanes of v into lane 0 of an xmm, with EVEX-encodable
// instructions only (v may live in registers 16-31).
func reduce(v VecVirtual, z bool) VecVirtual {
	y := v
	if z {
		y = YMM()
		VEXTRACTF64X4(U8(1), v, y)
		VADDPS(y, v.AsY(), y)
	}
	x := XMM()
	if z {
		VEXTRACTF32X4(U8(1), y, x)
	} else {
		VEXTRACTF128(U8(1), y, x)
	}
	VADDPS(x, y.AsX(), x)
	t := XMM()
	VPERMILPS(U8(0x4E), x, t) // x2 x3 x0 x1
	VADDPS(t, x, x)
	VPERMILPS(U8(0xB1), x, t) // pairs swapped
	VADDPS(t, x, x)
	return x
}

// smallRows emits the row passes shared by both levels: passes of R rows,
// then single rows. pass emits one pass over the rows at ptrs, with the
// results of input t for row k stored by the pass itself; the per-pass
// arguments (out, w, scales, rows) advance in their argument slots. next
// points at the next pass's rows: the rows of a pass are contiguous, so a
// pass at byte wo of its rows prefetches byte R·wo of the next one (see
// prefetchNext). The hardware prefetcher alone does poorly on rows of a
// few hundred bytes: each pass starts R short streams.
func smallRows(name string, R int, pass func(tag string, ptrs []Register, next Register)) {
	smallRowsAdvancing(name, R, []string{"w", "stride", "scales", "sstride"}, pass)
}

// smallRowsAdvancing is smallRows with the pointer arguments to advance
// after a pass given as (pointer, row stride) name pairs.
func smallRowsAdvancing(name string, R int, advance []string, pass func(tag string, ptrs []Register, next Register)) {
	for _, n := range []int{R, 1} {
		if n == 1 && R == 1 {
			continue
		}
		tag := fmt.Sprintf("%s_r%d", name, n)
		Label(tag)
		CMPQ(arg("rows"), U32(n))
		if n == R {
			if R > 1 {
				JL(LabelRef(fmt.Sprintf("%s_r1", name)))
			} else {
				JL(LabelRef(name + "_done"))
			}
		} else {
			JL(LabelRef(name + "_done"))
		}
		w := Load(Param("w"), GP64())
		ptrs := []Register{w}
		stride := Load(Param("stride"), GP64())
		next := GP64()
		if n == 1 {
			LEAQ(Mem{Base: w, Index: stride, Scale: 1}, next)
		} else {
			LEAQ(Mem{Base: w, Index: stride, Scale: uint8(n)}, next)
		}
		if n == 4 || n == 2 {
			for k := 1; k < n; k++ {
				p := GP64()
				switch k {
				case 1:
					LEAQ(Mem{Base: w, Index: stride, Scale: 1}, p)
				case 2:
					LEAQ(Mem{Base: w, Index: stride, Scale: 2}, p)
				case 3:
					LEAQ(Mem{Base: ptrs[1], Index: stride, Scale: 2}, p)
				}
				ptrs = append(ptrs, p)
			}
		}
		pass(tag, ptrs, next)
		ADDQ(U32(4*n), arg("out"))
		for i := 0; i < len(advance); i += 2 {
			t := Load(Param(advance[i+1]), GP64())
			if n > 1 {
				IMUL3Q(U32(n), t, t)
			}
			ADDQ(t, arg(advance[i]))
		}
		SUBQ(U32(n), arg("rows"))
		JMP(LabelRef(tag))
	}
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// smallAVX512 emits gemmQ4T<T><scale>AVX512: the int4 product for T
// inputs, four or two rows a pass.
func smallAVX512(T int, st scaleType, symTable Mem) {
	name := fmt.Sprintf("gemmQ4T%d%sAVX512", T, st.name)
	TEXT(name, NOSPLIT, smallSig)
	Pragma("noescape")
	Doc(name+fmt.Sprintf(" sets out[t·outStride/4 + r] = Σ_c (q[r,c] − 8)·s[r,c/G]·x[t,c] for r < rows, t < %d (symmetric int4, %s scales).", T, st.name),
		"Row r's codes are at w + r·stride, its scales at scales + r·sstride, gbytes code bytes (a multiple of 16) a group;",
		"x (xStride bytes between inputs) is rearranged per 32: the 16 even-index then the 16 odd-index inputs.")
	// Four rows a pass share each input load; at T = 4 that would take
	// all 32 registers, more than avo's allocator manages, so two.
	rows := 4
	if T > 3 {
		rows = 2
	}
	smallRows(name, rows, func(tag string, ptrs []Register, next Register) {
		R := len(ptrs)
		acc := make([][]VecVirtual, R)
		for k := range acc {
			acc[k] = make([]VecVirtual, T)
			for t := range acc[k] {
				acc[k][t] = ZMM()
				VPXORD(acc[k][t], acc[k][t], acc[k][t])
			}
		}
		xp := Load(Param("x"), GP64())
		xs := Load(Param("xStride"), GP64())
		xs3 := GP64()
		LEAQ(Mem{Base: xs, Index: xs, Scale: 2}, xs3)
		sp := Load(Param("scales"), GP64())
		var ss Register
		if R > 1 {
			ss = Load(Param("sstride"), GP64())
		}
		wo := GP64()
		XORQ(wo, wo)

		Label(tag + "_g")
		tbl := make([]VecVirtual, R)
		for k := range tbl {
			s := ZMM()
			m := Mem{Base: sp}
			if k > 0 {
				m = Mem{Base: sp, Index: ss, Scale: 1}
				switch k {
				case 2:
					m.Scale = 2
				case 3:
					t := GP64()
					LEAQ(Mem{Base: sp, Index: ss, Scale: 2}, t)
					m = Mem{Base: t, Index: ss, Scale: 1}
				}
			}
			st.broadcast(m, s, true)
			tbl[k] = ZMM()
			VMULPS(symTable, s, tbl[k])
		}
		gend := GP64()
		MOVQ(wo, gend)
		ADDQ(arg("gbytes"), gend)

		Label(tag + "_b")
		xl, xh := make([]VecVirtual, T), make([]VecVirtual, T)
		for t := 0; t < T; t++ {
			xl[t], xh[t] = ZMM(), ZMM()
			VMOVUPS(tokenAddr(xp, xs, xs3, t, 0), xl[t])
			VMOVUPS(tokenAddr(xp, xs, xs3, t, 64), xh[t])
		}
		for k, p := range ptrs {
			// Each half is used up before the next is made (one register
			// fewer).
			c, lo, hi := ZMM(), ZMM(), ZMM()
			VPMOVZXBD(Mem{Base: p, Index: wo, Scale: 1}, c)
			VPERMPS(tbl[k], c, lo)
			for t := 0; t < T; t++ {
				VFMADD231PS(xl[t], lo, acc[k][t])
			}
			VPSRLD(U8(4), c, c)
			VPERMPS(tbl[k], c, hi)
			for t := 0; t < T; t++ {
				VFMADD231PS(xh[t], hi, acc[k][t])
			}
		}
		prefetchNext(tag, next, wo, R, 16)
		ADDQ(U32(16), wo)
		ADDQ(U32(128), xp)
		CMPQ(wo, gend)
		JB(LabelRef(tag + "_b"))

		ADDQ(U32(st.size), sp)
		CMPQ(wo, arg("stride"))
		JB(LabelRef(tag + "_g"))
		storeSmall(acc, true)
	})
}

// storeSmall reduces acc[k][t] (row k of the pass, input t) and stores it
// at out + t·outStride + 4k.
func storeSmall(acc [][]VecVirtual, z bool) {
	out := Load(Param("out"), GP64())
	os := Load(Param("outStride"), GP64())
	T := len(acc[0])
	for t := 0; t < T; t++ {
		for k := range acc {
			VMOVSS(reduce(acc[k][t], z), Mem{Base: out, Disp: 4 * k})
		}
		if t+1 < T {
			ADDQ(os, out)
		}
	}
}

// smallAVX2 emits gemmQ4T<T><scale>AVX2: smallAVX512 for AVX2, which has
// no 16-entry permute: the nibbles are masked or shifted, converted
// (VCVTDQ2PS) and dequantized with one FMA, q·s + (−8·s), per 8 lanes;
// two rows a pass, inputs read from memory by the FMAs (16 registers).
// x is rearranged per 16: the 8 even-index then the 8 odd-index inputs.
func smallAVX2(T int, st scaleType, lowNibble, minusEight Mem) {
	name := fmt.Sprintf("gemmQ4T%d%sAVX2", T, st.name)
	TEXT(name, NOSPLIT, smallSig)
	Pragma("noescape")
	Doc(name + fmt.Sprintf(" is gemmQ4T%d%sAVX512 for AVX2; x is rearranged per 16: the 8 even-index then the 8 odd-index inputs.", T, st.name))
	smallRows(name, 2, func(tag string, ptrs []Register, next Register) {
		R := len(ptrs)
		acc := make([][]VecVirtual, R)
		for k := range acc {
			acc[k] = make([]VecVirtual, T)
			for t := range acc[k] {
				acc[k][t] = YMM()
				VXORPS(acc[k][t], acc[k][t], acc[k][t])
			}
		}
		xp := Load(Param("x"), GP64())
		xs := Load(Param("xStride"), GP64())
		xs3 := GP64()
		LEAQ(Mem{Base: xs, Index: xs, Scale: 2}, xs3)
		sp := Load(Param("scales"), GP64())
		var ss Register
		if R > 1 {
			ss = Load(Param("sstride"), GP64())
		}
		wo := GP64()
		XORQ(wo, wo)

		Label(tag + "_g")
		sc, bias := make([]VecVirtual, R), make([]VecVirtual, R)
		for k := range sc {
			sc[k], bias[k] = YMM(), YMM()
			m := Mem{Base: sp}
			if k > 0 {
				m = Mem{Base: sp, Index: ss, Scale: 1}
			}
			st.broadcast(m, sc[k], false)
			// bias = −8·s: exact, and q·s − 8·s is then exactly (q − 8)·s.
			VMULPS(minusEight, sc[k], bias[k])
		}
		gend := GP64()
		MOVQ(wo, gend)
		ADDQ(arg("gbytes"), gend)

		Label(tag + "_b")
		for k, p := range ptrs {
			c, lo := YMM(), YMM()
			VPMOVZXBD(Mem{Base: p, Index: wo, Scale: 1}, c)
			VPAND(lowNibble, c, lo)
			VPSRLD(U8(4), c, c)
			VCVTDQ2PS(lo, lo)
			VCVTDQ2PS(c, c)
			VFMADD213PS(bias[k], sc[k], lo)
			VFMADD213PS(bias[k], sc[k], c)
			for t := 0; t < T; t++ {
				VFMADD231PS(tokenAddr(xp, xs, xs3, t, 0), lo, acc[k][t])
				VFMADD231PS(tokenAddr(xp, xs, xs3, t, 32), c, acc[k][t])
			}
		}
		prefetchNext(tag, next, wo, R, 8)
		ADDQ(U32(8), wo)
		ADDQ(U32(64), xp)
		CMPQ(wo, gend)
		JB(LabelRef(tag + "_b"))

		ADDQ(U32(st.size), sp)
		CMPQ(wo, arg("stride"))
		JB(LabelRef(tag + "_g"))
		storeSmall(acc, false)
	})
}

const smallDenseSig = "func(out *float32, outStride int, w *byte, stride int, x *float32, xStride int, n int, rows int)"

// smallDense emits gemmDenseT<T><dt><level>: the small-T product of a
// bf16, f16 or f32 weight, lanes along the input dimension, R rows a pass
// (4 with zmm, 2 with the 16 ymm of AVX2). The weights are widened in
// registers (bf16: zero-extend and shift; f16: VCVTPH2PS) and multiplied
// with the T inputs, which stay in natural order.
func smallDense(T int, dt string, z bool) {
	level, lanes, R := "AVX2", 8, 2
	vec := YMM
	if z {
		level, lanes, R = "AVX512", 16, 4
		vec = ZMM
	}
	name := fmt.Sprintf("gemmDenseT%d%s%s", T, dt, level)
	TEXT(name, NOSPLIT, smallDenseSig)
	Pragma("noescape")
	Doc(name+fmt.Sprintf(" sets out[t·outStride/4 + r] = Σ_{c<n} w[r,c]·x[t,c] for r < rows, t < %d (%s weights, row r at w + r·stride;", T, dt),
		fmt.Sprintf("inputs xStride bytes apart; n a multiple of %d).", lanes))
	elem := 2
	if dt == "F32" {
		elem = 4
	}
	smallRowsAdvancing(name, R, []string{"w", "stride"}, func(tag string, ptrs []Register, next Register) {
		acc := make([][]VecVirtual, len(ptrs))
		for k := range acc {
			acc[k] = make([]VecVirtual, T)
			for t := range acc[k] {
				acc[k][t] = vec()
				if z {
					VPXORD(acc[k][t], acc[k][t], acc[k][t])
				} else {
					VXORPS(acc[k][t], acc[k][t], acc[k][t])
				}
			}
		}
		xp := Load(Param("x"), GP64())
		xs := Load(Param("xStride"), GP64())
		xs3 := GP64()
		LEAQ(Mem{Base: xs, Index: xs, Scale: 2}, xs3)
		wo := GP64()
		XORQ(wo, wo)
		end := Load(Param("n"), GP64())
		if elem == 2 {
			ADDQ(end, end)
		} else {
			SHLQ(U8(2), end)
		}

		Label(tag + "_k")
		xv := make([]VecVirtual, T)
		for t := range xv {
			xv[t] = vec()
			VMOVUPS(tokenAddr(xp, xs, xs3, t, 0), xv[t])
		}
		for k, p := range ptrs {
			wv := vec()
			m := Mem{Base: p, Index: wo, Scale: 1}
			switch dt {
			case "BF16":
				VPMOVZXWD(m, wv)
				VPSLLD(U8(16), wv, wv)
			case "F16":
				VCVTPH2PS(m, wv)
			default:
				VMOVUPS(m, wv)
			}
			for t := 0; t < T; t++ {
				VFMADD231PS(xv[t], wv, acc[k][t])
			}
		}
		prefetchNext(tag, next, wo, len(ptrs), lanes*elem)
		ADDQ(U32(lanes*elem), wo)
		ADDQ(U32(lanes*4), xp)
		CMPQ(wo, end)
		JB(LabelRef(tag + "_k"))
		storeSmall(acc, z)
	})
}
