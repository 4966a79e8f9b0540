package cpu

// The element-wise kernels of ops_amd64.s take any length (they mask the
// last partial vector) but not zero; the attention ones need head_dim to be
// a multiple of the vector width and fall back to Go otherwise.

// rmsNormISA normalizes the rows of x (each len(scale) long) into out.
func rmsNormISA(level ISA, out, x, scale []float32, eps float32) {
	n := len(scale)
	if n == 0 || len(x) < n {
		return
	}
	rows := len(x) / n
	x, out = x[:rows*n], out[:rows*n]
	switch level {
	case AVX512:
		opsRMSNormAVX512(&out[0], &x[0], &scale[0], n, rows, eps)
	case AVX2:
		opsRMSNormAVX2(&out[0], &x[0], &scale[0], n, rows, eps)
	default:
		rmsNormRowsGeneric(out, x, scale, eps)
	}
}

func gatedISA(level ISA, gate, up []float32, gelu bool) {
	n := len(gate)
	if n == 0 {
		return
	}
	up = up[:n]
	switch {
	case level == AVX512 && gelu:
		opsGatedGELUAVX512(&gate[0], &up[0], n)
	case level == AVX512:
		opsGatedSiLUAVX512(&gate[0], &up[0], n)
	case level == AVX2 && gelu:
		opsGatedGELUAVX2(&gate[0], &up[0], n)
	case level == AVX2:
		opsGatedSiLUAVX2(&gate[0], &up[0], n)
	default:
		gatedGeneric(gate, up, gelu)
	}
}

// softmaxISA replaces each row of x (n long) with its softmax.
func softmaxISA(level ISA, x []float32, n int) {
	if n <= 0 || len(x) < n {
		return
	}
	rows := len(x) / n
	x = x[:rows*n]
	switch level {
	case AVX512:
		opsSoftmaxAVX512(&x[0], n, rows)
	case AVX2:
		opsSoftmaxAVX2(&x[0], n, rows)
	default:
		for r := range rows {
			softmaxGeneric(x[r*n : (r+1)*n])
		}
	}
}

// scaledDotsISA is ScaledDots at level; rows is exactly as long as the
// last row's end (ScaledDots cuts it), so the kernel reads inside it.
func scaledDotsISA(level ISA, out, rows []float32, stride int, x []float32, scale float32) {
	hd := len(x)
	switch {
	case level == AVX512 && hd%16 == 0:
		opsScoresAVX512(&out[0], &rows[0], stride, &x[0], hd, len(out), scale)
	case level >= AVX2 && hd%8 == 0:
		opsScoresAVX2(&out[0], &rows[0], stride, &x[0], hd, len(out), scale)
	default:
		scaledDotsGeneric(out, rows, stride, x, scale)
	}
}

func weightedSumISA(level ISA, y, w, rows []float32, stride int) {
	hd := len(y)
	switch {
	case level == AVX512 && hd%16 == 0:
		opsWeightedSumAVX512(&y[0], &rows[0], stride, &w[0], hd, len(w))
	case level >= AVX2 && hd%8 == 0:
		opsWeightedSumAVX2(&y[0], &rows[0], stride, &w[0], hd, len(w))
	default:
		weightedSumGeneric(y, w, rows, stride)
	}
}

// expISA sets dst[i] = e^x[i] with the level's exponential (for the tests).
func expISA(level ISA, dst, x []float32) {
	if len(x) == 0 {
		return
	}
	dst = dst[:len(x)]
	switch level {
	case AVX512:
		opsExpAVX512(&dst[0], &x[0], len(x))
	case AVX2:
		opsExpAVX2(&dst[0], &x[0], len(x))
	default:
		for i, v := range x {
			dst[i] = exp32(v)
		}
	}
}

func ropeISA(level ISA, x, cos, sin []float32) {
	half := len(cos)
	heads := len(x) / (2 * half)
	if heads == 0 {
		return
	}
	switch {
	// A half of 8 (head_dim 16) fills no 16-lane vector: the AVX-512
	// kernel would take its masked tail for all of it, three times slower
	// than the AVX2 kernel's whole 8-lane vectors (BenchmarkOps/RoPE4x16).
	case level == AVX512 && half%16 != 0 && half%8 == 0:
		opsRoPEAVX2(&x[0], &cos[0], &sin[0], half, heads)
	case level == AVX512:
		opsRoPEAVX512(&x[0], &cos[0], &sin[0], half, heads)
	case level == AVX2:
		opsRoPEAVX2(&x[0], &cos[0], &sin[0], half, heads)
	default:
		ropeGeneric(x, cos, sin)
	}
}

func addISA(level ISA, y, x []float32) {
	if len(y) == 0 {
		return
	}
	switch level {
	case AVX512:
		opsAddAVX512(&y[0], &x[0], len(y))
	case AVX2:
		opsAddAVX2(&y[0], &x[0], len(y))
	default:
		addGeneric(y, x)
	}
}

func bestBlocks16ISA(level ISA, logits []float32, blocks []int, valid, hits []uint16) float32 {
	if level != AVX512 {
		return bestBlocks16Generic(logits, blocks, valid, hits)
	}
	return opsBestBlocks16AVX512(&logits[0], &blocks[0], len(blocks), &valid[0], &hits[0])
}
