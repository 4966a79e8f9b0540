//go:build !amd64

package cpu

// Other architectures have no kernels yet: every level runs plain Go, and
// mvSupported is false, so matVec and DotRows never reach the kernel entry
// points below.

func mvLanes(ISA) int { return 0 }

func denseRows(level ISA, out []float32, w Mat, x []float32, lo, hi int) {
	stride := w.Cols * w.DType.Size()
	sub := Mat{Rows: hi - lo, Cols: w.Cols, DType: w.DType, Data: w.Data[lo*stride : hi*stride]}
	sub.dotRowsGeneric(out[lo:hi], x)
}

func tiledRows(level ISA, out []float32, w Mat, t *denseTiles, x []float32, lo, hi int) {
	panic("cpu: no dense kernels on this architecture (mvSupported is false)")
}

func cpuHasAVX512BF16() bool { return false }

func cpuHasAVX512VNNI() bool { return false }

func q4PrepBF16(dst []uint16, nxs, x []float32, groups, bpg int, k float32) {
	prepBF16Go(dst, nxs, x, groups, bpg, k)
}

func q4PrepVNNI(dst []int8, nxs, x []float32, G int, k int32) {
	prepVNNIGo(dst, nxs, x, G, k)
}

func q4Rows(impl q4Impl, out []float32, w Mat, xq, nxs []float32, lo, hi int) {
	panic("cpu: no int4 kernels on this architecture (mvSupported is false)")
}

func dotISA(_ ISA, a, b []float32) float32 { return dotGeneric(a, b) }

func axpyISA(_ ISA, y []float32, a float32, x []float32) { axpyGeneric(y, a, x) }

func vnni16CallT(out []float32, w Mat, xq, nxs []float32, region, n, lo, hi int) {
	panic("cpu: no int4 kernels on this architecture (vnni16Suits is false)")
}

func int8Rows(_ ISA, out []float32, w []int8, cols int, x []float32, lo, hi int) {
	int8RowsGo(out, w, cols, x, lo, hi)
}
