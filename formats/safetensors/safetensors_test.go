package safetensors

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	nst "github.com/nlpodyssey/safetensors"

	"github.com/fhkit/fhkit/formats/dtype"
)

type view struct {
	dt    nst.DType
	shape []uint64
	data  []byte
}

func (v view) DType() nst.DType { return v.dt }
func (v view) Shape() []uint64  { return v.shape }
func (v view) Data() []byte     { return v.data }
func (v view) DataLen() uint64  { return uint64(len(v.data)) }

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// The streaming writer must produce exactly what the reference serializer
// (nlpodyssey/safetensors) produces for the same tensors.
func TestWriterMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	type tc struct {
		name  string
		dt    dtype.DType
		ndt   nst.DType
		shape []int64
	}
	cases := []tc{
		{"b.weight", dtype.BF16, nst.BF16, []int64{3, 5}},
		{"a.weight", dtype.F32, nst.F32, []int64{7}},
		{"ids", dtype.I64, nst.I64, []int64{2, 2}},
		{"mask", dtype.U8, nst.U8, []int64{9}},
		{"scalar", dtype.F16, nst.F16, []int64{}},
		{"empty", dtype.I32, nst.I32, []int64{0, 4}},
	}
	ref := map[string]view{}
	var hdrs []Header
	data := map[string][]byte{}
	for _, c := range cases {
		n := int64(c.dt.Size())
		us := []uint64{}
		for _, d := range c.shape {
			n *= d
			us = append(us, uint64(d))
		}
		b := randBytes(r, int(n))
		data[c.name] = b
		ref[c.name] = view{c.ndt, us, b}
		hdrs = append(hdrs, Header{c.name, c.dt, c.shape})
	}
	meta := map[string]string{"format": "pt"}
	want, err := nst.Serialize(ref, meta)
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	w, err := NewWriter(&got, hdrs, meta)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range w.Order() {
		b := data[h.Name]
		// Write in odd-sized pieces to exercise chunked streaming.
		for len(b) > 0 {
			k := min(len(b), 3)
			if _, err := w.Write(b[:k]); err != nil {
				t.Fatal(err)
			}
			b = b[k:]
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("streamed file differs from the reference serializer\n got %q\nwant %q", got.Bytes()[:80], want[:80])
	}
	f, err := Parse("mem", got.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range data {
		tt, ok := f.Tensor(name)
		if !ok || !bytes.Equal(tt.Data, b) {
			t.Errorf("tensor %s not read back", name)
		}
	}
	if f.Metadata["format"] != "pt" {
		t.Errorf("metadata lost: %v", f.Metadata)
	}
}

func TestWriterRejectsShortAndLongData(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, []Header{{"x", dtype.F32, []int64{2}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(make([]byte, 4))
	if err := w.Close(); err == nil {
		t.Error("Close accepted a tensor with half its data")
	}
	if _, err := w.Write(make([]byte, 8)); err == nil {
		t.Error("Write accepted data past the declared tensors")
	}
	if _, err := NewWriter(&buf, []Header{{"x", dtype.F32, nil}, {"x", dtype.F32, nil}}, nil); err == nil {
		t.Error("duplicate names accepted")
	}
}

func validFile(t testing.TB) []byte {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, []Header{{"a", dtype.F32, []int64{2}}, {"b", dtype.BF16, []int64{3}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(make([]byte, 8+6))
	return buf.Bytes()
}

func withHeader(js string, data int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(js)))
	b = append(b, js...)
	return append(b, make([]byte, data)...)
}

func TestBadInput(t *testing.T) {
	good := validFile(t)
	huge := binary.LittleEndian.AppendUint64(nil, 100_000_001)
	huge = append(huge, '{')
	cases := map[string]struct {
		buf  []byte
		want string
	}{
		"empty":               {nil, "truncated"},
		"truncated length":    {good[:5], "truncated"},
		"header beyond file":  {good[:20], "past the end"},
		"header over 100 MB":  {huge, "exceeds the limit"},
		"truncated data":      {good[:len(good)-1], "invalid safetensors header"},
		"trailing bytes":      {append(append([]byte{}, good...), 0), "invalid safetensors header"},
		"not json":            {withHeader("{nope", 0), "invalid safetensors header"},
		"not an object":       {withHeader("[1,2]   ", 0), "start with '{'"},
		"overlapping offsets": {withHeader(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 12), "invalid safetensors header"},
		"out of range offset": {withHeader(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 4), "invalid safetensors header"},
		"size mismatch":       {withHeader(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, 8), "invalid safetensors header"},
		"dtype mismatch":      {withHeader(`{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,8]}}`, 8), "invalid safetensors header"},
		"unknown dtype":       {withHeader(`{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}`, 8), "invalid safetensors header"},
		"shape overflow":      {withHeader(`{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}`, 8), "invalid safetensors header"},
	}
	for name, c := range cases {
		_, err := Parse("m.safetensors", c.buf)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if !strings.Contains(err.Error(), "m.safetensors") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q should name the file and contain %q", name, err, c.want)
		}
	}
}

func TestOpenMapsFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.safetensors")
	if err := os.WriteFile(p, validFile(t), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if tt, ok := f.Tensor("b"); !ok || tt.DType != dtype.BF16 || len(tt.Data) != 6 || tt.NumElements() != 3 {
		t.Errorf("tensor b: %+v", tt)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing.safetensors")); err == nil {
		t.Error("missing file opened")
	}
}

func FuzzParse(f *testing.F) {
	f.Add(validFile(f))
	f.Add(withHeader(`{"__metadata__":{"format":"pt"},"a":{"dtype":"BF16","shape":[1,2],"data_offsets":[0,4]}}`, 4))
	f.Fuzz(func(t *testing.T, b []byte) {
		sf, err := Parse("fuzz", b)
		if err != nil {
			return
		}
		for _, tt := range sf.Tensors {
			if int64(len(tt.Data)) != tt.DType.ByteSize(tt.NumElements()) {
				t.Fatalf("tensor %q: %d bytes for %v %s", tt.Name, len(tt.Data), tt.Shape, tt.DType)
			}
		}
	})
}
