package cpu

import "math"

// RMSNorm writes x * rsqrt(mean(x²) + eps) * scale into out (float32
// throughout). scale is the effective weight: (1 + w) for Gemma, w for
// Llama and Qwen3 (the model loader precomputes it).
func RMSNorm(out, x, scale []float32, eps float32) {
	var ss float32
	for _, v := range x {
		ss += v * v
	}
	inv := float32(1 / math.Sqrt(float64(ss/float32(len(x))+eps)))
	for i, v := range x {
		out[i] = v * inv * scale[i]
	}
}

// GELUTanh is PyTorch's gelu(x, approximate="tanh").
func GELUTanh(x float32) float32 {
	const c = 0.7978845608028654 // sqrt(2/pi)
	return float32(0.5 * float64(x) * (1 + math.Tanh(c*(float64(x)+0.044715*float64(x)*float64(x)*float64(x)))))
}

// SiLU is x * sigmoid(x).
func SiLU(x float32) float32 { return float32(float64(x) / (1 + math.Exp(-float64(x)))) }

// GatedActivation computes gate[i] = act(gate[i]) * up[i] in place, with act
// GELU-tanh (geglu) or SiLU (swiglu).
func GatedActivation(gate, up []float32, gelu bool) {
	if gelu {
		for i := range gate {
			gate[i] = GELUTanh(gate[i]) * up[i]
		}
		return
	}
	for i := range gate {
		gate[i] = SiLU(gate[i]) * up[i]
	}
}

// RoPE rotates x (one head, length 2*len(cos)) in place with the
// "rotate_half" layout: pairs are (i, i+D/2), x' = x*cos + rotate_half(x)*sin.
func RoPE(x, cos, sin []float32) {
	half := len(cos)
	for i := 0; i < half; i++ {
		a, b := x[i], x[i+half]
		x[i] = a*cos[i] - b*sin[i]
		x[i+half] = b*cos[i] + a*sin[i]
	}
}

// Softmax replaces x with softmax(x), computed in float32 after subtracting
// the maximum.
func Softmax(x []float32) {
	maxv := float32(math.Inf(-1))
	for _, v := range x {
		maxv = max(maxv, v)
	}
	var sum float32
	for i, v := range x {
		e := float32(math.Exp(float64(v - maxv)))
		x[i] = e
		sum += e
	}
	inv := 1 / sum
	for i := range x {
		x[i] *= inv
	}
}

// Softcap applies cap * tanh(x / cap) in place (Gemma-2-style logit capping).
func Softcap(x []float32, limit float32) {
	for i, v := range x {
		x[i] = limit * float32(math.Tanh(float64(v/limit)))
	}
}

// Axpy adds a*x to y (x at least as long as y), with the SIMD kernel of the
// CPU (attention runs it over every cached position of every head).
func Axpy(y []float32, a float32, x []float32) { axpyISA(isa, y, a, x) }

// axpyGeneric is Axpy in plain Go (the reference of the SIMD kernels).
func axpyGeneric(y []float32, a float32, x []float32) {
	x = x[:len(y)]
	for i := range y {
		y[i] += a * x[i]
	}
}
