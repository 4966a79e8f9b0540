package generate

import (
	"path/filepath"
	"testing"

	"github.com/fhkit/fhkit/convert"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/internal/race"
	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/model"
	"github.com/fhkit/fhkit/runtime/sample"
)

// The dense head's logits go into one buffer the session keeps: picking a
// token allocates nothing, and gives the token of a fresh logits vector.
func TestDenseNextReusesLogits(t *testing.T) {
	if race.Enabled {
		t.Skip("-race makes sync.Pool drop items at random: allocation counts mean nothing")
	}
	out := filepath.Join(t.TempDir(), "m.fhm")
	if _, err := convert.Dir(filepath.Join("..", "..", "testdata", "fixtures", "gemma3-tiny"), out, convert.Options{DType: dtype.BF16}); err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	pool := cpu.NewPool(1)
	defer pool.Close()
	r := model.NewRunner(m, pool)
	s, err := NewSession(r, fixtureTokenizer(t), 0, dtype.F32)
	if err != nil {
		t.Fatal(err)
	}
	hidden, err := r.ForwardHidden(s.State, []int{2, 17, 40}, false)
	if err != nil {
		t.Fatal(err)
	}
	greedy := sample.New(sample.Params{})
	want := sample.Argmax(r.DenseLogits(hidden))
	if got := s.next(greedy, hidden, nil); got != want {
		t.Fatalf("next = %d, want %d (argmax of the dense logits)", got, want)
	}
	if n := testing.AllocsPerRun(20, func() { s.next(greedy, hidden, nil) }); n != 0 {
		t.Errorf("a dense-head token allocates %g times, want 0", n)
	}
}
