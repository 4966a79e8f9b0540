package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// denseType is the element type of a dense weight matrix.
type denseType struct {
	name string
	size int // bytes per element
}

var (
	f32  = denseType{"F32", 4}
	bf16 = denseType{"BF16", 2}
	f16  = denseType{"F16", 2}
	// i8 is a signed byte (the FlashHead's int8 centroids, whose per-row
	// scale the caller applies to the sums).
	i8 = denseType{"I8", 1}
)

// fma adds one vector of weights at m (widened to float32) times xv into acc.
func (d denseType) fma(l level, m Mem, xv, acc VecVirtual) {
	if d == f32 {
		VFMADD231PS(m, xv, acc)
		return
	}
	t := l.Vec()
	switch d {
	case bf16:
		// bf16 is the top half of a float32: zero-extend, shift up.
		VPMOVZXWD(m, t)
		VPSLLD(U8(16), t, t)
	case i8:
		// Sign-extend to int32, convert exactly (|v| <= 128).
		VPMOVSXBD(m, t)
		VCVTDQ2PS(t, t)
	default:
		VCVTPH2PS(m, t)
	}
	VFMADD231PS(xv, t, acc)
}

// dense generates mvDense<type><level>(out, w, stride, x, n, rows):
// out[r] = Σ_{c<n} W[r, c]·x[c] for r < rows, row r of W at w + r·stride
// bytes, n a positive multiple of the vector width. Rows go four at a time
// so each x vector loaded serves four rows; two accumulators per row (two
// vectors per step) keep the loop well within the FMA latency. The leftover
// rows go one at a time.
//
// With rows1 it generates mvDense<type><level>Rows1, which takes every row
// alone: the weights are then read as one sequential stream, which DRAM
// serves faster than four interleaved ones (BenchmarkMatVec: +20–25% on
// 1152-wide rows), at the cost of loading x once per row instead of once
// per four, which only pays while x stays in L1 (the Go side picks the
// variant by width). The single stream is left to the hardware
// prefetcher: prefetching two rows ahead, as the four-row passes do, made
// the 262144 x 1152 head 4% slower when memory was slow and 10–15% when it
// was fast (reads at 0.86 of the probe's bandwidth instead of 0.97).
func dense(l level, d denseType, rows1 bool) {
	name := "mvDense" + d.name + l.Name
	if rows1 {
		name += "Rows1"
	}
	TEXT(name, NOSPLIT, "func(out *float32, w *byte, stride int, x *float32, n int, rows int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s sets out[r] = Σ_{c<n} W[r,c]·x[c] for r < rows, W %s with rows stride bytes apart; n is a positive multiple of %d.", name, d.name, l.Lanes))
	out := Load(Param("out"), GP64())
	w := Load(Param("w"), GP64())
	stride := Load(Param("stride"), GP64())
	x := Load(Param("x"), GP64())
	n := Load(Param("n"), GP64())
	switch d.size { // n in bytes
	case 2:
		SHLQ(U8(1), n)
	case 4:
		SHLQ(U8(2), n)
	}
	wv := l.Lanes * d.size // weight bytes per vector
	n2 := GP64()
	MOVQ(n, n2)
	ANDQ(I32(-2*wv), n2)
	rows := Load(Param("rows"), GP64())

	body := func(tag string, ptrs []Register) {
		acc := make([][]VecVirtual, len(ptrs))
		for k := range acc {
			acc[k] = []VecVirtual{l.Vec(), l.Vec()}
			zero(l, acc[k][0])
			zero(l, acc[k][1])
		}
		var next Register
		if !rows1 {
			next = nextPass(ptrs, stride)
		}
		i := GP64()
		XORQ(i, i)
		xs := uint8(4 / d.size) // x byte offset = weight byte offset · xs
		Label(tag + "_2")
		CMPQ(i, n2)
		JAE(LabelRef(tag + "_1"))
		xa, xb := l.Vec(), l.Vec()
		VMOVUPS(Mem{Base: x, Index: i, Scale: xs}, xa)
		VMOVUPS(Mem{Base: x, Index: i, Scale: xs, Disp: l.VBytes()}, xb)
		for k, p := range ptrs {
			d.fma(l, Mem{Base: p, Index: i, Scale: 1}, xa, acc[k][0])
			d.fma(l, Mem{Base: p, Index: i, Scale: 1, Disp: wv}, xb, acc[k][1])
		}
		if !rows1 {
			prefetchGuard(rows, len(ptrs), tag+"_nopf")
			prefetchNext(next, i, len(ptrs), 2*wv, false)
			Label(tag + "_nopf")
		}
		ADDQ(U32(2*wv), i)
		JMP(LabelRef(tag + "_2"))

		// n2 is n rounded down to two vectors: at most one vector is left.
		Label(tag + "_1")
		CMPQ(i, n)
		JAE(LabelRef(tag + "_sum"))
		xa = l.Vec()
		VMOVUPS(Mem{Base: x, Index: i, Scale: xs}, xa)
		for k, p := range ptrs {
			d.fma(l, Mem{Base: p, Index: i, Scale: 1}, xa, acc[k][0])
		}
		Label(tag + "_sum")
		storeSums(l, out, acc)
	}

	if !rows1 {
		Label(name + "_pass4")
		CMPQ(rows, Imm(4))
		JL(LabelRef(name + "_rows1"))
		p1, p2, p3 := GP64(), GP64(), GP64()
		LEAQ(Mem{Base: w, Index: stride, Scale: 1}, p1)
		LEAQ(Mem{Base: w, Index: stride, Scale: 2}, p2)
		LEAQ(Mem{Base: p1, Index: stride, Scale: 2}, p3)
		body(name+"_r4", []Register{w, p1, p2, p3})
		ADDQ(U32(16), out)
		LEAQ(Mem{Base: w, Index: stride, Scale: 4}, w)
		SUBQ(U32(4), rows)
		JMP(LabelRef(name + "_pass4"))

	}

	Label(name + "_rows1")
	TESTQ(rows, rows)
	JZ(LabelRef(name + "_done"))
	body(name+"_r1", []Register{w})
	ADDQ(U32(4), out)
	ADDQ(stride, w)
	DECQ(rows)
	JMP(LabelRef(name + "_rows1"))

	Label(name + "_done")
	VZEROUPPER()
	RET()
}
