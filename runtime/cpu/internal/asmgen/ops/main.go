// Command ops generates the element-wise and small-attention kernels of
// runtime/cpu (ops_amd64.s and its Go declarations ops_stub_amd64.go) with
// avo. It runs from runtime/cpu through the go:generate line of ops.go:
//
//	go run ./internal/asmgen/ops -out ops_amd64.s -stubs ops_stub_amd64.go
//
// The kernels are the per-row work between the matrix products of a decode
// step (softmax, gated activations, RMSNorm, attention over a small
// head_dim). On a small model they cost as much as the products, and the
// scalar Go versions spend most of it in float64 math.Exp and math.Tanh.
//
// Every kernel exists for AVX2+FMA (ymm, registers 0-15, VEX) and AVX-512
// F (zmm). They take any length: the last partial vector is loaded and
// stored under a mask (an opmask on AVX-512, VMASKMOVPS on AVX2), so the Go
// side has no tails to handle. The scores and weighted-sum kernels need
// head_dim to be a multiple of the vector width (the Go side checks).
// Every kernel ends with VZEROUPPER (Go's own code uses legacy SSE).
//
// The exponential is shared by all of them (see exp below): a Cody-Waite
// reduction x = n·ln2 + r with |r| <= ln2/2, the degree-7 Taylor
// polynomial of e^r, and a scaling by 2^n. runtime/cpu/ops.go has the same
// algorithm in Go (the reference the kernels are tested against) and the
// error analysis.
package main

import (
	"fmt"
	"github.com/fhkit/fhkit/runtime/cpu/internal/asmgen/simd"
	"math"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// level is one instruction-set level the kernels are generated for.
type level = simd.Level

var avx2, avx512 = simd.AVX2, simd.AVX512

// consts are the addresses of the kernels' constants, each stored as 16
// equal lanes (64 bytes) so that both levels can use them as full-vector
// memory operands.
type consts struct {
	log2e, ln2hi, ln2lo Mem
	poly                [8]Mem // Taylor coefficients 1/k!, k = 0..7
	lo, hi              Mem    // AVX2 clamp: e^lo = FLT_MIN, 2^127 > e^hi
	lo512, hi512        Mem    // AVX-512 clamp (VSCALEFPS handles the range)
	inf, negInf, one    Mem
	bias                Mem // 127 << 23 (int32)
	signs               Mem
	// float64 constants (8 lanes) of GELU's argument reduction.
	geluK1D, geluK2D, log2eD, ln2D, loD, hiD, lo512D, hi512D Mem
	tailMask                                                 Mem // 16 x -1 then 16 x 0 (int32): tail masks
}

// Constants of the exponential; runtime/cpu/ops.go derives the same values.
const (
	log2e = math.Log2E
	// expLo is ln(FLT_MIN): below it e^x is subnormal, and the AVX2
	// kernels (which build 2^n in the exponent field) return 0.
	expLo = -87.33654475055310898657
	// expHi is the largest x with round(x·log2e) <= 127 (so that 2^n is a
	// normal float); above it the AVX2 kernels return +Inf.
	expHi = 88.37626
	// The AVX-512 kernels clamp to a range just wider than the one where
	// e^x is a nonzero finite float32 (2^-150 .. 2^128) and let VSCALEFPS
	// round to subnormals, zero or infinity.
	expLo512 = -104
	expHi512 = 89
	// geluC is sqrt(2/pi), geluB the cubic coefficient of the tanh GELU.
	geluC = 0.7978845608028654
	geluB = 0.044715
)

// ln2Split returns ln2 as hi + lo with hi's last 12 mantissa bits clear, so
// that n·hi is exact for |n| < 2^12 (also without FMA, in the Go version).
func ln2Split() (hi, lo float32) {
	hi = math.Float32frombits(math.Float32bits(math.Ln2) &^ 0xFFF)
	return hi, float32(math.Ln2 - float64(hi))
}

func table(name string, bits func(i int) uint32) Mem {
	m := GLOBL(name, RODATA|NOPTR)
	for i := 0; i < 16; i++ {
		DATA(4*i, U32(bits(i)))
	}
	return m
}

func splat(name string, v float32) Mem {
	// As bits: avo prints F32(1) as $(1), which the assembler stores as
	// the integer 1.
	b := math.Float32bits(v)
	return table(name, func(int) uint32 { return b })
}

// splatD stores v in 8 float64 lanes.
func splatD(name string, v float64) Mem {
	m := GLOBL(name, RODATA|NOPTR)
	for i := 0; i < 8; i++ {
		DATA(8*i, U64(math.Float64bits(v)))
	}
	return m
}

func main() {
	hi, lo := ln2Split()
	var c consts
	c.log2e = splat("opsLog2e", log2e)
	c.ln2hi = splat("opsLn2Hi", hi)
	c.ln2lo = splat("opsLn2Lo", lo)
	fact := 1.0
	for k := range c.poly {
		if k > 0 {
			fact *= float64(k)
		}
		c.poly[k] = splat(fmt.Sprintf("opsExpC%d", k), float32(1/fact))
	}
	c.lo = splat("opsExpLo", expLo)
	c.hi = splat("opsExpHi", expHi)
	c.lo512 = splat("opsExpLo512", expLo512)
	c.hi512 = splat("opsExpHi512", expHi512)
	c.inf = splat("opsInf", float32(math.Inf(1)))
	c.negInf = splat("opsNegInf", float32(math.Inf(-1)))
	c.one = splat("opsOne", 1)
	c.bias = table("opsExpBias", func(int) uint32 { return 127 << 23 })
	c.geluK1D = splatD("opsGeluK1D", -2*geluC)
	c.geluK2D = splatD("opsGeluK2D", -2*geluC*geluB)
	c.log2eD = splatD("opsLog2eD", log2e)
	c.ln2D = splatD("opsLn2D", math.Ln2)
	c.loD = splatD("opsExpLoD", float64(float32(expLo)))
	c.hiD = splatD("opsExpHiD", float64(float32(expHi)))
	c.lo512D = splatD("opsExpLo512D", expLo512)
	c.hi512D = splatD("opsExpHi512D", expHi512)
	c.signs = table("opsSignBit", func(int) uint32 { return 1 << 31 })
	c.tailMask = GLOBL("opsTailMask", RODATA|NOPTR)
	for i := 0; i < 32; i++ {
		v := uint32(0)
		if i < 16 {
			v = 0xFFFFFFFF
		}
		DATA(4*i, U32(v))
	}

	for _, l := range []level{avx2, avx512} {
		expKernel(l, &c)
		softmax(l, &c)
		gated(l, &c, true)
		gated(l, &c, false)
		rmsNorm(l, &c)
		scores(l)
		weightedSum(l)
		add(l, &c)
		rope(l, &c)
	}
	spinPause()
	prefetchLines()
	bestBlocks16(&c)
	Generate()
}

// bestBlocks16 generates opsBestBlocks16AVX512(logits, blocks, n, valid,
// hits) float32: the FlashHead's pick among its probed blocks of 16 logits
// (cpu.BestBlocks16). Block k is the vector at logits + 64k, its lanes
// masked by valid[k]. A first pass takes the maximum of every block's
// valid lanes (masked VMAXPS) and ORs in the valid lanes that are NaN; a
// second writes, per block, the mask of its valid lanes equal to that
// maximum. The result is the maximum, or NaN when a valid lane is NaN.
func bestBlocks16(c *consts) {
	name := "opsBestBlocks16AVX512"
	TEXT(name, NOSPLIT, "func(logits *float32, blocks *int, n int, valid *uint16, hits *uint16) float32")
	Pragma("noescape")
	Doc(name+" sets hits[i] to the lanes of block blocks[i] (the 16 floats at logits + 64·blocks[i],",
		"lanes valid[blocks[i]]) that equal the largest valid lane of all n blocks, and returns it",
		"(-Inf when no lane is valid, NaN when a valid lane is NaN; hits are then unspecified).")
	lg := Load(Param("logits"), GP64())
	bl := Load(Param("blocks"), GP64())
	n := Load(Param("n"), GP64())
	va := Load(Param("valid"), GP64())
	hi := Load(Param("hits"), GP64())
	acc := ZMM()
	VBROADCASTSS(c.negInf, acc)
	nan := K()
	KXORW(nan, nan, nan)
	block := func(i Register) (Mem, Register) {
		k := GP64()
		MOVQ(Mem{Base: bl, Index: i, Scale: 8}, k)
		m := GP32()
		MOVWLZX(Mem{Base: va, Index: k, Scale: 2}, m)
		km := K()
		KMOVW(m, km)
		SHLQ(U8(6), k)
		return Mem{Base: lg, Index: k, Scale: 1}, km
	}
	i := GP64()
	XORQ(i, i)
	Label(name + "_max")
	CMPQ(i, n)
	JAE(LabelRef(name + "_fold"))
	{
		at, km := block(i)
		v, u := ZMM(), K()
		VMOVUPS_Z(at, km, v)
		VMAXPS(v, acc, km, acc)
		VCMPPS(U8(3), v, v, km, u) // unordered: NaN
		KORW(u, nan, nan)
	}
	INCQ(i)
	JMP(LabelRef(name + "_max"))

	Label(name + "_fold")
	x := reduce(avx512, acc, vmaxps)
	mx := broadcast(avx512, x)

	XORQ(i, i)
	Label(name + "_hits")
	CMPQ(i, n)
	JAE(LabelRef(name + "_done"))
	{
		at, km := block(i)
		e := K()
		VCMPPS(U8(0), at, mx, km, e) // equal (ordered)
		r := GP32()
		KMOVW(e, r)
		MOVW(r.As16(), Mem{Base: hi, Index: i, Scale: 2})
	}
	INCQ(i)
	JMP(LabelRef(name + "_hits"))

	Label(name + "_done")
	KORTESTW(nan, nan)
	JZ(LabelRef(name + "_ret"))
	VCMPPS(U8(0x0F), x, x, x) // a valid lane is NaN: all ones (TRUE_UQ), a NaN
	Label(name + "_ret")
	ret, err := ReturnIndex(0).Resolve()
	if err != nil {
		panic(err)
	}
	VMOVSS(x, ret.Addr)
	VZEROUPPER()
	RET()
}

// prefetchLines generates the hint that asks for n cache lines from p into
// L1 (PREFETCHT0, one per 64 bytes) without waiting for them: attention
// asks for the cached keys and values it is about to read (cpu.Prefetch).
func prefetchLines() {
	TEXT("prefetchLines", NOSPLIT, "func(p *float32, n int)")
	Pragma("noescape")
	Doc("prefetchLines asks for the n cache lines from p into L1 (PREFETCHT0; n >= 1).")
	ptr := Load(Param("p"), GP64())
	n := Load(Param("n"), GP64())
	Label("prefetchLines_loop")
	PREFETCHT0(Mem{Base: ptr})
	ADDQ(U8(64), ptr)
	DECQ(n)
	JNZ(LabelRef("prefetchLines_loop"))
	RET()
}

// spinPause generates the spin-wait hint the worker pool polls with: PAUSE
// tells the core a thread is spinning, so it yields the pipeline to the
// sibling hyperthread and leaves the loop without a memory-order flush.
func spinPause() {
	TEXT("spinPause", NOSPLIT, "func()")
	Doc("spinPause executes one PAUSE (the pool's spin-wait hint).")
	PAUSE()
	RET()
}

// arg returns the stack slot of the named argument.
func arg(name string) Mem {
	b, err := Param(name).Resolve()
	if err != nil {
		panic(err)
	}
	return b.Addr
}

// tail is the mask of the last, partial vector of a loop over n elements:
// lanes [0, n mod lanes) are on. Loads through it read only those lanes
// (the others are zero, or keep the destination's value on AVX-512 when
// merge is used), and stores write only those.
type tail struct {
	l    level
	k    OpmaskVirtual // AVX-512
	mask VecVirtual    // AVX2
}

// newTail computes the mask of n mod lanes lanes (n in bytes in nb, which
// is left unchanged).
func newTail(l level, c *consts, nb Register) tail {
	t := tail{l: l}
	r := GP64()
	MOVQ(nb, r)
	ANDQ(U32(l.VBytes()-1), r)
	SHRQ(U8(2), r) // lanes in the tail
	// Lanes [0, r) of opsTailMask[16-r:] are on.
	off := GP64()
	MOVQ(U32(16), off)
	SUBQ(r, off)
	base := GP64()
	LEAQ(c.tailMask, base)
	m := Mem{Base: base, Index: off, Scale: 4}
	if l.Wide {
		v := ZMM()
		VMOVDQU32(m, v)
		t.k = K()
		VPTESTMD(v, v, t.k)
		return t
	}
	t.mask = YMM()
	VMOVUPS(m, t.mask)
	return t
}

// load reads the tail lanes of m into v (other lanes zero).
func (t tail) load(m Mem, v VecVirtual) {
	if t.l.Wide {
		VMOVUPS_Z(m, t.k, v)
		return
	}
	VMASKMOVPS(m, t.mask, v)
}

// loadOr reads the tail lanes of m into v; the other lanes get fill's.
func (t tail) loadOr(m Mem, fill Mem, v VecVirtual) {
	VMOVUPS(fill, v)
	if t.l.Wide {
		VMOVUPS(m, t.k, v)
		return
	}
	x := YMM()
	VMASKMOVPS(m, t.mask, x)
	VBLENDVPS(t.mask, x, v, v)
}

// store writes the tail lanes of v to m.
func (t tail) store(v VecVirtual, m Mem) {
	if t.l.Wide {
		VMOVUPS(v, t.k, m)
		return
	}
	VMASKMOVPS(v, t.mask, m)
}

// exp sets dst = e^x lane-wise (x is not modified). The result's relative
// error is about one ulp (see ops.go); the AVX2 version flushes results
// below FLT_MIN to zero and saturates from e^88.376 to +Inf, the AVX-512
// one rounds to subnormals and overflows exactly.
func exp(l level, c *consts, x, dst VecVirtual) {
	xc, n, r := l.Vec(), l.Vec(), l.Vec()
	lo, hi := c.lo, c.hi
	if l.Wide {
		lo, hi = c.lo512, c.hi512
	}
	VMAXPS(lo, x, xc)
	VMINPS(hi, xc, xc)
	VMULPS(c.log2e, xc, n)
	if l.Wide {
		VRNDSCALEPS(U8(0), n, n) // to nearest, ties to even
	} else {
		VROUNDPS(U8(0), n, n)
	}
	VMOVAPS(xc, r)
	VFNMADD231PS(c.ln2hi, n, r) // r = x - n·hi (exact: hi has 12 low zero bits)
	VFNMADD231PS(c.ln2lo, n, r)
	expFinish(l, c, n, r, x, dst)
}

// expFinish sets dst = e^r·2^n, the exponential of x = n·ln2 + r reduced
// by exp or geluExpArg (x decides the AVX2 flush and saturation).
func expFinish(l level, c *consts, n, r, x, dst VecVirtual) {
	// Horner: p = ((c7·r + c6)·r + ... + c1)·r + c0.
	VMOVUPS(c.poly[7], dst)
	for k := 6; k >= 0; k-- {
		VFMADD213PS(c.poly[k], r, dst)
	}
	if l.Wide {
		VSCALEFPS(n, dst, dst) // dst·2^n with IEEE overflow and subnormals
		return
	}
	ni := l.Vec()
	VCVTPS2DQ(n, ni)
	VPSLLD(U8(23), ni, ni)
	VPADDD(c.bias, ni, ni) // the bits of 2^n, n in [-126, 127]
	VMULPS(ni, dst, dst)
	m := l.Vec()
	VCMPPS(U8(1), c.lo, x, m) // x < lo: e^x is subnormal, flush to 0
	VANDNPS(dst, m, dst)
	VCMPPS(U8(0x0E), c.hi, x, m) // x > hi: +Inf
	VBLENDVPS(m, c.inf, dst, dst)
}

// cvtpd2ps narrows a vector of doubles to floats (zmm to ymm, ymm to xmm).
func cvtpd2ps(l level, src, dst Op) {
	if l.Wide {
		VCVTPD2PS(src, dst)
		return
	}
	VCVTPD2PSY(src, dst)
}

// geluExpArg reduces GELU's a = x·(k1 + k2·x²) = -2·sqrt(2/pi)·(x +
// 0.044715x³) for the exponential in float64: in float32 its three
// roundings would err by 3u·|a|, which e^a turns into a relative error of
// 3u·|a| (14u at x = -4); in float64 a, n = round(a·log2e) and r = a -
// n·ln2 are exact to float32 precision and only r's rounding to float32
// (0.35u absolute) is left. It returns n, r and a rounded to float32 (for
// the AVX2 flush and saturation tests), as vectors of the level.
func geluExpArg(l level, c *consts, x VecVirtual) (n, r, af VecVirtual) {
	n, r, af = l.Vec(), l.Vec(), l.Vec()
	lo, hi := c.loD, c.hiD
	if l.Wide {
		lo, hi = c.lo512D, c.hi512D
	}
	for h := 0; h < 2; h++ {
		var half Register // h-th half of x, as float32
		var d, t, s, a, nd VecVirtual
		if l.Wide {
			half = x.AsY()
			if h == 1 {
				hy := YMM()
				VEXTRACTF64X4(U8(1), x, hy)
				half = hy
			}
			d, t, s, a, nd = ZMM(), ZMM(), ZMM(), ZMM(), ZMM()
		} else {
			half = x.AsX()
			if h == 1 {
				hx := XMM()
				VEXTRACTF128(U8(1), x, hx)
				half = hx
			}
			d, t, s, a, nd = YMM(), YMM(), YMM(), YMM(), YMM()
		}
		VCVTPS2PD(half, d)
		VMULPD(d, d, t)
		VMOVUPD(c.geluK2D, s)
		VFMADD213PD(c.geluK1D, t, s) // k2·x² + k1
		VMULPD(s, d, a)
		var rf, nf, af32 VecVirtual // float32 halves
		if l.Wide {
			rf, nf, af32 = YMM(), YMM(), YMM()
		} else {
			rf, nf, af32 = XMM(), XMM(), XMM()
		}
		cvtpd2ps(l, a, af32)
		VMAXPD(lo, a, a)
		VMINPD(hi, a, a)
		VMULPD(c.log2eD, a, nd)
		if l.Wide {
			VRNDSCALEPD(U8(0), nd, nd)
		} else {
			VROUNDPD(U8(0), nd, nd)
		}
		VFNMADD231PD(c.ln2D, nd, a) // r = a - n·ln2
		cvtpd2ps(l, a, rf)
		cvtpd2ps(l, nd, nf)
		if l.Wide {
			if h == 0 {
				VMOVAPS(rf, r.AsY())
				VMOVAPS(nf, n.AsY())
				VMOVAPS(af32, af.AsY())
			} else {
				VINSERTF64X4(U8(1), rf, r, r)
				VINSERTF64X4(U8(1), nf, n, n)
				VINSERTF64X4(U8(1), af32, af, af)
			}
		} else {
			if h == 0 {
				VMOVAPS(rf, r.AsX())
				VMOVAPS(nf, n.AsX())
				VMOVAPS(af32, af.AsX())
			} else {
				VINSERTF128(U8(1), rf, r, r)
				VINSERTF128(U8(1), nf, n, n)
				VINSERTF128(U8(1), af32, af, af)
			}
		}
	}
	return n, r, af
}

// expKernel generates opsExp<level>(dst, x, n): dst[i] = e^x[i] (for the
// accuracy tests of the shared exponential).
func expKernel(l level, c *consts) {
	name := "opsExp" + l.Name
	TEXT(name, NOSPLIT, "func(dst, x *float32, n int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s sets dst[i] = e^x[i] for i < n (n >= 1).", name))
	dst := Load(Param("dst"), GP64())
	x := Load(Param("x"), GP64())
	nb := Load(Param("n"), GP64())
	SHLQ(U8(2), nb)
	loop(l, c, name+"_l", nb, nil, func(i Register, t *tail) {
		v, e := l.Vec(), l.Vec()
		ld(t, Mem{Base: x, Index: i, Scale: 1}, v)
		exp(l, c, v, e)
		st(t, e, Mem{Base: dst, Index: i, Scale: 1})
	})
	VZEROUPPER()
	RET()
}

// loop runs body over the whole vectors of nb bytes (i the byte offset,
// tail nil) and then once over the partial last vector, if any, with
// mask t (computed there when nil). id names the loop's labels.
func loop(l level, c *consts, id string, nb Register, t *tail, body func(i Register, t *tail)) {
	full := GP64()
	MOVQ(nb, full)
	ANDQ(I32(-l.VBytes()), full)
	i := GP64()
	XORQ(i, i)
	Label(id)
	CMPQ(i, full)
	JAE(LabelRef(id + "_tail"))
	body(i, nil)
	ADDQ(U32(l.VBytes()), i)
	JMP(LabelRef(id))
	Label(id + "_tail")
	CMPQ(i, nb)
	JAE(LabelRef(id + "_done"))
	if t == nil {
		t = new(tail)
		*t = newTail(l, c, nb)
	}
	body(i, t)
	Label(id + "_done")
}

func ld(t *tail, m Mem, v VecVirtual) {
	if t == nil {
		VMOVUPS(m, v)
		return
	}
	t.load(m, v)
}

func st(t *tail, v VecVirtual, m Mem) {
	if t == nil {
		VMOVUPS(v, m)
		return
	}
	t.store(v, m)
}

// reduce folds v to lane 0 of an xmm with op (VADDPS or VMAXPS) and returns
// it. Only EVEX-encodable instructions on AVX-512 (v may be in X16-X31).
func reduce(l level, v VecVirtual, op func(a, b, dst Op)) VecVirtual {
	y := v
	if l.Wide {
		y = YMM()
		VEXTRACTF64X4(U8(1), v, y)
		op(y, v.AsY(), y)
	}
	x := XMM()
	if l.Wide {
		VEXTRACTF32X4(U8(1), y, x)
	} else {
		VEXTRACTF128(U8(1), y, x)
	}
	op(x, y.AsX(), x)
	t := XMM()
	VPERMILPS(U8(0x4E), x, t)
	op(t, x, x)
	VPERMILPS(U8(0xB1), x, t)
	op(t, x, x)
	return x
}

func vaddps(a, b, dst Op) { VADDPS(a, b, dst) }
func vmaxps(a, b, dst Op) { VMAXPS(a, b, dst) }

// broadcast returns a vector with lane 0 of x in every lane.
func broadcast(l level, x VecVirtual) VecVirtual {
	v := l.Vec()
	VBROADCASTSS(x, v)
	return v
}

// softmax generates opsSoftmax<level>(x, n, rows): each of rows rows of
// n floats (consecutive) replaced by its softmax in place, in three passes
// (maximum; e^(x-max) stored and summed; scaled by 1/sum). Rows go four at
// a time so that the horizontal reductions and the division, which are
// latency-bound, overlap across the four; the result is the same as one
// row at a time (sum4 adds the lanes in reduce's order).
func softmax(l level, c *consts) {
	name := "opsSoftmax" + l.Name
	TEXT(name, NOSPLIT, "func(x *float32, n int, rows int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s replaces each of rows consecutive rows x[r·n : (r+1)·n] with its softmax (n, rows >= 1).", name))
	x := Load(Param("x"), GP64())
	nb := Load(Param("n"), GP64())
	SHLQ(U8(2), nb)
	rows := Load(Param("rows"), GP64())
	tl := newTail(l, c, nb)
	nb3 := GP64()
	LEAQ(Mem{Base: nb, Index: nb, Scale: 2}, nb3)
	rowGroups(name, rows, func(R int) {
		softmaxRows(l, c, fmt.Sprintf("%s_r%d", name, R), R, x, nb, nb3, &tl)
		for range R {
			ADDQ(nb, x)
		}
	})
	VZEROUPPER()
	RET()
}

// rowGroups runs body(4) while 4 or more rows remain, then body(1) for
// each remaining row (rows is consumed).
func rowGroups(name string, rows Register, body func(R int)) {
	Label(name + "_g4")
	CMPQ(rows, U8(4))
	JB(LabelRef(name + "_g1"))
	body(4)
	SUBQ(U8(4), rows)
	JMP(LabelRef(name + "_g4"))
	Label(name + "_g1")
	TESTQ(rows, rows)
	JZ(LabelRef(name + "_gdone"))
	body(1)
	DECQ(rows)
	JMP(LabelRef(name + "_g1"))
	Label(name + "_gdone")
}

// rowMem addresses row j (0-3) of consecutive rows nb bytes long at p.
func rowMem(p, nb, nb3 Register, j int) Mem {
	switch j {
	case 0:
		return Mem{Base: p}
	case 1:
		return Mem{Base: p, Index: nb, Scale: 1}
	case 2:
		return Mem{Base: p, Index: nb, Scale: 2}
	}
	return Mem{Base: nb3, Index: p, Scale: 1}
}

// loopP runs body over the vectors of a row of nb bytes: ptrs start at the
// row's first vector and advance by a vector each iteration (body addresses
// relative to them); the partial last vector, if any, runs with mask t.
func loopP(l level, id string, nb Register, t *tail, ptrs []Register, body func(t *tail)) {
	full := GP64()
	MOVQ(nb, full)
	ANDQ(I32(-l.VBytes()), full)
	i := GP64()
	XORQ(i, i)
	Label(id)
	CMPQ(i, full)
	JAE(LabelRef(id + "_tail"))
	body(nil)
	for _, p := range ptrs {
		ADDQ(U32(l.VBytes()), p)
	}
	ADDQ(U32(l.VBytes()), i)
	JMP(LabelRef(id))
	Label(id + "_tail")
	CMPQ(i, nb)
	JAE(LabelRef(id + "_done"))
	body(t)
	Label(id + "_done")
}

// reduceRows folds R (4 or 1) vectors to an xmm holding the reduction of
// vector j in lane j, adding (or taking the maximum) in the same order for
// both R.
func reduceRows(l level, acc []VecVirtual, op func(a, b, dst Op)) VecVirtual {
	if len(acc) == 1 {
		return reduce(l, acc[0], op)
	}
	parts := make([]VecVirtual, 4)
	for j, a := range acc {
		parts[j] = halveOp(l, a, op)
	}
	return combine4(parts[0], parts[1], parts[2], parts[3], op)
}

// lane returns a vector with lane j of the xmm x in every lane.
func lane(l level, x VecVirtual, j int) VecVirtual {
	if j == 0 {
		return broadcast(l, x)
	}
	t := XMM()
	VSHUFPS(U8(j*0x55), x, x, t)
	return broadcast(l, t)
}

func zeroVec(l level, v VecVirtual) {
	if l.Wide {
		VPXORD(v, v, v)
	} else {
		VXORPS(v, v, v)
	}
}

// softmaxRows is the body of opsSoftmax for R consecutive rows at x.
func softmaxRows(l level, c *consts, id string, R int, x, nb, nb3 Register, tl *tail) {
	p := GP64()
	mx := make([]VecVirtual, R)
	for j := range mx {
		mx[j] = l.Vec()
		VMOVUPS(c.negInf, mx[j])
	}
	MOVQ(x, p)
	loopP(l, id+"_max", nb, tl, []Register{p}, func(t *tail) {
		for j := range R {
			m := rowMem(p, nb, nb3, j)
			if t == nil {
				VMAXPS(m, mx[j], mx[j])
				continue
			}
			v := l.Vec()
			t.loadOr(m, c.negInf, v)
			VMAXPS(v, mx[j], mx[j])
		}
	})
	maxes := reduceRows(l, mx, vmaxps)
	sums := make([]VecVirtual, R)
	for j := range R {
		sums[j] = l.Vec()
		zeroVec(l, sums[j])
		mj := lane(l, maxes, j)
		MOVQ(x, p)
		loopP(l, fmt.Sprintf("%s_exp%d", id, j), nb, tl, []Register{p}, func(t *tail) {
			m := rowMem(p, nb, nb3, j)
			v, e := l.Vec(), l.Vec()
			if t == nil {
				VMOVUPS(m, v)
			} else {
				t.loadOr(m, c.negInf, v) // e^-inf = 0: the lanes past n add nothing
			}
			VSUBPS(mj, v, v)
			exp(l, c, v, e)
			VADDPS(e, sums[j], sums[j])
			st(t, e, m)
		})
	}
	s := reduceRows(l, sums, vaddps)
	inv := XMM()
	VMOVUPS(c.one.Offset(0), inv)
	VDIVPS(s, inv, inv)
	for j := range R {
		sc := lane(l, inv, j)
		MOVQ(x, p)
		loopP(l, fmt.Sprintf("%s_scale%d", id, j), nb, tl, []Register{p}, func(t *tail) {
			m := rowMem(p, nb, nb3, j)
			v := l.Vec()
			ld(t, m, v)
			VMULPS(sc, v, v)
			st(t, v, m)
		})
	}
}

// gated generates opsGatedGELU<level> or opsGatedSiLU<level>(gate, up, n):
// gate[i] = act(gate[i])·up[i]. Both activations are x·sigmoid(a(x)),
// computed as x / (1 + e^-a): a = x for SiLU, 2·sqrt(2/pi)·(x + 0.044715x³)
// for GELU-tanh (0.5·(1 + tanh(a/2)) = sigmoid(a)).
func gated(l level, c *consts, gelu bool) {
	name := "opsGatedSiLU" + l.Name
	act := "SiLU"
	if gelu {
		name, act = "opsGatedGELU"+l.Name, "GELU-tanh"
	}
	TEXT(name, NOSPLIT, "func(gate, up *float32, n int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s sets gate[i] = %s(gate[i])·up[i] for i < n (n >= 1).", name, act))
	g := Load(Param("gate"), GP64())
	u := Load(Param("up"), GP64())
	nb := Load(Param("n"), GP64())
	SHLQ(U8(2), nb)
	loop(l, c, name+"_l", nb, nil, func(i Register, t *tail) {
		x, e := l.Vec(), l.Vec()
		ld(t, Mem{Base: g, Index: i, Scale: 1}, x)
		if gelu {
			n, r, af := geluExpArg(l, c, x)
			expFinish(l, c, n, r, af, e)
		} else {
			a := l.Vec()
			if l.Wide { // VXORPS on zmm needs AVX512DQ
				VPXORD(c.signs, x, a) // a = -x
			} else {
				VXORPS(c.signs, x, a)
			}
			exp(l, c, a, e)
		}
		VADDPS(c.one, e, e)
		VDIVPS(e, x, x)
		up := l.Vec()
		ld(t, Mem{Base: u, Index: i, Scale: 1}, up)
		VMULPS(up, x, x)
		st(t, x, Mem{Base: g, Index: i, Scale: 1})
	})
	VZEROUPPER()
	RET()
}

// rmsNorm generates opsRMSNorm<level>(out, x, scale, n, rows, eps): for
// each of rows consecutive rows of n floats, out = (x·inv)·scale with inv =
// 1/sqrt(Σx²/n + eps), all in float32 as torch computes it (the sum of
// squares in vector lanes, then across). Rows go four at a time, as in
// softmax, with the same result as one at a time.
func rmsNorm(l level, c *consts) {
	name := "opsRMSNorm" + l.Name
	TEXT(name, NOSPLIT, "func(out, x, scale *float32, n int, rows int, eps float32)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s sets out[i] = x[i]·rsqrt(mean(x²) + eps)·scale[i%%n] for each of rows consecutive rows of n (n, rows >= 1).", name))
	out := Load(Param("out"), GP64())
	x := Load(Param("x"), GP64())
	sc := Load(Param("scale"), GP64())
	n := Load(Param("n"), GP64())
	rows := Load(Param("rows"), GP64())
	nf, eps := XMM(), XMM()
	VCVTSI2SSQ(n, nf, nf)
	VBROADCASTSS(nf, nf)
	VBROADCASTSS(arg("eps"), eps)
	nb := GP64()
	MOVQ(n, nb)
	SHLQ(U8(2), nb)
	nb3 := GP64()
	LEAQ(Mem{Base: nb, Index: nb, Scale: 2}, nb3)
	tl := newTail(l, c, nb)
	rowGroups(name, rows, func(R int) {
		id := fmt.Sprintf("%s_r%d", name, R)
		acc := make([]VecVirtual, R)
		for j := range acc {
			acc[j] = l.Vec()
			zeroVec(l, acc[j])
		}
		p := GP64()
		MOVQ(x, p)
		loopP(l, id+"_ss", nb, &tl, []Register{p}, func(t *tail) {
			for j := range R {
				v := l.Vec()
				ld(t, rowMem(p, nb, nb3, j), v) // zero past n
				VFMADD231PS(v, v, acc[j])
			}
		})
		s := reduceRows(l, acc, vaddps)
		VDIVPS(nf, s, s)
		VADDPS(eps, s, s)
		VSQRTPS(s, s)
		inv := XMM()
		VMOVUPS(c.one.Offset(0), inv)
		VDIVPS(s, inv, inv)
		iv := make([]VecVirtual, R)
		for j := range iv {
			iv[j] = lane(l, inv, j)
		}
		q, w := GP64(), GP64()
		MOVQ(x, p)
		MOVQ(out, q)
		MOVQ(sc, w)
		loopP(l, id+"_scale", nb, &tl, []Register{p, q, w}, func(t *tail) {
			sv := l.Vec()
			ld(t, Mem{Base: w}, sv)
			for j := range R {
				v := l.Vec()
				ld(t, rowMem(p, nb, nb3, j), v)
				VMULPS(iv[j], v, v)
				VMULPS(sv, v, v)
				st(t, v, rowMem(q, nb, nb3, j))
			}
		})
		for range R {
			ADDQ(nb, x)
			ADDQ(nb, out)
		}
	})
	VZEROUPPER()
	RET()
}

// halve sums the halves of v down to an xmm of 4 partial sums.
func halve(l level, v VecVirtual) VecVirtual {
	y := v
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

// halveOp is halve with op (VADDPS or VMAXPS).
func halveOp(l level, v VecVirtual, op func(a, b, dst Op)) VecVirtual {
	y := v
	if l.Wide {
		y = YMM()
		VEXTRACTF64X4(U8(1), v, y)
		op(y, v.AsY(), y)
	}
	x := XMM()
	if l.Wide {
		VEXTRACTF32X4(U8(1), y, x)
	} else {
		VEXTRACTF128(U8(1), y, x)
	}
	op(x, y.AsX(), x)
	return x
}

// combine4 returns the xmm [op a, op b, op c, op d] of four 4-lane partial
// reductions, combining lanes as reduce does: (0 op 2) op (1 op 3).
func combine4(a, b, c, d VecVirtual, op func(a, b, dst Op)) VecVirtual {
	t0, t1, t2, t3 := XMM(), XMM(), XMM(), XMM()
	VUNPCKLPS(b, a, t0) // a0 b0 a1 b1
	VUNPCKHPS(b, a, t1) // a2 b2 a3 b3
	op(t1, t0, t0)      // a02 b02 a13 b13
	VUNPCKLPS(d, c, t2)
	VUNPCKHPS(d, c, t3)
	op(t3, t2, t2)
	r, s := XMM(), XMM()
	VSHUFPS(U8(0x44), t2, t0, r) // a02 b02 c02 d02
	VSHUFPS(U8(0xEE), t2, t0, s) // a13 b13 c13 d13
	op(s, r, r)
	return r
}

// sum4 returns the xmm [Σa, Σb, Σc, Σd] of four 4-lane partial sums.
func sum4(a, b, c, d VecVirtual) VecVirtual {
	t0, t1, t2, t3 := XMM(), XMM(), XMM(), XMM()
	VUNPCKLPS(b, a, t0) // a0 b0 a1 b1
	VUNPCKHPS(b, a, t1) // a2 b2 a3 b3
	VADDPS(t1, t0, t0)  // a02 b02 a13 b13
	VUNPCKLPS(d, c, t2)
	VUNPCKHPS(d, c, t3)
	VADDPS(t3, t2, t2)
	r, s := XMM(), XMM()
	VSHUFPS(U8(0x44), t2, t0, r) // a02 b02 c02 d02
	VSHUFPS(U8(0xEE), t2, t0, s) // a13 b13 c13 d13
	VADDPS(s, r, r)
	return r
}

// scores generates opsScores<level>(s, k, stride, q, hd, n, scale):
// s[i] = scale·Σ_{d<hd} q[d]·k[i·stride+d] for i < n: one head's attention
// scores over n cached positions (rows stride floats apart) in one call,
// four positions at a time. hd is a positive multiple of the lanes.
func scores(l level) {
	name := "opsScores" + l.Name
	TEXT(name, NOSPLIT, "func(s, k *float32, stride int, q *float32, hd int, n int, scale float32)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s sets s[i] = scale·Σ_{d<hd} q[d]·k[i·stride+d] for i < n (n >= 1; hd a positive multiple of %d).", name, l.Lanes))
	s := Load(Param("s"), GP64())
	k := Load(Param("k"), GP64())
	stride := Load(Param("stride"), GP64())
	SHLQ(U8(2), stride)
	q := Load(Param("q"), GP64())
	hb := Load(Param("hd"), GP64())
	SHLQ(U8(2), hb)
	n := Load(Param("n"), GP64())
	sc := XMM()
	VMOVSS(arg("scale"), sc)

	// One position's row pointer per accumulator.
	r4 := GP64()
	MOVQ(n, r4)
	ANDQ(I32(-4), r4)
	SHLQ(U8(2), r4) // bytes of s covered four at a time
	end := GP64()
	MOVQ(n, end)
	SHLQ(U8(2), end)
	o := GP64() // byte offset into s
	XORQ(o, o)
	s3 := GP64()
	LEAQ(Mem{Base: stride, Index: stride, Scale: 2}, s3)

	if l.Wide {
		scores16(name, s, k, stride, s3, q, hb, n, o, sc)
	}

	Label(name + "_4")
	CMPQ(o, r4)
	JAE(LabelRef(name + "_1"))
	acc := []VecVirtual{l.Vec(), l.Vec(), l.Vec(), l.Vec()}
	rows := []Mem{
		{Base: k},
		{Base: k, Index: stride, Scale: 1},
		{Base: k, Index: stride, Scale: 2},
		{Base: k, Index: s3, Scale: 1},
	}
	{
		qv := l.Vec()
		VMOVUPS(Mem{Base: q}, qv)
		for j := range acc {
			VMULPS(rows[j], qv, acc[j])
		}
		d := GP64()
		MOVQ(U32(l.VBytes()), d)
		Label(name + "_4d")
		CMPQ(d, hb)
		JAE(LabelRef(name + "_4r"))
		VMOVUPS(Mem{Base: q, Index: d, Scale: 1}, qv)
		kd := GP64()
		LEAQ(Mem{Base: k, Index: d, Scale: 1}, kd)
		rd := []Mem{
			{Base: kd},
			{Base: kd, Index: stride, Scale: 1},
			{Base: kd, Index: stride, Scale: 2},
			{Base: kd, Index: s3, Scale: 1},
		}
		for j := range acc {
			VFMADD231PS(rd[j], qv, acc[j])
		}
		ADDQ(U32(l.VBytes()), d)
		JMP(LabelRef(name + "_4d"))
		Label(name + "_4r")
	}
	parts := make([]VecVirtual, 4)
	for j := range acc {
		parts[j] = halve(l, acc[j])
	}
	r := sum4(parts[0], parts[1], parts[2], parts[3])
	bs := XMM()
	VBROADCASTSS(sc, bs)
	VMULPS(bs, r, r)
	VMOVUPS(r, Mem{Base: s, Index: o, Scale: 1})
	LEAQ(Mem{Base: k, Index: stride, Scale: 4}, k)
	ADDQ(U8(16), o)
	JMP(LabelRef(name + "_4"))

	Label(name + "_1")
	CMPQ(o, end)
	JAE(LabelRef(name + "_done"))
	{
		a, qv := l.Vec(), l.Vec()
		VMOVUPS(Mem{Base: q}, qv)
		VMULPS(Mem{Base: k}, qv, a)
		d := GP64()
		MOVQ(U32(l.VBytes()), d)
		Label(name + "_1d")
		CMPQ(d, hb)
		JAE(LabelRef(name + "_1r"))
		VMOVUPS(Mem{Base: q, Index: d, Scale: 1}, qv)
		VFMADD231PS(Mem{Base: k, Index: d, Scale: 1}, qv, a)
		ADDQ(U32(l.VBytes()), d)
		JMP(LabelRef(name + "_1d"))
		Label(name + "_1r")
		x := halve(l, a)
		t := XMM()
		VPERMILPS(U8(0x4E), x, t)
		VADDPS(t, x, x)
		VPERMILPS(U8(0xB1), x, t)
		VADDPS(t, x, x)
		VMULSS(sc, x, x)
		VMOVSS(x, Mem{Base: s, Index: o, Scale: 1})
	}
	ADDQ(stride, k)
	ADDQ(U8(4), o)
	JMP(LabelRef(name + "_1"))

	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// weightedSumColumn is weightedSum's block of one vector of columns (the
// last block, and all of a head of one vector, a small model's): four
// accumulators over positions four at a time, since two would leave the
// loop waiting on FMA latency (two positions per latency where one vector
// of columns is all the work).
func weightedSumColumn(l level, lbl string, y, v, col, stride, w, n Register) {
	acc := []VecVirtual{l.Vec(), l.Vec(), l.Vec(), l.Vec()}
	VMOVUPS(Mem{Base: y, Index: col, Scale: 1}, acc[0])
	for _, a := range acc[1:] {
		zeroVec(l, a)
	}
	row, wi, s3, q := GP64(), GP64(), GP64(), GP64()
	LEAQ(Mem{Base: v, Index: col, Scale: 1}, row)
	MOVQ(w, wi)
	LEAQ(Mem{Base: stride, Index: stride, Scale: 2}, s3)
	MOVQ(n, q)
	SHRQ(U8(2), q)
	ws := []VecVirtual{l.Vec(), l.Vec(), l.Vec(), l.Vec()}
	rows := []Mem{{Base: row}, {Base: row, Index: stride, Scale: 1}, {Base: row, Index: stride, Scale: 2}, {Base: row, Index: s3, Scale: 1}}
	Label(lbl + "_q")
	TESTQ(q, q)
	JZ(LabelRef(lbl + "_r"))
	for j := range 4 {
		VBROADCASTSS(Mem{Base: wi, Disp: 4 * j}, ws[j])
		VFMADD231PS(rows[j], ws[j], acc[j])
	}
	LEAQ(Mem{Base: row, Index: stride, Scale: 4}, row)
	ADDQ(U8(16), wi)
	DECQ(q)
	JMP(LabelRef(lbl + "_q"))
	Label(lbl + "_r")
	r := GP64()
	MOVQ(n, r)
	ANDQ(U8(3), r)
	Label(lbl + "_r1")
	TESTQ(r, r)
	JZ(LabelRef(lbl + "_store"))
	VBROADCASTSS(Mem{Base: wi}, ws[0])
	VFMADD231PS(Mem{Base: row}, ws[0], acc[0])
	ADDQ(stride, row)
	ADDQ(U8(4), wi)
	DECQ(r)
	JMP(LabelRef(lbl + "_r1"))
	Label(lbl + "_store")
	VADDPS(acc[1], acc[0], acc[0])
	VADDPS(acc[3], acc[2], acc[2])
	VADDPS(acc[2], acc[0], acc[0])
	VMOVUPS(acc[0], Mem{Base: y, Index: col, Scale: 1})
}

// scores16 is opsScoresAVX512's path for hd = 16, one vector per row (a
// small model's heads): sixteen positions per pass, whose sums a
// transposing tree of shuffles folds into one vector, where four at a time
// spend three times the multiplies on folding each row alone. Position p
// of a pass goes into tree slot 4·(p mod 4) + p/4: the tree leaves the sum
// of slot 4m + L in lane 4L + m, so the lanes come out in position order.
// It leaves o at the first position it did not score (n mod 16 remain).
func scores16(name string, s, k, stride, s3, q, hb, n, o Register, sc VecVirtual) {
	CMPQ(hb, U8(64))
	JNE(LabelRef(name + "_4"))
	r16 := GP64()
	MOVQ(n, r16)
	ANDQ(I32(-16), r16)
	SHLQ(U8(2), r16) // bytes of s covered sixteen at a time
	qv, bs := ZMM(), ZMM()
	VMOVUPS(Mem{Base: q}, qv)
	VBROADCASTSS(sc, bs)
	Label(name + "_16")
	CMPQ(o, r16)
	JAE(LabelRef(name + "_4"))
	a := make([]VecVirtual, 16)
	for p := 0; p < 16; p++ {
		rows := []Mem{{Base: k}, {Base: k, Index: stride, Scale: 1}, {Base: k, Index: stride, Scale: 2}, {Base: k, Index: s3, Scale: 1}}
		slot := 4*(p%4) + p/4
		a[slot] = ZMM()
		VMULPS(rows[p%4], qv, a[slot])
		if p%4 == 3 {
			LEAQ(Mem{Base: k, Index: stride, Scale: 4}, k)
		}
	}
	// 16 vectors -> 8: slots 2i and 2i+1 in the low and high halves; -> 4:
	// slot 4j + L in 128-bit lane L of the j-th; -> 2 -> 1 within the
	// 128-bit lanes.
	r := foldPairs(VSHUFF32X4, 0x44, 0xEE, a)
	r = foldPairs(VSHUFF32X4, 0x88, 0xDD, r)
	r = foldPairs(VSHUFPS, 0x44, 0xEE, r)
	r = foldPairs(VSHUFPS, 0x88, 0xDD, r)
	VMULPS(bs, r[0], r[0])
	VMOVUPS(r[0], Mem{Base: s, Index: o, Scale: 1})
	ADDQ(U8(64), o)
	JMP(LabelRef(name + "_16"))
}

// foldPairs halves v, one level of scores16's transposing tree: pair i
// (v[2i], v[2i+1]) becomes shuf(lo) + shuf(hi) of the two.
func foldPairs(shuf func(...Op), lo, hi uint8, v []VecVirtual) []VecVirtual {
	out := make([]VecVirtual, len(v)/2)
	for i := range out {
		e, f := ZMM(), ZMM()
		shuf(U8(lo), v[2*i+1], v[2*i], e)
		shuf(U8(hi), v[2*i+1], v[2*i], f)
		out[i] = ZMM()
		VADDPS(f, e, out[i])
	}
	return out
}

// weightedSum generates opsWeightedSum<level>(y, v, stride, w, hd, n):
// y[d] += Σ_{i<n} w[i]·v[i·stride+d] for d < hd: attention's sum of value
// rows, with the output block held in registers over all positions (two
// sets of accumulators, even and odd positions, to hide the FMA latency).
// Columns go in blocks of 4 vectors, then 2, then 1. hd is a positive
// multiple of the lanes.
func weightedSum(l level) {
	name := "opsWeightedSum" + l.Name
	TEXT(name, NOSPLIT, "func(y, v *float32, stride int, w *float32, hd int, n int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s adds Σ_{i<n} w[i]·v[i·stride+d] to y[d] for d < hd (n >= 1; hd a positive multiple of %d).", name, l.Lanes))
	y := Load(Param("y"), GP64())
	v := Load(Param("v"), GP64())
	stride := Load(Param("stride"), GP64())
	SHLQ(U8(2), stride)
	w := Load(Param("w"), GP64())
	hb := Load(Param("hd"), GP64())
	SHLQ(U8(2), hb)
	n := Load(Param("n"), GP64())
	pairs := GP64()
	MOVQ(n, pairs)
	SHRQ(U8(1), pairs)
	col := GP64() // byte offset of the block in a row
	XORQ(col, col)
	for _, B := range []int{4, 2, 1} {
		lbl := fmt.Sprintf("%s_b%d", name, B)
		bb := B * l.VBytes()
		rest := GP64()
		Label(lbl)
		MOVQ(hb, rest)
		SUBQ(col, rest)
		CMPQ(rest, U32(bb))
		JB(LabelRef(lbl + "_next"))
		if B == 1 {
			weightedSumColumn(l, lbl, y, v, col, stride, w, n)
			ADDQ(U32(bb), col)
			Label(lbl + "_next")
			continue
		}
		even, odd := make([]VecVirtual, B), make([]VecVirtual, B)
		for b := range B {
			even[b], odd[b] = l.Vec(), l.Vec()
			VMOVUPS(Mem{Base: y, Index: col, Scale: 1, Disp: b * l.VBytes()}, even[b])
			if l.Wide {
				VPXORD(odd[b], odd[b], odd[b])
			} else {
				VXORPS(odd[b], odd[b], odd[b])
			}
		}
		row := GP64()
		LEAQ(Mem{Base: v, Index: col, Scale: 1}, row)
		wi := GP64()
		MOVQ(w, wi)
		p := GP64()
		MOVQ(pairs, p)
		a0, a1 := l.Vec(), l.Vec()
		Label(lbl + "_p")
		TESTQ(p, p)
		JZ(LabelRef(lbl + "_odd"))
		VBROADCASTSS(Mem{Base: wi}, a0)
		VBROADCASTSS(Mem{Base: wi, Disp: 4}, a1)
		for b := range B {
			VFMADD231PS(Mem{Base: row, Disp: b * l.VBytes()}, a0, even[b])
			VFMADD231PS(Mem{Base: row, Index: stride, Scale: 1, Disp: b * l.VBytes()}, a1, odd[b])
		}
		LEAQ(Mem{Base: row, Index: stride, Scale: 2}, row)
		ADDQ(U8(8), wi)
		DECQ(p)
		JMP(LabelRef(lbl + "_p"))
		Label(lbl + "_odd")
		TESTQ(U32(1), n)
		JZ(LabelRef(lbl + "_store"))
		VBROADCASTSS(Mem{Base: wi}, a0)
		for b := range B {
			VFMADD231PS(Mem{Base: row, Disp: b * l.VBytes()}, a0, even[b])
		}
		Label(lbl + "_store")
		for b := range B {
			VADDPS(odd[b], even[b], even[b])
			VMOVUPS(even[b], Mem{Base: y, Index: col, Scale: 1, Disp: b * l.VBytes()})
		}
		ADDQ(U32(bb), col)
		if B == 4 {
			JMP(LabelRef(lbl))
		}
		Label(lbl + "_next")
	}
	VZEROUPPER()
	RET()
}

// add generates opsAdd<level>(y, x, n): y[i] += x[i] (the residual adds;
// one rounding, as the Go loop).
func add(l level, c *consts) {
	name := "opsAdd" + l.Name
	TEXT(name, NOSPLIT, "func(y, x *float32, n int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s adds x[i] to y[i] for i < n (n >= 1).", name))
	y := Load(Param("y"), GP64())
	x := Load(Param("x"), GP64())
	nb := Load(Param("n"), GP64())
	SHLQ(U8(2), nb)
	loop(l, c, name+"_l", nb, nil, func(i Register, t *tail) {
		a, b := l.Vec(), l.Vec()
		ld(t, Mem{Base: y, Index: i, Scale: 1}, a)
		ld(t, Mem{Base: x, Index: i, Scale: 1}, b)
		VADDPS(b, a, a)
		st(t, a, Mem{Base: y, Index: i, Scale: 1})
	})
	VZEROUPPER()
	RET()
}

// rope generates opsRoPE<level>(x, cos, sin, half, heads): the rotate_half
// RoPE of heads consecutive heads of 2·half floats in place, x' = x·cos +
// rotate_half(x)·sin, with torch's roundings (two products, then the sum:
// no FMA), so the result is the Go loop's bit for bit.
func rope(l level, c *consts) {
	name := "opsRoPE" + l.Name
	TEXT(name, NOSPLIT, "func(x, cos, sin *float32, half int, heads int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s rotates heads consecutive heads of 2·half floats at x by the cos and sin tables (half each; half, heads >= 1).", name))
	x := Load(Param("x"), GP64())
	cs := Load(Param("cos"), GP64())
	sn := Load(Param("sin"), GP64())
	hb := Load(Param("half"), GP64())
	SHLQ(U8(2), hb)
	heads := Load(Param("heads"), GP64())
	tl := newTail(l, c, hb)
	Label(name + "_head")
	p, q, r := GP64(), GP64(), GP64()
	MOVQ(x, p)
	MOVQ(cs, q)
	MOVQ(sn, r)
	loopP(l, name+"_l", hb, &tl, []Register{p, q, r}, func(t *tail) {
		a, b, cv, sv := l.Vec(), l.Vec(), l.Vec(), l.Vec()
		ld(t, Mem{Base: p}, a)
		ld(t, Mem{Base: p, Index: hb, Scale: 1}, b)
		ld(t, Mem{Base: q}, cv)
		ld(t, Mem{Base: r}, sv)
		x1, x2, u := l.Vec(), l.Vec(), l.Vec()
		VMULPS(cv, a, x1)
		VMULPS(sv, b, u)
		VSUBPS(u, x1, x1) // a·cos - b·sin
		VMULPS(cv, b, x2)
		VMULPS(sv, a, u)
		VADDPS(u, x2, x2) // b·cos + a·sin
		st(t, x1, Mem{Base: p})
		st(t, x2, Mem{Base: p, Index: hb, Scale: 1})
	})
	LEAQ(Mem{Base: x, Index: hb, Scale: 2}, x)
	DECQ(heads)
	JNZ(LabelRef(name + "_head"))
	VZEROUPPER()
	RET()
}
