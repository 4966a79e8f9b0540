package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/formats/safetensors"
	"github.com/fhkit/fhkit/internal/clitest"
	"github.com/fhkit/fhkit/internal/fixture"
	"github.com/fhkit/fhkit/quantize"
)

// bin is the command under test, built once by TestMain.
var bin string

func TestMain(m *testing.M) { clitest.Main(m, "fh-convert", &bin) }

type result = clitest.Result

func runConvert(t *testing.T, args ...string) result {
	t.Helper()
	return clitest.Run(t, bin, args...)
}

// runShell runs fh-convert under a shell prefix such as a ulimit.
func runShell(t *testing.T, prefix string, args ...string) result {
	t.Helper()
	return clitest.RunShell(t, prefix, bin, args...)
}

// fixtureDir writes a fresh copy of a preset.
func fixtureDir(t *testing.T, preset string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), preset)
	if err := fixture.Write(dir, preset, 1); err != nil {
		t.Fatal(err)
	}
	return dir
}

// expectFailure checks exit code 1, an error naming want..., and that the
// output directory holds nothing (no partial or temporary file).
func expectFailure(t *testing.T, r result, outDir string, want ...string) {
	t.Helper()
	if r.Code != 1 {
		t.Errorf("exit code %d, want 1; stderr: %s", r.Code, r.Stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.Stderr, w) {
			t.Errorf("stderr %q does not mention %q", r.Stderr, w)
		}
	}
	if strings.Contains(r.Stderr, "panic") || strings.Contains(r.Stderr, "goroutine") {
		t.Errorf("panic: %s", r.Stderr)
	}
	entries, _ := os.ReadDir(outDir)
	for _, e := range entries {
		t.Errorf("left behind in the output directory: %s", e.Name())
	}
}

func TestConvertFixtures(t *testing.T) {
	for _, p := range fixture.Presets() {
		if p.OnDemand {
			continue
		}
		t.Run(p.Name, func(t *testing.T) {
			in := fixtureDir(t, p.Name)
			out := filepath.Join(t.TempDir(), "m.fhm")
			r := runConvert(t, "--in", in, "--out", out, "--json")
			if r.Code != 0 {
				t.Fatalf("exit %d: %s", r.Code, r.Stderr)
			}
			var s struct {
				Tensors int     `json:"tensors"`
				Params  int64   `json:"params"`
				Bytes   int64   `json:"bytes"`
				Seconds float64 `json:"seconds"`
			}
			if err := json.Unmarshal([]byte(r.Stdout), &s); err != nil {
				t.Fatalf("--json output %q: %v", r.Stdout, err)
			}
			want, err := fixture.Config(p.Name)
			if err != nil {
				t.Fatal(err)
			}
			if s.Params != want.NumParams() || s.Bytes <= 0 {
				t.Errorf("summary %+v, want %d params", s, want.NumParams())
			}
			f, err := fhm.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := f.Verify(); err != nil {
				t.Fatal(err)
			}
			if f.Metadata.Model.Architecture != want.Architecture || f.Metadata.Model.NumLayers != want.NumLayers ||
				f.Metadata.Model.HeadDim != want.HeadDim || f.Metadata.Model.TieWordEmbeddings != want.TieWordEmbeddings {
				t.Errorf("model config %+v, want %+v", f.Metadata.Model, want)
			}
			if _, ok := f.TokenizerFile("tokenizer.model"); !ok {
				t.Error("tokenizer.model not embedded")
			}
			// Converting again gives the same bytes.
			out2 := filepath.Join(t.TempDir(), "m.fhm")
			if r := runConvert(t, "--in", in, "--out", out2, "-q"); r.Code != 0 {
				t.Fatal(r.Stderr)
			}
			a, _ := os.ReadFile(out)
			b, _ := os.ReadFile(out2)
			if !bytes.Equal(a, b) {
				t.Error("converting twice gave different files")
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--in", "x"},
		{"--in", "x", "--out", "y", "--dtype", "int3"},
		{"--bogus"},
		{"--in", "x", "--out", "y", "extra"},
	} {
		r := runConvert(t, args...)
		if r.Code != 2 || !strings.Contains(r.Stderr, "fh-convert:") {
			t.Errorf("%v: exit %d (want 2), stderr %q", args, r.Code, r.Stderr)
		}
	}
	r := runConvert(t, "--help")
	if r.Code != 0 || !strings.Contains(r.Stdout, "Examples:") || !strings.Contains(r.Stdout, "gemma3_text") {
		t.Errorf("--help: exit %d, %q", r.Code, r.Stdout)
	}
}

// safetensorsFile is a parsed file for building broken variants.
type safetensorsFile struct {
	header map[string]any
	data   []byte
}

func readST(t *testing.T, path string) safetensorsFile {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(b)
	var h map[string]any
	if err := json.Unmarshal(b[8:8+n], &h); err != nil {
		t.Fatal(err)
	}
	return safetensorsFile{h, b[8+n:]}
}

func (s safetensorsFile) bytes(t *testing.T) []byte {
	js, err := json.Marshal(s.header)
	if err != nil {
		t.Fatal(err)
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(js)))
	return append(append(out, js...), s.data...)
}

func entry(s safetensorsFile, name string) map[string]any { return s.header[name].(map[string]any) }

func offsets(e map[string]any) (int, int) {
	o := e["data_offsets"].([]any)
	return int(o[0].(float64)), int(o[1].(float64))
}

func TestBadInput(t *testing.T) {
	const emb = "model.embed_tokens.weight"
	cases := []struct {
		name string
		// edit breaks the llama-tiny checkpoint in dir.
		edit func(t *testing.T, dir string)
		want []string
	}{
		{"truncated file", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "model.safetensors")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-100], 0o644)
		}, []string{"model.safetensors", "invalid safetensors header"}},
		{"header length beyond file", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "model.safetensors")
			b, _ := os.ReadFile(p)
			binary.LittleEndian.PutUint64(b, uint64(len(b)))
			os.WriteFile(p, b, 0o644)
		}, []string{"model.safetensors", "past the end of the file"}},
		{"header over 100 MB", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "model.safetensors")
			b, _ := os.ReadFile(p)
			binary.LittleEndian.PutUint64(b, 100_000_001)
			os.WriteFile(p, b, 0o644)
		}, []string{"model.safetensors", "exceeds the limit"}},
		{"overlapping offsets", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "model.safetensors")
			s := readST(t, p)
			e := entry(s, emb)
			b, en := offsets(e)
			e["data_offsets"] = []int{b + 4, en + 4}
			os.WriteFile(p, s.bytes(t), 0o644)
		}, []string{"model.safetensors", "invalid safetensors header"}},
		{"out of range offset", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "model.safetensors")
			s := readST(t, p)
			e := entry(s, emb)
			_, en := offsets(e)
			e["data_offsets"] = []int{len(s.data) + 1000, len(s.data) + 1000 + en}
			os.WriteFile(p, s.bytes(t), 0o644)
		}, []string{"model.safetensors", "invalid safetensors header"}},
		{"dtype size mismatch", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "model.safetensors")
			s := readST(t, p)
			e := entry(s, emb)
			if e["dtype"] == "F32" {
				e["dtype"] = "BF16"
			} else {
				e["dtype"] = "F32"
			}
			os.WriteFile(p, s.bytes(t), 0o644)
		}, []string{"model.safetensors", "invalid safetensors header"}},
		{"NaN weight", func(t *testing.T, dir string) {
			poison(t, dir, emb, float32(math.NaN()))
		}, []string{"model.safetensors", emb, "NaN or Inf", "--allow-nonfinite"}},
		{"Inf weight", func(t *testing.T, dir string) {
			poison(t, dir, "model.norm.weight", float32(math.Inf(-1)))
		}, []string{"model.norm.weight", "NaN or Inf"}},
		{"missing tensor", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "model.safetensors")
			s := readST(t, p)
			// Rename rather than remove, so the file stays well formed.
			s.header["model.unknown.weight"] = s.header["model.layers.0.mlp.up_proj.weight"]
			delete(s.header, "model.layers.0.mlp.up_proj.weight")
			os.WriteFile(p, s.bytes(t), 0o644)
		}, []string{`missing tensor "model.layers.0.mlp.up_proj.weight"`, `unexpected tensor "model.unknown.weight"`}},
		{"shape contradicts config.json", func(t *testing.T, dir string) {
			editConfig(t, dir, func(c map[string]any) { c["intermediate_size"] = c["intermediate_size"].(float64) + 8 })
		}, []string{"model.safetensors", "mlp.up_proj.weight", "config.json implies"}},
		{"unsupported architecture", func(t *testing.T, dir string) {
			editConfig(t, dir, func(c map[string]any) {
				c["model_type"] = "mistral"
				c["architectures"] = []string{"MistralForCausalLM"}
			})
		}, []string{"config.json", "mistral", "gemma3_text", "llama", "qwen3"}},
		{"missing config.json", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "config.json"))
		}, []string{"config.json"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := fixtureDir(t, "llama-tiny")
			c.edit(t, in)
			outDir := t.TempDir()
			r := runConvert(t, "--in", in, "--out", filepath.Join(outDir, "m.fhm"))
			expectFailure(t, r, outDir, c.want...)
		})
	}
}

func TestAllowNonFinite(t *testing.T) {
	in := fixtureDir(t, "llama-tiny")
	poison(t, in, "model.norm.weight", float32(math.NaN()))
	out := filepath.Join(t.TempDir(), "m.fhm")
	if r := runConvert(t, "--in", in, "--out", out, "--allow-nonfinite"); r.Code != 0 {
		t.Fatalf("exit %d: %s", r.Code, r.Stderr)
	}
	f, err := fhm.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	norm, _ := f.Tensor("model.norm.weight")
	if dtype.FirstNonFinite(norm.Data, norm.Info.DType) != 0 {
		t.Error("the NaN was not carried over")
	}
}

// poison sets the first element of a tensor to v (in its own dtype).
func poison(t *testing.T, dir, name string, v float32) {
	p := filepath.Join(dir, "model.safetensors")
	s := readST(t, p)
	e := entry(s, name)
	b, _ := offsets(e)
	dt, err := dtype.Parse(e["dtype"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if err := dtype.EncodeFloats(s.data[b:b+dt.Size()], []float32{v}, dt); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p, s.bytes(t), 0o644)
}

func editConfig(t *testing.T, dir string, edit func(map[string]any)) {
	p := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	edit(c)
	b, _ = json.Marshal(c)
	os.WriteFile(p, b, 0o644)
}

func TestShardEscapingDirectory(t *testing.T) {
	for _, bad := range []string{"../x.safetensors", "/etc/passwd", "sub/../../x.safetensors"} {
		in := fixtureDir(t, "llama-sharded")
		p := filepath.Join(in, "model.safetensors.index.json")
		b, _ := os.ReadFile(p)
		var idx struct {
			Metadata  map[string]any    `json:"metadata"`
			WeightMap map[string]string `json:"weight_map"`
		}
		json.Unmarshal(b, &idx)
		for k := range idx.WeightMap {
			idx.WeightMap[k] = bad
			break
		}
		b, _ = json.Marshal(idx)
		os.WriteFile(p, b, 0o644)
		outDir := t.TempDir()
		r := runConvert(t, "--in", in, "--out", filepath.Join(outDir, "m.fhm"))
		expectFailure(t, r, outDir, "model.safetensors.index.json", bad)
	}
}

func TestUnwritableOutput(t *testing.T) {
	in := fixtureDir(t, "llama-tiny")
	parent := t.TempDir()
	r := runConvert(t, "--in", in, "--out", filepath.Join(parent, "missing", "m.fhm"))
	expectFailure(t, r, parent, "missing/m.fhm")
	r = runConvert(t, "--in", in, "--out", parent)
	expectFailure(t, r, parent, "is a directory")
	if os.Getuid() != 0 { // root ignores directory permissions
		ro := filepath.Join(parent, "ro")
		os.Mkdir(ro, 0o555)
		r = runConvert(t, "--in", in, "--out", filepath.Join(ro, "m.fhm"))
		expectFailure(t, r, ro, "ro/m.fhm")
	}
}

// A file-size limit makes writes fail the way a full disk does (EFBIG
// instead of ENOSPC; Go ignores SIGXFSZ, so the write returns the error).
func TestDiskFull(t *testing.T) {
	in := fixtureDir(t, "llama-tiny")
	outDir := t.TempDir()
	r := runShell(t, "ulimit -f 64", "--in", in, "--out", filepath.Join(outDir, "m.fhm"))
	expectFailure(t, r, outDir, "m.fhm", "file too large")
}

// bigCheckpoint writes a Llama checkpoint of about 200 MB, large enough that
// its conversion is still running when the test signals it.
func bigCheckpoint(t *testing.T) string {
	dir := fixtureDir(t, "llama-tiny")
	p := filepath.Join(dir, "model.safetensors")
	src := readST(t, p)
	const emb = "model.embed_tokens.weight"
	shape := entry(src, emb)["shape"].([]any)
	hidden := int64(shape[1].(float64))
	vocab := int64(200<<20) / 4 / hidden
	editConfig(t, dir, func(c map[string]any) { c["vocab_size"] = vocab })

	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var hdrs []safetensors.Header
	for name, v := range src.header {
		if name == "__metadata__" {
			continue
		}
		e := v.(map[string]any)
		dt, _ := dtype.Parse(e["dtype"].(string))
		var sh []int64
		for _, d := range e["shape"].([]any) {
			sh = append(sh, int64(d.(float64)))
		}
		if name == emb {
			dt, sh = dtype.F32, []int64{vocab, hidden}
		}
		hdrs = append(hdrs, safetensors.Header{Name: name, DType: dt, Shape: sh})
	}
	w, err := safetensors.NewWriter(f, hdrs, nil)
	if err != nil {
		t.Fatal(err)
	}
	row := make([]float32, hidden)
	for i := range row {
		row[i] = float32(i%7) * 0.01
	}
	rowBytes := make([]byte, 4*hidden)
	dtype.EncodeFloats(rowBytes, row, dtype.F32)
	for _, h := range w.Order() {
		if h.Name == emb {
			for r := int64(0); r < vocab; r++ {
				w.Write(rowBytes)
			}
			continue
		}
		b, e := offsets(entry(src, h.Name))
		w.Write(src.data[b:e])
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestKillDuringWrite(t *testing.T) {
	in := bigCheckpoint(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			outDir := t.TempDir()
			out := filepath.Join(outDir, "m.fhm")
			cmd := exec.Command(bin, "--in", in, "--out", out, "--dtype", "f32")
			var se bytes.Buffer
			cmd.Stderr = &se
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Wait until the temporary output exists, then signal.
			deadline := time.Now().Add(20 * time.Second)
			for {
				entries, _ := os.ReadDir(outDir)
				if len(entries) > 0 || time.Now().After(deadline) {
					break
				}
				time.Sleep(200 * time.Microsecond)
			}
			cmd.Process.Signal(sig)
			err := cmd.Wait()
			if err == nil {
				t.Skip("conversion finished before the signal arrived; machine too fast for this input")
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("output file exists after %v", sig)
			}
			if sig != syscall.SIGKILL {
				if code := cmd.ProcessState.ExitCode(); code != 128+int(sig) {
					t.Errorf("exit code %d, want %d", code, 128+int(sig))
				}
				entries, _ := os.ReadDir(outDir)
				if len(entries) != 0 {
					t.Errorf("temporary file left after %v: %v", sig, entries)
				}
			}
		})
	}
}

// A W4A16 checkpoint exported as compressed-tensors converts to the same
// int4 tensors it was exported from.
func TestConvertW4A16Checkpoint(t *testing.T) {
	dir := t.TempDir()
	dense := filepath.Join(dir, "dense.fhm")
	if r := runConvert(t, "--in", fixtureDir(t, "llama-tiny"), "--out", dense); r.Code != 0 {
		t.Fatal(r.Stderr)
	}
	q := filepath.Join(dir, "q.fhm")
	if _, err := quantize.File(dense, q, quantize.Options{GroupSize: 32}); err != nil {
		t.Fatal(err)
	}
	qf, err := fhm.Open(q)
	if err != nil {
		t.Fatal(err)
	}
	defer qf.Close()
	export := filepath.Join(dir, "hf")
	if err := quantize.ExportHF(qf, export); err != nil {
		t.Fatal(err)
	}
	back := filepath.Join(dir, "back.fhm")
	r := runConvert(t, "--in", export, "--out", back, "--json")
	if r.Code != 0 || !strings.Contains(r.Stdout, "compressed-tensors") {
		t.Fatalf("exit %d: %s %s", r.Code, r.Stdout, r.Stderr)
	}
	bf, err := fhm.Open(back)
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	n := 0
	for _, ti := range qf.Tensors {
		if !strings.HasSuffix(ti.Name, ".qweight") && !strings.HasSuffix(ti.Name, ".scales") {
			continue
		}
		a, _ := qf.Tensor(ti.Name)
		b, ok := bf.Tensor(ti.Name)
		if !ok || !bytes.Equal(a.Data, b.Data) {
			t.Errorf("%s not bit-identical after export and fh-convert", ti.Name)
		}
		n++
	}
	if n == 0 {
		t.Fatal("no int4 tensors compared")
	}
}
