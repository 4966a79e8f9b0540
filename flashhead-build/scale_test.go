package flashhead

import (
	"os"
	"testing"
	"time"

	"github.com/fhkit/fhkit/formats/fhm"
)

// TestScale clusters the head of the .fhm file named by FHKIT_FLASHHEAD_SCALE
// (e.g. a converted gemma3-1b fixture) and logs time and quality. Skipped
// when the variable is unset.
func TestScale(t *testing.T) {
	path := os.Getenv("FHKIT_FLASHHEAD_SCALE")
	if path == "" {
		t.Skip("set FHKIT_FLASHHEAD_SCALE to a .fhm file to measure clustering at scale")
	}
	f, err := fhm.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head, name, err := HeadMatrix(f)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	last := time.Now()
	h, err := Build(head, Options{Seed: 1, SpecialTokenIDs: f.Metadata.Model.EOSTokenIDs, Progress: func(stage string, done, total int) {
		t.Logf("%8.1fs (+%5.1fs) %-8s %d/%d", time.Since(start).Seconds(), time.Since(last).Seconds(), stage, done, total)
		last = time.Now()
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s %s [%d, %d]: K %d cap %d, mean cosine %.4f, %.1f s", path, name, h.Vocab, h.Dim, h.NumClusters, h.ClusterSize, h.MeanCosine, h.Seconds)
}
