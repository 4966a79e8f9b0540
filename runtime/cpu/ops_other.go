//go:build !amd64

package cpu

// Other architectures run the plain-Go versions of the element-wise
// operations at every level.

func rmsNormISA(_ ISA, out, x, scale []float32, eps float32) {
	if len(scale) > 0 {
		rmsNormRowsGeneric(out, x, scale, eps)
	}
}

func gatedISA(_ ISA, gate, up []float32, gelu bool) { gatedGeneric(gate, up, gelu) }

func softmaxISA(_ ISA, x []float32, n int) {
	for r := 0; n > 0 && (r+1)*n <= len(x); r++ {
		softmaxGeneric(x[r*n : (r+1)*n])
	}
}

func scaledDotsISA(_ ISA, out, rows []float32, stride int, x []float32, scale float32) {
	scaledDotsGeneric(out, rows, stride, x, scale)
}

func weightedSumISA(_ ISA, y, w, rows []float32, stride int) { weightedSumGeneric(y, w, rows, stride) }

func expISA(_ ISA, dst, x []float32) {
	for i, v := range x {
		dst[i] = exp32(v)
	}
}

func ropeISA(_ ISA, x, cos, sin []float32) { ropeGeneric(x, cos, sin) }

func addISA(_ ISA, y, x []float32) { addGeneric(y, x) }

// spinPause is the pool's spin-wait hint; plain Go has none to give.
func spinPause() {}

// prefetchLines is a hint that plain Go cannot give.
func prefetchLines(p *float32, n int) {}

func bestBlocks16ISA(_ ISA, logits []float32, blocks []int, valid, hits []uint16) float32 {
	return bestBlocks16Generic(logits, blocks, valid, hits)
}
