package bench

import (
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
	if mean := (h.BandwidthBeforeGBs + h.BandwidthAfterGBs) / 2; h.BandwidthBeforeGBs <= 0 || h.BandwidthAfterGBs <= 0 || h.BandwidthGBs != mean {
		t.Errorf("head bandwidth %g, want the mean %g of before %g and after %g", h.BandwidthGBs, mean, h.BandwidthBeforeGBs, h.BandwidthAfterGBs)
	}
	bound := res.BandwidthGBs * 1e9 / float64(res.BytesPerToken)
	if d := res.BoundRatio - res.DecodeTokS/bound; d > 1e-9 || d < -1e-9 {
		t.Errorf("bound ratio %g, want %g", res.BoundRatio, res.DecodeTokS/bound)
	}
}

func TestUnsteady(t *testing.T) {
	for _, c := range []struct {
		before, after float64
		want          bool
	}{{30, 35, false}, {35, 30, false}, {30, 37, true}, {60, 33, true}} {
		h := HeadResult{BandwidthBeforeGBs: c.before, BandwidthAfterGBs: c.after}
		if got := h.Unsteady(); got != c.want {
			t.Errorf("before %g after %g: Unsteady %v, want %v", c.before, c.after, got, c.want)
		}
	}
}
