package convert_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fhkit/fhkit/convert"
	flashhead "github.com/fhkit/fhkit/flashhead-build"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/internal/fixture"
)

// setConfig rewrites dir/config.json with the given keys set (nil deletes).
func setConfig(t *testing.T, dir string, kv map[string]any) {
	t.Helper()
	p := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range kv {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, _ = json.Marshal(m)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkpointWithCache writes a fixture checkpoint and the FlashHead cache
// of its head (built from a plain conversion), and returns the directory
// and the head.
func checkpointWithCache(t *testing.T, preset string) (string, *flashhead.Head) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), preset)
	if err := fixture.Write(dir, preset, 1); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(t.TempDir(), "plain.fhm")
	if _, err := convert.Dir(dir, plain, convert.Options{}); err != nil {
		t.Fatal(err)
	}
	f, err := fhm.Open(plain)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	rows, _, err := flashhead.HeadMatrix(f)
	if err != nil {
		t.Fatal(err)
	}
	h, err := flashhead.Build(rows, flashhead.Options{Seed: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := flashhead.ExportEmbedl(dir, h, flashhead.FlashHeadArchitecture(&f.Metadata)); err != nil {
		t.Fatal(err)
	}
	return dir, h
}

func TestConvertImportsFlashHead(t *testing.T) {
	dir, h := checkpointWithCache(t, "llama-tiny")
	setConfig(t, dir, map[string]any{"flash_head_cache_dir": "flash_head_assets", "n_probes": 5, "flash_head_special_token_ids": 7})
	out := filepath.Join(t.TempDir(), "fh.fhm")
	s, err := convert.Dir(dir, out, convert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := fhm.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Verify(); err != nil {
		t.Fatal(err)
	}
	fh := f.Metadata.FlashHead
	if fh == nil || fh.Source != "embedl" || fh.Probes != 5 || !slices.Equal(fh.SpecialTokenIDs, []int{7}) ||
		fh.NumClusters != h.NumClusters || fh.ClusterSize != 16 || s.FlashHead == nil {
		t.Fatalf("FlashHead metadata %+v (summary %+v)", fh, s.FlashHead)
	}
	want := map[string][]byte{fhm.FlashHeadVocabMap: nil, fhm.FlashHeadWeights: h.WPerm()}
	if got, _ := f.Tensor(fhm.FlashHeadWeights); !bytes.Equal(got.Data, want[fhm.FlashHeadWeights]) {
		t.Error("w_perm differs from the exported head's")
	}
	vm, _ := f.Tensor(fhm.FlashHeadVocabMap)
	for i, v := range h.VocabMap {
		if int32(uint32(vm.Data[4*i])|uint32(vm.Data[4*i+1])<<8|uint32(vm.Data[4*i+2])<<16|uint32(vm.Data[4*i+3])<<24) != v {
			t.Fatalf("vocab map slot %d differs", i)
		}
	}
	found := false
	for _, sf := range f.Metadata.Source.Files {
		if sf.Name == "flash_head_assets/clustering_cache.safetensors" && sf.Size > 0 && sf.CRC32C != "" {
			found = true
		}
	}
	if !found {
		t.Errorf("the cache is not in the provenance: %+v", f.Metadata.Source.Files)
	}
	if !slices.IsSortedFunc(f.Metadata.Source.Files, func(a, b fhm.SourceFile) int { return strings.Compare(a.Name, b.Name) }) {
		t.Error("source files not sorted")
	}

	// Converting again gives the same bytes.
	out2 := filepath.Join(t.TempDir(), "fh.fhm")
	if _, err := convert.Dir(dir, out2, convert.Options{}); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(out)
	b, _ := os.ReadFile(out2)
	if !bytes.Equal(a, b) {
		t.Error("two conversions differ")
	}

	// F32 output: w_perm holds the rows in F32.
	out3 := filepath.Join(t.TempDir(), "fh32.fhm")
	if _, err := convert.Dir(dir, out3, convert.Options{DType: dtype.F32}); err != nil {
		t.Fatal(err)
	}
	f3, err := fhm.Open(out3)
	if err != nil {
		t.Fatal(err)
	}
	defer f3.Close()
	if w, _ := f3.Tensor(fhm.FlashHeadWeights); w.Info.DType != dtype.F32 {
		t.Errorf("w_perm dtype %s in an F32 conversion", w.Info.DType)
	}
}

// TestConvertDefaultAssetsDir: without the config.json fields, the default
// flash_head_assets/ is imported with the EOS ids and min(256, K) probes.
func TestConvertDefaultAssetsDir(t *testing.T) {
	dir, h := checkpointWithCache(t, "gemma3-tiny")
	out := filepath.Join(t.TempDir(), "fh.fhm")
	if _, err := convert.Dir(dir, out, convert.Options{}); err != nil {
		t.Fatal(err)
	}
	f, err := fhm.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fh := f.Metadata.FlashHead
	if fh == nil || fh.Probes != h.NumClusters || !slices.Equal(fh.SpecialTokenIDs, f.Metadata.Model.EOSTokenIDs) {
		t.Fatalf("FlashHead %+v, EOS %v", fh, f.Metadata.Model.EOSTokenIDs)
	}
}

func TestConvertFlashHeadErrors(t *testing.T) {
	dir, _ := checkpointWithCache(t, "llama-tiny")
	outDir := t.TempDir()
	out := filepath.Join(outDir, "x.fhm")
	expectErr := func(want string) {
		t.Helper()
		_, err := convert.Dir(dir, out, convert.Options{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want one mentioning %q", err, want)
		}
		if entries, _ := os.ReadDir(outDir); len(entries) > 0 {
			t.Errorf("left behind: %v", entries)
		}
	}
	setConfig(t, dir, map[string]any{"flash_head_cache_dir": "elsewhere"})
	expectErr("flash_head_cache_dir is \"elsewhere\"")
	setConfig(t, dir, map[string]any{"flash_head_cache_dir": "flash_head_assets", "flash_head_special_token_ids": "eos"})
	expectErr("flash_head_special_token_ids")
	setConfig(t, dir, map[string]any{"flash_head_special_token_ids": nil})
	cache := filepath.Join(dir, "flash_head_assets", "clustering_cache.safetensors")
	if err := os.WriteFile(cache, []byte("broken"), 0o644); err != nil {
		t.Fatal(err)
	}
	expectErr(cache)
	// No cache at all and no field: a plain conversion.
	os.RemoveAll(filepath.Join(dir, "flash_head_assets"))
	setConfig(t, dir, map[string]any{"flash_head_cache_dir": nil})
	if _, err := convert.Dir(dir, out, convert.Options{}); err != nil {
		t.Fatal(err)
	}
	f, err := fhm.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Metadata.FlashHead != nil {
		t.Error("FlashHead without a cache")
	}
}
