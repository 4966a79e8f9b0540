package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	"github.com/mmcloughlin/avo/ir"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// vpdpbusdBcst emits VPDPBUSD.BCST m, u, d (Go operand order): d.i32[i] +=
// Σ_{j<4} u.u8[4i+j]·m.s8[j], the four signed bytes at m broadcast to
// every lane (EVEX embedded broadcast), exact.
func vpdpbusdBcst(m Mem, u, d Register) {
	Instruction(&ir.Instruction{
		Opcode:   "VPDPBUSD.BCST",
		Operands: []Op{m, u, d},
		Inputs:   []Op{d, u, m},
		Outputs:  []Op{d},
		ISA:      []string{"AVX512_VNNI"},
	})
}

// vnni16MaxT is the most inputs one call of the multi-input rows-in-lanes
// kernels takes (their accumulators: two levels and a float32 sum per
// input, plus the shared codes, fill the 32 vector registers at four).
const vnni16MaxT = 4

// q4VNNI16T generates mvQ4<scales><sym>AVX512VNNI16T<T>: the int4 product
// of AVX512_VNNI with rows in lanes, for T inputs at once (T = 1: decode;
// more: prefill and batched decode). The weight is repacked (Go:
// repackVNNI16) in blocks of 16 rows: per block, group and 128 inputs, 16 chunks of 64
// bytes, chunk m holding in lane i the 4 code bytes [4m, 4m+4) of the
// block's row i within those 128 inputs (the stored bytes, unchanged: byte
// b holds the codes of inputs 2b, low nibble, and 2b+1). x is the layout of
// the row-wise VNNI kernel (mvQ4PrepVNNI: per 128 inputs the int8 h of the
// even inputs, of the odd ones, then l of the even and the odd ones, with
// x ≈ d_g·(128h + l)), so the low nibbles of chunk m meet the 4 bytes of
// even-input h (or l) at 4m, broadcast to all lanes, and the high nibbles
// those of the odd inputs: four VPDPBUSD per chunk multiply 16 rows × 8
// inputs at both levels, and a lane never leaves its row, so a group ends
// with the 16 rows' sums in one vector. The per-group work (combining the
// levels, the zero-point term, the conversion and the scale) is then done
// once per 16 rows instead of once per row as in the row-wise kernel,
// where it cost about 40% of the time at G = 128.
//
// Per group: t = 128·Σq·h + Σq·l + c, c the zero-point term: nxs's int32
// −8·Σ(128h + l) when symmetric, z_r·(−Σ(128h + l)) per lane otherwise (z
// from zeros, int32 [block][group][16]); out += float(t)·(s_r·d_g), s from
// scales ([block][group][16], bf16 as the model stores them, else float32)
// and d_g nxs's float32. The int32 ranges are those of the row-wise
// kernel (groups up to 1024).
//
// Each code chunk is loaded and split into nibbles once and multiplied
// with every input's x, so the weights are read once per T inputs. Input
// t's x and nxs are at x + t·prep and nxs + t·prep bytes, its outputs at
// out + t·outStride bytes. One input gets eight accumulators (two levels ×
// chunk m mod 4), which keeps each VPDPBUSD chain at 8 per 128 inputs,
// within the unit's throughput; with more inputs their own two suffice.
func q4VNNI16T(T int, bf16 bool, asym bool, lowNibbles Mem) {
	st := "F32"
	if bf16 {
		st = "BF16"
	}
	name := fmt.Sprintf("mvQ4%s%sAVX512VNNI16T%d", st, symName(asym), T)
	TEXT(name, NOSPLIT, "func(out *float32, outStride int, codes *byte, scales *byte, zeros *int32, ng int, bpg int, x *float32, nxs *float32, prep int, blocks int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s adds to out[t·outStride/4 + 16b + i] for input t < %d, block b < blocks and", name, T),
		"lane i < 16 to the product of the block's row i (codes, scales, zeros: the repacked layout",
		"of repackVNNI16) with input t (mvQ4PrepVNNI's layout at x + t·prep, two words per group at",
		"nxs + t·prep bytes) over ng groups of bpg·128 inputs. Needs AVX512_VNNI.")
	codes := Load(Param("codes"), GP64())
	scales := Load(Param("scales"), GP64())
	var zeros Register
	if asym {
		zeros = Load(Param("zeros"), GP64())
	}
	out := Load(Param("out"), GP64())
	mask := ZMM()
	VPBROADCASTD(lowNibbles, mask)
	ps := Load(Param("prep"), GP64())
	ps3 := GP64()
	LEAQ(Mem{Base: ps, Index: ps, Scale: 2}, ps3)
	// at returns input t's copy of m (m based on input 0's pointer).
	at := func(m Mem, t int) Mem {
		switch t {
		case 1:
			m.Index, m.Scale = ps, 1
		case 2:
			m.Index, m.Scale = ps, 2
		case 3:
			m.Index, m.Scale = ps3, 1
		}
		return m
	}

	Label(name + "_block")
	facc := make([]VecVirtual, T)
	for t := range facc {
		facc[t] = ZMM()
		VPXORD(facc[t], facc[t], facc[t])
	}
	xp := Load(Param("x"), GP64())
	nxp := Load(Param("nxs"), GP64())
	g := Load(Param("ng"), GP64())

	Label(name + "_group")
	split := 1
	if T == 1 {
		split = 4
	}
	ah, al := make([][]VecVirtual, T), make([][]VecVirtual, T)
	for t := range ah {
		for range split {
			h, l := ZMM(), ZMM()
			VPXORD(h, h, h)
			VPXORD(l, l, l)
			ah[t], al[t] = append(ah[t], h), append(al[t], l)
		}
	}
	b := Load(Param("bpg"), GP64())
	Label(name + "_b")
	for m := 0; m < 16; m++ {
		c, lo := ZMM(), ZMM()
		VMOVDQU32(Mem{Base: codes, Disp: 64 * m}, c)
		VPANDD(mask, c, lo)
		VPSRLW(U8(4), c, c)
		VPANDD(mask, c, c)
		for t := 0; t < T; t++ {
			h, l := ah[t][m%split], al[t][m%split]
			vpdpbusdBcst(at(Mem{Base: xp, Disp: 4 * m}, t), lo, h)
			vpdpbusdBcst(at(Mem{Base: xp, Disp: 64 + 4*m}, t), c, h)
			vpdpbusdBcst(at(Mem{Base: xp, Disp: 128 + 4*m}, t), lo, l)
			vpdpbusdBcst(at(Mem{Base: xp, Disp: 192 + 4*m}, t), c, l)
		}
	}
	ADDQ(U32(1024), codes)
	ADDQ(U32(256), xp)
	DECQ(b)
	JNZ(LabelRef(name + "_b"))

	sd := ZMM()
	if bf16 {
		VPMOVZXWD(Mem{Base: scales}, sd)
		VPSLLD(U8(16), sd, sd)
		ADDQ(U32(32), scales)
	} else {
		VMOVUPS(Mem{Base: scales}, sd)
		ADDQ(U32(64), scales)
	}
	var z VecVirtual
	if asym {
		z = ZMM()
		VMOVDQU32(Mem{Base: zeros}, z)
		ADDQ(U32(64), zeros)
	}
	for t := 0; t < T; t++ {
		h, l := ah[t][0], al[t][0]
		if split == 4 {
			VPADDD(ah[t][1], h, h)
			VPADDD(ah[t][3], ah[t][2], ah[t][2])
			VPADDD(ah[t][2], h, h)
			VPADDD(al[t][1], l, l)
			VPADDD(al[t][3], al[t][2], al[t][2])
			VPADDD(al[t][2], l, l)
		}
		VPSLLD(U8(7), h, h)
		VPADDD(l, h, h)
		if asym {
			zc := ZMM()
			VPMULLD_BCST(at(Mem{Base: nxp}, t), z, zc)
			VPADDD(zc, h, h)
		} else {
			VPADDD_BCST(at(Mem{Base: nxp}, t), h, h)
		}
		VCVTDQ2PS(h, h)
		s := ZMM()
		VMULPS_BCST(at(Mem{Base: nxp, Disp: 4}, t), sd, s)
		VFMADD231PS(h, s, facc[t])
	}
	ADDQ(U32(8), nxp)
	DECQ(g)
	JNZ(LabelRef(name + "_group"))

	os := Load(Param("outStride"), GP64())
	o := GP64()
	MOVQ(out, o)
	for t := 0; t < T; t++ {
		VADDPS(Mem{Base: o}, facc[t], facc[t])
		VMOVUPS(facc[t], Mem{Base: o})
		ADDQ(os, o)
	}
	ADDQ(U32(64), out)
	bl := Load(Param("blocks"), GP64())
	DECQ(bl)
	Store(bl, Param("blocks"))
	JNZ(LabelRef(name + "_block"))
	VZEROUPPER()
	RET()
}
