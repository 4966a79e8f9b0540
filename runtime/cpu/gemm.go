package cpu

// gemm is MatMul for T > 1 input vectors (prefill, batched decode).
func gemm(p *Pool, out []float32, w Mat, x []float32, T int) {
	MatMulRef(p, out, w, x, T)
}
