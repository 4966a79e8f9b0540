package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// dot generates mvDot<level>(a, b, n) = Σ a[i]·b[i], n a multiple of the
// vector width: four accumulators hide the FMA latency on the attention
// dot products (head_dim 64-256, in cache).
func dot(l level) {
	name := "mvDot" + l.Name
	TEXT(name, NOSPLIT, "func(a, b *float32, n int) float32")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s returns Σ a[i]·b[i] over i < n; n is a positive multiple of %d.", name, l.Lanes))
	a := Load(Param("a"), GP64())
	b := Load(Param("b"), GP64())
	n := Load(Param("n"), GP64())
	SHLQ(U8(2), n) // bytes
	vb := l.VBytes()
	big := GP64()
	MOVQ(n, big)
	ANDQ(I32(-4*vb), big)
	i := GP64()
	XORQ(i, i)
	acc := []VecVirtual{l.Vec(), l.Vec(), l.Vec(), l.Vec()}
	for _, a := range acc {
		zero(l, a)
	}

	Label(name + "_4")
	CMPQ(i, big)
	JAE(LabelRef(name + "_1"))
	for j := range acc {
		t := l.Vec()
		VMOVUPS(Mem{Base: a, Index: i, Scale: 1, Disp: j * vb}, t)
		VFMADD231PS(Mem{Base: b, Index: i, Scale: 1, Disp: j * vb}, t, acc[j])
	}
	ADDQ(U32(4*vb), i)
	JMP(LabelRef(name + "_4"))

	Label(name + "_1")
	CMPQ(i, n)
	JAE(LabelRef(name + "_done"))
	t := l.Vec()
	VMOVUPS(Mem{Base: a, Index: i, Scale: 1}, t)
	VFMADD231PS(Mem{Base: b, Index: i, Scale: 1}, t, acc[0])
	ADDQ(U32(vb), i)
	JMP(LabelRef(name + "_1"))

	Label(name + "_done")
	VADDPS(acc[1], acc[0], acc[0])
	VADDPS(acc[3], acc[2], acc[2])
	VADDPS(acc[2], acc[0], acc[0])
	s := sum1(halve(l, acc[0]))
	ret, err := ReturnIndex(0).Resolve()
	if err != nil {
		panic(err)
	}
	// VMOVSS rather than Store's MOVSS: legacy SSE cannot address X16-X31.
	VMOVSS(s, ret.Addr)
	VZEROUPPER()
	RET()
}

// axpy generates mvAxpy<level>(y, x, a, n): y[i] += a·x[i] for i < n, n a
// multiple of the vector width.
func axpy(l level) {
	name := "mvAxpy" + l.Name
	TEXT(name, NOSPLIT, "func(y, x *float32, a float32, n int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s adds a·x[i] to y[i] for i < n; n is a positive multiple of %d.", name, l.Lanes))
	y := Load(Param("y"), GP64())
	x := Load(Param("x"), GP64())
	n := Load(Param("n"), GP64())
	SHLQ(U8(2), n)
	vb := l.VBytes()
	big := GP64()
	MOVQ(n, big)
	ANDQ(I32(-4*vb), big)
	av := l.Vec()
	VBROADCASTSS(arg("a"), av)
	i := GP64()
	XORQ(i, i)

	Label(name + "_4")
	CMPQ(i, big)
	JAE(LabelRef(name + "_1"))
	ts := []VecVirtual{l.Vec(), l.Vec(), l.Vec(), l.Vec()}
	for j, t := range ts {
		VMOVUPS(Mem{Base: y, Index: i, Scale: 1, Disp: j * vb}, t)
		VFMADD231PS(Mem{Base: x, Index: i, Scale: 1, Disp: j * vb}, av, t)
	}
	for j, t := range ts {
		VMOVUPS(t, Mem{Base: y, Index: i, Scale: 1, Disp: j * vb})
	}
	ADDQ(U32(4*vb), i)
	JMP(LabelRef(name + "_4"))

	Label(name + "_1")
	CMPQ(i, n)
	JAE(LabelRef(name + "_done"))
	t := l.Vec()
	VMOVUPS(Mem{Base: y, Index: i, Scale: 1}, t)
	VFMADD231PS(Mem{Base: x, Index: i, Scale: 1}, av, t)
	VMOVUPS(t, Mem{Base: y, Index: i, Scale: 1})
	ADDQ(U32(vb), i)
	JMP(LabelRef(name + "_1"))

	Label(name + "_done")
	VZEROUPPER()
	RET()
}
