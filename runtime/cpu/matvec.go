package cpu

// matVec is MatMul for one input vector (decode): out[r] = W[r,:] · x.
func matVec(p *Pool, out []float32, w Mat, x []float32) {
	MatMulRef(p, out, w, x, 1)
}
