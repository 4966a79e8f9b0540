package bench

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/fhkit/fhkit/convert"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/model"
)

// The benchmark's accounting (not its timings, which are machine noise):
// bytes per token equal the layer weights plus the head, rates are
// positive, the bound ratio is decode speed over bandwidth / bytes.
func TestRunAccounting(t *testing.T) {
	out := filepath.Join(t.TempDir(), "m.fhm")
	if _, err := convert.Dir(filepath.Join("..", "..", "testdata", "fixtures", "llama-tiny"), out, convert.Options{DType: dtype.BF16}); err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	pool := cpu.NewPool(2)
	defer pool.Close()
	res, err := Run(model.NewRunner(m, pool), nil, Options{PromptTokens: 8, GenTokens: 4, KV: dtype.F32, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	c := m.Config
	perLayer := int64(c.NumHeads*c.HeadDim*c.HiddenSize*2+2*c.NumKVHeads*c.HeadDim*c.HiddenSize+3*c.HiddenSize*c.IntermediateSize) * 2
	want := int64(c.NumLayers)*perLayer + int64(c.VocabSize*c.HiddenSize*2)
	if res.BytesPerToken != want {
		t.Errorf("bytes per token %d, want %d", res.BytesPerToken, want)
	}
	if res.BandwidthGBs <= 0 || res.PrefillTokS <= 0 || res.DecodeTokS <= 0 || len(res.Heads) != 1 {
		t.Errorf("result %+v", res)
	}
	h := res.Heads[0]
	// Four tokens: one window, bounded by the mean of its two probes.
	if mean := (h.BandwidthBeforeGBs + h.BandwidthAfterGBs) / 2; len(h.ProbesGBs) != 2 || h.BandwidthBeforeGBs <= 0 || h.BandwidthAfterGBs <= 0 || math.Abs(h.BandwidthGBs-mean) > 1e-12*mean {
		t.Errorf("head bandwidth %g, want the mean %g of before %g and after %g (probes %v)", h.BandwidthGBs, mean, h.BandwidthBeforeGBs, h.BandwidthAfterGBs, h.ProbesGBs)
	}
	bound := res.BandwidthGBs * 1e9 / float64(res.BytesPerToken)
	if d := res.BoundRatio - res.DecodeTokS/bound; d > 1e-9 || d < -1e-9 {
		t.Errorf("bound ratio %g, want %g", res.BoundRatio, res.DecodeTokS/bound)
	}
}

func TestUnsteady(t *testing.T) {
	for _, c := range []struct {
		probes []float64
		want   bool
		a, b   float64
	}{
		{[]float64{30, 35}, false, 0, 0},
		{[]float64{35, 30}, false, 0, 0},
		{[]float64{30, 37}, true, 30, 37},
		{[]float64{60, 33}, true, 60, 33},
		// Each step within a fifth, the loop's ends not: steady.
		{[]float64{30, 35, 40}, false, 0, 0},
		{[]float64{35, 36, 60, 61}, true, 36, 60},
	} {
		h := HeadResult{ProbesGBs: c.probes}
		if got, a, b := h.Unsteady(); got != c.want || a != c.a || b != c.b {
			t.Errorf("probes %v: Unsteady %v %g %g, want %v %g %g", c.probes, got, a, b, c.want, c.a, c.b)
		}
	}
}

// A loop's bound adds up its windows' bounds: equal probes give their
// value, a window twice as fast as another of as many tokens halves its
// share of the bound's time, and the tokens weight the windows.
func TestLoopBandwidth(t *testing.T) {
	for _, c := range []struct {
		probes  []float64
		windows []int
		want    float64
	}{
		{[]float64{40, 40}, []int{4}, 40},
		{[]float64{30, 50}, []int{4}, 40},
		{[]float64{30, 30, 60, 60}, []int{16, 0, 16}, 40}, // 32 tokens in 16/30 + 16/60 = 0.8
		{[]float64{30, 30, 60, 60}, []int{16, 0, 48}, 48}, // 64 tokens in 16/30 + 48/60 = 4/3
		{[]float64{36, 36, 36, 36, 36}, []int{16, 16, 16, 16}, 36},
	} {
		if got := loopBandwidth(c.probes, c.windows); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("probes %v windows %v: %g, want %g", c.probes, c.windows, got, c.want)
		}
	}
}
