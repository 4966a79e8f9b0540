package cpu

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/internal/race"
)

// gatedCase is a gated MLP's three weights: gate and up (n × cols) and
// down (h × n).
type gatedCase struct {
	name         string
	wg, wu, down Mat
	lay          bool // GatedMatVecs lays gate out for down (VNNI levels)
}

func gatedCases(t *testing.T, r *rand.Rand) []gatedCase {
	q4 := func(rows, cols, g int, asym bool) Mat {
		m, err := NewInt4Mat(randInt4(r, rows, cols, g, dtype.BF16, asym))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	return []gatedCase{
		// 1024 rows in blocks of one group (128): 8 blocks over the threads.
		{"int4", q4(1024, 384, 128, false), q4(1024, 384, 128, false), q4(320, 1024, 128, false), true},
		{"int4 zero points", q4(768, 256, 128, true), q4(768, 256, 128, true), q4(96, 768, 128, true), true},
		// Groups of 256 over chunks of 16 rows: blocks of 256 rows.
		{"int4 groups of 256", q4(1024, 512, 256, false), q4(1024, 512, 256, false), q4(64, 1024, 256, false), true},
		// Gate and up wide enough to be tiled: chunks of 64 rows.
		{"int4 tiled", q4(512, 2304, 128, false), q4(512, 2304, 128, false), q4(64, 512, 128, false), true},
		// Below the parallel threshold: one thread computes every block.
		{"int4 small", q4(256, 128, 128, false), q4(256, 128, 128, false), q4(32, 256, 128, false), true},
		// Dense weights: MatVecs, then the activation.
		{"bf16", randFloatMat(r, 640, 192, dtype.BF16), randFloatMat(r, 640, 192, dtype.BF16), randFloatMat(r, 96, 640, dtype.BF16), false},
		{"int4, dense down", q4(512, 256, 128, false), q4(512, 256, 128, false), randFloatMat(r, 96, 512, dtype.BF16), false},
		// Rows not in whole blocks: MatVecs, then the activation.
		{"odd rows", q4(200, 256, 128, false), q4(200, 256, 128, false), q4(32, 200, 8, false), false},
	}
}

// GatedMatVecs gives what MatVecs, GatedActivation and the down product
// give, bit for bit, at every level and thread count, and the layout it
// makes ahead is the one the down product then uses (corrupting it changes
// the result), for that product only.
func TestGatedMatVecsMatchesUnfused(t *testing.T) {
	r := rand.New(rand.NewPCG(40, 41))
	cases := gatedCases(t, r)
	for _, level := range testLevels() {
		for _, threads := range []int{1, 2, 3} {
			p, ref := NewPool(threads), NewPool(threads)
			for _, c := range cases {
				for _, gelu := range []bool{true, false} {
					name := fmt.Sprintf("%s/%s/threads=%d/gelu=%t", level, c.name, threads, gelu)
					n := c.wg.Rows
					x := randVec(r, c.wg.Cols)
					want, wantUp, wantDown := make([]float32, n), make([]float32, n), make([]float32, c.down.Rows)
					matVecsISA(level, ref, [][]float32{want, wantUp}, []Mat{c.wg, c.wu}, x)
					gatedISA(level, want, wantUp, gelu)
					matVecISA(level, ref, wantDown, c.down, want)

					gate, up, down := make([]float32, n), make([]float32, n), make([]float32, c.down.Rows)
					gatedMatVecsISA(level, p, gate, up, c.wg, c.wu, x, gelu, c.down)
					if !slices.Equal(up, wantUp) || !slices.Equal(gate, want) {
						t.Fatalf("%s: gate or up differ from MatVecs + GatedActivation", name)
					}
					laid := p.mv.ahead.valid
					if wantLay := c.lay && level == AVX512 && q4ImplOf(level, c.down) >= q4AVX512VNNI; laid != wantLay {
						t.Fatalf("%s: layout made ahead %t, want %t", name, laid, wantLay)
					}
					matVecISA(level, p, down, c.down, gate)
					if !slices.Equal(down, wantDown) {
						t.Fatalf("%s: down product differs", name)
					}
					if p.mv.ahead.valid {
						t.Fatalf("%s: the layout made ahead outlived the product it was for", name)
					}
					if !laid {
						continue
					}
					// The down product reads the layout made ahead: spoil it.
					gatedMatVecsISA(level, p, gate, up, c.wg, c.wu, x, gelu, c.down)
					for i := range p.mv.ahead.buf {
						p.mv.ahead.buf[i] = 0
					}
					matVecISA(level, p, down, c.down, gate)
					if slices.Equal(down, wantDown) {
						t.Fatalf("%s: the down product did not use the layout made ahead", name)
					}
					// Another product in between: the layout is dropped, and
					// down lays its input out itself.
					gatedMatVecsISA(level, p, gate, up, c.wg, c.wu, x, gelu, c.down)
					matVecISA(level, p, make([]float32, c.wg.Rows), c.wg, x)
					if p.mv.ahead.valid {
						t.Fatalf("%s: the layout made ahead survived another product", name)
					}
					matVecISA(level, p, down, c.down, gate)
					if !slices.Equal(down, wantDown) {
						t.Fatalf("%s: down product differs after another product", name)
					}
				}
			}
			p.Close()
			ref.Close()
		}
	}
}

// A decode step's gated MLP allocates nothing.
func TestGatedMatVecsNoAllocs(t *testing.T) {
	if CurrentISA() == Generic || race.Enabled {
		t.Skip("plain Go or -race (sync.Pool drops items at random)")
	}
	r := rand.New(rand.NewPCG(42, 43))
	c := gatedCases(t, r)[0]
	p := NewPool(2)
	defer p.Close()
	x := randVec(r, c.wg.Cols)
	gate, up, down := make([]float32, c.wg.Rows), make([]float32, c.wg.Rows), make([]float32, c.down.Rows)
	step := func() {
		GatedMatVecs(p, gate, up, c.wg, c.wu, x, true, c.down)
		MatMul(p, down, c.down, gate, 1)
	}
	step()
	if n := testing.AllocsPerRun(20, step); n != 0 {
		t.Errorf("%.1f allocations per gated MLP", n)
	}
}
