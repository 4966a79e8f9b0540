package quantize

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	flashhead "github.com/fhkit/fhkit/flashhead-build"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/fhm"
)

// A W4A16 model with a FlashHead exports the reference plugin's assets and
// config.json fields next to the compressed-tensors weights, and importing
// that directory gives back the same clusters bit for bit.
func TestExportImportFlashHead(t *testing.T) {
	dense := fixtureFHM(t, "gemma3-tiny", dtype.BF16)
	dir := t.TempDir()
	f, err := fhm.Open(dense)
	if err != nil {
		t.Fatal(err)
	}
	rows, _, err := flashhead.HeadMatrix(f)
	if err != nil {
		t.Fatal(err)
	}
	h, err := flashhead.Build(rows, flashhead.Options{ClusterSize: 16, Probes: 5, Seed: 3, Threads: 1,
		SpecialTokenIDs: f.Metadata.Model.EOSTokenIDs})
	if err != nil {
		t.Fatal(err)
	}
	withHead := filepath.Join(dir, "fh.fhm")
	if err := flashhead.Write(f, withHead, h, h.Metadata(), flashhead.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	q := filepath.Join(dir, "q.fhm")
	if _, err := File(withHead, q, Options{GroupSize: 16}); err != nil {
		t.Fatal(err)
	}
	qf, err := fhm.Open(q)
	if err != nil {
		t.Fatal(err)
	}
	defer qf.Close()
	hfDir := filepath.Join(dir, "hf")
	if err := ExportHF(qf, hfDir); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"flash_head_assets/clustering_cache.safetensors", "flash_head_assets/clustering_config.json"} {
		if _, err := os.Stat(filepath.Join(hfDir, p)); err != nil {
			t.Errorf("export lacks %s: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(hfDir, flashhead.EmbedlFieldsFile)); err == nil {
		t.Errorf("%s left next to config.json (its fields belong in config.json)", flashhead.EmbedlFieldsFile)
	}
	var cfg struct {
		Architectures []string       `json:"architectures"`
		CacheDir      string         `json:"flash_head_cache_dir"`
		NProbes       int            `json:"n_probes"`
		Special       []int          `json:"flash_head_special_token_ids"`
		QC            map[string]any `json:"quantization_config"`
	}
	b, _ := os.ReadFile(filepath.Join(hfDir, "config.json"))
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Architectures) != 1 || cfg.Architectures[0] != "FlashHeadGemma3ForCausalLM" || cfg.CacheDir != "flash_head_assets" ||
		cfg.NProbes != 5 || !slices.Equal(cfg.Special, h.SpecialTokenIDs) || cfg.QC["format"] != "pack-quantized" {
		t.Errorf("config.json FlashHead fields: %+v", cfg)
	}

	back := filepath.Join(dir, "back.fhm")
	sum, err := ImportHF(hfDir, back, ImportOptions{DType: dtype.BF16})
	if err != nil {
		t.Fatal(err)
	}
	if sum.FlashHead == nil {
		t.Fatal("import did not pick up the FlashHead assets")
	}
	g, err := fhm.Open(back)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	want, got := qf.Metadata.FlashHead, g.Metadata.FlashHead
	if got == nil || got.NumClusters != want.NumClusters || got.ClusterSize != want.ClusterSize || got.Probes != want.Probes ||
		!slices.Equal(got.SpecialTokenIDs, want.SpecialTokenIDs) {
		t.Errorf("FlashHead metadata after the round trip %+v, want %+v", got, want)
	}
	for _, name := range []string{fhm.FlashHeadCentroids, fhm.FlashHeadVocabMap, fhm.FlashHeadWeights} {
		a, _ := qf.Tensor(name)
		c, ok := g.Tensor(name)
		if !ok || !bytes.Equal(a.Data, c.Data) {
			t.Errorf("%s differs after export and import", name)
		}
	}
}
