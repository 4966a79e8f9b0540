package cpu

import (
	"fmt"
	"github.com/fhkit/fhkit/internal/race"
	"math"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/int4"
	"github.com/fhkit/fhkit/runtime/hugemem"
)

// u32 is the float32 unit roundoff (2^-24): one rounding of a float32
// operation is off by at most u times its exact result.
const u32 = 1.0 / (1 << 24)

// testLevels returns every kernel level this CPU runs (the plain-Go one
// included), so each entry point is tested directly, not only the one the
// dispatch picks.
func testLevels() []ISA {
	var out []ISA
	for l := Generic; l <= DetectISA(); l++ {
		out = append(out, l)
	}
	return out
}

// randVec returns n values drawn from N(0,1), never all zero.
func randVec(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

// summationTol bounds the error of a float32 sum of terms whose absolute
// values add up to mag, when no term goes through more than depth
// roundings (products, additions into a lane, the final reduction): the
// classical bound depth·u·Σ|terms| (Higham, recursive summation), plus
// depth·u·Σ|terms| again for the float32 products feeding it.
func summationTol(depth int, mag float64) float64 {
	return 2*float64(depth)*u32*mag + 1e-30
}

// denseCase is one dense matrix-vector test shape.
func denseShapes() [][2]int {
	return [][2]int{
		{1, 8}, {1, 16}, {3, 16}, {4, 32}, {5, 24}, {7, 40}, {9, 100},
		{17, 33}, {33, 257}, {64, 1152}, {6, 7}, {130, 520},
		// Wider than denseRows1Cols: the four-rows-per-pass kernels, or
		// column tiles once prepared (denseTilesSuit: whole vectors):
		// 2 equal tiles, 3 tiles with a narrower last one over three row
		// blocks (the last partial), the gemma-3-1b down shape.
		{9, 2100}, {6, 3000}, {4, 4096}, {130, 4160}, {70, 6912},
	}
}

// TestMatVecDenseMatchesReference checks every level's dense kernels (F32,
// BF16, F16; one row per pass up to denseRows1Cols inputs, four beyond,
// and a wide weight's copy in column tiles)
// against a float64 product of the same (widened) weights, on rows that
// are not a multiple of the four rows per pass and columns with and without
// a tail, with 1-3 threads.
func TestMatVecDenseMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for _, threads := range []int{1, 2, 3} {
		p := NewPool(threads)
		for _, level := range testLevels() {
			for _, dt := range []dtype.DType{dtype.F32, dtype.BF16, dtype.F16} {
				for _, sh := range denseShapes() {
					rows, cols := sh[0], sh[1]
					data := make([]byte, rows*cols*dt.Size())
					if err := dtype.EncodeFloats(data, randVec(r, rows*cols), dt); err != nil {
						t.Fatal(err)
					}
					m, err := NewMat(rows, cols, dt, data)
					if err != nil {
						t.Fatal(err)
					}
					x := randVec(r, cols)
					got := make([]float32, rows)
					matVecISA(level, p, got, m, x)
					dr := make([]float32, rows)
					m.DotRows(dr, x)
					// The same weight in column tiles, where wide enough.
					tiled := make([]float32, rows)
					mt, _ := NewMat(rows, cols, dt, data)
					mt.PrepareMatVec(hugemem.New())
					if (mt.denseTiles() != nil) != (denseTilesSuit(dt, cols) && mvSupported(isa, m)) {
						t.Fatalf("%s [%d,%d]: tiled copy %v", dt, rows, cols, mt.denseTiles() != nil)
					}
					matVecISA(level, p, tiled, mt, x)
					row := make([]float32, cols)
					for i := 0; i < rows; i++ {
						m.RowF32(row, i)
						var want, mag float64
						for c, v := range row {
							want += float64(v) * float64(x[c])
							mag += math.Abs(float64(v) * float64(x[c]))
						}
						// Each lane adds cols/lanes products; the reduction adds
						// 5 levels (two accumulators, 16 → 1 lanes).
						tol := summationTol(cols/8+8, mag)
						if d := math.Abs(float64(got[i]) - want); d > tol {
							t.Fatalf("%s %s [%d,%d] threads %d: out[%d] = %g, want %g (diff %g > %g)", level, dt, rows, cols, threads, i, got[i], want, d, tol)
						}
						if d := math.Abs(float64(dr[i]) - want); d > tol {
							t.Fatalf("DotRows %s [%d,%d]: out[%d] = %g, want %g", dt, rows, cols, i, dr[i], want)
						}
						if d := math.Abs(float64(tiled[i]) - want); d > tol {
							t.Fatalf("tiled %s %s [%d,%d] threads %d: out[%d] = %g, want %g (diff %g > %g)", level, dt, rows, cols, threads, i, tiled[i], want, d, tol)
						}
					}
				}
			}
		}
		p.Close()
	}
}

// q4Ref returns Σ_c w[c]·x[c] in float64 for row r of the dequantized
// weight, and the magnitude Σ_c s·(32 + q + z)·|x| that bounds the partial
// sums of the kernel formulations: the AVX2 kernel sums q·x and z·x
// separately, the AVX-512 one (16 + q)/16·x and (16 + z)/16·x, scaled by
// 16·s (see internal/asmgen/matvec/q4.go).
func q4Ref(w int4.Weight, wd []float32, r int, x []float32) (want, mag float64) {
	sc := w.ScalesF32()
	ng := w.Groups()
	for c := 0; c < w.Cols; c++ {
		g := c / w.GroupSize
		want += float64(wd[r*w.Cols+c]) * float64(x[c])
		q := float64(int4.Nibble(w.QWeight, r*w.Cols+c))
		z := float64(w.Zero(r, g))
		mag += math.Abs(float64(sc[r*ng+g])) * (32 + q + z) * math.Abs(float64(x[c]))
	}
	return want, mag
}

// TestMatVecInt4MatchesReference checks every level's int4 kernels (three
// scale dtypes, symmetric and asymmetric) against the float64 product of
// the dequantized weight, on odd row counts, odd group counts (rows whose
// zero points start mid-byte), the three fast group sizes, whole blocks of
// 16 rows (the rows-in-lanes kernel and its repacked copy, in column tiles
// when wide), and sizes that must fall back to Go (group 43, 16).
func TestMatVecInt4MatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 9))
	cases := []struct{ rows, cols, g int }{
		{1, 32, 32}, {3, 96, 32}, {5, 64, 64}, {7, 384, 128}, {9, 1152, 128},
		{33, 192, 64}, {18, 160, 32}, {6, 172, 43}, {5, 48, 16}, {70, 1152, 128},
		{5, 768, 256}, {3, 2048, 1024}, {2, 4096, 2048},
		// Whole blocks of 16 rows: the rows-in-lanes VNNI kernel.
		{16, 1152, 128}, {48, 384, 128}, {32, 768, 256}, {16, 2048, 1024},
		// Wide ones, cut into column tiles (vnni16TileGroups): 3 equal
		// tiles over a superblock and a partial one, 2 unequal tiles, 3
		// tiles of two 1024-input groups.
		{176, 4608, 128}, {32, 2432, 128}, {16, 6144, 1024},
	}
	for _, threads := range []int{1, 2, 3} {
		p := NewPool(threads)
		for _, level := range testLevels() {
			for _, c := range cases {
				for _, sdt := range []dtype.DType{dtype.BF16, dtype.F16, dtype.F32} {
					for _, asym := range []bool{false, true} {
						w := randInt4(r, c.rows, c.cols, c.g, sdt, asym)
						m, err := NewInt4Mat(w)
						if err != nil {
							t.Fatal(err)
						}
						x := randVec(r, c.cols)
						if c.cols > c.g {
							// A group of zeros: the VNNI split's d = 0.
							clear(x[c.g : 2*c.g])
						}
						wd := w.Dequantize()
						dr := make([]float32, c.rows)
						m.DotRows(dr, x)
						for _, impl := range testQ4Impls(level, m) {
							got := make([]float32, c.rows)
							matVecRun(level, impl, p, got, m, x)
							for i := range got {
								want, mag := q4Ref(w, wd, i, x)
								// Per lane: G/8 products per group, the group's
								// zero-point term, the scale product, ng group
								// sums, and the 5-level reduction.
								tol := summationTol(c.cols/8+c.cols/c.g+8, mag)
								if impl == q4AVX512BF16 {
									// x enters as bf16 hi + lo, within 2^-18|x|.
									tol += math.Ldexp(mag, -18)
								}
								if impl == q4AVX512VNNI || impl == q4AVX512VNNI16 {
									// x enters as d_g·(128h + l), within d_g/2 (and
									// 0.001·d_g for the float32 x/d_g it rounds) of x.
									// Its int32 sums are exact; converting them to
									// float32 and scaling are in summationTol.
									tol += vnniTol(w, i, x)
								}
								if d := math.Abs(float64(got[i]) - want); d > tol {
									t.Fatalf("%s/%s %+v %s asym=%v threads %d: out[%d] = %g, want %g (diff %g > %g)", level, impl, c, sdt, asym, threads, i, got[i], want, d, tol)
								}
								// DotRows takes the level's default family: any of them.
								if d := math.Abs(float64(dr[i]) - want); d > tol+math.Ldexp(mag, -18)+vnniTol(w, i, x) {
									t.Fatalf("DotRows %+v %s asym=%v: out[%d] = %g, want %g", c, sdt, asym, i, dr[i], want)
								}
							}
						}
					}
				}
			}
		}
		p.Close()
	}
}

// testQ4Impls returns the int4 kernel families the level offers for w on
// this CPU: the one it dispatches to and the ones it could fall back to.
func testQ4Impls(level ISA, w Mat) []q4Impl {
	if !mvSupported(level, w) {
		return []q4Impl{q4Go}
	}
	out := []q4Impl{q4AVX2}
	if level == AVX512 && w.Q4.GroupSize%128 == 0 {
		out = append(out, q4AVX512)
		if cpuHasAVX512BF16() {
			out = append(out, q4AVX512BF16)
		}
		if vnniSuits(level, w) {
			out = append(out, q4AVX512VNNI)
		}
		if vnni16Suits(level, w) {
			out = append(out, q4AVX512VNNI16)
		}
	}
	return out
}

// vnniTol bounds the error row r of the AVX512_VNNI kernel takes from its
// int8 split of x: Σ_g |s_g|·Σ_{c in g} |q_c − z_g|·0.501·d_g, with d_g =
// max|x_g|/16256. The split is within d_g/2 of each input; this is about
// 2^-15 of the group's largest |x|, against 2^-18 of each |x| for the
// AVX512_BF16 kernel's hi + lo.
func vnniTol(w int4.Weight, r int, x []float32) float64 {
	sc := w.ScalesF32()
	ng := w.Groups()
	var tol float64
	for g := 0; g < ng; g++ {
		var m, sq float64
		for c := g * w.GroupSize; c < (g+1)*w.GroupSize; c++ {
			m = max(m, math.Abs(float64(x[c])))
			sq += math.Abs(float64(int4.Nibble(w.QWeight, r*w.Cols+c)) - float64(w.Zero(r, g)))
		}
		tol += math.Abs(float64(sc[r*ng+g])) * sq * 0.501 * m / vnniLevels
	}
	return tol
}

// TestMatVecSplitInvariant checks that a row's result does not depend on
// how the rows are split between threads or passes: the four-row and
// one-row kernel paths must do the same arithmetic per row (bit for bit).
func TestMatVecSplitInvariant(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	w := randInt4(r, 301, 1024, 128, dtype.BF16, true)
	mq, err := NewInt4Mat(w)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 301*1024*2)
	dtype.EncodeFloats(data, randVec(r, 301*1024), dtype.BF16)
	md, _ := NewMat(301, 1024, dtype.BF16, data)
	x := randVec(r, 1024)
	for _, level := range testLevels()[1:] {
		for _, m := range []Mat{mq, md} {
			p1, p3 := NewPool(1), NewPool(3)
			a, b := make([]float32, 301), make([]float32, 301)
			matVecISA(level, p1, a, m, x)
			matVecISA(level, p3, b, m, x)
			for i := range a {
				// Row i alone, at an offset that puts it in a one-row pass.
				one := make([]float32, 1)
				sub := make([]float32, 301)
				if m.DType == dtype.U4 {
					var s mvScratch
					impl := q4ImplFor(level, m)
					xq, nxs := s.prepareQ4X(impl, m, x)
					q4Rows(impl, sub, m, xq, nxs, i, i+1)
				} else {
					denseRows(level, sub, m, x, i, i+1)
				}
				one[0] = sub[i]
				if a[i] != b[i] || a[i] != one[0] {
					t.Fatalf("%s %s row %d: 1 thread %g, 3 threads %g, alone %g", level, m.DType, i, a[i], b[i], one[0])
				}
			}
			p1.Close()
			p3.Close()
		}
	}
}

// TestPrepBF16MatchesGo checks the assembly layout of x for the
// AVX512_BF16 int4 kernel against the Go version, bit for bit (same
// rounding, same order of summation), NaN-free random inputs with a wide
// range of magnitudes and ties.
func TestPrepBF16MatchesGo(t *testing.T) {
	if !cpuHasAVX512BF16() {
		t.Skip("CPU has no AVX512_BF16")
	}
	r := rand.New(rand.NewPCG(6, 6))
	for _, shape := range [][2]int{{1, 1}, {3, 1}, {2, 3}, {9, 1}} {
		groups, bpg := shape[0], shape[1]
		n := groups * bpg * 128
		x := randVec(r, n)
		for i := range x {
			switch i % 5 {
			case 1:
				x[i] *= 1e-30
			case 2:
				x[i] *= 1e30
			case 3: // a tie: exactly half a bf16 unit
				x[i] = math.Float32frombits(math.Float32bits(x[i])&0xFFFF0000 | 0x8000)
			}
		}
		want, got := make([]uint16, 2*n), make([]uint16, 2*n)
		wn, gn := make([]float32, 16*groups), make([]float32, 16*groups)
		prepBF16Go(want, wn, x, groups, bpg, -1.5)
		q4PrepBF16(got, gn, x, groups, bpg, -1.5)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%v: word %d = %#04x, want %#04x", shape, i, got[i], want[i])
			}
		}
		for i := range wn {
			if gn[i] != wn[i] {
				t.Fatalf("%v: nxs[%d] = %g, want %g", shape, i, gn[i], wn[i])
			}
		}
	}
}

// TestDotAxpyMatchReference checks the Dot and Axpy kernels of every level
// on lengths around the vector widths and the attention head sizes.
func TestDotAxpyMatchReference(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, level := range testLevels() {
		for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 100, 128, 255, 256, 1000} {
			a, b := randVec(r, n), randVec(r, n+3) // b longer: only a's length counts
			var want, mag float64
			for i := range a {
				want += float64(a[i]) * float64(b[i])
				mag += math.Abs(float64(a[i]) * float64(b[i]))
			}
			got := dotISA(level, a, b)
			if d := math.Abs(float64(got) - want); d > summationTol(n/8+8, mag) {
				t.Fatalf("%s Dot n=%d: %g, want %g", level, n, got, want)
			}
			y := randVec(r, n)
			y0 := append([]float32(nil), y...)
			alpha := float32(r.NormFloat64())
			axpyISA(level, y, alpha, b)
			for i := range y {
				// One FMA (one rounding) or a product and a sum (two).
				want := float64(y0[i]) + float64(alpha)*float64(b[i])
				tol := 2 * u32 * (math.Abs(float64(y0[i])) + math.Abs(float64(alpha)*float64(b[i])))
				if d := math.Abs(float64(y[i]) - want); d > tol {
					t.Fatalf("%s Axpy n=%d: y[%d] = %g, want %g", level, n, i, y[i], want)
				}
			}
		}
	}
}

// TestMatVecNoAllocs checks that a product allocates nothing once the
// pool's buffers exist (decode runs hundreds of products per token).
func TestMatVecNoAllocs(t *testing.T) {
	if race.Enabled {
		t.Skip("-race makes sync.Pool drop items at random: allocation counts mean nothing")
	}
	r := rand.New(rand.NewPCG(1, 2))
	w := randInt4(r, 512, 1152, 128, dtype.BF16, false)
	mq, err := NewInt4Mat(w)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 512*1152*2)
	dtype.EncodeFloats(data, randVec(r, 512*1152), dtype.BF16)
	md, _ := NewMat(512, 1152, dtype.BF16, data)
	x := randVec(r, 1152)
	out := make([]float32, 512)
	p := NewPool(2)
	defer p.Close()
	for _, m := range []Mat{mq, md} {
		matVec(p, out, m, x)
		if n := testing.AllocsPerRun(20, func() { matVec(p, out, m, x) }); n != 0 && CurrentISA() != Generic {
			t.Errorf("%s matVec: %v allocations per call", m.DType, n)
		}
	}
	// The FlashHead's int8 stage 1 runs for every token too.
	w8 := make([]int8, 512*1152)
	for i := range w8 {
		w8[i] = int8(r.IntN(256) - 128)
	}
	if n := testing.AllocsPerRun(20, func() { MatVecInt8(p, out, w8, 1152, x) }); n != 0 {
		t.Errorf("MatVecInt8: %v allocations per call", n)
	}
}

// TestDotRowsNoAllocs checks that DotRows allocates nothing, with its
// output and (for int4) its rearranged x on the caller's stack: FlashHead
// calls it for every probed block of every token.
func TestDotRowsNoAllocs(t *testing.T) {
	if race.Enabled {
		t.Skip("-race makes sync.Pool drop items at random: allocation counts mean nothing")
	}
	if CurrentISA() == Generic {
		t.Skip("plain-Go DotRows allocates row buffers")
	}
	r := rand.New(rand.NewPCG(4, 2))
	w := randInt4(r, 16, 1152, 128, dtype.BF16, false)
	mq, err := NewInt4Mat(w)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 16*1152*2)
	dtype.EncodeFloats(data, randVec(r, 16*1152), dtype.BF16)
	md, _ := NewMat(16, 1152, dtype.BF16, data)
	x := randVec(r, 1152)
	for _, m := range []Mat{mq, md} {
		if n := testing.AllocsPerRun(20, func() {
			var out [16]float32
			m.DotRows(out[:], x)
		}); n != 0 {
			t.Errorf("%s DotRows: %v allocations per call", m.DType, n)
		}
	}
}

// TestMatVecConcurrentCallers checks products from several goroutines on
// one pool (the second finds the scratch taken and uses its own).
func TestMatVecConcurrentCallers(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	w := randInt4(r, 256, 512, 64, dtype.F16, true)
	m, err := NewInt4Mat(w)
	if err != nil {
		t.Fatal(err)
	}
	p := NewPool(2)
	defer p.Close()
	xs := make([][]float32, 4)
	want := make([][]float32, 4)
	for i := range xs {
		xs[i] = randVec(r, 512)
		want[i] = make([]float32, 256)
		matVec(p, want[i], m, xs[i])
	}
	var wg sync.WaitGroup
	errs := make(chan string, 4)
	for i := range xs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got := make([]float32, 256)
			for rep := 0; rep < 50; rep++ {
				matVec(p, got, m, xs[i])
				for k := range got {
					if got[k] != want[i][k] {
						errs <- fmt.Sprintf("caller %d rep %d: out[%d] = %g, want %g", i, rep, k, got[k], want[i][k])
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}

// TestMatVecAsmHygiene checks the generated assembly: the AVX2 kernels use
// only VEX-encodable registers (no zmm, mask or 16-31 registers, which would
// fault on AVX2-only CPUs), and every kernel clears the upper state before
// returning to Go.
func TestMatVecAsmHygiene(t *testing.T) {
	src, err := os.ReadFile("matvec_amd64.s")
	if err != nil {
		t.Fatal(err)
	}
	funcs := strings.Split(string(src), "\nTEXT ")[1:]
	if len(funcs) == 0 {
		t.Fatal("no TEXT blocks in matvec_amd64.s")
	}
	wide := regexp.MustCompile(`\b(Z\d+|K[1-7]|[XY](1[6-9]|2\d|3[01]))\b`)
	for _, f := range funcs {
		name := f[:strings.IndexByte(f, '(')]
		if strings.HasSuffix(name, "AVX2") {
			if m := wide.FindString(f); m != "" {
				t.Errorf("%s uses %s", name, m)
			}
		}
		for _, part := range strings.Split(f, "RET")[:strings.Count(f, "RET")] {
			lines := strings.Split(strings.TrimSpace(part), "\n")
			if last := strings.TrimSpace(lines[len(lines)-1]); last != "VZEROUPPER" {
				t.Errorf("%s returns after %q, not VZEROUPPER", name, last)
			}
		}
	}
}

// TestPrepVNNIMatchesGo checks the assembly layout of x for the
// AVX512_VNNI int4 kernel against the Go version, bit for bit, on random
// inputs with a wide range of magnitudes, exact ties of both roundings,
// and an all-zero group.
func TestPrepVNNIMatchesGo(t *testing.T) {
	if !cpuHasAVX512VNNI() || DetectISA() != AVX512 {
		t.Skip("CPU has no AVX512_VNNI")
	}
	r := rand.New(rand.NewPCG(7, 7))
	for _, shape := range [][2]int{{1, 1}, {3, 1}, {2, 3}, {9, 1}, {2, 8}} {
		groups, G := shape[0], 128*shape[1]
		n := groups * G
		x := randVec(r, n)
		for i := range x {
			// Group 0 (max 63.5, so d = 1/256 and u = 256x exactly) gets
			// ties of l (u = j + 1/2) and of h (u = ±64, ±192); the others
			// a wide range of magnitudes.
			switch {
			case i < G && i%4 == 1:
				x[i] = (float32(int(x[i]*64)) + 0.5) / 256
			case i < G && i%4 == 2:
				x[i] = float32(64*(1+2*(i%3))-128*(i%2)) / 256
			case i%5 == 3:
				x[i] *= 1e-30
			case i%5 == 4:
				x[i] *= 1e20
			}
		}
		x[7] = 63.5
		if groups > 1 {
			clear(x[G : 2*G])
		}
		for _, k := range []int32{8, 1} {
			want, got := make([]int8, 2*n), make([]int8, 2*n)
			wn, gn := make([]float32, 2*groups), make([]float32, 2*groups)
			prepVNNIGo(want, wn, x, G, k)
			q4PrepVNNI(got, gn, x, G, k)
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("%v k=%d: byte %d = %d, want %d", shape, k, i, got[i], want[i])
				}
			}
			for i := range wn {
				if math.Float32bits(gn[i]) != math.Float32bits(wn[i]) {
					t.Fatalf("%v k=%d: nxs[%d] = %#x, want %#x", shape, k, i, math.Float32bits(gn[i]), math.Float32bits(wn[i]))
				}
			}
		}
	}
}

// MatVecs gives each matrix's MatVec result bit for bit: matrices sharing
// one dispatch (dense of one dtype, int4 of one family and group size;
// chunks of several matrices claimed by both threads) and mixes that go
// one at a time; a warm call allocates nothing.
func TestMatVecs(t *testing.T) {
	r := rand.New(rand.NewPCG(30, 31))
	q4 := func(rows, cols, g int, asym bool) Mat {
		m, err := NewInt4Mat(randInt4(r, rows, cols, g, dtype.BF16, asym))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	cases := []struct {
		name string
		ws   []Mat
	}{
		{"bf16 qkv", []Mat{randFloatMat(r, 1024, 1152, dtype.BF16), randFloatMat(r, 256, 1152, dtype.BF16), randFloatMat(r, 256, 1152, dtype.BF16)}},
		{"int4 qkv", []Mat{q4(1024, 1152, 128, false), q4(256, 1152, 128, false), q4(256, 1152, 128, false)}},
		{"int4 gate up odd rows", []Mat{q4(700, 384, 128, true), q4(93, 384, 128, true)}},
		{"mixed zero points", []Mat{q4(64, 256, 128, false), q4(64, 256, 128, true)}},
		{"mixed dtypes", []Mat{randFloatMat(r, 40, 96, dtype.F32), q4(48, 96, 32, false), randFloatMat(r, 33, 96, dtype.F16)}},
		{"small", []Mat{randFloatMat(r, 5, 64, dtype.BF16), randFloatMat(r, 7, 64, dtype.BF16)}},
	}
	for _, threads := range []int{1, 2} {
		p := NewPool(threads)
		for _, c := range cases {
			x := randVec(r, c.ws[0].Cols)
			outs := make([][]float32, len(c.ws))
			for i, w := range c.ws {
				outs[i] = make([]float32, w.Rows)
			}
			MatVecs(p, outs, c.ws, x)
			for i, w := range c.ws {
				want := make([]float32, w.Rows)
				matVec(p, want, w, x)
				if !slices.Equal(outs[i], want) {
					t.Fatalf("%s threads %d: matrix %d differs from its MatVec", c.name, threads, i)
				}
			}
			// -race makes sync.Pool drop items at random.
			if n := testing.AllocsPerRun(10, func() { MatVecs(p, outs, c.ws, x) }); n != 0 && CurrentISA() != Generic && !race.Enabled {
				t.Errorf("%s threads %d: %.1f allocations per call", c.name, threads, n)
			}
		}
		p.Close()
	}
}

// TestMatVecInt8MatchesReference checks every level's int8 kernels (one
// row per pass up to denseRows1Cols inputs, four beyond) and the plain-Go
// sums against the float64 product, on the dense shapes (rows not a
// multiple of four, columns with and without a tail, fewer than a vector)
// with 1-3 threads.
func TestMatVecInt8MatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	for _, threads := range []int{1, 2, 3} {
		p := NewPool(threads)
		for _, level := range testLevels() {
			for _, sh := range append(denseShapes(), [2]int{5, 7}) {
				rows, cols := sh[0], sh[1]
				w := make([]int8, rows*cols)
				for i := range w {
					w[i] = int8(r.IntN(256) - 128)
				}
				x := randVec(r, cols)
				got := make([]float32, rows)
				matVecInt8ISA(level, p, got, w, cols, x)
				for i := range rows {
					var want, mag float64
					for c := range cols {
						v := float64(w[i*cols+c]) * float64(x[c])
						want += v
						mag += math.Abs(v)
					}
					tol := summationTol(cols/8+8, mag)
					if d := math.Abs(float64(got[i]) - want); d > tol {
						t.Fatalf("%s [%d,%d] threads %d: out[%d] = %g, want %g (diff %g > %g)", level, rows, cols, threads, i, got[i], want, d, tol)
					}
				}
			}
		}
		p.Close()
	}
}
