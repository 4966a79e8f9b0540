// Package conformance runs fhkit against ../shared/conformance: real
// checkpoints with reference data made by independent implementations.
// Later stages (logits, greedy decoding, tokenizer ids) add their checks here.
package conformance

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/fhkit/fhkit/convert"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/formats/hf"
)

// sharedDir returns the conformance directory, or skips the test with the
// reason (fails instead when FHKIT_REQUIRE_SHARED is set, as in CI).
func sharedDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("FHKIT_SHARED")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "shared")
	}
	conf := filepath.Join(dir, "conformance")
	if st, err := os.Stat(conf); err != nil || !st.IsDir() {
		msg := "conformance data not found at " + conf + " (it lives in ../shared beside the repository; set FHKIT_SHARED to its path)"
		if os.Getenv("FHKIT_REQUIRE_SHARED") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return conf
}

// models returns every conformance case that has a checkpoint.
func models(t *testing.T) map[string]string {
	conf := sharedDir(t)
	dirs, _ := filepath.Glob(filepath.Join(conf, "*", "model"))
	if len(dirs) == 0 {
		t.Fatalf("no checkpoints under %s/*/model", conf)
	}
	out := map[string]string{}
	for _, d := range dirs {
		out[filepath.Base(filepath.Dir(d))] = d
	}
	return out
}

// TestConformanceConvert converts every conformance checkpoint (twice, to
// check the output is deterministic) and checks that the .fhm loads, its
// checksums hold, its configuration is the checkpoint's, and every weight
// equals the source weight converted to the output dtype.
func TestConformanceConvert(t *testing.T) {
	for name, dir := range models(t) {
		t.Run(name, func(t *testing.T) {
			for _, dt := range []dtype.DType{dtype.F32, dtype.BF16} {
				out := filepath.Join(t.TempDir(), name+".fhm")
				if _, err := convert.Dir(dir, out, convert.Options{DType: dt}); err != nil {
					t.Fatal(err)
				}
				again := filepath.Join(t.TempDir(), "again.fhm")
				if _, err := convert.Dir(dir, again, convert.Options{DType: dt}); err != nil {
					t.Fatal(err)
				}
				a, _ := os.ReadFile(out)
				b, _ := os.ReadFile(again)
				if !bytes.Equal(a, b) {
					t.Errorf("%s: two conversions differ", dt)
				}
				checkModel(t, dir, out, dt)
			}
		})
	}
}

func checkModel(t *testing.T, dir, path string, dt dtype.DType) {
	f, err := fhm.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Verify(); err != nil {
		t.Fatal(err)
	}
	ck, err := hf.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if !reflect.DeepEqual(f.Metadata.Model, ck.Config) {
		t.Errorf("model config differs from config.json:\n got %+v\nwant %+v", f.Metadata.Model, ck.Config)
	}
	for _, spec := range ck.Config.Tensors() {
		got, ok := f.Tensor(spec.Name)
		if !ok {
			t.Errorf("tensor %s missing", spec.Name)
			continue
		}
		src, _ := ck.Tensor(spec.Name)
		want := make([]byte, src.NumElements()*int64(dt.Size()))
		if _, err := dtype.ConvertFloats(want, dt, src.Data, src.DType); err != nil {
			t.Fatal(err)
		}
		if got.Info.DType != dt || !reflect.DeepEqual(got.Info.Shape, spec.Shape) || !bytes.Equal(got.Data, want) {
			t.Errorf("tensor %s: %s%v does not hold the source weights as %s%v", spec.Name, got.Info.DType, got.Info.Shape, dt, spec.Shape)
		}
	}
	for _, tf := range []string{"tokenizer.model", "tokenizer_config.json"} {
		want, err := os.ReadFile(filepath.Join(dir, tf))
		if err != nil {
			continue
		}
		got, ok := f.TokenizerFile(tf)
		if !ok || !bytes.Equal(got, want) {
			t.Errorf("tokenizer file %s not embedded verbatim", tf)
		}
	}
	if len(f.Metadata.Source.Files) == 0 {
		t.Error("no provenance recorded")
	}
}
