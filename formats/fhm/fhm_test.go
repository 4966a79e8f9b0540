package fhm

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fhkit/fhkit/formats/arch"
	"github.com/fhkit/fhkit/formats/dtype"
)

func testConfig() arch.Config {
	return arch.Config{
		Architecture: arch.Llama, VocabSize: 32, HiddenSize: 8, IntermediateSize: 16, NumLayers: 1,
		NumHeads: 2, NumKVHeads: 1, HeadDim: 4, HiddenAct: "silu", RMSNormEps: 1e-5,
		MaxPositionEmbeddings: 64, RopeTheta: 10000, RopeLocalTheta: 10000,
		LayerTypes: []string{arch.FullAttention}, AttentionScale: 0.5, TieWordEmbeddings: true,
		BOSTokenID: 1, EOSTokenIDs: []int{2},
	}
}

type tensorData struct {
	name  string
	dt    dtype.DType
	shape []int64
	data  []byte
}

func randTensors(seed uint64) []tensorData {
	r := rand.New(rand.NewPCG(seed, 1))
	ts := []tensorData{
		{"model.embed_tokens.weight", dtype.BF16, []int64{32, 8}, nil},
		{"big", dtype.F32, []int64{LargeTensor/4 + 3}, nil}, // page aligned
		{"packed", dtype.U4, []int64{3, 5}, nil},            // 8 bytes
		{"scalar", dtype.F32, nil, nil},
		{"tokenizer/tokenizer.model", dtype.U8, []int64{11}, nil},
	}
	for i := range ts {
		n := int64(1)
		for _, d := range ts[i].shape {
			n *= d
		}
		ts[i].data = make([]byte, ts[i].dt.ByteSize(n))
		for j := range ts[i].data {
			ts[i].data[j] = byte(r.Uint32())
		}
	}
	return ts
}

func writeFile(t testing.TB, path string, ts []tensorData) {
	w, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range ts {
		if err := w.WriteTensorBytes(x.name, x.dt, x.shape, x.data); err != nil {
			t.Fatal(err)
		}
	}
	meta := &Metadata{Model: testConfig(), WeightDType: "BF16", Converter: "test",
		Tokenizer: Tokenizer{Files: map[string]string{"tokenizer.model": "tokenizer/tokenizer.model"}}}
	if err := w.Commit(meta); err != nil {
		t.Fatal(err)
	}
}

// openRandom writes the random tensors of seed to m.fhm in a new
// directory and opens it (closed when the test ends).
func openRandom(t *testing.T, seed uint64) (string, []tensorData, *File) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "m.fhm")
	ts := randTensors(seed)
	writeFile(t, p, ts)
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return p, ts, f
}

func TestRoundTrip(t *testing.T) {
	p, ts, f := openRandom(t, 1)
	dir := filepath.Dir(p)
	if err := f.Verify(); err != nil {
		t.Fatal(err)
	}
	if len(f.Tensors) != len(ts) {
		t.Fatalf("%d tensors, want %d", len(f.Tensors), len(ts))
	}
	for _, x := range ts {
		got, ok := f.Tensor(x.name)
		if !ok || !bytes.Equal(got.Data, x.data) || got.Info.DType != x.dt {
			t.Errorf("tensor %s not read back", x.name)
		}
		if got.Info.Offset%alignFor(got.Info.Size) != 0 {
			t.Errorf("tensor %s at offset %d not aligned", x.name, got.Info.Offset)
		}
	}
	if b, ok := f.TokenizerFile("tokenizer.model"); !ok || len(b) != 11 {
		t.Error("tokenizer file not found")
	}
	if f.Metadata.Model.VocabSize != 32 {
		t.Errorf("metadata model not read back: %+v", f.Metadata.Model)
	}
	// Byte-identical on a second write.
	p2 := filepath.Join(dir, "m2.fhm")
	writeFile(t, p2, ts)
	a, _ := os.ReadFile(p)
	b, _ := os.ReadFile(p2)
	if !bytes.Equal(a, b) {
		t.Error("two writes of the same content differ")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

func TestWriterErrorsLeaveNoFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "m.fhm")
	w, err := Create(p)
	if err != nil {
		t.Fatal(err)
	}
	err = w.WriteTensor("x", dtype.F32, []int64{4}, func(o io.Writer) error {
		_, err := o.Write(make([]byte, 12))
		return err
	})
	if err == nil {
		t.Fatal("short tensor accepted")
	}
	if err := w.Commit(&Metadata{Model: testConfig()}); err == nil {
		t.Fatal("commit after a failed tensor succeeded")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("files left behind: %v", entries)
	}
	if _, err := Create(filepath.Join(dir, "no-such-dir", "m.fhm")); err == nil {
		t.Error("unwritable path accepted")
	}
}

// rewrite applies edit to a valid file's table or header and fixes the
// checksums, so that the structural checks (not the CRCs) must catch it.
func rewrite(t *testing.T, buf []byte, editTable func(ts []TensorInfo) []TensorInfo) []byte {
	le := binary.LittleEndian
	tableOff := le.Uint64(buf[48:])
	f, err := Parse("x", buf)
	if err != nil {
		t.Fatal(err)
	}
	ts := editTable(append([]TensorInfo(nil), f.Tensors...))
	table := encodeTable(ts)
	out := append(append([]byte(nil), buf[:tableOff]...), table...)
	le.PutUint64(out[56:], uint64(len(table)))
	le.PutUint64(out[64:], uint64(len(out)))
	le.PutUint32(out[72:], uint32(len(ts)))
	le.PutUint32(out[80:], checksum(table))
	le.PutUint32(out[124:], checksum(out[:124]))
	return out
}

func TestBadInput(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.fhm")
	writeFile(t, p, randTensors(2))
	good, _ := os.ReadFile(p)
	flip := func(off int) []byte {
		b := append([]byte(nil), good...)
		b[off] ^= 0x10
		return b
	}
	headerOnly := func(off int, v uint64) []byte {
		b := append([]byte(nil), good...)
		binary.LittleEndian.PutUint64(b[off:], v)
		binary.LittleEndian.PutUint32(b[124:], checksum(b[:124]))
		return b
	}
	tableOff := binary.LittleEndian.Uint64(good[48:])
	metaOff := binary.LittleEndian.Uint64(good[32:])
	cases := map[string]struct {
		buf  []byte
		want string
	}{
		"empty":                    {nil, "truncated"},
		"truncated":                {good[:len(good)-7], "truncated or appended"},
		"bad magic":                {append([]byte("GGUF"), good[4:]...), "bad magic"},
		"header corrupt":           {flip(20), "header checksum"},
		"metadata corrupt":         {flip(int(metaOff) + 3), "metadata checksum"},
		"table corrupt":            {flip(int(tableOff) + 3), "table checksum"},
		"data beyond file":         {headerOnly(24, 1<<40), "inconsistent"},
		"metadata too big":         {headerOnly(40, 1<<30), "metadata size"},
		"data misaligned":          {headerOnly(16, 4097), "data offset"},
		"offset beyond data":       {rewrite(t, good, func(ts []TensorInfo) []TensorInfo { ts[0].Offset = 1 << 30; return ts }), "beyond the data section"},
		"overlap":                  {rewrite(t, good, func(ts []TensorInfo) []TensorInfo { ts[2].Offset = ts[0].Offset; return ts }), "overlap"},
		"size mismatch":            {rewrite(t, good, func(ts []TensorInfo) []TensorInfo { ts[0].Size -= 2; return ts }), "does not match"},
		"dtype mismatch":           {rewrite(t, good, func(ts []TensorInfo) []TensorInfo { ts[0].DType = dtype.F32; return ts }), "does not match"},
		"unknown dtype":            {rewrite(t, good, func(ts []TensorInfo) []TensorInfo { ts[0].DType = 99; return ts }), "unknown dtype"},
		"duplicate name":           {rewrite(t, good, func(ts []TensorInfo) []TensorInfo { ts[1].Name = ts[0].Name; return ts }), "twice"},
		"misaligned offset":        {rewrite(t, good, func(ts []TensorInfo) []TensorInfo { ts[0].Offset += 2; return ts }), "not aligned"},
		"missing tokenizer tensor": {rewrite(t, good, func(ts []TensorInfo) []TensorInfo { return ts[:4] }), "tokenizer file"},
	}
	for name, c := range cases {
		_, err := Parse("m.fhm", c.buf)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if !strings.HasPrefix(err.Error(), "m.fhm: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q should name the file and contain %q", name, err, c.want)
		}
	}
	// A flipped data byte passes Open (no data read) but fails Verify.
	bad := flip(PageAlign + 5)
	f, err := Parse("m.fhm", bad)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Verify(); err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Errorf("Verify missed corrupt data: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	p := filepath.Join(f.TempDir(), "m.fhm")
	ts := randTensors(3)
	ts[1] = tensorData{"small", dtype.F32, []int64{3}, make([]byte, 12)} // keep the seed small
	writeFile(f, p, ts)
	good, _ := os.ReadFile(p)
	f.Add(good)
	f.Fuzz(func(t *testing.T, b []byte) {
		parseAndCheck(t, b)
		// Most mutations break a checksum and stop at it; parse a copy
		// with the checksums repaired too, so the fuzzer reaches the
		// header, table and metadata validation behind them.
		parseAndCheck(t, repairChecksums(b))
	})
}

// repairChecksums recomputes the metadata, table and header CRCs where the
// header's offsets are in range.
func repairChecksums(b []byte) []byte {
	if len(b) < HeaderSize {
		return b
	}
	b = append([]byte(nil), b...)
	le := binary.LittleEndian
	size := uint64(len(b))
	mo, ms := le.Uint64(b[32:]), le.Uint64(b[40:])
	if mo <= size && ms <= size-mo {
		le.PutUint32(b[76:], checksum(b[mo:mo+ms]))
	}
	if to := le.Uint64(b[48:]); to <= size {
		le.PutUint32(b[80:], checksum(b[to:]))
	}
	le.PutUint32(b[124:], checksum(b[:124]))
	return b
}

func parseAndCheck(t *testing.T, b []byte) {
	file, err := Parse("fuzz", b)
	if err != nil {
		return
	}
	for _, ti := range file.Tensors {
		tt, ok := file.Tensor(ti.Name)
		if !ok || int64(len(tt.Data)) != ti.Size {
			t.Fatalf("tensor %q inconsistent", ti.Name)
		}
	}
	file.Verify()
}

// Released tensor bytes read back unchanged (the pages come back from the
// file), and slices outside the file or after Close are ignored.
func TestRelease(t *testing.T) {
	_, ts, f := openRandom(t, 2)
	for _, x := range ts {
		got, _ := f.Tensor(x.name)
		f.Release(got.Data)
		f.Release(got.Data[len(got.Data)/2:])
		if !bytes.Equal(got.Data, x.data) {
			t.Errorf("tensor %s differs after Release", x.name)
		}
	}
	f.Release(make([]byte, 10)) // not in the file
	f.Release(nil)
	f.Close()
	f.Release(make([]byte, 10))
}

// CopyOut reads a tensor's bytes (or part of them) from the file into dst
// exactly as the mapping holds them, copies slices from elsewhere as they
// are, and fails naming the file when it can no longer be read.
func TestCopyOut(t *testing.T) {
	p, ts, f := openRandom(t, 3)
	for _, x := range ts {
		got, _ := f.Tensor(x.name)
		for _, part := range [][]byte{got.Data, got.Data[len(got.Data)/3:]} {
			dst := make([]byte, len(part))
			if err := f.CopyOut(dst, part); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(dst, part) {
				t.Errorf("tensor %s: CopyOut differs from the mapping", x.name)
			}
		}
	}
	other := []byte{1, 2, 3}
	dst := make([]byte, 3)
	if err := f.CopyOut(dst, other); err != nil || !bytes.Equal(dst, other) {
		t.Errorf("CopyOut of a slice outside the file: %v %v", dst, err)
	}
	got, _ := f.Tensor(ts[0].name)
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	err := f.CopyOut(make([]byte, len(got.Data)), got.Data)
	if err == nil || !strings.Contains(err.Error(), "m.fhm") {
		t.Errorf("CopyOut after the file was removed: %v, want an error naming it", err)
	}
}
