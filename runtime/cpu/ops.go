package cpu

//go:generate go run ./internal/asmgen/ops -out ops_amd64.s -stubs ops_stub_amd64.go

import (
	"fmt"
	"math"
	"unsafe"
)

// The element-wise operations of a forward pass (RMSNorm, the gated
// activations, softmax) run in float32 like transformers' float32
// activations, with the SIMD kernels of ops_amd64.s where the CPU has them
// and the plain-Go versions below (the same algorithms) elsewhere. The
// float64 functions named ...Ref are the accuracy references: the tests
// (ops_test.go) bound the difference to them, in float32 ulps, on random
// and edge inputs.

// RMSNorm writes x * rsqrt(mean(x²) + eps) * scale into out (float32
// throughout, as torch: the sum of squares in float32, then
// (x·rsqrt)·scale). scale is the effective weight: (1 + w) for Gemma, w
// for Llama and Qwen3 (the model loader precomputes it). out may be x.
func RMSNorm(out, x, scale []float32, eps float32) { rmsNormISA(isa, out, x, scale[:len(x)], eps) }

// RMSNormRows is RMSNorm on each row of x (rows len(scale) long, as many as
// fit) into the same row of out: one call for a batch's rows, or for the
// per-head q/k norms of several heads. out may be x.
func RMSNormRows(out, x, scale []float32, eps float32) { rmsNormISA(isa, out, x, scale, eps) }

// rmsNormRowsGeneric is RMSNormRows in plain Go.
func rmsNormRowsGeneric(out, x, scale []float32, eps float32) {
	n := len(scale)
	for r := 0; (r+1)*n <= len(x); r++ {
		rmsNormGeneric(out[r*n:(r+1)*n], x[r*n:(r+1)*n], scale, eps)
	}
}

// rmsNormGeneric is RMSNorm in plain Go.
func rmsNormGeneric(out, x, scale []float32, eps float32) {
	var ss float32
	for _, v := range x {
		ss += v * v
	}
	s := float32(math.Sqrt(float64(ss/float32(len(x)) + eps))) // float32 sqrt: one rounding either way
	inv := 1 / s
	scale = scale[:len(x)]
	out = out[:len(x)]
	for i, v := range x {
		out[i] = v * inv * scale[i]
	}
}

// RMSNormRef is RMSNorm with the reciprocal square root in float64 (the
// runtime's former implementation; the tests' reference).
func RMSNormRef(out, x, scale []float32, eps float32) {
	var ss float32
	for _, v := range x {
		ss += v * v
	}
	inv := float32(1 / math.Sqrt(float64(ss/float32(len(x))+eps)))
	for i, v := range x {
		out[i] = v * inv * scale[i]
	}
}

// GELUTanhRef is PyTorch's gelu(x, approximate="tanh") in float64, rounded
// once to float32 (the accuracy reference of the float32 kernels).
func GELUTanhRef(x float32) float32 {
	const c = 0.7978845608028654 // sqrt(2/pi)
	return float32(0.5 * float64(x) * (1 + math.Tanh(c*(float64(x)+0.044715*float64(x)*float64(x)*float64(x)))))
}

// SiLURef is x * sigmoid(x) in float64, rounded once to float32.
func SiLURef(x float32) float32 { return float32(float64(x) / (1 + math.Exp(-float64(x)))) }

// GatedActivation computes gate[i] = act(gate[i]) * up[i] in place, with act
// GELU-tanh (geglu) or SiLU (swiglu), in float32. Both are x·sigmoid(a):
// a = x for SiLU, and a = 2·sqrt(2/pi)·(x + 0.044715x³) for GELU-tanh,
// since 0.5·(1 + tanh(a/2)) = sigmoid(a); they are computed as
// x / (1 + e^-a), which has no cancellation (torch's 1 + tanh(·) loses all
// digits below x ≈ -5).
func GatedActivation(gate, up []float32, gelu bool) { gatedISA(isa, gate, up, gelu) }

// gatedGeneric is GatedActivation in plain Go.
func gatedGeneric(gate, up []float32, gelu bool) {
	up = up[:len(gate)]
	if gelu {
		for i, x := range gate {
			gate[i] = geluTanh32(x) * up[i]
		}
		return
	}
	for i, x := range gate {
		gate[i] = silu32(x) * up[i]
	}
}

// GELU-tanh is x·sigmoid(a) = x / (1 + e^-a) with -a = x·(geluK1 +
// geluK2·x²). The argument is reduced for the exponential in float64 (as
// the kernels do): in float32 its roundings would err by 3u·|a| (u =
// 2^-24), which the exponential turns into a relative error of 3u·|a| in
// the result, 14u at x = -4.
const (
	geluK1 = -2 * 0.7978845608028654
	geluK2 = -2 * 0.7978845608028654 * 0.044715
)

func geluTanh32(x float32) float32 {
	d := float64(x)
	return x / (1 + exp32Reduced(d*(geluK1+geluK2*d*d)))
}

// exp32Reduced is exp32 of a float64 argument, reduced in float64 (r =
// a - n·ln2 is then exact before its rounding to float32).
func exp32Reduced(a float64) float32 {
	switch af := float32(a); {
	case af < expLo:
		return 0
	case af > expHi:
		return float32(math.Inf(1))
	case af != af:
		return af
	}
	n := math.RoundToEven(a * math.Log2E)
	return expPoly(float32(a-n*math.Ln2), int32(n))
}

func silu32(x float32) float32 { return x / (1 + exp32(-x)) }

// GatedActivationRef is GatedActivation with GELUTanhRef or SiLURef.
func GatedActivationRef(gate, up []float32, gelu bool) {
	if gelu {
		for i := range gate {
			gate[i] = GELUTanhRef(gate[i]) * up[i]
		}
		return
	}
	for i := range gate {
		gate[i] = SiLURef(gate[i]) * up[i]
	}
}

// The float32 exponential shared by softmax and the activations (the
// kernels in ops_amd64.s compute the same): x = n·ln2 + r with n =
// round(x·log2e) and |r| <= ln2/2 (about), e^r by its degree-7 Taylor
// polynomial in Horner form, times 2^n. The truncation error is
// (ln2/2)^8/8! < 0.14 ulp and the Horner roundings add about one ulp, so
// the result is within 2 ulp of e^x (TestExp bounds it). ln2 is split in
// hi + lo with hi's last 12 mantissa bits clear, so n·hi is exact and x -
// n·hi too (Sterbenz). Results below FLT_MIN flush to 0 and from expHi up
// saturate to +Inf (2^n must be a normal float); the AVX-512 kernels round
// to subnormals and overflow exactly instead (VSCALEFPS).
const (
	log2e32 = float32(math.Log2E)
	ln2Hi   = float32(0.693115234375)           // bits 0x3f317000
	ln2Lo   = float32(3.194618329871446e-05)    // ln2 - ln2Hi, rounded
	expLo   = float32(-87.33654475055310898657) // ln(FLT_MIN)
	expHi   = float32(88.37626)                 // largest x with round(x·log2e) <= 127
	expC2   = float32(1.0 / 2)
	expC3   = float32(1.0 / 6)
	expC4   = float32(1.0 / 24)
	expC5   = float32(1.0 / 120)
	expC6   = float32(1.0 / 720)
	expC7   = float32(1.0 / 5040)
)

func exp32(x float32) float32 {
	switch {
	case x < expLo:
		return 0
	case x > expHi:
		return float32(math.Inf(1))
	case x != x:
		return x
	}
	n := float32(math.RoundToEven(float64(x * log2e32)))
	r := x - n*ln2Hi
	r -= n * ln2Lo
	return expPoly(r, int32(n))
}

// expPoly returns e^r·2^n for |r| <= ln2/2 (about) and n in [-126, 127].
func expPoly(r float32, n int32) float32 {
	p := expC7
	p = p*r + expC6
	p = p*r + expC5
	p = p*r + expC4
	p = p*r + expC3
	p = p*r + expC2
	p = p*r + 1
	p = p*r + 1
	return p * math.Float32frombits(uint32(n+127)<<23)
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

// RoPEHeads is RoPE on each head of x (consecutive heads of 2*len(cos)
// values, as many as fit) with the same tables: one call for a row's
// heads. The kernels round as RoPE does (products, then the sum), so the
// results are RoPE's bit for bit.
func RoPEHeads(x, cos, sin []float32) {
	half := len(cos)
	if half == 0 {
		return
	}
	sin = sin[:half]
	ropeISA(isa, x[:len(x)/(2*half)*2*half], cos, sin)
}

// ropeGeneric is RoPEHeads in plain Go.
func ropeGeneric(x, cos, sin []float32) {
	hd := 2 * len(cos)
	for h := 0; (h+1)*hd <= len(x); h++ {
		RoPE(x[h*hd:(h+1)*hd], cos, sin)
	}
}

// Add adds x to y element-wise (x at least as long as y): the residual
// connections, one rounding per element as the plain loop.
func Add(y, x []float32) { addISA(isa, y, x[:len(y)]) }

func addGeneric(y, x []float32) {
	x = x[:len(y)]
	for i := range y {
		y[i] += x[i]
	}
}

// Softmax replaces x with softmax(x), in float32: the maximum, e^(x-max)
// with the float32 exponential, their sum, and a scaling by 1/sum (torch's
// float32 softmax takes the same steps).
func Softmax(x []float32) { softmaxISA(isa, x, len(x)) }

// SoftmaxRows is Softmax on each row of x (rows n long, as many as fit):
// one call for the score rows of several heads.
func SoftmaxRows(x []float32, n int) { softmaxISA(isa, x, n) }

// softmaxGeneric is Softmax in plain Go.
func softmaxGeneric(x []float32) {
	maxv := float32(math.Inf(-1))
	for _, v := range x {
		maxv = max(maxv, v)
	}
	var sum float32
	for i, v := range x {
		e := exp32(v - maxv)
		x[i] = e
		sum += e
	}
	inv := 1 / sum
	for i := range x {
		x[i] *= inv
	}
}

// SoftmaxRef is Softmax with the exponential in float64 (the runtime's
// former implementation; the tests' reference).
func SoftmaxRef(x []float32) {
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

// ScaledDots sets out[i] = scale · Σ_d x[d]·rows[i·stride + d] for i <
// len(out), d < len(x): one attention head's scores over len(out) cached
// keys stride floats apart, in one call (per-position Dot calls cost more
// than the products when head_dim is small).
func ScaledDots(out, rows []float32, stride int, x []float32, scale float32) {
	n, hd := len(out), len(x)
	if n == 0 || hd == 0 {
		clear(out)
		return
	}
	rows = rows[:(n-1)*stride+hd]
	scaledDotsISA(isa, out, rows, stride, x, scale)
}

// scaledDotsGeneric is ScaledDots in plain Go.
func scaledDotsGeneric(out, rows []float32, stride int, x []float32, scale float32) {
	hd := len(x)
	for i := range out {
		r := rows[i*stride : i*stride+hd]
		var s float32
		for d, v := range x {
			s += v * r[d]
		}
		out[i] = s * scale
	}
}

// WeightedSum adds Σ_i w[i]·rows[i·stride + d] to y[d] for i < len(w), d <
// len(y): attention's weighted sum of len(w) cached value rows stride
// floats apart, with y held in registers over all of them.
func WeightedSum(y, w, rows []float32, stride int) {
	n, hd := len(w), len(y)
	if n == 0 || hd == 0 {
		return
	}
	rows = rows[:(n-1)*stride+hd]
	weightedSumISA(isa, y, w, rows, stride)
}

// weightedSumGeneric is WeightedSum in plain Go.
func weightedSumGeneric(y, w, rows []float32, stride int) {
	hd := len(y)
	for i, a := range w {
		r := rows[i*stride : i*stride+hd]
		for d := range y {
			y[d] += a * r[d]
		}
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

// Prefetch asks for the cache lines holding x to be loaded into L1 without
// waiting for them (a hint: it changes no values, and does nothing where
// the CPU has no prefetch instruction). Attention issues it for the cached
// keys and values it is about to read (a part's first row's, then each
// next row's), which the weights streamed since the last step evicted.
func Prefetch(x []float32) {
	if len(x) == 0 {
		return
	}
	first := uintptr(unsafe.Pointer(&x[0])) >> 6
	last := uintptr(unsafe.Pointer(&x[len(x)-1])) >> 6
	prefetchLines(&x[0], int(last-first)+1)
}

// BestBlocks16 is the FlashHead's pick among probed blocks of 16 logits:
// block k is logits[16k : 16k+16], its lanes valid[k] (bit s for lane s).
// It returns the largest valid lane of the blocks listed in blocks, and
// sets hits[i] to the valid lanes of block blocks[i] that equal it (one
// compare, so -0 and +0 are equal); -Inf when no lane is valid. When a
// valid lane is NaN it returns NaN and hits are unspecified: the caller
// then ranks the blocks its own way. It panics when a block is out of
// range or hits is shorter than blocks.
func BestBlocks16(logits []float32, blocks []int, valid, hits []uint16) float32 {
	hits = hits[:len(blocks)]
	for _, k := range blocks {
		if k < 0 || k >= len(valid) || 16*k+16 > len(logits) {
			panic(fmt.Sprintf("cpu: BestBlocks16: block %d of %d logits (%d masks)", k, len(logits), len(valid)))
		}
	}
	if len(blocks) == 0 {
		return float32(math.Inf(-1))
	}
	return bestBlocks16ISA(isa, logits, blocks, valid, hits)
}

// bestBlocks16Generic is BestBlocks16 in plain Go.
func bestBlocks16Generic(logits []float32, blocks []int, valid, hits []uint16) float32 {
	best := float32(math.Inf(-1))
	for _, k := range blocks {
		for s, v := range logits[16*k : 16*k+16] {
			if valid[k]>>s&1 == 0 {
				continue
			}
			if v != v {
				return float32(math.NaN())
			}
			best = max(best, v)
		}
	}
	for i, k := range blocks {
		var m uint16
		for s, v := range logits[16*k : 16*k+16] {
			if valid[k]>>s&1 != 0 && v == best {
				m |= 1 << s
			}
		}
		hits[i] = m
	}
	return best
}

// ScoreStride is the length of an attention score row holding n scores:
// whole vectors of 16 lanes, so that the softmax of a block of rows has no
// partial last vector per row (its masked store and the reload of the same
// bytes by the next pass cost as much as the rest of a short row: 4 rows
// of 54 scores took 170 ns, of 48 or 64 91 and 117). The padding holds
// -Inf, which weighs nothing.
func ScoreStride(n int) int { return (n + 15) &^ 15 }

// AttendRow is one query row's attention over n positions whose keys and
// values are rows stride floats apart in k and v (from the first
// position), the work a decode step does head by head: for each of the
// len(q)/hd heads h, reading key-value head h/group, the scores
// scale·q_h·k_i (ScaledDots) padded with -Inf to ScoreStride(n), their
// softmax (SoftmaxRows, all heads in one call), and out_h = Σ_i w_i·v_i
// (WeightedSum); the same kernels in the same order, with their checks
// made once per row. scores is scratch of at least heads·ScoreStride(n).
func AttendRow(out, q, k, v, scores []float32, stride, hd, group, n int, scale float32) {
	if hd < 1 || group < 1 || n < 1 || len(q)%hd != 0 {
		panic(fmt.Sprintf("cpu: AttendRow: head size %d, group %d, %d positions, %d query floats", hd, group, n, len(q)))
	}
	heads, ns := len(q)/hd, ScoreStride(n)
	need := (n-1)*stride + ((heads-1)/group+1)*hd // the last row's last key-value head
	if len(out) < heads*hd || len(k) < need || len(v) < need || len(scores) < heads*ns {
		panic(fmt.Sprintf("cpu: AttendRow: %d heads of %d over %d positions need %d out, %d key and value, %d score floats; have %d, %d, %d, %d",
			heads, hd, n, heads*hd, need, heads*ns, len(out), len(k), len(v), len(scores)))
	}
	for h := range heads {
		g := h / group
		scaledDotsISA(isa, scores[h*ns:h*ns+n], k[g*hd:], stride, q[h*hd:(h+1)*hd], scale)
		for j := h*ns + n; j < (h+1)*ns; j++ {
			scores[j] = float32(math.Inf(-1))
		}
	}
	softmaxISA(isa, scores[:heads*ns], ns)
	for h := range heads {
		g := h / group
		oh := out[h*hd : (h+1)*hd]
		clear(oh)
		weightedSumISA(isa, oh, scores[h*ns:h*ns+n], v[g*hd:], stride)
	}
}
