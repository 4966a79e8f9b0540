package flashhead_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/fhkit/fhkit/convert"
	flashhead "github.com/fhkit/fhkit/flashhead-build"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/model"
	"github.com/fhkit/fhkit/runtime/verify"
)

// sharedDir returns ../shared/conformance beside the repository (or
// $FHKIT_SHARED/conformance); it skips the test when absent, and fails it
// when FHKIT_REQUIRE_SHARED is set.
func sharedDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join("..", "..", "shared", "conformance")
	if env := os.Getenv("FHKIT_SHARED"); env != "" {
		dir = filepath.Join(env, "conformance")
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		msg := fmt.Sprintf("shared conformance data not found at %s (it lives in ../shared beside the repository; set FHKIT_SHARED): skipping", dir)
		if os.Getenv("FHKIT_REQUIRE_SHARED") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return dir
}

// storiesData is stories260K converted to F32, with the final hidden states
// of every position of its reference sequences.
type storiesData struct {
	fhm    string
	m      *model.Model
	hidden []float32 // T x D
	T      int
}

var (
	storiesOnce sync.Once
	stories     *storiesData
	storiesErr  error
)

func loadStories(t *testing.T) *storiesData {
	t.Helper()
	dir := filepath.Join(sharedDir(t), "stories260K")
	storiesOnce.Do(func() {
		tmp, err := os.MkdirTemp("", "flashhead-stories")
		if err != nil {
			storiesErr = err
			return
		}
		out := filepath.Join(tmp, "stories260K.fhm")
		if _, err := convert.Dir(filepath.Join(dir, "model"), out, convert.Options{DType: dtype.F32}); err != nil {
			storiesErr = err
			return
		}
		m, err := model.Load(out)
		if err != nil {
			storiesErr = err
			return
		}
		seqs, err := verify.ReadBaseline(filepath.Join(dir, "reference.safetensors"), m.Config.VocabSize)
		if err != nil {
			storiesErr = err
			return
		}
		pool := cpu.NewPool(0)
		r := model.NewRunner(m, pool)
		d := &storiesData{fhm: out, m: m}
		for _, s := range seqs {
			st, err := m.NewState(0, dtype.F32)
			if err != nil {
				storiesErr = err
				return
			}
			h, err := r.ForwardHidden(st, s.Tokens, true)
			if err != nil {
				storiesErr = err
				return
			}
			d.hidden = append(d.hidden, h...)
			d.T += len(s.Tokens)
		}
		stories = d
	})
	if storiesErr != nil {
		t.Fatal(storiesErr)
	}
	return stories
}

var storiesProbes = []int{1, 2, 4, 8, 16, 32}

const storiesSeeds = 5

// recallAvg returns the mean over seeds 1..storiesSeeds of the recall at
// storiesProbes and of the mean cosine of the heads mk makes, and logs a
// table row.
func recallAvg(t *testing.T, name string, d *storiesData, mk func(seed uint64) *flashhead.Head) (recall []float64, cos float64) {
	t.Helper()
	pool := cpu.NewPool(0)
	defer pool.Close()
	recall = make([]float64, len(storiesProbes))
	for seed := uint64(1); seed <= storiesSeeds; seed++ {
		h := mk(seed)
		res, err := h.Recall(pool, d.hidden, storiesProbes)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			recall[i] += r.Recall / storiesSeeds
		}
		cos += h.MeanCosine / storiesSeeds
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| %-32s | %.4f |", name, cos)
	for _, r := range recall {
		fmt.Fprintf(&b, " %.3f |", r)
	}
	t.Log(b.String())
	return recall, cos
}

// TestStoriesRecall converts stories260K (the one real trained model of the
// conformance set: V 512, D 64), builds its FlashHead with cap 16 (K 32)
// and measures recall@P of the dense argmax over every position of the
// reference sequences (318 hidden states), averaged over 5 seeds. It also
// compares assignment variants and a random balanced partition; README.md
// quotes the table this test logs (go test -run TestStoriesRecall -v).
func TestStoriesRecall(t *testing.T) {
	d := loadStories(t)
	head := d.m.Head
	eos := d.m.Config.EOSTokenIDs
	t.Logf("stories260K: %d positions, V %d, D %d, cap 16 -> K 32; mean of seeds 1..%d", d.T, head.Rows, head.Cols, storiesSeeds)
	t.Logf("| %-32s | mean cos | %s |", "clustering", "P=1   | P=2   | P=4   | P=8   | P=16  | P=32 ")

	build := func(o flashhead.Options) func(uint64) *flashhead.Head {
		return func(seed uint64) *flashhead.Head {
			o.ClusterSize = 16
			o.SpecialTokenIDs = eos
			o.Seed = seed
			h, err := flashhead.Build(head, o)
			if err != nil {
				t.Fatal(err)
			}
			return h
		}
	}
	got, gotCos := recallAvg(t, "balanced k-means (default)", d, build(flashhead.Options{}))
	rnd, rndCos := recallAvg(t, "random balanced partition", d, func(seed uint64) *flashhead.Head {
		return flashhead.RandomBalanced(head, 16, seed)
	})
	for _, o := range []struct {
		name string
		opts flashhead.Options
	}{
		{"greedy order: best score", flashhead.WithOrder(flashhead.Options{}, "score")},
		{"greedy order: token id", flashhead.WithOrder(flashhead.Options{}, "index")},
		{"no Lloyd iterations", flashhead.Options{LloydIterations: -1}},
		{"1 balanced iteration", flashhead.Options{Iterations: 1}},
		{"20 balanced iterations", flashhead.Options{Iterations: 20}},
		{"graph search (K1 = 6 cells)", flashhead.Options{Search: flashhead.SearchGraph}},
	} {
		recallAvg(t, o.name, d, build(o.opts))
	}

	// Real assertions: P = K finds everything; recall grows with P; the
	// clustering beats a random partition by a wide margin.
	if got[len(got)-1] != 1 {
		t.Errorf("recall at P = K is %.4f, want 1", got[len(got)-1])
	}
	for i := 1; i < len(got); i++ {
		if got[i] < got[i-1] {
			t.Errorf("recall drops from %.4f (P=%d) to %.4f (P=%d)", got[i-1], storiesProbes[i-1], got[i], storiesProbes[i])
		}
	}
	for i := 1; i < 4; i++ { // P = 2, 4, 8
		if got[i] < rnd[i]+0.2 {
			t.Errorf("P=%d: mean recall %.3f is not well above a random partition's %.3f", storiesProbes[i], got[i], rnd[i])
		}
	}
	if gotCos < rndCos+0.15 {
		t.Errorf("mean cosine %.4f is not well above a random partition's %.4f", gotCos, rndCos)
	}
	if got[3] < 0.9 {
		t.Errorf("recall at P = 8 (a quarter of the clusters) is %.3f, want >= 0.9", got[3])
	}
}
