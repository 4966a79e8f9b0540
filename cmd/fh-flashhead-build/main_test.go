package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fhkit/fhkit/convert"
	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/internal/clitest"
	"github.com/fhkit/fhkit/internal/fixture"
)

// bin is the command under test, built once by TestMain.
var bin string

func TestMain(m *testing.M) { clitest.Main(m, "fh-flashhead-build", &bin) }

type result = clitest.Result

func runBuild(t *testing.T, args ...string) result {
	t.Helper()
	return clitest.Run(t, bin, args...)
}

// model converts a tiny fixture (vocab 512) to a .fhm file.
func model(t *testing.T, preset string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), preset)
	if err := fixture.Write(dir, preset, 1); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), preset+".fhm")
	if _, err := convert.Dir(dir, out, convert.Options{}); err != nil {
		t.Fatal(err)
	}
	return out
}

// noFiles fails if dir holds anything (partial or temporary outputs).
func noFiles(t *testing.T, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		t.Errorf("left behind in %s: %s", dir, e.Name())
	}
}

func open(t *testing.T, path string) *fhm.File {
	t.Helper()
	f, err := fhm.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Verify(); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestBuildModel(t *testing.T) {
	for _, preset := range []string{"gemma3-tiny", "llama-tiny"} {
		t.Run(preset, func(t *testing.T) {
			in := model(t, preset)
			out := filepath.Join(t.TempDir(), "fh.fhm")
			r := runBuild(t, "--in", in, "--out", out)
			if r.Code != 0 {
				t.Fatalf("exit %d: %s", r.Code, r.Stderr)
			}
			if !strings.Contains(r.Stdout, "32 clusters of 16 (0 padding slots), 16 probes, mean cosine") {
				t.Errorf("summary %q", r.Stdout)
			}
			src, f := open(t, in), open(t, out)
			fh := f.Metadata.FlashHead
			if fh == nil || fh.NumClusters != 32 || fh.ClusterSize != 16 || fh.Probes != 16 || fh.Source != "kmeans" ||
				!slices.Equal(fh.SpecialTokenIDs, src.Metadata.Model.EOSTokenIDs) || fh.MeanCosine <= 0 {
				t.Fatalf("FlashHead metadata %+v", fh)
			}
			// Every input tensor is copied unchanged, and the three are added.
			for _, ti := range src.Tensors {
				a, _ := src.Tensor(ti.Name)
				b, ok := f.Tensor(ti.Name)
				if !ok || !bytes.Equal(a.Data, b.Data) || b.Info.DType != ti.DType {
					t.Fatalf("tensor %s not copied", ti.Name)
				}
			}
			if len(f.Tensors) != len(src.Tensors)+3 {
				t.Errorf("%d tensors, want %d", len(f.Tensors), len(src.Tensors)+3)
			}
			for name, shape := range map[string][]int64{
				fhm.FlashHeadCentroids: {32, int64(src.Metadata.Model.HiddenSize)},
				fhm.FlashHeadVocabMap:  {32, 16},
				fhm.FlashHeadWeights:   {512, int64(src.Metadata.Model.HiddenSize)},
			} {
				ti, ok := f.Tensor(name)
				if !ok || !slices.Equal(ti.Info.Shape, shape) {
					t.Errorf("%s: %v, want shape %v", name, ti.Info.Shape, shape)
				}
			}
			if f.Metadata.Model.VocabSize != src.Metadata.Model.VocabSize || f.Metadata.Converter != src.Metadata.Converter {
				t.Error("metadata not copied")
			}

			// Determinism: the same seed gives the same bytes; another differs.
			out2 := filepath.Join(t.TempDir(), "fh.fhm")
			if r := runBuild(t, "--in", in, "--out", out2, "--threads", "1"); r.Code != 0 {
				t.Fatal(r.Stderr)
			}
			a, _ := os.ReadFile(out)
			b, _ := os.ReadFile(out2)
			if !bytes.Equal(a, b) {
				t.Error("same seed, different output bytes")
			}
			out3 := filepath.Join(t.TempDir(), "fh.fhm")
			if r := runBuild(t, "--in", in, "--out", out3, "--seed", "5"); r.Code != 0 {
				t.Fatal(r.Stderr)
			}
			c, _ := os.ReadFile(out3)
			if bytes.Equal(a, c) {
				t.Error("seeds 0 and 5 give the same output")
			}
		})
	}
}

func TestJSONAndPadding(t *testing.T) {
	in := model(t, "llama-tiny")
	out := filepath.Join(t.TempDir(), "fh.fhm")
	// 512 = 21*24 + 8: K 22, 16 padding slots.
	r := runBuild(t, "--in", in, "--out", out, "--cluster-size", "24", "--probes", "1000", "--json")
	if r.Code != 0 {
		t.Fatalf("exit %d: %s", r.Code, r.Stderr)
	}
	var s summary
	if err := json.Unmarshal([]byte(r.Stdout), &s); err != nil {
		t.Fatalf("--json output %q: %v", r.Stdout, err)
	}
	if s.Clusters != 22 || s.ClusterSize != 24 || s.PaddingSlots != 16 || s.Probes != 22 || s.Vocab != 512 || s.Output != out {
		t.Errorf("summary %+v", s)
	}
	f := open(t, out)
	vm, _ := f.Tensor(fhm.FlashHeadVocabMap)
	pads := 0
	for i := 0; i < len(vm.Data); i += 4 {
		if int32(uint32(vm.Data[i])|uint32(vm.Data[i+1])<<8|uint32(vm.Data[i+2])<<16|uint32(vm.Data[i+3])<<24) == -1 {
			pads++
		}
	}
	if pads != 16 {
		t.Errorf("%d padding slots in the vocab map, want 16", pads)
	}
}

func TestForceAndExisting(t *testing.T) {
	in := model(t, "llama-tiny")
	dir := t.TempDir()
	fh := filepath.Join(dir, "fh.fhm")
	if r := runBuild(t, "--in", in, "--out", fh, "-q"); r.Code != 0 {
		t.Fatal(r.Stderr)
	}
	outDir := t.TempDir()
	out := filepath.Join(outDir, "again.fhm")
	r := runBuild(t, "--in", fh, "--out", out)
	if r.Code != 1 || !strings.Contains(r.Stderr, "already holds a FlashHead") || !strings.Contains(r.Stderr, "--force") {
		t.Errorf("exit %d, stderr %q", r.Code, r.Stderr)
	}
	noFiles(t, outDir)
	r = runBuild(t, "--in", fh, "--out", out, "--force", "--cluster-size", "8")
	if r.Code != 0 {
		t.Fatalf("--force: exit %d: %s", r.Code, r.Stderr)
	}
	f := open(t, out)
	if m := f.Metadata.FlashHead; m == nil || m.NumClusters != 64 || m.ClusterSize != 8 {
		t.Errorf("replaced FlashHead %+v", m)
	}
	if vm, _ := f.Tensor(fhm.FlashHeadVocabMap); !slices.Equal(vm.Info.Shape, []int64{64, 8}) {
		t.Errorf("vocab map shape %v", vm.Info.Shape)
	}
	if n := len(open(t, in).Tensors) + 3; len(f.Tensors) != n {
		t.Errorf("%d tensors, want %d (the old FlashHead tensors replaced)", len(f.Tensors), n)
	}
}

func TestEmbedlExportImport(t *testing.T) {
	in := model(t, "gemma3-tiny")
	dir := t.TempDir()
	built := filepath.Join(dir, "built.fhm")
	exp := filepath.Join(dir, "export")
	r := runBuild(t, "--in", in, "--out", built, "--export-embedl", exp, "--seed", "3", "--probes", "7")
	if r.Code != 0 {
		t.Fatalf("exit %d: %s", r.Code, r.Stderr)
	}
	b, err := os.ReadFile(filepath.Join(exp, "flashhead_config_fields.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	json.Unmarshal(b, &fields)
	if fields["architectures"].([]any)[0] != "FlashHeadGemma3ForCausalLM" || fields["n_probes"] != float64(7) {
		t.Errorf("fields %s", b)
	}
	imported := filepath.Join(dir, "imported.fhm")
	r = runBuild(t, "--in", in, "--out", imported, "--import-embedl", exp, "--json")
	if r.Code != 0 {
		t.Fatalf("import: exit %d: %s", r.Code, r.Stderr)
	}
	fb, fi := open(t, built), open(t, imported)
	for _, name := range []string{fhm.FlashHeadCentroids, fhm.FlashHeadVocabMap, fhm.FlashHeadWeights} {
		a, _ := fb.Tensor(name)
		c, _ := fi.Tensor(name)
		if !bytes.Equal(a.Data, c.Data) {
			t.Errorf("%s differs between the built and the imported file", name)
		}
	}
	mb, mi := fb.Metadata.FlashHead, fi.Metadata.FlashHead
	if mi.Source != "embedl" || mi.Probes != 7 || !slices.Equal(mi.SpecialTokenIDs, mb.SpecialTokenIDs) || mi.MeanCosine != mb.MeanCosine {
		t.Errorf("imported metadata %+v, built %+v", mi, mb)
	}
	// Export only (no --out).
	exp2 := filepath.Join(dir, "export2")
	if r := runBuild(t, "--in", in, "--export-embedl", exp2, "--seed", "3", "--probes", "7", "-q"); r.Code != 0 {
		t.Fatal(r.Stderr)
	}
	for _, f := range []string{"flash_head_assets/clustering_cache.safetensors"} {
		a, _ := os.ReadFile(filepath.Join(exp, f))
		c, _ := os.ReadFile(filepath.Join(exp2, f))
		if len(a) == 0 || !bytes.Equal(a, c) {
			t.Errorf("%s: exports differ", f)
		}
	}
	// A broken cache: exit 1, the file named, no output.
	cache := filepath.Join(exp2, "flash_head_assets", "clustering_cache.safetensors")
	os.WriteFile(cache, []byte("not a safetensors file"), 0o644)
	outDir := t.TempDir()
	r = runBuild(t, "--in", in, "--out", filepath.Join(outDir, "x.fhm"), "--import-embedl", exp2)
	if r.Code != 1 || !strings.Contains(r.Stderr, cache) {
		t.Errorf("broken cache: exit %d, stderr %q", r.Code, r.Stderr)
	}
	noFiles(t, outDir)
	// A cache for another model (vocab 512 vs 64 rows).
	other := model(t, "llama-tiny") // hidden 32 vs gemma3-tiny's
	r = runBuild(t, "--in", other, "--out", filepath.Join(outDir, "x.fhm"), "--import-embedl", exp)
	if r.Code != 1 || !strings.Contains(r.Stderr, "clustering_c") {
		t.Errorf("cache of another model: exit %d, stderr %q", r.Code, r.Stderr)
	}
	noFiles(t, outDir)
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--in", "x"},
		{"--in", "x", "--out", "y", "--cluster-size", "0"},
		{"--in", "x", "--out", "y", "--probes", "-1"},
		{"--in", "x", "--out", "y", "--iters", "0"},
		{"--in", "x", "--out", "y", "--search", "fast"},
		{"--in", "x", "--out", "y", "--import-embedl", "d", "--cluster-size", "8"},
		{"--in", "x", "--out", "y", "--import-embedl", "d", "--export-embedl", "e"},
		{"--in", "x", "--out", "y", "extra"},
		{"--bogus"},
		{"--in", "x", "--out", "y", "--seed", "-1"},
	} {
		r := runBuild(t, args...)
		if r.Code != 2 || !strings.Contains(r.Stderr, "fh-flashhead-build:") {
			t.Errorf("%v: exit %d (want 2), stderr %q", args, r.Code, r.Stderr)
		}
	}
	r := runBuild(t, "--help")
	if r.Code != 0 || !strings.Contains(r.Stdout, "Examples:") || !strings.Contains(r.Stdout, "--export-embedl") {
		t.Errorf("--help: exit %d, %q", r.Code, r.Stdout)
	}
}

func TestErrors(t *testing.T) {
	outDir := t.TempDir()
	out := filepath.Join(outDir, "x.fhm")
	r := runBuild(t, "--in", filepath.Join(outDir, "missing.fhm"), "--out", out)
	if r.Code != 1 || !strings.Contains(r.Stderr, "missing.fhm") {
		t.Errorf("missing input: exit %d, %q", r.Code, r.Stderr)
	}
	// Not a .fhm file.
	bad := filepath.Join(t.TempDir(), "bad.fhm")
	os.WriteFile(bad, []byte("hello"), 0o644)
	r = runBuild(t, "--in", bad, "--out", out)
	if r.Code != 1 || !strings.Contains(r.Stderr, "bad.fhm") {
		t.Errorf("bad input: exit %d, %q", r.Code, r.Stderr)
	}
	noFiles(t, outDir)
	// Output in a directory that does not exist: exit 1, nothing written.
	in := model(t, "llama-tiny")
	r = runBuild(t, "--in", in, "--out", filepath.Join(outDir, "no", "such", "dir", "x.fhm"))
	if r.Code != 1 || !strings.Contains(r.Stderr, "x.fhm") {
		t.Errorf("unwritable output: exit %d, %q", r.Code, r.Stderr)
	}
	noFiles(t, outDir)
	// --import-embedl of a directory without a cache.
	r = runBuild(t, "--in", in, "--out", out, "--import-embedl", t.TempDir())
	if r.Code != 1 || !strings.Contains(r.Stderr, "clustering_cache.safetensors") {
		t.Errorf("no cache: exit %d, %q", r.Code, r.Stderr)
	}
	noFiles(t, outDir)
}
