package fhm

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// TestWriteSeedCorpus regenerates the committed fuzz seed corpus when
// FHKIT_WRITE_SEEDS is set (go test -run TestWriteSeedCorpus ./formats/fhm).
func TestWriteSeedCorpus(t *testing.T) {
	if os.Getenv("FHKIT_WRITE_SEEDS") == "" {
		t.Skip("set FHKIT_WRITE_SEEDS=1 to rewrite testdata/fuzz/FuzzParse")
	}
	p := filepath.Join(t.TempDir(), "m.fhm")
	ts := randTensors(3)
	ts[1] = tensorData{"small", 1, []int64{3}, make([]byte, 12)}
	writeFile(t, p, ts)
	good, _ := os.ReadFile(p)
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	os.MkdirAll(dir, 0o755)
	for name, b := range map[string][]byte{"valid": good, "truncated": good[:len(good)-9], "header-only": good[:HeaderSize]} {
		body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
