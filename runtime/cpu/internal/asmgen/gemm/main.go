// Command gemm generates the matrix-matrix (prefill) kernels of
// runtime/cpu: gemm_amd64.s and its Go declarations gemm_stub_amd64.go.
// It runs from runtime/cpu through the go:generate line of gemm.go:
//
//	go run ./internal/asmgen/gemm -out gemm_amd64.s -stubs gemm_stub_amd64.go
//
// Two kinds of routines, for AVX-512 (zmm, 32 registers) and AVX2+FMA (ymm,
// 16 registers):
//
//   - pack routines turn a strip of weight rows (int4 codes with scales,
//     bf16, f16 or f32) into float32, transposed so that one vector holds
//     the same column of consecutive rows: panel[k][row]. A panel is 32
//     rows wide for AVX-512 and 16 for AVX2 (two vectors);
//   - microkernels multiply a packed panel with nr input vectors (tokens)
//     and keep the whole panel-rows x nr output tile in registers over the
//     k loop: per column k they load the panel's two vectors, broadcast
//     x[t][k] for each token and issue 2·nr FMAs. Rows are in the lanes, so
//     the tile is stored as nr contiguous runs of out[t*Rows + r].
//
// The Go side (runtime/cpu/gemm.go) picks the panel, blocks k, prepares the
// group scales, handles ragged edges in Go and calls these.
package main

import (
	"fmt"
	"math"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// Tile sizes; they must agree with gemm_amd64.go.
const (
	panel512 = 32 // rows per AVX-512 panel: two zmm
	panel256 = 16 // rows per AVX2 panel: two ymm
	maxNR512 = 12 // 2·12 accumulators + 2 weights + broadcasts ≤ 32 zmm
	maxNR256 = 6  // 2·6 accumulators + 2 weights + 1 broadcast ≤ 16 ymm
	unrollK  = 4  // k columns per microkernel loop iteration
	// maxSmallT is the most inputs the small-T kernels take (see
	// small.go); from there on the packed panels are faster.
	maxSmallT = 4
)

func main() {
	nibbles := GLOBL("gemmNibbleFloats", RODATA|NOPTR)
	for i := 0; i < 16; i++ {
		// As bits: avo prints F32(1) as $(1), which the assembler stores
		// as the integer 1.
		DATA(4*i, U32(math.Float32bits(float32(i))))
	}
	lowNibble := GLOBL("gemmLowNibble", RODATA|NOPTR)
	for i := 0; i < 8; i++ {
		DATA(4*i, U32(0xF))
	}

	symTable := GLOBL("gemmSymFloats", RODATA|NOPTR)
	for i := 0; i < 16; i++ {
		DATA(4*i, U32(math.Float32bits(float32(i-8))))
	}
	minusEight := GLOBL("gemmMinusEight", RODATA|NOPTR)
	for i := 0; i < 8; i++ {
		DATA(4*i, U32(math.Float32bits(-8)))
	}

	for nr := 1; nr <= maxNR512; nr++ {
		kernel(nr, true)
	}
	for nr := 1; nr <= maxNR256; nr++ {
		kernel(nr, false)
	}
	packQ4AVX512(nibbles)
	packQ4AVX2(lowNibble)
	for _, dt := range []string{"BF16", "F16", "F32"} {
		packDense(dt, true)
		packDense(dt, false)
	}
	for T := 2; T <= maxSmallT; T++ {
		for _, st := range scaleTypes {
			smallAVX512(T, st, symTable)
			smallAVX2(T, st, lowNibble, minusEight)
		}
		for _, dt := range []string{"BF16", "F16", "F32"} {
			smallDense(T, dt, true)
			smallDense(T, dt, false)
		}
	}
	Generate()
}

// rowAddr returns the address of row i of a strip with row stride s
// (bytes) and s3 = 3·s, from base pointers b[0] = row 0, b[1] = row 4, ...
// (x86 addressing scales the index by at most 8, so every fourth row gets
// its own base).
func rowAddr(b []Register, s, s3 Register, i, disp int) Mem {
	m := Mem{Base: b[i/4], Disp: disp}
	switch i % 4 {
	case 1:
		m.Index, m.Scale = s, 1
	case 2:
		m.Index, m.Scale = s, 2
	case 3:
		m.Index, m.Scale = s3, 1
	}
	return m
}

// rowBases loads p and returns base pointers for rows 0, 4, 8, ... below n.
func rowBases(p, s Register, n int) []Register {
	b := []Register{p}
	for r := 4; r < n; r += 4 {
		q := GP64()
		if r == 12 {
			LEAQ(Mem{Base: b[2], Index: s, Scale: 4}, q)
		} else {
			LEAQ(Mem{Base: p, Index: s, Scale: uint8(r)}, q)
		}
		b = append(b, q)
	}
	return b
}

// kernel emits gemmKernel{512,256}x<nr>: out[t·outStride + r] (+)= Σ_k
// w[k·panel + r] · x[t·xStride + k] for r < panel, t < nr, k < k.
func kernel(nr int, z bool) {
	name, panel, vbytes := fmt.Sprintf("gemmKernel256x%d", nr), panel256, 32
	vec := YMM
	if z {
		name, panel, vbytes = fmt.Sprintf("gemmKernel512x%d", nr), panel512, 64
		vec = ZMM
	}
	TEXT(name, NOSPLIT, "func(w *float32, x *float32, xStride int, k int, out *float32, outStride int, acc int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s multiplies a packed %d-row panel w [k][%d] with %d input rows of x", name, panel, panel, nr),
		"(xStride bytes apart) into out (outStride bytes between tokens); acc != 0 adds to out.")
	w := Load(Param("w"), GP64())
	x := Load(Param("x"), GP64())
	s := Load(Param("xStride"), GP64())
	k := Load(Param("k"), GP64())
	s3 := GP64()
	LEAQ(Mem{Base: s, Index: s, Scale: 2}, s3)
	xb := rowBases(x, s, nr)

	accs := make([][2]VecVirtual, nr)
	for t := range accs {
		for h := 0; h < 2; h++ {
			accs[t][h] = vec()
			if z {
				VPXORD(accs[t][h], accs[t][h], accs[t][h])
			} else {
				VXORPS(accs[t][h], accs[t][h], accs[t][h])
			}
		}
	}
	step := func(u int) {
		w0, w1 := vec(), vec()
		VMOVUPS(Mem{Base: w, Disp: u * 2 * vbytes}, w0)
		VMOVUPS(Mem{Base: w, Disp: u*2*vbytes + vbytes}, w1)
		for t := 0; t < nr; t++ {
			b := vec()
			VBROADCASTSS(rowAddr(xb, s, s3, t, 4*u), b)
			VFMADD231PS(w0, b, accs[t][0])
			VFMADD231PS(w1, b, accs[t][1])
		}
	}
	advance := func(cols int) {
		ADDQ(U32(cols*2*vbytes), w)
		for _, b := range xb {
			ADDQ(U32(4*cols), b)
		}
	}
	Label(name + "_loop")
	CMPQ(k, U32(unrollK))
	JL(LabelRef(name + "_tail"))
	for u := 0; u < unrollK; u++ {
		step(u)
	}
	advance(unrollK)
	SUBQ(U32(unrollK), k)
	JMP(LabelRef(name + "_loop"))

	Label(name + "_tail")
	TESTQ(k, k)
	JZ(LabelRef(name + "_done"))
	step(0)
	advance(1)
	DECQ(k)
	JMP(LabelRef(name + "_tail"))

	Label(name + "_done")
	out := Load(Param("out"), GP64())
	os := Load(Param("outStride"), GP64())
	acc := Load(Param("acc"), GP64())
	TESTQ(acc, acc)
	JZ(LabelRef(name + "_store"))
	o := GP64()
	MOVQ(out, o)
	for t := 0; t < nr; t++ {
		VADDPS(Mem{Base: o}, accs[t][0], accs[t][0])
		VADDPS(Mem{Base: o, Disp: vbytes}, accs[t][1], accs[t][1])
		if t+1 < nr {
			ADDQ(os, o)
		}
	}
	Label(name + "_store")
	for t := 0; t < nr; t++ {
		VMOVUPS(accs[t][0], Mem{Base: out})
		VMOVUPS(accs[t][1], Mem{Base: out, Disp: vbytes})
		if t+1 < nr {
			ADDQ(os, out)
		}
	}
	VZEROUPPER()
	RET()
}

// transpose16 transposes 16 zmm of 16 dwords: on return c[j] holds
// element j of every r[i], in lane i.
func transpose16(r []VecVirtual) []VecVirtual {
	t := make([]VecVirtual, 16)
	for i := 0; i < 8; i++ {
		t[2*i], t[2*i+1] = ZMM(), ZMM()
		VUNPCKLPS(r[2*i+1], r[2*i], t[2*i])   // per 128-bit lane: a0 b0 a1 b1
		VUNPCKHPS(r[2*i+1], r[2*i], t[2*i+1]) // a2 b2 a3 b3
	}
	// u[4i+j], 128-bit lane L: column 4L+j of rows 4i..4i+3.
	u := make([]VecVirtual, 16)
	for i := 0; i < 4; i++ {
		for j := 0; j < 4; j++ {
			u[4*i+j] = ZMM()
		}
		VUNPCKLPD(t[4*i+2], t[4*i], u[4*i])
		VUNPCKHPD(t[4*i+2], t[4*i], u[4*i+1])
		VUNPCKLPD(t[4*i+3], t[4*i+1], u[4*i+2])
		VUNPCKHPD(t[4*i+3], t[4*i+1], u[4*i+3])
	}
	c := make([]VecVirtual, 16)
	for j := 0; j < 4; j++ {
		lo0, hi0, lo1, hi1 := ZMM(), ZMM(), ZMM(), ZMM()
		VSHUFF32X4(U8(0x44), u[4+j], u[j], lo0) // lanes 0,1 of rows 0-3 and 4-7
		VSHUFF32X4(U8(0xEE), u[4+j], u[j], hi0) // lanes 2,3
		VSHUFF32X4(U8(0x44), u[12+j], u[8+j], lo1)
		VSHUFF32X4(U8(0xEE), u[12+j], u[8+j], hi1)
		for L := 0; L < 4; L++ {
			c[4*L+j] = ZMM()
		}
		VSHUFF32X4(U8(0x88), lo1, lo0, c[j])
		VSHUFF32X4(U8(0xDD), lo1, lo0, c[4+j])
		VSHUFF32X4(U8(0x88), hi1, hi0, c[8+j])
		VSHUFF32X4(U8(0xDD), hi1, hi0, c[12+j])
	}
	return c
}

// transpose8 transposes 8 ymm of 8 dwords: c[j] holds element j of every
// r[i], in lane i.
func transpose8(r []VecVirtual) []VecVirtual {
	t := make([]VecVirtual, 8)
	for i := 0; i < 4; i++ {
		t[2*i], t[2*i+1] = YMM(), YMM()
		VUNPCKLPS(r[2*i+1], r[2*i], t[2*i])
		VUNPCKHPS(r[2*i+1], r[2*i], t[2*i+1])
	}
	u := make([]VecVirtual, 8)
	for i := 0; i < 2; i++ {
		for j := 0; j < 4; j++ {
			u[4*i+j] = YMM()
		}
		VUNPCKLPD(t[4*i+2], t[4*i], u[4*i])
		VUNPCKHPD(t[4*i+2], t[4*i], u[4*i+1])
		VUNPCKLPD(t[4*i+3], t[4*i+1], u[4*i+2])
		VUNPCKHPD(t[4*i+3], t[4*i+1], u[4*i+3])
	}
	c := make([]VecVirtual, 8)
	for j := 0; j < 4; j++ {
		c[j], c[4+j] = YMM(), YMM()
		VPERM2F128(U8(0x20), u[4+j], u[j], c[j])
		VPERM2F128(U8(0x31), u[4+j], u[j], c[4+j])
	}
	return c
}

// packQ4AVX512 emits gemmPackQ4AVX512: 16 rows of int4 codes, blocks of
// 128 columns (64 bytes a row), dequantized as q·s + bias into a 32-wide
// panel. sc and bias hold one 16-lane vector per group, 128 bytes apart
// (the panel's [group][32] layout); gdw is the group size in dwords (8
// codes). The vector after the last group is read but not used.
func packQ4AVX512(nibbles Mem) {
	TEXT("gemmPackQ4AVX512", NOSPLIT, "func(dst *float32, q *byte, qStride int, blocks int, sc *float32, bias *float32, gdw int)")
	Pragma("noescape")
	Doc("gemmPackQ4AVX512 dequantizes 16 int4 rows (qStride bytes apart) into a 32-wide float32 panel, 128 columns a block.")
	dst := Load(Param("dst"), GP64())
	q := Load(Param("q"), GP64())
	s := Load(Param("qStride"), GP64())
	blocks := Load(Param("blocks"), GP64())
	sc := Load(Param("sc"), GP64())
	bias := Load(Param("bias"), GP64())
	gdw := Load(Param("gdw"), GP64())
	s3 := GP64()
	LEAQ(Mem{Base: s, Index: s, Scale: 2}, s3)
	cnt := GP64()
	MOVQ(gdw, cnt)
	tbl, vs, vb := ZMM(), ZMM(), ZMM()
	VMOVUPS(nibbles, tbl)
	VMOVUPS(Mem{Base: sc}, vs)
	VMOVUPS(Mem{Base: bias}, vb)

	Label("q4z_loop")
	TESTQ(blocks, blocks)
	JZ(LabelRef("q4z_done"))
	qb := rowBases(q, s, 16)
	r := make([]VecVirtual, 16)
	for i := range r {
		r[i] = ZMM()
		VMOVDQU32(rowAddr(qb, s, s3, i, 0), r[i])
	}
	c := transpose16(r)
	for ci := 0; ci < 16; ci++ {
		// c[ci] lane i: codes of columns 8ci..8ci+7 of row i, column
		// 8ci+j in bits 4j..4j+3. VPERMPS looks up the low 4 bits only,
		// so a shift is all the unpacking a code needs.
		for j := 0; j < 8; j++ {
			f := ZMM()
			if j == 0 {
				VPERMPS(tbl, c[ci], f)
			} else {
				idx := ZMM()
				VPSRLD(U8(4*j), c[ci], idx)
				VPERMPS(tbl, idx, f)
			}
			VFMADD213PS(vb, vs, f)
			VMOVUPS(f, Mem{Base: dst, Disp: (8*ci + j) * panel512 * 4})
		}
		next := fmt.Sprintf("q4z_g%d", ci)
		DECQ(cnt)
		JNZ(LabelRef(next))
		ADDQ(U32(panel512*4), sc)
		ADDQ(U32(panel512*4), bias)
		VMOVUPS(Mem{Base: sc}, vs)
		VMOVUPS(Mem{Base: bias}, vb)
		MOVQ(gdw, cnt)
		Label(next)
	}
	ADDQ(U32(64), q)
	ADDQ(U32(128*panel512*4), dst)
	DECQ(blocks)
	JMP(LabelRef("q4z_loop"))

	Label("q4z_done")
	VZEROUPPER()
	RET()
}

// packQ4AVX2 emits gemmPackQ4AVX2: gemmPackQ4AVX512 for 8 rows, blocks of
// 64 columns (32 bytes a row), into a 16-wide panel ([group][16] scales).
func packQ4AVX2(lowNibble Mem) {
	TEXT("gemmPackQ4AVX2", NOSPLIT, "func(dst *float32, q *byte, qStride int, blocks int, sc *float32, bias *float32, gdw int)")
	Pragma("noescape")
	Doc("gemmPackQ4AVX2 dequantizes 8 int4 rows (qStride bytes apart) into a 16-wide float32 panel, 64 columns a block.")
	dst := Load(Param("dst"), GP64())
	q := Load(Param("q"), GP64())
	s := Load(Param("qStride"), GP64())
	blocks := Load(Param("blocks"), GP64())
	sc := Load(Param("sc"), GP64())
	bias := Load(Param("bias"), GP64())
	gdw := Load(Param("gdw"), GP64())
	s3 := GP64()
	LEAQ(Mem{Base: s, Index: s, Scale: 2}, s3)
	cnt := GP64()
	MOVQ(gdw, cnt)

	Label("q4y_loop")
	TESTQ(blocks, blocks)
	JZ(LabelRef("q4y_done"))
	qb := rowBases(q, s, 8)
	r := make([]VecVirtual, 8)
	for i := range r {
		r[i] = YMM()
		VMOVDQU(rowAddr(qb, s, s3, i, 0), r[i])
	}
	c := transpose8(r)
	// Only 16 ymm: the scales are reloaded from memory rather than kept
	// across the transpose.
	for ci := 0; ci < 8; ci++ {
		vs, vb := YMM(), YMM()
		VMOVUPS(Mem{Base: sc}, vs)
		VMOVUPS(Mem{Base: bias}, vb)
		for j := 0; j < 8; j++ {
			f := YMM()
			if j == 0 {
				VPAND(lowNibble, c[ci], f)
			} else {
				VPSRLD(U8(4*j), c[ci], f)
				VPAND(lowNibble, f, f)
			}
			VCVTDQ2PS(f, f)
			VFMADD213PS(vb, vs, f)
			VMOVUPS(f, Mem{Base: dst, Disp: (8*ci + j) * panel256 * 4})
		}
		next := fmt.Sprintf("q4y_g%d", ci)
		DECQ(cnt)
		JNZ(LabelRef(next))
		ADDQ(U32(panel256*4), sc)
		ADDQ(U32(panel256*4), bias)
		MOVQ(gdw, cnt)
		Label(next)
	}
	ADDQ(U32(32), q)
	ADDQ(U32(64*panel256*4), dst)
	DECQ(blocks)
	JMP(LabelRef("q4y_loop"))

	Label("q4y_done")
	VZEROUPPER()
	RET()
}

// packDense emits gemmPack<dt>{AVX512,AVX2}: 16 (8) rows of bf16, f16 or
// f32 weights, blocks of 16 (8) columns, widened and transposed into a 32
// (16) wide float32 panel.
func packDense(dt string, z bool) {
	suffix, rows, panel := "AVX2", 8, panel256
	vec := YMM
	if z {
		suffix, rows, panel = "AVX512", 16, panel512
		vec = ZMM
	}
	name := "gemmPack" + dt + suffix
	TEXT(name, NOSPLIT, "func(dst *float32, src *byte, srcStride int, blocks int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s widens %d %s rows (srcStride bytes apart) into a %d-wide float32 panel, %d columns a block.", name, rows, dt, panel, rows))
	dst := Load(Param("dst"), GP64())
	src := Load(Param("src"), GP64())
	s := Load(Param("srcStride"), GP64())
	blocks := Load(Param("blocks"), GP64())
	s3 := GP64()
	LEAQ(Mem{Base: s, Index: s, Scale: 2}, s3)
	elem := 2
	if dt == "F32" {
		elem = 4
	}

	Label(name + "_loop")
	TESTQ(blocks, blocks)
	JZ(LabelRef(name + "_done"))
	sb := rowBases(src, s, rows)
	r := make([]VecVirtual, rows)
	for i := range r {
		r[i] = vec()
		m := rowAddr(sb, s, s3, i, 0)
		switch dt {
		case "BF16":
			VPMOVZXWD(m, r[i])
			VPSLLD(U8(16), r[i], r[i])
		case "F16":
			VCVTPH2PS(m, r[i])
		case "F32":
			VMOVUPS(m, r[i])
		}
	}
	var c []VecVirtual
	if z {
		c = transpose16(r)
	} else {
		c = transpose8(r)
	}
	for j := range c {
		VMOVUPS(c[j], Mem{Base: dst, Disp: j * panel * 4})
	}
	ADDQ(U32(rows*elem), src)
	ADDQ(U32(rows*panel*4), dst)
	DECQ(blocks)
	JMP(LabelRef(name + "_loop"))

	Label(name + "_done")
	VZEROUPPER()
	RET()
}
