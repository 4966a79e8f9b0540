package quantize

import (
	"fmt"
	"math"
	"sort"
)

// Hessian accumulates A = XᵀX (float64, [n x n], row-major) over the input
// rows X of one linear layer; GPTQ's H = 2XᵀX/N differs by a factor that
// relative damping makes irrelevant.
type Hessian struct {
	N    int
	A    []float64
	Rows int // input rows seen
}

// NewHessian returns an empty accumulator for inputs of width n.
func NewHessian(n int) *Hessian { return &Hessian{N: n, A: make([]float64, n*n)} }

// Add accumulates the T rows of x (T x N). It fails on a NaN or infinite
// activation.
func (h *Hessian) Add(x []float32, T int, threads int) error {
	n := h.N
	if len(x) != T*n {
		return fmt.Errorf("hessian: %d values for %d rows of width %d", len(x), T, n)
	}
	for i, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("calibration activation (row %d, column %d) is %v", i/n, i%n, v)
		}
	}
	// X transposed (n x T): A[i][j] += Xt[i]·Xt[j]. Blocks of hessBlock
	// rows i share each Xt[j] load, so the pass is compute-bound.
	xt := make([]float64, n*T)
	for t := 0; t < T; t++ {
		for i, v := range x[t*n : (t+1)*n] {
			xt[i*T+t] = float64(v)
		}
	}
	nb := (n + hessBlock - 1) / hessBlock
	parallelInterleaved(nb, threads, func(bi int) {
		i0, i1 := bi*hessBlock, min((bi+1)*hessBlock, n)
		for j := i0; j < n; j++ {
			xj := xt[j*T : (j+1)*T]
			for i := i0; i < min(i1, j+1); i++ {
				h.A[i*n+j] += dot(xt[i*T:(i+1)*T], xj)
			}
		}
	})
	h.Rows += T
	return nil
}

// Sym returns the full symmetric matrix (the accumulation fills only the
// upper triangle).
func (h *Hessian) Sym() []float64 {
	n := h.N
	out := make([]float64, n*n)
	for i := 0; i < n; i++ {
		for j := i; j < n; j++ {
			out[i*n+j] = h.A[i*n+j]
			out[j*n+i] = h.A[i*n+j]
		}
	}
	return out
}

// hessBlock is the number of rows of A that share a pass over X.
const hessBlock = 16

// cholBlock is the panel width of the blocked Cholesky and triangular
// inverse (rows of that many columns stay in cache while other rows
// stream past them).
const cholBlock = 32

func axpy(y []float64, a float64, x []float64) {
	x = x[:len(y)]
	for i := range y {
		y[i] += a * x[i]
	}
}

func dot(a, b []float64) float64 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// parallelInterleaved calls fn(i) for i in [0, n) on threads goroutines,
// thread k taking i ≡ k (mod threads) so triangular work is balanced.
func parallelInterleaved(n, threads int, fn func(i int)) {
	threads = max(1, min(threads, n))
	if threads == 1 {
		for i := 0; i < n; i++ {
			fn(i)
		}
		return
	}
	done := make(chan struct{}, threads)
	for k := 0; k < threads; k++ {
		go func(k int) {
			for i := k; i < n; i += threads {
				fn(i)
			}
			done <- struct{}{}
		}(k)
	}
	for k := 0; k < threads; k++ {
		<-done
	}
}

// cholesky factors the symmetric positive definite a (n x n, row-major)
// in place into its lower factor L (a = L Lᵀ; the upper triangle is left
// unspecified). Left-looking by panels of cholBlock columns: each row's
// prefix is read once per panel and multiplied with the panel's rows, which
// stay in cache.
func cholesky(a []float64, n, threads int) error {
	for j0 := 0; j0 < n; j0 += cholBlock {
		j1 := min(j0+cholBlock, n)
		// Contributions of the columns before the panel.
		if j0 > 0 {
			parallelInterleaved(n-j0, threads, func(k int) {
				i := j0 + k
				ri := a[i*n : i*n+j0]
				for j := j0; j < min(j1, i+1); j++ {
					a[i*n+j] -= dot(ri, a[j*n:j*n+j0])
				}
			})
		}
		// Factor the panel.
		for j := j0; j < j1; j++ {
			rj := a[j*n+j0 : j*n+j]
			d := a[j*n+j] - dot(rj, rj)
			if !(d > 0) || math.IsInf(d, 0) {
				return fmt.Errorf("matrix not positive definite (pivot %d is %g)", j, d)
			}
			d = math.Sqrt(d)
			a[j*n+j] = d
			body := func(k int) {
				i := j + 1 + k
				a[i*n+j] = (a[i*n+j] - dot(a[i*n+j0:i*n+j], rj)) / d
			}
			rest := n - j - 1
			if rest*(j-j0+1) < 1<<14 {
				for k := 0; k < rest; k++ {
					body(k)
				}
			} else {
				parallelInterleaved(rest, threads, body)
			}
		}
	}
	return nil
}

// upperCholInverse returns U, the upper-triangular factor with
// H⁻¹ = UᵀU and a positive diagonal (torch: cholesky(cholesky_inverse(
// cholesky(H)), upper=True)). With J the reversal permutation and
// J H J = L Lᵀ, H = R Rᵀ for the upper R = J L J, so U = R⁻¹ = J L⁻¹ J.
// H is overwritten.
func upperCholInverse(h []float64, n, threads int) ([]float64, error) {
	// Reverse H in place: a[i][j] = h[n-1-i][n-1-j].
	for i, j := 0, n*n-1; i < j; i, j = i+1, j-1 {
		h[i], h[j] = h[j], h[i]
	}
	if err := cholesky(h, n, threads); err != nil {
		return nil, err
	}
	// Mt[c] holds column c of M = L⁻¹ (entries c..n-1).
	// Columns are solved cholBlock at a time so each row of L is read once
	// per block.
	mt := make([]float64, n*n)
	nb := (n + cholBlock - 1) / cholBlock
	parallelInterleaved(nb, threads, func(bi int) {
		c0, c1 := bi*cholBlock, min((bi+1)*cholBlock, n)
		for c := c0; c < c1; c++ {
			mt[c*n+c] = 1 / h[c*n+c]
		}
		for i := c0 + 1; i < n; i++ {
			row := h[i*n : i*n+i]
			inv := 1 / h[i*n+i]
			for c := c0; c < min(c1, i); c++ {
				col := mt[c*n : (c+1)*n]
				col[i] = -dot(row[c:i], col[c:i]) * inv
			}
		}
	})
	// U[i][j] = M[n-1-i][n-1-j] = Mt[n-1-j][n-1-i], for j >= i.
	u := make([]float64, n*n)
	for i := 0; i < n; i++ {
		for j := i; j < n; j++ {
			u[i*n+j] = mt[(n-1-j)*n+(n-1-i)]
		}
	}
	return u, nil
}

// GPTQConfig are the per-layer GPTQ settings.
type GPTQConfig struct {
	GroupSize int
	Scheme    Scheme
	Damping   float64
	BlockSize int
	ActOrder  bool
	Threads   int
}

// GPTQ quantizes w [rows x cols] (float32, row-major) given a = XᵀX of
// its calibration inputs ([cols x cols], not modified), following
// AutoGPTQ's fasterquant (W4A16 formats document, section 4.6): dead
// inputs zeroed, optional act-order, relative damping, the upper Cholesky
// factor of H⁻¹, lazy block updates, and group parameters computed from the
// error-updated weights when a group starts. With act-order the groups stay
// contiguous in the original column order (the packed layout has no
// g_idx), and their parameters come from the original weights
// (compressed-tensors "static" act-order).
func GPTQ(w []float32, rows, cols int, a []float64, cfg GPTQConfig) (*Quantized, error) {
	g := cfg.GroupSize
	if err := checkMatrix(w, rows, cols, g); err != nil {
		return nil, err
	}
	if len(a) != cols*cols {
		return nil, fmt.Errorf("gptq: hessian has %d entries, want %d", len(a), cols*cols)
	}
	B := cfg.BlockSize
	if B <= 0 {
		B = 128
	}
	threads := max(1, cfg.Threads)
	h := append([]float64(nil), a...)
	// Wt is column-major: Wt[c*rows + r] = W[r, c].
	wt := make([]float64, rows*cols)
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			wt[c*rows+r] = float64(w[r*cols+c])
		}
	}
	for i := 0; i < cols; i++ {
		if h[i*cols+i] == 0 {
			h[i*cols+i] = 1
			clear(wt[i*rows : (i+1)*rows])
		}
	}
	q := newQuantized(rows, cols, g, cfg.Scheme)
	ng := cols / g
	perm := make([]int, cols) // processing position → original column
	for i := range perm {
		perm[i] = i
	}
	if cfg.ActOrder {
		// Static groups: parameters from the original weights, up front.
		for r := 0; r < rows; r++ {
			for gi := 0; gi < ng; gi++ {
				s, z := cfg.Scheme.Params(w[r*cols+gi*g : r*cols+gi*g+g])
				q.Scales[r*ng+gi], q.Zeros[r*ng+gi] = s, uint8(z)
			}
		}
		sort.SliceStable(perm, func(x, y int) bool { return h[perm[x]*cols+perm[x]] > h[perm[y]*cols+perm[y]] })
		ph := make([]float64, cols*cols)
		pw := make([]float64, rows*cols)
		for i, pi := range perm {
			for j, pj := range perm {
				ph[i*cols+j] = h[pi*cols+pj]
			}
			copy(pw[i*rows:(i+1)*rows], wt[pi*rows:(pi+1)*rows])
		}
		h, wt = ph, pw
	}
	var mean float64
	for i := 0; i < cols; i++ {
		mean += h[i*cols+i]
	}
	mean /= float64(cols)
	damp := cfg.Damping * mean
	for i := 0; i < cols; i++ {
		h[i*cols+i] += damp
	}
	u, err := upperCholInverse(h, cols, threads)
	if err != nil {
		return nil, fmt.Errorf("gptq: %w (raise the damping)", err)
	}
	errBlk := make([]float64, B*rows)
	grp := make([]float32, g)
	for i1 := 0; i1 < cols; i1 += B {
		i2 := min(i1+B, cols)
		for i := i1; i < i2; i++ {
			col := wt[i*rows : (i+1)*rows]
			oc := perm[i]
			gi := oc / g
			if !cfg.ActOrder && i%g == 0 {
				// Lazy group parameters from the current (updated) weights.
				for r := 0; r < rows; r++ {
					for k := 0; k < g; k++ {
						grp[k] = float32(wt[(i+k)*rows+r])
					}
					s, z := cfg.Scheme.Params(grp)
					q.Scales[r*ng+gi], q.Zeros[r*ng+gi] = s, uint8(z)
				}
			}
			d := u[i*cols+i]
			e := errBlk[(i-i1)*rows : (i-i1+1)*rows]
			for r, v := range col {
				s, z := q.Scales[r*ng+gi], int(q.Zeros[r*ng+gi])
				code := Code(float32(v), s, z)
				q.Codes[r*cols+oc] = code
				e[r] = (v - float64(Dequant(code, s, z))) / d
			}
			for j := i + 1; j < i2; j++ {
				axpy(wt[j*rows:(j+1)*rows], -u[i*cols+j], e)
			}
		}
		if i2 < cols {
			nb := i2 - i1
			parallelInterleaved(cols-i2, threads, func(k int) {
				j := i2 + k
				dst := wt[j*rows : (j+1)*rows]
				for b := 0; b < nb; b++ {
					if c := u[(i1+b)*cols+j]; c != 0 {
						axpy(dst, -c, errBlk[b*rows:(b+1)*rows])
					}
				}
			})
		}
	}
	return q, nil
}

// OutputRelError returns ‖(W − Ŵ)Xᵀ‖ / ‖WXᵀ‖ from a = XᵀX: the square
// roots of tr(ΔW A ΔWᵀ) and tr(W A Wᵀ). a must be symmetric (Sym()).
func OutputRelError(w, wq []float32, rows, cols int, a []float64, threads int) float64 {
	return outputRelErrors(w, [][]float32{wq}, rows, cols, a, threads)[0]
}

// outputRelErrors is OutputRelError for several approximations of w,
// sharing the denominator.
func outputRelErrors(w []float32, wqs [][]float32, rows, cols int, a []float64, threads int) []float64 {
	k := len(wqs)
	// sums[r*(k+1)]: tr term of W; sums[r*(k+1)+1+q]: of ΔW_q.
	sums := make([]float64, rows*(k+1))
	parallelRows(rows, threads, func(lo, hi int) {
		vecs := make([][]float64, k+1)
		for q := range vecs {
			vecs[q] = make([]float64, cols)
		}
		for r := lo; r < hi; r++ {
			for c := 0; c < cols; c++ {
				x := float64(w[r*cols+c])
				vecs[0][c] = x
				for q, wq := range wqs {
					vecs[q+1][c] = x - float64(wq[r*cols+c])
				}
			}
			for i := 0; i < cols; i++ {
				row := a[i*cols : (i+1)*cols]
				for q, v := range vecs {
					if v[i] != 0 {
						sums[r*(k+1)+q] += v[i] * dot(row, v)
					}
				}
			}
		}
	})
	tot := make([]float64, k+1)
	for r := 0; r < rows; r++ {
		for q := range tot {
			tot[q] += sums[r*(k+1)+q]
		}
	}
	out := make([]float64, k)
	for q := range out {
		if tot[0] > 0 {
			out[q] = math.Sqrt(max(tot[q+1], 0) / tot[0])
		} else {
			out[q] = math.Sqrt(max(tot[q+1], 0))
		}
	}
	return out
}
