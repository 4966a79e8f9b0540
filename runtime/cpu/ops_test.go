package cpu

import (
	"fmt"
	"github.com/fhkit/fhkit/internal/race"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// The float32 element-wise operations are checked against exact float64
// evaluations of the same formulas on the same float32 inputs, with error
// bounds derived from their roundings (u = 2^-24, the unit roundoff of
// float32, u32 in matvec_test.go; an ulp of a value v is 2u·|v| at most). Every level the CPU runs
// is tested: the plain-Go versions and the kernels of ops_amd64.s.

// minNormal is FLT_MIN, below which the kernels may flush results to zero.
const minNormal = 0x1p-126

// opsLevels returns the levels to test: Generic and every SIMD level the
// CPU runs.
func opsLevels() []ISA {
	levels := []ISA{Generic}
	for _, l := range []ISA{AVX2, AVX512} {
		if l <= DetectISA() {
			levels = append(levels, l)
		}
	}
	return levels
}

// expInputs are random arguments over the whole interesting range, and the
// edges: zero, tiny, the flush and overflow limits and around them, huge.
func expInputs(rng *rand.Rand) []float32 {
	xs := []float32{0, float32(math.Copysign(0, -1)), 1e-30, -1e-30, 1, -1, 0.5 * math.Ln2, -0.5 * math.Ln2,
		expLo, math.Nextafter32(expLo, 0), math.Nextafter32(expLo, -100), expHi, math.Nextafter32(expHi, 0), math.Nextafter32(expHi, 100),
		-87, -88, -100, -103.9, -104, -150, 88, 88.7, 88.8, 89, 100, 1e10, -1e10, math.MaxFloat32, -math.MaxFloat32,
		float32(math.Inf(-1)), float32(math.Inf(1))}
	for i := 0; i < 20000; i++ {
		xs = append(xs, float32(rng.Float64()*210-110))
	}
	for i := 0; i < 5000; i++ {
		xs = append(xs, float32(rng.NormFloat64()))
	}
	return xs
}

// The shared exponential is within 2 ulp (4u relative) of e^x where e^x is
// a normal float32: the Taylor truncation is below 0.14 ulp and the Horner
// roundings add at most ~1.5u relative each, damped by |r| <= 0.35 after
// the last (see exp32). Below FLT_MIN results may be flushed to zero (AVX2,
// Go) or rounded to subnormals (AVX-512): the error is then below FLT_MIN.
// Above expHi, AVX2 and Go saturate to +Inf (e^x > 2.4e38 there).
func TestExp(t *testing.T) {
	xs := expInputs(rand.New(rand.NewPCG(1, 2)))
	got := make([]float32, len(xs))
	for _, level := range opsLevels() {
		// Odd lengths, so the masked last vector is covered too.
		for _, n := range []int{len(xs), 1, 7, 13, 33} {
			expISA(level, got[:n], xs[:n])
		}
		expISA(level, got, xs)
		worst := 0.0
		for i, x := range xs {
			ref := math.Exp(float64(x))
			g := float64(got[i])
			switch {
			case ref < minNormal:
				if g < 0 || g-ref > minNormal {
					t.Fatalf("%s: exp(%g) = %g, want %g (within FLT_MIN)", level, x, g, ref)
				}
			case ref > math.MaxFloat32 || x > expHi:
				if !math.IsInf(g, 1) && math.Abs(g-ref) > 4*u32*ref {
					t.Fatalf("%s: exp(%g) = %g, want +Inf or %g", level, x, g, ref)
				}
			default:
				e := math.Abs(g-ref) / ref / u32
				worst = max(worst, e)
				if e > 4 {
					t.Fatalf("%s: exp(%g) = %g, want %g (%.2fu)", level, x, g, ref, e)
				}
			}
		}
		t.Logf("%s: largest relative error of exp %.2fu", level, worst)
	}
}

// gatedBound returns the error bound of act(x)·up computed as x/(1+E)·up,
// E = e^-a, against the exact value ref: the product, the division and the
// addition round once each (3u), E carries the exponential's 4u and the
// rounding of its reduced argument r to float32 (|r| <= 0.35, so 0.35u
// absolute, 0.5u relative in E; SiLU's a = -x is exact, GELU's is reduced
// in float64). An error δ in E moves x/(1+E) by δ·E/(1+E) <= δ relative.
// Where E overflows (a < -88.3) the result is 0 and |ref| < |x·up|·2^-127.
func gatedBound(x, up float32, ref float64) float64 {
	return math.Abs(ref)*(3*u32+4.5*u32) + math.Abs(float64(x)*float64(up))*0x1p-127
}

func TestGatedActivation(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	xs := expInputs(rng)
	for i := range xs {
		if math.IsInf(float64(xs[i]), 0) {
			xs[i] = 0 // inf·0-style results are NaN in every formula
		}
	}
	for i := 0; i < 5000; i++ { // GELU's cubic: large |x| in float32's range
		xs = append(xs, float32(math.Copysign(math.Exp(rng.Float64()*88), rng.Float64()-0.5)))
	}
	ups := make([]float32, len(xs))
	for i := range ups {
		ups[i] = float32(rng.NormFloat64())
	}
	for _, gelu := range []bool{true, false} {
		refs := make([]float64, len(xs))
		for i, x := range xs {
			xf := float64(x)
			if gelu {
				// 0.5·x·(1 + tanh(a/2)) as x·sigmoid(a): in float64 too,
				// 1 + tanh cancels to 0 below x ≈ -5.7 (GELUTanhRef does).
				a := 2 * 0.7978845608028654 * (xf + 0.044715*xf*xf*xf)
				refs[i] = xf / (1 + math.Exp(-a)) * float64(ups[i])
			} else {
				refs[i] = xf / (1 + math.Exp(-xf)) * float64(ups[i])
			}
		}
		for _, level := range opsLevels() {
			got := append([]float32(nil), xs...)
			for _, n := range []int{1, 5, 31, 33} {
				gatedISA(level, got[:n], ups[:n], gelu)
			}
			got = append(got[:0], xs...)
			gatedISA(level, got, ups, gelu)
			worst := 0.0
			for i, g := range got {
				gf := float64(g)
				if math.IsNaN(gf) || math.IsInf(gf, 0) {
					t.Fatalf("%s gelu %t: act(%g)·%g = %g", level, gelu, xs[i], ups[i], g)
				}
				d := math.Abs(gf - refs[i])
				if d > gatedBound(xs[i], ups[i], refs[i]) {
					t.Fatalf("%s gelu %t: act(%g)·%g = %g, want %g (error %g, bound %g)", level, gelu, xs[i], ups[i], g, refs[i], d, gatedBound(xs[i], ups[i], refs[i]))
				}
				if math.Abs(refs[i]) > 1e-30 {
					worst = max(worst, d/math.Abs(refs[i])/u32)
				}
			}
			t.Logf("%s gelu %t: largest relative error %.2fu (results above 1e-30)", level, gelu, worst)
		}
	}
}

// softmaxExact is the softmax of x in float64.
func softmaxExact(x []float32) []float64 {
	m := math.Inf(-1)
	for _, v := range x {
		m = max(m, float64(v))
	}
	out := make([]float64, len(x))
	var sum float64
	for i, v := range x {
		out[i] = math.Exp(float64(v) - m)
		sum += out[i]
	}
	for i := range out {
		out[i] /= sum
	}
	return out
}

// Softmax is within a bound of the exact softmax of its float32 input: the
// float32 subtraction x - max errs by u·|x - max| (relative error in e^x,
// SoftmaxRef has it too), the exponential by 4u, the sum of n positive
// terms by at most (n + 4)u relative (a bound for any order of summation:
// sequential in Go, lanes then across in the kernels), 1/sum and the
// scaling by u each.
func TestSoftmax(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, level := range opsLevels() {
		worst := 0.0
		for trial := 0; trial < 3000; trial++ {
			n := 1 + rng.IntN(90)
			if trial%100 == 0 {
				n = 1000 + rng.IntN(100)
			}
			spread := []float64{0.1, 3, 20, 200}[trial%4] // 200: most terms flush to 0
			x := make([]float32, n)
			for i := range x {
				x[i] = float32(rng.NormFloat64()*spread + 5)
			}
			want := softmaxExact(x)
			m := x[0]
			for _, v := range x {
				m = max(m, v)
			}
			got := append([]float32(nil), x...)
			softmaxISA(level, got, len(got))
			var sum float64
			for i, g := range got {
				sum += float64(g)
				bound := want[i]*(u32*math.Abs(float64(x[i]-m))+float64(n+10)*u32) + minNormal
				d := math.Abs(float64(g) - want[i])
				if d > bound {
					t.Fatalf("%s n=%d: softmax[%d] = %g, want %g (error %g > %g)", level, n, i, g, want[i], d, bound)
				}
				if want[i] > 1e-3 {
					worst = max(worst, d/want[i]/u32)
				}
			}
			if math.Abs(sum-1) > float64(2*n+10)*u32 {
				t.Fatalf("%s n=%d: softmax sums to %v", level, n, sum)
			}
		}
		t.Logf("%s: largest relative error of softmax %.2fu (terms > 1e-3)", level, worst)
	}
	// Against the former float64-exponential version, on attention-like rows.
	for _, level := range opsLevels() {
		x := make([]float32, 64)
		for i := range x {
			x[i] = float32(rng.NormFloat64() * 4)
		}
		got, ref := append([]float32(nil), x...), append([]float32(nil), x...)
		softmaxISA(level, got, len(got))
		SoftmaxRef(ref)
		for i := range got {
			if d := math.Abs(float64(got[i] - ref[i])); d > 40*u32*float64(ref[i])+minNormal {
				t.Fatalf("%s: softmax[%d] = %g, SoftmaxRef %g", level, i, got[i], ref[i])
			}
		}
	}
}

// RMSNorm against the exact float64 value: the sum of n squares errs by at
// most (n + 5)u relative in any order (products rounded or fused), the
// mean and +eps by u each; the square root halves that and adds u, the
// reciprocal u, and the two products u each.
func TestRMSNorm(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, level := range opsLevels() {
		worst := 0.0
		for trial := 0; trial < 2000; trial++ {
			n := 1 + rng.IntN(300)
			mag := math.Exp(rng.Float64()*20 - 10)
			x, scale := make([]float32, n), make([]float32, n)
			for i := range x {
				x[i] = float32(rng.NormFloat64() * mag)
				scale[i] = float32(1 + rng.NormFloat64())
			}
			eps := float32(1e-6)
			var ss float64
			for _, v := range x {
				ss += float64(v) * float64(v)
			}
			inv := 1 / math.Sqrt(ss/float64(n)+float64(eps))
			rel := (float64(n+5)*u32+2*u32)/2 + 4*u32
			out := make([]float32, n)
			in := append([]float32(nil), x...)
			for _, inPlace := range []bool{false, true} {
				dst := out
				if inPlace {
					dst = in
				}
				rmsNormISA(level, dst, in, scale, eps)
				for i, g := range dst {
					want := float64(x[i]) * inv * float64(scale[i])
					d := math.Abs(float64(g) - want)
					if d > rel*math.Abs(want)+minNormal {
						t.Fatalf("%s n=%d: rmsnorm[%d] = %g, want %g (error %.1fu)", level, n, i, g, want, d/math.Abs(want)/u32)
					}
					if want != 0 {
						worst = max(worst, d/math.Abs(want)/u32)
					}
				}
			}
		}
		t.Logf("%s: largest relative error of RMSNorm %.2fu", level, worst)
	}
}

// dotBound is the error bound of a float32 dot product of length n in any
// order (with or without FMA), times scale (one more rounding): (n + 2)u
// times Σ|a·b|·|scale|.
func dotBound(n int, absSum, scale float64) float64 {
	return float64(n+2) * u32 * absSum * math.Abs(scale)
}

// ScaledDots and WeightedSum on strided rows, head sizes that are and are
// not multiples of the vector width, odd position counts.
func TestScaledDotsWeightedSum(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, level := range opsLevels() {
		for _, hd := range []int{16, 8, 32, 48, 64, 128, 256, 5, 24} {
			for _, n := range []int{1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 47, 64, 65} {
				stride := hd * (1 + rng.IntN(3))
				rows := make([]float32, (n-1)*stride+hd)
				for i := range rows {
					rows[i] = float32(rng.NormFloat64())
				}
				q := make([]float32, hd)
				for i := range q {
					q[i] = float32(rng.NormFloat64())
				}
				scale := float32(0.25)
				// Past the n scores, a vector of words no kernel may write.
				guard := make([]float32, n+16)
				for i := range guard {
					guard[i] = 1234.5
				}
				s := guard[:n]
				scaledDotsISA(level, s, rows, stride, q, scale)
				for i, v := range guard[n:] {
					if v != 1234.5 {
						t.Fatalf("%s hd=%d n=%d: scores wrote %g at s[n+%d]", level, hd, n, v, i)
					}
				}
				for i := range s {
					var want, abs float64
					for d := range hd {
						p := float64(q[d]) * float64(rows[i*stride+d])
						want += p
						abs += math.Abs(p)
					}
					want *= float64(scale)
					if d := math.Abs(float64(s[i]) - want); d > dotBound(hd, abs, float64(scale)) {
						t.Fatalf("%s hd=%d n=%d: score %d = %g, want %g", level, hd, n, i, s[i], want)
					}
				}

				y := make([]float32, hd)
				for i := range y {
					y[i] = float32(rng.NormFloat64())
				}
				y0 := append([]float32(nil), y...)
				weightedSumISA(level, y, s, rows, stride)
				for d := range y {
					want, abs := float64(y0[d]), math.Abs(float64(y0[d]))
					for i := range s {
						p := float64(s[i]) * float64(rows[i*stride+d])
						want += p
						abs += math.Abs(p)
					}
					if e := math.Abs(float64(y[d]) - want); e > dotBound(n+1, abs, 1) {
						t.Fatalf("%s hd=%d n=%d: weighted sum[%d] = %g, want %g", level, hd, n, d, y[d], want)
					}
				}
			}
		}
	}
}

// Each kernel against the plain-Go version of the same algorithm, on random
// inputs of odd lengths: both are within the bounds above of the exact
// values (relative 7.5u for the activations, (n + 10)u for softmax, (n +
// 13)u/2 for RMSNorm at these sizes), so they are within the sum of two.
func TestOpsMatchGeneric(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	vec := func(n int, s float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() * s)
		}
		return v
	}
	near := func(a, b float32, rel float64) bool {
		return math.Abs(float64(a-b)) <= rel*u32*math.Max(math.Abs(float64(a)), math.Abs(float64(b)))+minNormal
	}
	for _, level := range opsLevels()[1:] {
		for _, n := range []int{1, 3, 15, 17, 47, 48, 63, 64, 65, 129, 1001} {
			x, up, scale := vec(n, 3), vec(n, 1), vec(n, 1)
			for _, gelu := range []bool{true, false} {
				a, b := append([]float32(nil), x...), append([]float32(nil), x...)
				gatedISA(level, a, up, gelu)
				gatedGeneric(b, up, gelu)
				for i := range a {
					if !near(a[i], b[i], 15) {
						t.Fatalf("%s n=%d gelu %t: [%d] kernel %g, Go %g", level, n, gelu, i, a[i], b[i])
					}
				}
			}
			a, b := append([]float32(nil), x...), append([]float32(nil), x...)
			softmaxISA(level, a, len(a))
			softmaxGeneric(b)
			for i := range a {
				if !near(a[i], b[i], float64(2*n+20)) {
					t.Fatalf("%s n=%d: softmax[%d] kernel %g, Go %g", level, n, i, a[i], b[i])
				}
			}
			rmsNormISA(level, a, x, scale, 1e-6)
			rmsNormGeneric(b, x, scale, 1e-6)
			for i := range a {
				if !near(a[i], b[i], float64(n+13)) {
					t.Fatalf("%s n=%d: rmsnorm[%d] kernel %g, Go %g", level, n, i, a[i], b[i])
				}
			}
		}
	}
}

// The row-batched kernels (four rows per group, then one at a time) give
// every row exactly what a call on that row alone gives: the four-row
// reductions add the lanes in the one-row order.
func TestRowsMatchSingle(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, level := range opsLevels() {
		for _, n := range []int{1, 5, 16, 17, 48, 64, 100} {
			for rows := 1; rows <= 9; rows++ {
				x, scale := make([]float32, rows*n), make([]float32, n)
				for i := range x {
					x[i] = float32(rng.NormFloat64() * 3)
				}
				for i := range scale {
					scale[i] = float32(1 + rng.NormFloat64())
				}
				got, want := make([]float32, len(x)), make([]float32, len(x))
				rmsNormISA(level, got, x, scale, 1e-6)
				for r := range rows {
					rmsNormISA(level, want[r*n:(r+1)*n], x[r*n:(r+1)*n], scale, 1e-6)
				}
				for i := range got {
					if got[i] != want[i] {
						t.Fatalf("%s n=%d rows=%d: RMSNormRows[%d] = %g, one row at a time %g", level, n, rows, i, got[i], want[i])
					}
				}
				copy(got, x)
				copy(want, x)
				softmaxISA(level, got, n)
				for r := range rows {
					softmaxISA(level, want[r*n:(r+1)*n], n)
				}
				for i := range got {
					if got[i] != want[i] {
						t.Fatalf("%s n=%d rows=%d: SoftmaxRows[%d] = %g, one row at a time %g", level, n, rows, i, got[i], want[i])
					}
				}
			}
		}
	}
}

// RoPEHeads and Add round as the plain loops do: the kernels' results are
// theirs bit for bit (odd half sizes and lengths: masked last vectors).
func TestRoPEAddExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	for _, level := range opsLevels() {
		for _, half := range []int{1, 3, 8, 16, 24, 64, 128} {
			for _, heads := range []int{1, 2, 4, 7} {
				x := make([]float32, 2*half*heads)
				cos, sin := make([]float32, half), make([]float32, half)
				for i := range x {
					x[i] = float32(rng.NormFloat64() * 10)
				}
				for i := range cos {
					a := rng.Float64() * 100
					cos[i], sin[i] = float32(math.Cos(a)), float32(math.Sin(a))
				}
				got, want := append([]float32(nil), x...), append([]float32(nil), x...)
				ropeISA(level, got, cos, sin)
				for h := range heads {
					RoPE(want[h*2*half:(h+1)*2*half], cos, sin)
				}
				for i := range got {
					if got[i] != want[i] {
						t.Fatalf("%s half=%d heads=%d: rope[%d] = %g, want %g", level, half, heads, i, got[i], want[i])
					}
				}
				y := append([]float32(nil), x...)
				yw := append([]float32(nil), x...)
				addISA(level, y, got)
				addGeneric(yw, got)
				for i := range y {
					if y[i] != yw[i] {
						t.Fatalf("%s n=%d: add[%d] = %g, want %g", level, len(y), i, y[i], yw[i])
					}
				}
			}
		}
	}
}

// The exported entry points check their lengths and take empty inputs;
// softmax takes -Inf (masked) and huge entries.
func TestOpsEdges(t *testing.T) {
	for _, level := range opsLevels() {
		x := []float32{float32(math.Inf(-1)), 3e38, -3e38, float32(math.Inf(-1)), 1, 3e38, 0}
		softmaxISA(level, x, len(x))
		want := []float32{0, 0.5, 0, 0, 0, 0.5, 0}
		for i := range x {
			if x[i] != want[i] {
				t.Errorf("%s: softmax with infinities = %v, want %v", level, x, want)
				break
			}
		}
	}
	ScaledDots(nil, nil, 16, make([]float32, 16), 1)
	WeightedSum(make([]float32, 16), nil, nil, 16)
	Softmax(nil)
	SoftmaxRows(nil, 3)
	SoftmaxRows(make([]float32, 2), 3)
	GatedActivation(nil, nil, true)
	RMSNorm(nil, nil, nil, 1e-6)
	RMSNormRows(nil, nil, nil, 1e-6)
	RoPEHeads(nil, nil, nil)
	RoPEHeads(make([]float32, 3), make([]float32, 2), make([]float32, 2))
	Add(nil, nil)
	defer func() {
		if recover() == nil {
			t.Error("ScaledDots read past its rows without panicking")
		}
	}()
	ScaledDots(make([]float32, 3), make([]float32, 2*16+15), 16, make([]float32, 16), 1)
}

// The kernels do not allocate (they run in every decode step).
func TestOpsDoNotAllocate(t *testing.T) {
	if race.Enabled {
		t.Skip("-race makes sync.Pool drop items at random: allocation counts mean nothing")
	}
	x, y := make([]float32, 48), make([]float32, 48)
	for i := range x {
		x[i], y[i] = float32(i)*0.1-2, 1
	}
	s := make([]float32, 8)
	if a := testing.AllocsPerRun(50, func() {
		RMSNorm(y, x, x, 1e-6)
		GatedActivation(y, x, true)
		Softmax(y)
		ScaledDots(s, x, 4, x[:16], 0.25)
		WeightedSum(x[:16], s, y, 4)
	}); a != 0 {
		t.Errorf("%v allocations per call", a)
	}
}

func benchLevels(b *testing.B, name string, f func(b *testing.B, level ISA)) {
	for _, level := range opsLevels() {
		b.Run(name+"/"+level.String(), func(b *testing.B) { f(b, level) })
	}
}

// BenchmarkOps times the operations at the sizes of a gemma3-tiny decode
// row (hidden 48, intermediate 64, head_dim 16, 64 positions), against the
// float64 references.
func BenchmarkOps(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	vec := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return v
	}
	x, scale, out := vec(48), vec(48), vec(48)
	gate, up := vec(64), vec(64)
	sc := vec(64)
	b.Run("RMSNorm48/ref", func(b *testing.B) {
		for range b.N {
			RMSNormRef(out, x, scale, 1e-6)
		}
	})
	benchLevels(b, "RMSNorm48", func(b *testing.B, level ISA) {
		for range b.N {
			rmsNormISA(level, out, x, scale, 1e-6)
		}
	})
	xs, outs := vec(32*48), vec(32*48)
	benchLevels(b, "RMSNorm48x32/rows", func(b *testing.B, level ISA) {
		for range b.N {
			rmsNormISA(level, outs, xs, scale, 1e-6)
		}
	})
	benchLevels(b, "RMSNorm48x32/each", func(b *testing.B, level ISA) {
		for range b.N {
			for r := range 32 {
				rmsNormISA(level, outs[r*48:(r+1)*48], xs[r*48:(r+1)*48], scale, 1e-6)
			}
		}
	})
	b.Run("GELU64/ref", func(b *testing.B) {
		for range b.N {
			copy(gate, up)
			GatedActivationRef(gate, up, true)
		}
	})
	benchLevels(b, "GELU64", func(b *testing.B, level ISA) {
		for range b.N {
			copy(gate, up)
			gatedISA(level, gate, up, true)
		}
	})
	b.Run("Softmax64/ref", func(b *testing.B) {
		for range b.N {
			copy(gate, sc)
			SoftmaxRef(gate)
		}
	})
	benchLevels(b, "Softmax64", func(b *testing.B, level ISA) {
		for range b.N {
			copy(gate, sc)
			softmaxISA(level, gate, len(gate))
		}
	})
	scs := vec(4 * 64)
	benchLevels(b, "Softmax64x4/rows", func(b *testing.B, level ISA) {
		for range b.N {
			copy(scs, xs)
			softmaxISA(level, scs, 64)
		}
	})
	keys := vec(64 * 32)
	q := vec(16)
	benchLevels(b, "Scores64x16", func(b *testing.B, level ISA) {
		for range b.N {
			scaledDotsISA(level, sc, keys, 32, q, 0.25)
		}
	})
	// The embedded default's FlashHead pick: 16 probed blocks of its 32,
	// one padding slot in each (bytes: the probed logits).
	logits, valid, hits := vec(32*16), make([]uint16, 32), make([]uint16, 16)
	for k := range valid {
		valid[k] = 0x7FFF
	}
	blocks := rng.Perm(32)[:16]
	benchLevels(b, "BestBlocks16x16", func(b *testing.B, level ISA) {
		b.SetBytes(16 * 16 * 4)
		for range b.N {
			bestBlocks16ISA(level, logits, blocks, valid, hits)
		}
	})
	// A sliding-window layer's 8 positions, and a count that leaves a
	// remainder after the passes of 16.
	for _, n := range []int{8, 42} {
		benchLevels(b, fmt.Sprintf("Scores%dx16", n), func(b *testing.B, level ISA) {
			for range b.N {
				scaledDotsISA(level, sc[:n], keys, 32, q, 0.25)
			}
		})
	}
	benchLevels(b, "WeightedSum64x16", func(b *testing.B, level ISA) {
		for range b.N {
			weightedSumISA(level, q, sc, keys, 32)
		}
	})
	// A query row: 4 heads of 16 (half 8).
	cos, sin := make([]float32, 8), make([]float32, 8)
	for i := range cos {
		s, c := math.Sincos(float64(i) + 0.5)
		cos[i], sin[i] = float32(c), float32(s)
	}
	benchLevels(b, "RoPE4x16", func(b *testing.B, level ISA) {
		for range b.N {
			ropeISA(level, gate, cos, sin)
		}
	})
}

// Prefetch is a hint: over any slice (empty, one word, unaligned, spanning
// many lines) it changes no value and does not fault.
func TestPrefetch(t *testing.T) {
	x := make([]float32, 1000)
	for i := range x {
		x[i] = float32(i) - 0.5
	}
	for _, r := range [][2]int{{0, 0}, {3, 4}, {1, 17}, {5, 1000}, {999, 1000}} {
		Prefetch(x[r[0]:r[1]])
	}
	for i, v := range x {
		if v != float32(i)-0.5 {
			t.Fatalf("x[%d] = %g after Prefetch", i, v)
		}
	}
}

// BestBlocks16 at each level against plain Go, on random blocks with ties,
// signed zeros, infinities, padding lanes, empty masks and NaNs (valid or
// padding).
func TestBestBlocks16(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	vals := []float32{0, float32(math.Copysign(0, -1)), 1.5, -2, float32(math.Inf(-1)), float32(math.Inf(1))}
	for trial := range 3000 {
		K := 1 + rng.IntN(40)
		logits := make([]float32, 16*K)
		for i := range logits {
			if rng.IntN(4) == 0 {
				logits[i] = vals[rng.IntN(len(vals))] // ties and specials
			} else {
				logits[i] = float32(rng.NormFloat64())
			}
		}
		valid := make([]uint16, K)
		for k := range valid {
			switch rng.IntN(5) {
			case 0:
				valid[k] = 0xFFFF
			case 1:
				valid[k] = 0
			default:
				valid[k] = uint16(rng.Uint32())
			}
		}
		if trial%7 == 0 {
			logits[rng.IntN(len(logits))] = float32(math.NaN())
		}
		blocks := rng.Perm(K)[:rng.IntN(K+1)]
		want := make([]uint16, len(blocks))
		wantMax := bestBlocks16Generic(logits, blocks, valid, want)
		for _, level := range opsLevels() {
			got := make([]uint16, len(blocks)+1)
			got[len(blocks)] = 0xABCD
			var gotMax float32
			if len(blocks) == 0 {
				gotMax = BestBlocks16(logits, blocks, valid, got)
			} else {
				gotMax = bestBlocks16ISA(level, logits, blocks, valid, got)
			}
			if got[len(blocks)] != 0xABCD {
				t.Fatalf("%s: wrote hits past the blocks", level)
			}
			if wantMax != wantMax {
				if gotMax == gotMax {
					t.Fatalf("%s trial %d: %g, want NaN (a valid lane is NaN)", level, trial, gotMax)
				}
				continue
			}
			if gotMax != wantMax || !slices.Equal(got[:len(blocks)], want) {
				t.Fatalf("%s trial %d: max %g hits %x, want %g %x", level, trial, gotMax, got[:len(blocks)], wantMax, want)
			}
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("BestBlocks16 took a block past its logits without panicking")
		}
	}()
	BestBlocks16(make([]float32, 32), []int{2}, make([]uint16, 3), make([]uint16, 1))
}

// AttendRow equals, bit for bit, the calls it stands for made head by head
// (ScaledDots, SoftmaxRows over the padded rows, WeightedSum), for head
// sizes that are and are not whole vectors, grouped heads and position
// counts around the vector width; and it refuses key rows that end early.
func TestAttendRowMatchesCalls(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	vec := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return v
	}
	for _, c := range []struct{ heads, kvHeads, hd int }{{4, 2, 16}, {4, 1, 256}, {8, 8, 64}, {3, 1, 24}, {2, 2, 5}} {
		for _, n := range []int{1, 7, 8, 16, 17, 42, 80} {
			kvd := c.kvHeads * c.hd
			stride := kvd + 16*rng.IntN(2)
			group := c.heads / c.kvHeads
			q, k, v := vec(c.heads*c.hd), vec((n-1)*stride+kvd), vec((n-1)*stride+kvd)
			ns := ScoreStride(n)
			scores, got := vec(c.heads*ns), vec(c.heads*c.hd)
			AttendRow(got, q, k, v, scores, stride, c.hd, group, n, 0.125)

			want, ws := make([]float32, c.heads*c.hd), make([]float32, c.heads*ns)
			for h := range c.heads {
				g := h / group
				ScaledDots(ws[h*ns:h*ns+n], k[g*c.hd:], stride, q[h*c.hd:(h+1)*c.hd], 0.125)
				for j := n; j < ns; j++ {
					ws[h*ns+j] = float32(math.Inf(-1))
				}
			}
			SoftmaxRows(ws, ns)
			for h := range c.heads {
				WeightedSum(want[h*c.hd:(h+1)*c.hd], ws[h*ns:h*ns+n], v[(h/group)*c.hd:], stride)
			}
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("%+v n=%d: out[%d] = %g, want %g", c, n, i, got[i], want[i])
				}
			}
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("AttendRow read past its key rows without panicking")
		}
	}()
	AttendRow(make([]float32, 32), make([]float32, 32), make([]float32, 40), make([]float32, 48), make([]float32, 64), 16, 16, 1, 3, 1)
}
