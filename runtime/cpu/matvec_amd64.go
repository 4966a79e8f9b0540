package cpu

import (
	"unsafe"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/klauspost/cpuid/v2"
)

// mvLanes returns the float32 lanes of the level's vectors, 0 when the level
// has no kernels (plain Go).
func mvLanes(level ISA) int {
	switch level {
	case AVX512:
		return 16
	case AVX2:
		return 8
	}
	return 0
}

// denseCall runs the dense matrix-vector kernel of the level for dt: rows
// one at a time (one sequential stream of weights) while x fits in L1 with
// room to spare (n ≤ denseRows1Cols), else four at a time so each x vector
// loaded serves four rows (see dense in the generator). The calls are
// direct, not through a func value, so the compiler sees the kernels'
// noescape and callers' buffers can stay on their stacks.
func denseCall(level ISA, dt dtype.DType, out *float32, w *byte, stride int, x *float32, n int, rows int) {
	one := n <= denseRows1Cols
	switch {
	case level == AVX512 && dt == dtype.F32 && one:
		mvDenseF32AVX512Rows1(out, w, stride, x, n, rows)
	case level == AVX512 && dt == dtype.F32:
		mvDenseF32AVX512(out, w, stride, x, n, rows)
	case level == AVX512 && dt == dtype.BF16 && one:
		mvDenseBF16AVX512Rows1(out, w, stride, x, n, rows)
	case level == AVX512 && dt == dtype.BF16:
		mvDenseBF16AVX512(out, w, stride, x, n, rows)
	case level == AVX512 && one:
		mvDenseF16AVX512Rows1(out, w, stride, x, n, rows)
	case level == AVX512:
		mvDenseF16AVX512(out, w, stride, x, n, rows)
	case dt == dtype.F32 && one:
		mvDenseF32AVX2Rows1(out, w, stride, x, n, rows)
	case dt == dtype.F32:
		mvDenseF32AVX2(out, w, stride, x, n, rows)
	case dt == dtype.BF16 && one:
		mvDenseBF16AVX2Rows1(out, w, stride, x, n, rows)
	case dt == dtype.BF16:
		mvDenseBF16AVX2(out, w, stride, x, n, rows)
	case one:
		mvDenseF16AVX2Rows1(out, w, stride, x, n, rows)
	default:
		mvDenseF16AVX2(out, w, stride, x, n, rows)
	}
}

// denseRows sets out[r] = W[r,:]·x for lo <= r < hi with the level's
// kernel (mvSupported(level, w) must hold); the kernel covers the columns
// up to a multiple of the vector width, Go the rest.
func denseRows(level ISA, out []float32, w Mat, x []float32, lo, hi int) {
	if hi <= lo {
		return
	}
	cols := w.Cols
	esz := w.DType.Size()
	stride := cols * esz
	n := cols &^ (mvLanes(level) - 1)
	data := w.Data[lo*stride : hi*stride]
	o := out[lo:hi]
	xs := x[:cols]
	denseCall(level, w.DType, &o[0], &data[0], stride, &xs[0], n, hi-lo)
	if n < cols {
		for r := range o {
			o[r] += denseTail(w.DType, data[r*stride:(r+1)*stride], xs, n)
		}
	}
}

// tiledRows is denseRows from w's tiled copy t (denseTiles): per block
// of rows, the one-row kernel over each tile, the tiles' sums added up.
func tiledRows(level ISA, out []float32, w Mat, t *denseTiles, x []float32, lo, hi int) {
	esz := w.DType.Size()
	x = x[:w.Cols]
	var part [denseTileRows]float32
	for r0 := lo; r0 < hi; {
		r1 := min(hi, (r0/denseTileRows+1)*denseTileRows)
		o := out[r0:r1]
		for c0 := 0; c0 < w.Cols; c0 += t.tileCols {
			n := min(t.tileCols, w.Cols-c0)
			data := t.data[t.offset(w, r0, c0)*esz:][:(r1-r0)*n*esz]
			dst := o
			if c0 > 0 {
				dst = part[:r1-r0]
			}
			denseCall(level, w.DType, &dst[0], &data[0], n*esz, &x[c0], n, r1-r0)
			if c0 > 0 {
				for i, v := range dst {
					o[i] += v
				}
			}
		}
		r0 = r1
	}
}

// q4PrepBF16 is prepBF16Go in assembly (x has groups·bpg·128 inputs).
func q4PrepBF16(dst []uint16, nxs, x []float32, groups, bpg int, k float32) {
	n := groups * bpg * 128
	_, _, _ = dst[2*n-1], nxs[16*groups-1], x[n-1]
	mvQ4PrepBF16(&dst[0], &nxs[0], &x[0], groups, bpg, k)
}

// q4PrepVNNI is prepVNNIGo in assembly (len(x) a multiple of G, G a
// multiple of 128). Only the VNNI family calls it, so the CPU has AVX-512.
func q4PrepVNNI(dst []int8, nxs, x []float32, G int, k int32) {
	n := len(x)
	_, _ = dst[2*n-1], nxs[2*(n/G)-1]
	mvQ4PrepVNNI(&dst[0], &nxs[0], &x[0], n/G, G/128, k)
}

// cpuHasAVX512VNNI reports whether the CPU runs VPDPBUSD on zmm.
func cpuHasAVX512VNNI() bool { return cpuid.CPU.Supports(cpuid.AVX512VNNI) }

// cpuHasAVX512BF16 reports whether the CPU runs VDPBF16PS.
func cpuHasAVX512BF16() bool { return cpuid.CPU.Supports(cpuid.AVX512BF16) }

// q4Call runs the int4 kernel of the family for the scale dtype and
// zero-point kind (direct calls, as denseCall).
func q4Call(impl q4Impl, sdt dtype.DType, asym bool, out *float32, w *byte, stride int, scales *byte, sstride int, zeros *byte, zidx int, ng int, x *float32, nxs *float32, gbytes int, rows int, l1 int) {
	k := 0 // BF16, F16, F32 scales; sym, asym
	switch sdt {
	case dtype.F16:
		k = 2
	case dtype.F32:
		k = 4
	}
	if asym {
		k++
	}
	switch impl {
	case q4AVX512VNNI:
		switch k {
		case 0:
			mvQ4BF16SymAVX512VNNI(out, w, stride, scales, sstride, zeros, zidx, ng, x, nxs, gbytes, rows, l1)
		case 1:
			mvQ4BF16AsymAVX512VNNI(out, w, stride, scales, sstride, zeros, zidx, ng, x, nxs, gbytes, rows, l1)
		case 2:
			mvQ4F16SymAVX512VNNI(out, w, stride, scales, sstride, zeros, zidx, ng, x, nxs, gbytes, rows, l1)
		case 3:
			mvQ4F16AsymAVX512VNNI(out, w, stride, scales, sstride, zeros, zidx, ng, x, nxs, gbytes, rows, l1)
		case 4:
			mvQ4F32SymAVX512VNNI(out, w, stride, scales, sstride, zeros, zidx, ng, x, nxs, gbytes, rows, l1)
		default:
			mvQ4F32AsymAVX512VNNI(out, w, stride, scales, sstride, zeros, zidx, ng, x, nxs, gbytes, rows, l1)
		}
	case q4AVX512BF16:
		switch k {
		case 0:
			mvQ4BF16SymAVX512BF16(out, w, stride, scales, sstride, zeros, zidx, ng, x, nxs, gbytes, rows, l1)
		case 1:
			mvQ4BF16AsymAVX512BF16(out, w, stride, scales, sstride, zeros, zidx, ng, x, nxs, gbytes, rows, l1)
		case 2:
			mvQ4F16SymAVX512BF16(out, w, stride, scales, sstride, zeros, zidx, ng, x, nxs, gbytes, rows, l1)
		case 3:
			mvQ4F16AsymAVX512BF16(out, w, stride, scales, sstride, zeros, zidx, ng, x, nxs, gbytes, rows, l1)
		case 4:
			mvQ4F32SymAVX512BF16(out, w, stride, scales, sstride, zeros, zidx, ng, x, nxs, gbytes, rows, l1)
		default:
			mvQ4F32AsymAVX512BF16(out, w, stride, scales, sstride, zeros, zidx, ng, x, nxs, gbytes, rows, l1)
		}
	case q4AVX512:
		switch k {
		case 0:
			mvQ4BF16SymAVX512(out, w, stride, scales, sstride, zeros, zidx, ng, x, nxs, gbytes, rows, l1)
		case 1:
			mvQ4BF16AsymAVX512(out, w, stride, scales, sstride, zeros, zidx, ng, x, nxs, gbytes, rows, l1)
		case 2:
			mvQ4F16SymAVX512(out, w, stride, scales, sstride, zeros, zidx, ng, x, nxs, gbytes, rows, l1)
		case 3:
			mvQ4F16AsymAVX512(out, w, stride, scales, sstride, zeros, zidx, ng, x, nxs, gbytes, rows, l1)
		case 4:
			mvQ4F32SymAVX512(out, w, stride, scales, sstride, zeros, zidx, ng, x, nxs, gbytes, rows, l1)
		default:
			mvQ4F32AsymAVX512(out, w, stride, scales, sstride, zeros, zidx, ng, x, nxs, gbytes, rows, l1)
		}
	default:
		switch k {
		case 0:
			mvQ4BF16SymAVX2(out, w, stride, scales, sstride, zeros, zidx, ng, x, nxs, gbytes, rows, l1)
		case 1:
			mvQ4BF16AsymAVX2(out, w, stride, scales, sstride, zeros, zidx, ng, x, nxs, gbytes, rows, l1)
		case 2:
			mvQ4F16SymAVX2(out, w, stride, scales, sstride, zeros, zidx, ng, x, nxs, gbytes, rows, l1)
		case 3:
			mvQ4F16AsymAVX2(out, w, stride, scales, sstride, zeros, zidx, ng, x, nxs, gbytes, rows, l1)
		case 4:
			mvQ4F32SymAVX2(out, w, stride, scales, sstride, zeros, zidx, ng, x, nxs, gbytes, rows, l1)
		default:
			mvQ4F32AsymAVX2(out, w, stride, scales, sstride, zeros, zidx, ng, x, nxs, gbytes, rows, l1)
		}
	}
}

// q4L1Bytes is the largest laid-out x the int4 kernels prefetch weights
// into L1 beside: half the 32 KiB L1 of Zen 4 (48 KiB on Sapphire Rapids).
const q4L1Bytes = 16 << 10

// q4Rows sets out[r] = W[r,:]·x for lo <= r < hi for a packed int4 W with
// the kernel family impl (not q4Go), given x and nxs from prepareQ4Into
// for the same family.
func q4Rows(impl q4Impl, out []float32, w Mat, xq, nxs []float32, lo, hi int) {
	if hi <= lo {
		return
	}
	if impl == q4AVX512VNNI16 {
		vnni16CallT(out, w, xq, nxs, 0, 1, lo, hi)
		return
	}
	q := w.Q4
	cols := w.Cols
	ng := cols / q.GroupSize
	ssz := q.ScaleDType.Size()
	stride := cols / 2
	codes := w.Data[lo*stride : hi*stride]
	scales := q.Scales[lo*ng*ssz : hi*ng*ssz]
	var zeros *byte
	if q.Zeros != nil {
		_ = q.Zeros[(hi*ng-1)/2] // the last zero point the kernel reads
		zeros = &q.Zeros[0]
	}
	o := out[lo:hi]
	xlen, lanes := cols, 16 // float32 slots of x, and per group of nxs
	switch impl {
	case q4AVX2:
		lanes = 8
	case q4AVX512VNNI:
		xlen, lanes = cols/2, 2 // two int8 per input
	}
	xs := xq[:xlen]
	nx := nxs[:lanes*ng]
	// Prefetch the next rows into L1 only while x (and its lane sums) stay
	// in L1 next to them (see prefetchNext in the generator).
	l1 := 0
	// The VNNI kernel counts the prefetched rows too (two passes of four
	// rows): its x is half as large, which lets a 6912-wide x pass the
	// first test, but x and 27 KiB of rows ahead overflow L1 (measured: T1
	// 20% faster than T0 there).
	xb := 4 * (len(xs) + len(nx))
	if impl == q4AVX512VNNI {
		xb += 8 * stride
	}
	if xb <= q4L1Bytes {
		l1 = 1
	}
	q4Call(impl, q.ScaleDType, zeros != nil, &o[0], &codes[0], stride, &scales[0], ng*ssz, zeros, lo*ng, ng, &xs[0], &nx[0], q.GroupSize/2, hi-lo, l1)
}

// dotISA is Dot with the level's kernel for the whole vectors, Go for the
// tail.
func dotISA(level ISA, a, b []float32) float32 {
	n := len(a)
	b = b[:n]
	var v int
	var s float32
	switch {
	case level == AVX512 && n >= 16:
		v = n &^ 15
		s = mvDotAVX512(&a[0], &b[0], v)
	case level >= AVX2 && n >= 8:
		v = n &^ 7
		s = mvDotAVX2(&a[0], &b[0], v)
	default:
		return dotGeneric(a, b)
	}
	for i := v; i < n; i++ {
		s += a[i] * b[i]
	}
	return s
}

// axpyISA is Axpy with the level's kernel for the whole vectors, Go for
// the tail.
func axpyISA(level ISA, y []float32, a float32, x []float32) {
	n := len(y)
	x = x[:n]
	var v int
	switch {
	case level == AVX512 && n >= 16:
		v = n &^ 15
		mvAxpyAVX512(&y[0], &x[0], a, v)
	case level >= AVX2 && n >= 8:
		v = n &^ 7
		mvAxpyAVX2(&y[0], &x[0], a, v)
	}
	for i := v; i < n; i++ {
		y[i] += a * x[i]
	}
}

// vnni16CallT runs the rows-in-lanes VNNI kernel for n (1-4) inputs on
// rows [lo, hi) (multiples of 16): input t laid out at xq[t·region:] and
// nxs[t·region:] (prepareQ4Into), its outputs at out[t·Rows + row]. The
// kernel adds each column tile's sums to the outputs (vnni16), so they
// are cleared first.
func vnni16CallT(out []float32, w Mat, xq, nxs []float32, region, n, lo, hi int) {
	r := w.rowsInLanes()
	G := w.Q4.GroupSize
	ng := w.Cols / G
	ssz := 4
	if r.scaleBF16 {
		ssz = 2
	}
	// The last output written and the last input words read.
	_ = out[(n-1)*w.Rows+hi-1]
	_ = xq[(n-1)*region+w.Cols/2-1]
	_ = nxs[(n-1)*region+2*ng-1]
	for t := 0; t < n; t++ {
		clear(out[t*w.Rows+lo : t*w.Rows+hi])
	}
	gbytes := 16 * G / 2
	for b0 := lo / vnni16Rows; b0 < hi/vnni16Rows; {
		b1 := min(hi/vnni16Rows, (b0/vnni16Super+1)*vnni16Super) // within b0's superblock
		for g0 := 0; g0 < ng; g0 += r.tileGroups {
			u := r.unit(b0, g0)
			tg := min(r.tileGroups, ng-g0)
			// The kernel reads (b1-b0)·tg block-groups from unit u.
			codes := r.codes[u*gbytes : (u+(b1-b0)*tg)*gbytes]
			scales := r.scales[16*u*ssz : 16*(u+(b1-b0)*tg)*ssz]
			var zeros *int32
			if r.zeros != nil {
				zeros = &r.zeros[16*u : 16*(u+(b1-b0)*tg)][0]
			}
			vnni16Call(&out[16*b0], 4*w.Rows, &codes[0], &scales[0], zeros, tg, G/128,
				&xq[g0*G/2], &nxs[2*g0], 4*region, b1-b0, r.scaleBF16, n)
		}
		b0 = b1
	}
}

// vnni16Call calls the rows-in-lanes kernel for n inputs (its arguments
// checked by vnni16CallT).
func vnni16Call(o *float32, os int, c, sp *byte, zeros *int32, ng, bpg int, x, nx *float32, ps, nb int, scaleBF16 bool, n int) {
	// Direct calls, as denseCall: the kernels' noescape then holds for the
	// callers' buffers.
	switch {
	case scaleBF16 && zeros == nil && n == 1:
		mvQ4BF16SymAVX512VNNI16T1(o, os, c, sp, zeros, ng, bpg, x, nx, ps, nb)
	case scaleBF16 && zeros == nil && n == 2:
		mvQ4BF16SymAVX512VNNI16T2(o, os, c, sp, zeros, ng, bpg, x, nx, ps, nb)
	case scaleBF16 && zeros == nil && n == 3:
		mvQ4BF16SymAVX512VNNI16T3(o, os, c, sp, zeros, ng, bpg, x, nx, ps, nb)
	case scaleBF16 && zeros == nil && n == 4:
		mvQ4BF16SymAVX512VNNI16T4(o, os, c, sp, zeros, ng, bpg, x, nx, ps, nb)
	case scaleBF16 && zeros != nil && n == 1:
		mvQ4BF16AsymAVX512VNNI16T1(o, os, c, sp, zeros, ng, bpg, x, nx, ps, nb)
	case scaleBF16 && zeros != nil && n == 2:
		mvQ4BF16AsymAVX512VNNI16T2(o, os, c, sp, zeros, ng, bpg, x, nx, ps, nb)
	case scaleBF16 && zeros != nil && n == 3:
		mvQ4BF16AsymAVX512VNNI16T3(o, os, c, sp, zeros, ng, bpg, x, nx, ps, nb)
	case scaleBF16 && zeros != nil && n == 4:
		mvQ4BF16AsymAVX512VNNI16T4(o, os, c, sp, zeros, ng, bpg, x, nx, ps, nb)
	case !scaleBF16 && zeros == nil && n == 1:
		mvQ4F32SymAVX512VNNI16T1(o, os, c, sp, zeros, ng, bpg, x, nx, ps, nb)
	case !scaleBF16 && zeros == nil && n == 2:
		mvQ4F32SymAVX512VNNI16T2(o, os, c, sp, zeros, ng, bpg, x, nx, ps, nb)
	case !scaleBF16 && zeros == nil && n == 3:
		mvQ4F32SymAVX512VNNI16T3(o, os, c, sp, zeros, ng, bpg, x, nx, ps, nb)
	case !scaleBF16 && zeros == nil && n == 4:
		mvQ4F32SymAVX512VNNI16T4(o, os, c, sp, zeros, ng, bpg, x, nx, ps, nb)
	case !scaleBF16 && zeros != nil && n == 1:
		mvQ4F32AsymAVX512VNNI16T1(o, os, c, sp, zeros, ng, bpg, x, nx, ps, nb)
	case !scaleBF16 && zeros != nil && n == 2:
		mvQ4F32AsymAVX512VNNI16T2(o, os, c, sp, zeros, ng, bpg, x, nx, ps, nb)
	case !scaleBF16 && zeros != nil && n == 3:
		mvQ4F32AsymAVX512VNNI16T3(o, os, c, sp, zeros, ng, bpg, x, nx, ps, nb)
	case !scaleBF16 && zeros != nil && n == 4:
		mvQ4F32AsymAVX512VNNI16T4(o, os, c, sp, zeros, ng, bpg, x, nx, ps, nb)
	default:
		panic("cpu: vnni16CallT takes 1 to 4 inputs")
	}
}

// int8Rows is MatVecInt8 on rows [lo, hi) with the level's dense int8
// kernel (one row at a time while x fits in L1, as denseCall) on the
// columns up to a multiple of the vector width, Go on the rest.
func int8Rows(level ISA, out []float32, w []int8, cols int, x []float32, lo, hi int) {
	lanes := mvLanes(level)
	n := cols &^ (lanes - 1)
	if lanes == 0 || n == 0 || hi <= lo {
		int8RowsGo(out, w, cols, x, lo, hi)
		return
	}
	o, data := out[lo:hi], w[lo*cols:hi*cols]
	wp, xp := (*byte)(unsafe.Pointer(&data[0])), &x[:cols][0]
	switch one := n <= denseRows1Cols; {
	case level == AVX512 && one:
		mvDenseI8AVX512Rows1(&o[0], wp, cols, xp, n, hi-lo)
	case level == AVX512:
		mvDenseI8AVX512(&o[0], wp, cols, xp, n, hi-lo)
	case one:
		mvDenseI8AVX2Rows1(&o[0], wp, cols, xp, n, hi-lo)
	default:
		mvDenseI8AVX2(&o[0], wp, cols, xp, n, hi-lo)
	}
	for r := range o {
		o[r] += dotInt8(data[r*cols+n:(r+1)*cols], x[n:cols])
	}
}
