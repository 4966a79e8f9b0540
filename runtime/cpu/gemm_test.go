package cpu

import (
	"fmt"
	"github.com/fhkit/fhkit/internal/race"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fhkit/fhkit/formats/dtype"
)

// gemmLevels returns the assembly kernel sets this CPU runs, by name.
func gemmLevels(t testing.TB) map[string]*gemmKernels {
	levels := map[string]*gemmKernels{}
	for _, i := range []ISA{AVX2, AVX512} {
		if i <= DetectISA() {
			if ks := gemmKernelsFor(i); ks != nil {
				levels[i.String()] = ks
			}
		}
	}
	if len(levels) == 0 {
		t.Skip("no gemm assembly kernels on this CPU")
	}
	return levels
}

// randFloatMat returns a random rows x cols weight in dt (values ~N(0,1)).
func randFloatMat(r *rand.Rand, rows, cols int, dt dtype.DType) Mat {
	v := make([]float32, rows*cols)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	data := make([]byte, len(v)*dt.Size())
	if err := dtype.EncodeFloats(data, v, dt); err != nil {
		panic(err)
	}
	m, err := NewMat(rows, cols, dt, data)
	if err != nil {
		panic(err)
	}
	return m
}

// denseF64 returns m's weights in float64.
func denseF64(m Mat) []float64 {
	row := make([]float32, m.Cols)
	out := make([]float64, 0, m.Rows*m.Cols)
	for r := 0; r < m.Rows; r++ {
		m.RowF32(row, r)
		for _, v := range row {
			out = append(out, float64(v))
		}
	}
	return out
}

// checkGemm compares got with the float64 product of m and x. A float32
// dot product of n terms carries an error of at most n·eps·Σ|w·x| and, with
// rounding errors of random sign, typically √n·eps·Σ|w·x|; the kernels
// also sum in a different order than MatMulRef. The bound allows 4× the
// typical error: a wrong element, lane or tile is off by O(|w·x|), orders
// of magnitude more.
func checkGemm(t *testing.T, name string, m Mat, wd []float64, x []float32, T int, got []float32) {
	t.Helper()
	K := m.Cols
	eps := float64(math.Nextafter32(1, 2) - 1)
	bad := 0
	for tt := 0; tt < T; tt++ {
		for r := 0; r < m.Rows; r++ {
			var want, mag float64
			for c := 0; c < K; c++ {
				p := wd[r*K+c] * float64(x[tt*K+c])
				want += p
				mag += math.Abs(p)
			}
			tol := 4*math.Sqrt(float64(K))*eps*mag + 1e-30
			if d := math.Abs(float64(got[tt*m.Rows+r]) - want); !(d <= tol) {
				if bad < 5 {
					t.Errorf("%s: out[t=%d, r=%d] = %g, want %g (±%.2g)", name, tt, r, got[tt*m.Rows+r], want, tol)
				}
				bad++
			}
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d outputs off", name, bad, T*m.Rows)
	}
}

func randInputs(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

// TestGemmMatchesReference runs every ISA level's kernels on random
// weights of each dtype against a float64 reference: rows that leave a
// ragged last panel and strip, T that leaves ragged input tiles, columns
// with a tail after the last pack block, group counts that do not divide
// the pack block, and widths large enough to be packed in several k blocks.
func TestGemmMatchesReference(t *testing.T) {
	levels := gemmLevels(t)
	pool := NewPool(2)
	defer pool.Close()
	r := rand.New(rand.NewPCG(6, 1))
	type shape struct{ rows, cols, g int }
	shapes := []shape{
		{1, 32, 32}, {5, 96, 32}, {16, 128, 128}, {31, 136, 8}, {33, 200, 40},
		{70, 1152, 128}, {48, 2816, 64}, {40, 3000, 8}, {7, 8, 8},
	}
	Ts := []int{2, 3, 17, 128}
	type wcase struct {
		name string
		m    Mat
	}
	for _, s := range shapes {
		var ws []wcase
		for _, dt := range []dtype.DType{dtype.F32, dtype.BF16, dtype.F16} {
			ws = append(ws, wcase{dt.String(), randFloatMat(r, s.rows, s.cols, dt)})
		}
		for _, sdt := range []dtype.DType{dtype.BF16, dtype.F16, dtype.F32} {
			for _, asym := range []bool{false, true} {
				m, err := NewInt4Mat(randInt4(r, s.rows, s.cols, s.g, sdt, asym))
				if err != nil {
					t.Fatal(err)
				}
				ws = append(ws, wcase{fmt.Sprintf("U4/g%d/%s/asym=%v", s.g, sdt, asym), m})
			}
		}
		for _, wc := range ws {
			wd := denseF64(wc.m)
			for _, T := range Ts {
				if T == 128 && s.rows*s.cols > 70*1152 {
					continue // keeps the float64 reference quick
				}
				x := randInputs(r, T*s.cols)
				for name, ks := range levels {
					if !ks.supports(wc.m) {
						t.Fatalf("%s does not take %s [%d, %d]", name, wc.name, s.rows, s.cols)
					}
					got := make([]float32, T*s.rows)
					for i := range got {
						got[i] = float32(math.NaN()) // every output must be written
					}
					ks.matMul(pool, got, wc.m, x, T)
					checkGemm(t, fmt.Sprintf("%s %s [%d, %d] T=%d", name, wc.name, s.rows, s.cols, T), wc.m, wd, x, T, got)
				}
			}
		}
	}
}

// TestGemmSmallMatchesReference runs the small-T int4 kernels (registers
// only, no packing) of every level on symmetric weights of each scale
// dtype: row counts that leave single-row passes, several group sizes.
func TestGemmSmallMatchesReference(t *testing.T) {
	levels := gemmLevels(t)
	pool := NewPool(2)
	defer pool.Close()
	r := rand.New(rand.NewPCG(7, 3))
	for _, s := range []struct{ rows, cols, g int }{{1, 32, 32}, {7, 96, 32}, {37, 256, 64}, {70, 1152, 128}, {6, 2816, 256}} {
		for _, sdt := range []dtype.DType{dtype.BF16, dtype.F16, dtype.F32} {
			m, err := NewInt4Mat(randInt4(r, s.rows, s.cols, s.g, sdt, false))
			if err != nil {
				t.Fatal(err)
			}
			wd := denseF64(m)
			for name, ks := range levels {
				for _, T := range []int{2, 3, 4, 6, 11} {
					if !ks.smallSupports(m, T) {
						t.Fatalf("%s small T=%d does not take [%d, %d] g%d", name, T, s.rows, s.cols, s.g)
					}
					x := randInputs(r, T*s.cols)
					got := make([]float32, T*s.rows)
					for i := range got {
						got[i] = float32(math.NaN())
					}
					ks.matMulSmall(pool, got, m, x, T)
					checkGemm(t, fmt.Sprintf("%s small U4/g%d/%s [%d, %d] T=%d", name, s.g, sdt, s.rows, s.cols, T), m, wd, x, T, got)
				}
			}
		}
	}
	// Float weights, with column tails after the last whole vector, and
	// more inputs than one kernel call takes (chunks of up to four).
	for _, s := range []struct{ rows, cols int }{{1, 16}, {6, 24}, {37, 200}, {70, 1152}, {5, 1037}} {
		for _, dt := range []dtype.DType{dtype.BF16, dtype.F16, dtype.F32} {
			m := randFloatMat(r, s.rows, s.cols, dt)
			wd := denseF64(m)
			for name, ks := range levels {
				for _, T := range []int{2, 3, 4, 7, 9} {
					if !ks.smallSupports(m, T) {
						t.Fatalf("%s small T=%d does not take %s [%d, %d]", name, T, dt, s.rows, s.cols)
					}
					x := randInputs(r, T*s.cols)
					got := make([]float32, T*s.rows)
					for i := range got {
						got[i] = float32(math.NaN())
					}
					ks.matMulSmall(pool, got, m, x, T)
					checkGemm(t, fmt.Sprintf("%s small %s [%d, %d] T=%d", name, dt, s.rows, s.cols, T), m, wd, x, T, got)
				}
			}
		}
	}
}

// TestGemmEveryTileWidth calls each microkernel (one input tile of every
// width up to the widest) through matMul, on int4 and bf16 weights.
func TestGemmEveryTileWidth(t *testing.T) {
	pool := NewPool(1)
	defer pool.Close()
	r := rand.New(rand.NewPCG(8, 2))
	q4, err := NewInt4Mat(randInt4(r, 45, 264, 8, dtype.BF16, false))
	if err != nil {
		t.Fatal(err)
	}
	bf := randFloatMat(r, 45, 264, dtype.BF16)
	for name, ks := range gemmLevels(t) {
		for _, m := range []Mat{q4, bf} {
			wd := denseF64(m)
			for T := 1; T <= len(ks.kernel); T++ {
				x := randInputs(r, T*m.Cols)
				got := make([]float32, T*m.Rows)
				ks.matMul(pool, got, m, x, T)
				checkGemm(t, fmt.Sprintf("%s %s T=%d", name, m.DType, T), m, wd, x, T, got)
			}
		}
	}
}

// TestGemmPackExact checks the assembly pack routines bit for bit against
// the Go widening they replace: the transposes must put every element in
// its lane, and int4 dequantization with bf16 or f16 scales is exact.
func TestGemmPackExact(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 9))
	for name, ks := range gemmLevels(t) {
		P := ks.panel
		for _, dt := range []dtype.DType{dtype.F32, dtype.BF16, dtype.F16} {
			m := randFloatMat(r, P+3, 5*ks.denseBlock+3, dt)
			checkPacked(t, name+" "+dt.String(), ks, m)
		}
		for _, sdt := range []dtype.DType{dtype.BF16, dtype.F16} {
			for _, g := range []int{8, 32, 24} {
				cols := 3*lcm(ks.q4Block, g) + 2*g
				w := randInt4(r, P+5, cols, g, sdt, g == 24)
				m, err := NewInt4Mat(w)
				if err != nil {
					t.Fatal(err)
				}
				checkPacked(t, fmt.Sprintf("%s U4 g%d %s", name, g, sdt), ks, m)
			}
		}
	}
}

// checkPacked packs the first panel of m and compares it with RowF32.
func checkPacked(t *testing.T, name string, ks *gemmKernels, m Mat) {
	t.Helper()
	task := &gemmTask{ks: ks, w: m, T: 1, kc: m.Cols}
	s := &gemmScratch{w: make([]float32, m.Cols*ks.panel)}
	for i := range s.w {
		s.w[i] = float32(math.NaN())
	}
	task.pack(s, 0, min(ks.panel, m.Rows), 0, m.Cols)
	row := make([]float32, m.Cols)
	bad := 0
	for i := 0; i < ks.panel; i++ {
		if i < m.Rows {
			m.RowF32(row, i)
		} else {
			clear(row)
		}
		for k, want := range row {
			if got := s.w[k*ks.panel+i]; got != want && bad < 5 {
				t.Errorf("%s: panel[k=%d][row %d] = %g, want %g", name, k, i, got, want)
				bad++
			}
		}
	}
}

// TestGemmDispatch checks MatMul with T > 1 through gemm's choice of
// strategy: small-T and packed kernels, and MatMulRef for int4 layouts the
// kernels do not take (odd widths, groups that are not whole 8-code
// words), with zero points (packed only) and without.
func TestGemmDispatch(t *testing.T) {
	pool := NewPool(2)
	defer pool.Close()
	r := rand.New(rand.NewPCG(1, 1))
	for _, s := range []struct{ rows, cols, g int }{{17, 172, 43}, {9, 15, 15}, {33, 96, 32}, {40, 64, 16}} {
		w := randInt4(r, s.rows, s.cols, s.g, dtype.BF16, s.g == 16)
		m, err := NewInt4Mat(w)
		if err != nil {
			t.Fatal(err)
		}
		for _, T := range []int{5, 50} {
			x := randInputs(r, T*s.cols)
			got := make([]float32, T*s.rows)
			MatMul(pool, got, m, x, T)
			checkGemm(t, fmt.Sprintf("MatMul U4 [%d, %d] g%d T=%d", s.rows, s.cols, s.g, T), m, denseF64(m), x, T, got)
		}
	}
}

// TestGemmConcurrentCallers runs products on one weight from several
// goroutines at once, each with its own pool, on both strategies: the
// pooled scratch must never be shared between calls.
func TestGemmConcurrentCallers(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	q4, err := NewInt4Mat(randInt4(r, 100, 256, 64, dtype.BF16, false))
	if err != nil {
		t.Fatal(err)
	}
	wd := denseF64(q4)
	type call struct {
		T    int
		x    []float32
		want []float32
	}
	calls := []*call{{T: 3}, {T: 40}, {T: 5}, {T: 77}}
	for _, c := range calls {
		c.x = randInputs(r, c.T*q4.Cols)
	}
	done := make(chan error, len(calls))
	for _, c := range calls {
		go func() {
			pool := NewPool(2)
			defer pool.Close()
			got := make([]float32, c.T*q4.Rows)
			for range 20 {
				MatMul(pool, got, q4, c.x, c.T)
			}
			c.want = got
			done <- nil
		}()
	}
	for range calls {
		<-done
	}
	for _, c := range calls {
		checkGemm(t, fmt.Sprintf("concurrent T=%d", c.T), q4, wd, c.x, c.T, c.want)
	}
}

// TestGemmDoesNotAllocate checks that a warm MatMul allocates nothing: the
// panels and rearranged inputs come from pooled scratch.
func TestGemmDoesNotAllocate(t *testing.T) {
	if race.Enabled {
		t.Skip("-race makes sync.Pool drop items at random: allocation counts mean nothing")
	}
	if gemmKernelsFor(isa) == nil {
		t.Skip("plain-Go MatMulRef allocates its row buffers")
	}
	r := rand.New(rand.NewPCG(5, 4))
	q4, err := NewInt4Mat(randInt4(r, 96, 256, 64, dtype.BF16, false))
	if err != nil {
		t.Fatal(err)
	}
	bf := randFloatMat(r, 96, 256, dtype.BF16)
	pool := NewPool(2)
	defer pool.Close()
	for _, m := range []Mat{q4, bf} {
		for _, T := range []int{3, 64} {
			x := randInputs(r, T*m.Cols)
			out := make([]float32, T*m.Rows)
			MatMul(pool, out, m, x, T)
			if a := testing.AllocsPerRun(20, func() { MatMul(pool, out, m, x, T) }); a >= 1 {
				t.Errorf("%s T=%d: %.1f allocations per MatMul", m.DType, T, a)
			}
		}
	}
}

// BenchmarkGemm times the matrix-matrix product at gemma-3-1b's linear
// shapes (int4, group 128, bf16 scales, as fh-quantize writes them; and
// bf16 dense) for several batch sizes, threads and ISA levels. GFLOP/s
// counts 2·rows·cols·T; wGB/s is weight bytes (codes and scales) read per
// second, the figure that matters for small T.
func BenchmarkGemm(b *testing.B) {
	shapes := []struct{ in, out int }{{1152, 6912}, {6912, 1152}, {1152, 1024}, {1152, 256}, {1024, 1152}}
	r := rand.New(rand.NewPCG(2, 2))
	levels := []ISA{Generic}
	for _, i := range []ISA{AVX2, AVX512} {
		if i <= DetectISA() && gemmKernelsFor(i) != nil {
			levels = append(levels, i)
		}
	}
	for _, dt := range []string{"q4", "bf16"} {
		for _, s := range shapes {
			// Built on first use: most runs select a few sub-benchmarks.
			var m Mat
			var wbytes int
			weight := func() {
				if wbytes > 0 {
					return
				}
				if dt == "q4" {
					w := randInt4(r, s.out, s.in, 128, dtype.BF16, false)
					var err error
					if m, err = NewInt4Mat(w); err != nil {
						b.Fatal(err)
					}
					wbytes = len(w.QWeight) + len(w.Scales)
				} else {
					m = randFloatMat(r, s.out, s.in, dtype.BF16)
					wbytes = len(m.Data)
				}
			}
			for _, T := range []int{2, 4, 8, 12, 16, 32, 128} {
				for _, threads := range []int{1, 2} {
					for _, lvl := range levels {
						if lvl == Generic && T > 8 {
							continue // the plain-Go baseline is slow; T=8 shows the ratio
						}
						name := fmt.Sprintf("%s/%dx%d/T%d/th%d/%s", dt, s.in, s.out, T, threads, lvl)
						b.Run(name, func(b *testing.B) {
							weight()
							x := randInputs(r, T*s.in)
							out := make([]float32, T*s.out)
							pool := NewPool(threads)
							defer pool.Close()
							ks := gemmKernelsFor(lvl)
							for b.Loop() {
								if ks == nil {
									MatMulRef(pool, out, m, x, T)
								} else {
									ks.matMul(pool, out, m, x, T)
								}
							}
							sec := b.Elapsed().Seconds() / float64(b.N)
							b.ReportMetric(2*float64(s.in)*float64(s.out)*float64(T)/sec/1e9, "GFLOP/s")
							b.ReportMetric(float64(wbytes)/sec/1e9, "wGB/s")
						})
					}
				}
			}
		}
	}
}

// BenchmarkGemmVsMatVec compares one MatMul of T inputs (the gemm kernels)
// with T matrix-vector products (the decode kernels), for the small T of
// batched decode: the ratio of the two ns/op must stay ≤ 1.
func BenchmarkGemmVsMatVec(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 5))
	for _, s := range []struct {
		dt      string
		in, out int
	}{{"q4", 1152, 6912}, {"q4", 6912, 1152}, {"bf16", 1152, 6912}, {"bf16", 6912, 1152}, {"bf16", 48, 64}, {"bf16", 64, 48}, {"bf16", 48, 512}} {
		m := randFloatMat(r, s.out, s.in, dtype.BF16)
		if s.dt == "q4" {
			var err error
			if m, err = NewInt4Mat(randInt4(r, s.out, s.in, 128, dtype.BF16, false)); err != nil {
				b.Fatal(err)
			}
		}
		for _, T := range []int{2, 3, 4, 8, 16} {
			x := randInputs(r, T*s.in)
			out := make([]float32, T*s.out)
			for _, threads := range []int{1, 2} {
				pool := NewPool(threads)
				b.Run(fmt.Sprintf("%s/%dx%d/T%d/th%d/matvec", s.dt, s.in, s.out, T, threads), func(b *testing.B) {
					for b.Loop() {
						for t := 0; t < T; t++ {
							MatMul(pool, out[t*s.out:(t+1)*s.out], m, x[t*s.in:(t+1)*s.in], 1)
						}
					}
				})
				b.Run(fmt.Sprintf("%s/%dx%d/T%d/th%d/gemm", s.dt, s.in, s.out, T, threads), func(b *testing.B) {
					for b.Loop() {
						MatMul(pool, out, m, x, T)
					}
				})
				pool.Close()
			}
		}
	}
}

// BenchmarkGemmSmallVsPacked times the two strategies (small-T kernels,
// packed panels) against each other over T, to place smallMaxT and
// smallDenseMaxT.
func BenchmarkGemmSmallVsPacked(b *testing.B) {
	r := rand.New(rand.NewPCG(9, 9))
	for _, s := range []struct {
		dt      string
		in, out int
	}{{"q4", 1152, 6912}, {"q4", 6912, 1152}, {"bf16", 1152, 6912}, {"bf16", 6912, 1152}, {"bf16", 48, 64}, {"bf16", 64, 48}, {"bf16", 48, 512}} {
		m := randFloatMat(r, s.out, s.in, dtype.BF16)
		if s.dt == "q4" {
			var err error
			if m, err = NewInt4Mat(randInt4(r, s.out, s.in, 128, dtype.BF16, false)); err != nil {
				b.Fatal(err)
			}
		}
		for _, T := range []int{2, 4, 8, 12, 16, 24, 32, 64, 128} {
			x := randInputs(r, T*s.in)
			out := make([]float32, T*s.out)
			for _, lvl := range []ISA{AVX2, AVX512} {
				ks := gemmKernelsFor(lvl)
				if lvl > DetectISA() || ks == nil {
					continue
				}
				pool := NewPool(1)
				b.Run(fmt.Sprintf("%s/%dx%d/T%d/%s/small", s.dt, s.in, s.out, T, lvl), func(b *testing.B) {
					for b.Loop() {
						ks.matMulSmall(pool, out, m, x, T)
					}
					b.ReportMetric(2*float64(s.in*s.out*T)/(b.Elapsed().Seconds()/float64(b.N))/1e9, "GFLOP/s")
				})
				// Small float weights keep their panels (panelsFor), per
				// level: a copy with its own cache for this level.
				mp := m
				if mp.panels != nil {
					mp.panels = new(panelCache)
				}
				b.Run(fmt.Sprintf("%s/%dx%d/T%d/%s/packed", s.dt, s.in, s.out, T, lvl), func(b *testing.B) {
					for b.Loop() {
						ks.matMul(pool, out, mp, x, T)
					}
					b.ReportMetric(2*float64(s.in*s.out*T)/(b.Elapsed().Seconds()/float64(b.N))/1e9, "GFLOP/s")
				})
				pool.Close()
			}
		}
	}
}

// The rows-in-lanes VNNI kernels for several inputs (vnni16MatMul: every
// input count from one to a few chunks of four, bf16, f16 and f32 scales,
// symmetric and asymmetric, groups of 128 to 1024, narrow weights and wide
// ones in column tiles) against the float64
// product, with the tolerance of the matrix-vector VNNI kernel per input
// (its inputs are quantized the same way), and against that kernel itself.
func TestGemmVNNI16MatchesReference(t *testing.T) {
	if !vnni16Suits(AVX512, Mat{Rows: 16, Cols: 128, DType: dtype.U4, Q4: &Int4{GroupSize: 128}}) {
		t.Skip("needs AVX512_VNNI")
	}
	r := rand.New(rand.NewPCG(16, 16))
	for _, threads := range []int{1, 2} {
		pool := NewPool(threads)
		for _, s := range []struct{ rows, cols, g int }{{16, 128, 128}, {48, 1152, 128}, {144, 384, 128}, {32, 768, 256}, {16, 2048, 1024}, {176, 4608, 128}, {32, 2432, 128}, {16, 6144, 1024}} {
			for _, sdt := range []dtype.DType{dtype.BF16, dtype.F16, dtype.F32} {
				for _, asym := range []bool{false, true} {
					w := randInt4(r, s.rows, s.cols, s.g, sdt, asym)
					m, err := NewInt4Mat(w)
					if err != nil {
						t.Fatal(err)
					}
					wd := w.Dequantize()
					for _, T := range []int{2, 3, 4, 5, 8, 11} {
						x := randInputs(r, T*s.cols)
						got := make([]float32, T*s.rows)
						for i := range got {
							got[i] = float32(math.NaN()) // every output must be written
						}
						vnni16MatMul(pool, got, m, x, T)
						one := make([]float32, s.rows)
						for tt := 0; tt < T; tt++ {
							xt := x[tt*s.cols : (tt+1)*s.cols]
							matVecRun(AVX512, q4AVX512VNNI16, pool, one, m, xt)
							for i := 0; i < s.rows; i++ {
								want, mag := q4Ref(w, wd, i, xt)
								tol := summationTol(s.cols/8+s.cols/s.g+8, mag) + vnniTol(w, i, xt)
								g := got[tt*s.rows+i]
								if d := math.Abs(float64(g) - want); !(d <= tol) {
									t.Fatalf("%+v %s asym=%v T=%d threads %d: out[%d, %d] = %g, want %g (diff %g > %g)", s, sdt, asym, T, threads, tt, i, g, want, d, tol)
								}
								// The same integer sums and float steps as one input alone.
								if g != one[i] {
									t.Fatalf("%+v %s asym=%v T=%d: out[%d, %d] = %g, the matrix-vector kernel %g", s, sdt, asym, T, tt, i, g, one[i])
								}
							}
						}
					}
				}
			}
		}
		pool.Close()
	}
}

// A small float weight keeps its panels: the products read them instead of
// packing per call and give the same bits; large weights, int4 weights and
// weights made without NewMat keep none.
func TestGemmKeptPanels(t *testing.T) {
	pool := NewPool(2)
	defer pool.Close()
	r := rand.New(rand.NewPCG(8, 3))
	for name, ks := range gemmLevels(t) {
		for _, dt := range []dtype.DType{dtype.BF16, dtype.F16, dtype.F32} {
			for _, s := range []struct{ rows, cols int }{{64, 48}, {48, 64}, {33, 40}, {512, 48}, {7, 8}} {
				w := randFloatMat(r, s.rows, s.cols, dt)
				if ks.panelsFor(w) == nil {
					t.Fatalf("%s %s [%d, %d]: no kept panels", name, dt, s.rows, s.cols)
				}
				fresh := w
				fresh.panels = nil
				for _, T := range []int{2, 5, 16, 32} {
					x := randInputs(r, T*s.cols)
					got, want := make([]float32, T*s.rows), make([]float32, T*s.rows)
					ks.matMul(pool, got, w, x, T)
					ks.matMul(pool, want, fresh, x, T)
					for i := range got {
						if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
							t.Fatalf("%s %s [%d, %d] T=%d: output %d is %g with kept panels, %g packed per call", name, dt, s.rows, s.cols, T, i, got[i], want[i])
						}
					}
					checkGemm(t, fmt.Sprintf("%s %s [%d, %d] T=%d kept panels", name, dt, s.rows, s.cols, T), w, denseF64(w), x, T, got)
				}
			}
		}
		big := randFloatMat(r, 1024, 128, dtype.BF16) // 512 KiB of float32 panels
		q4, err := NewInt4Mat(randInt4(r, 64, 64, 32, dtype.BF16, false))
		if err != nil {
			t.Fatal(err)
		}
		for what, w := range map[string]Mat{"1024x128": big, "int4": q4, "literal": {Rows: 8, Cols: 8, DType: dtype.F32, Data: make([]byte, 256)}} {
			if ks.panelsFor(w) != nil {
				t.Errorf("%s: %s keeps panels", name, what)
			}
		}
	}
}
