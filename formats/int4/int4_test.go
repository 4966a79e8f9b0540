package int4

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/fhkit/fhkit/formats/dtype"
)

func TestPackLowNibbleFirst(t *testing.T) {
	got := Pack([]uint8{1, 2, 3, 4, 15})
	if want := []byte{0x21, 0x43, 0x0f}; !bytes.Equal(got, want) {
		t.Fatalf("Pack = % x, want % x", got, want)
	}
	if u := Unpack(got, 5); !bytes.Equal(u, []byte{1, 2, 3, 4, 15}) {
		t.Fatalf("Unpack = %v", u)
	}
	b := make([]byte, 2)
	SetNibble(b, 3, 9)
	SetNibble(b, 0, 7)
	SetNibble(b, 3, 5)
	if b[0] != 0x07 || b[1] != 0x50 {
		t.Fatalf("SetNibble: % x", b)
	}
}

func TestNames(t *testing.T) {
	q, s, z, ok := Names("model.layers.3.mlp.up_proj.weight")
	if !ok || q != "model.layers.3.mlp.up_proj.qweight" || s != "model.layers.3.mlp.up_proj.scales" || z != "model.layers.3.mlp.up_proj.zeros" {
		t.Fatalf("Names: %q %q %q %v", q, s, z, ok)
	}
	if _, _, _, ok := Names("model.norm"); ok {
		t.Error("Names accepted a name without .weight")
	}
	if w, ok := IsPackedName("a.b.scales"); !ok || w != "a.b.weight" {
		t.Errorf("IsPackedName = %q %v", w, ok)
	}
}

func TestDequantizeAndCheck(t *testing.T) {
	// 1 row, 4 columns, group 2: scales 0.5 and 2 (F32), zeros 8 and 3.
	sc := make([]byte, 8)
	dtype.EncodeFloats(sc, []float32{0.5, 2}, dtype.F32)
	w := Weight{Rows: 1, Cols: 4, GroupSize: 2, QWeight: Pack([]uint8{0, 15, 3, 4}), Scales: sc, ScaleDType: dtype.F32, Zeros: Pack([]uint8{8, 3})}
	if err := w.Check(); err != nil {
		t.Fatal(err)
	}
	got := w.Dequantize()
	want := []float32{-4, 3.5, 0, 2}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Dequantize = %v, want %v", got, want)
		}
	}
	w.Zeros = nil // symmetric: zero 8
	if got := w.Dequantize(); got[2] != -10 {
		t.Fatalf("symmetric Dequantize = %v", got)
	}
	w.GroupSize = 3
	if err := w.Check(); err == nil {
		t.Error("Check accepted a group size that does not divide the width")
	}
}

func randWeight(seed uint64, rows, cols, g int, sdt dtype.DType, asym bool) Weight {
	r := rand.New(rand.NewPCG(seed, 1))
	codes := make([]uint8, rows*cols)
	for i := range codes {
		codes[i] = uint8(r.IntN(16))
	}
	ng := rows * cols / g
	sc := make([]float32, ng)
	for i := range sc {
		sc[i] = float32(r.Float64() + 0.01)
	}
	w := Weight{Rows: rows, Cols: cols, GroupSize: g, QWeight: Pack(codes), ScaleDType: sdt, Scales: make([]byte, ng*sdt.Size())}
	dtype.EncodeFloats(w.Scales, sc, sdt)
	if asym {
		z := make([]uint8, ng)
		for i := range z {
			z[i] = uint8(1 + r.IntN(15)) // GPTQ v1 cannot store zero 0
		}
		w.Zeros = Pack(z)
	}
	return w
}

func sameWeight(t *testing.T, what string, a, b Weight) {
	t.Helper()
	if a.Rows != b.Rows || a.Cols != b.Cols || a.GroupSize != b.GroupSize || a.ScaleDType != b.ScaleDType ||
		!bytes.Equal(a.QWeight, b.QWeight) || !bytes.Equal(a.Scales, b.Scales) || !bytes.Equal(a.Zeros, b.Zeros) {
		t.Fatalf("%s: round trip changed the weight", what)
	}
}

func TestInteropRoundTrips(t *testing.T) {
	for i, c := range []struct {
		rows, cols, g int
		asym          bool
	}{{16, 64, 16, false}, {24, 96, 32, true}, {13, 20, 10, true}, {8, 172, 43, false}} {
		w := randWeight(uint64(i), c.rows, c.cols, c.g, dtype.BF16, c.asym)
		ct, err := ToCompressedTensors(w)
		if err != nil {
			t.Fatal(err)
		}
		if len(ct.Packed) != 4*c.rows*((c.cols+7)/8) || (ct.ZeroPoint != nil) != c.asym {
			t.Fatalf("%+v: packed %d bytes", c, len(ct.Packed))
		}
		back, err := FromCompressedTensors(ct, nil)
		if err != nil {
			t.Fatal(err)
		}
		sameWeight(t, "compressed-tensors", w, back)
		if c.rows%8 == 0 && c.cols%8 == 0 {
			q, err := ToGPTQ(w)
			if err != nil {
				t.Fatal(err)
			}
			g, err := FromGPTQ(q)
			if err != nil {
				t.Fatal(err)
			}
			sameWeight(t, "gptq", w, g)
		}
	}
	// A known word: codes 0..7 of row 0 → 0x76543210; symmetric qzeros 0x77777777.
	codes := make([]uint8, 8*8)
	for i := range codes {
		codes[i] = uint8(i % 8)
	}
	sc := make([]byte, 8*2)
	w := Weight{Rows: 8, Cols: 8, GroupSize: 8, QWeight: Pack(codes), Scales: sc, ScaleDType: dtype.F16}
	ct, _ := ToCompressedTensors(w)
	if got := binary.LittleEndian.Uint32(ct.Packed); got != 0x76543210 {
		t.Errorf("weight_packed word %#x", got)
	}
	q, _ := ToGPTQ(w)
	if got := binary.LittleEndian.Uint32(q.QZeros); got != 0x77777777 {
		t.Errorf("symmetric qzeros %#x", got)
	}
	// Act-order g_idx is refused, not silently mis-grouped.
	q.GIdx[0] = 1
	q.Out, q.In = 8, 8
	q.Scales = make([]byte, 2*8*2) // 2 groups of 4
	q.QZeros = make([]byte, 4*2)
	if _, err := FromGPTQ(q); err == nil {
		t.Error("act-order g_idx accepted")
	}
	if _, err := FromCompressedTensors(&CompressedTensors{Out: 2, In: 8, Packed: make([]byte, 4), Scale: make([]byte, 4), ScaleDType: dtype.BF16}, nil); err == nil {
		t.Error("short weight_packed accepted")
	}
}
