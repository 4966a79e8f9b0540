package cuda

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/runtime/cpu"
)

// ulpBound allows one float32 rounding step (2u relative) per element:
// the kernels compute in double where the reference does and round once,
// but CUDA's, glibc's and Go's double cos/sin/tanh/exp may differ in the
// last double bit, which can flip the final float32 rounding.
func ulpBound(want []float32) []float32 {
	b := make([]float32, len(want))
	for i, v := range want {
		b[i] = 2*u32*float32(math.Abs(float64(v))) + 1e-37
	}
	return b
}

func exact(t *testing.T, what string, got, want []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: [%d] = %g, want %g (bit-identical expected)", what, i, got[i], want[i])
		}
	}
}

// rowPositions returns the positions pos0, pos0+1, ... of T rows of one
// sequence (the per-row positions the kernels read).
func rowPositions(pos0, T int) []int32 {
	p := make([]int32, T)
	for i := range p {
		p[i] = int32(pos0 + i)
	}
	return p
}

// devRowPtrs uploads a per-row table of T rows holding b's device address
// (64-bit) in every row, as the runner's pass inputs hold each row's cache
// address.
func devRowPtrs(t *testing.T, dv *Device, b Buffer, T int) Buffer {
	t.Helper()
	raw := make([]byte, 8*T)
	for i := 0; i < T; i++ {
		binary.LittleEndian.PutUint64(raw[8*i:], b.Ptr)
	}
	return devBytes(t, dv, raw)
}

// devRowInts uploads T copies of v (a per-row ring table).
func devRowInts(t *testing.T, dv *Device, v, T int) Buffer {
	t.Helper()
	p := make([]int32, T)
	for i := range p {
		p[i] = int32(v)
	}
	return devI32(t, dv, p)
}

func devI32(t *testing.T, dv *Device, v []int32) Buffer {
	t.Helper()
	b, err := dv.Alloc(4 * len(v))
	if err != nil {
		t.Fatal(err)
	}
	if err := dv.UploadI32(b, 0, v); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dv.Free(b) })
	return b
}

func TestEmbed(t *testing.T) {
	dv := testDevice(t)
	r := rand.New(rand.NewPCG(15, 16))
	for _, dt := range []dtype.DType{dtype.BF16, dtype.F16, dtype.F32} {
		for _, h := range []int{1, 64, 1153} {
			m := randMat(r, 50, h, dt)
			tokens := []int32{3, 0, 49, 3, 17}
			scale := float32(34)
			want := make([]float32, len(tokens)*h)
			for i, id := range tokens {
				m.RowF32(want[i*h:(i+1)*h], int(id))
				for j := i * h; j < (i+1)*h; j++ {
					want[j] *= scale
				}
			}
			dw, dt2 := devBytes(t, dv, m.Data), devI32(t, dv, tokens)
			out := devF32(t, dv, make([]float32, len(want)))
			name := "fh_embed_" + map[dtype.DType]string{dtype.BF16: "bf16", dtype.F16: "f16", dtype.F32: "f32"}[dt]
			got := schedules(t, dv, func() []float32 {
				launch(t, dv, name, D1(len(tokens)), D1(128), 0, out, dw, dt2, h, scale)
				return download(t, dv, out, len(want))
			})
			exact(t, fmt.Sprintf("%s h=%d", name, h), got, want)
		}
	}
}

func TestRoPE(t *testing.T) {
	dv := testDevice(t)
	r := rand.New(rand.NewPCG(17, 18))
	for _, s := range []struct{ T, heads, hd, pos0 int }{{1, 4, 8, 0}, {1, 8, 256, 4095}, {7, 3, 64, 123}, {33, 2, 130, 1000}} {
		t.Run(fmt.Sprintf("T%d_h%d_d%d_p%d", s.T, s.heads, s.hd, s.pos0), func(t *testing.T) {
			half := s.hd / 2
			inv := make([]float32, half)
			for i := range inv {
				inv[i] = 1 / float32(math.Pow(10000, float64(float32(2*i)/float32(s.hd))))
			}
			// Reference tables as runtime/model builds them.
			wantCos, wantSin := make([]float32, s.T*half), make([]float32, s.T*half)
			for tt := 0; tt < s.T; tt++ {
				p := float32(s.pos0 + tt)
				for i, f := range inv {
					a := float64(f * p)
					wantCos[tt*half+i] = float32(math.Cos(a))
					wantSin[tt*half+i] = float32(math.Sin(a))
				}
			}
			dinv, dpos := devF32(t, dv, inv), devI32(t, dv, rowPositions(s.pos0, s.T))
			dcos, dsin := devF32(t, dv, make([]float32, s.T*half)), devF32(t, dv, make([]float32, s.T*half))
			gotCos := schedules(t, dv, func() []float32 {
				launch(t, dv, "fh_rope_table", D1(s.T), D1(64), 0, dcos, dsin, dinv, dpos, half)
				return download(t, dv, dcos, s.T*half)
			})
			gotSin := download(t, dv, dsin, s.T*half)
			checkClose(t, "cos", gotCos, wantCos, ulpBound(wantCos))
			checkClose(t, "sin", gotSin, wantSin, ulpBound(wantSin))

			// The rotation, from the reference tables: bit-identical.
			if err := dv.UploadF32(dcos, 0, wantCos); err != nil {
				t.Fatal(err)
			}
			if err := dv.UploadF32(dsin, 0, wantSin); err != nil {
				t.Fatal(err)
			}
			x := randFloats(r, s.T*s.heads*s.hd, 2)
			want := append([]float32(nil), x...)
			for tt := 0; tt < s.T; tt++ {
				for h := 0; h < s.heads; h++ {
					off := (tt*s.heads + h) * s.hd
					cpu.RoPE(want[off:off+s.hd], wantCos[tt*half:(tt+1)*half], wantSin[tt*half:(tt+1)*half])
				}
			}
			dx := devF32(t, dv, x)
			got := schedules(t, dv, func() []float32 {
				if err := dv.UploadF32(dx, 0, x); err != nil {
					t.Fatal(err)
				}
				launch(t, dv, "fh_rope", Dim3{s.heads, s.T, 1}, D1(32), 0, dx, dcos, dsin, s.heads, half)
				return download(t, dv, dx, len(x))
			})
			exact(t, "rope", got, want)
		})
	}
}

func TestKVStore(t *testing.T) {
	dv := testDevice(t)
	r := rand.New(rand.NewPCG(19, 20))
	const n, rows, T, pos0 = 24, 10, 6, 7
	for _, dt := range []dtype.DType{dtype.F32, dtype.BF16, dtype.F16} {
		for _, ring := range []int{0, rows} {
			k, v := randFloats(r, T*n, 3), randFloats(r, T*n, 3)
			size := (pos0 + T) * n
			if ring > 0 {
				size = ring * n
			}
			wantK, wantV := make([]byte, size*dt.Size()), make([]byte, size*dt.Size())
			for tt := 0; tt < T; tt++ {
				row := pos0 + tt
				if ring > 0 {
					row %= ring
				}
				dtype.EncodeFloats(wantK[row*n*dt.Size():(row+1)*n*dt.Size()], k[tt*n:(tt+1)*n], dt)
				dtype.EncodeFloats(wantV[row*n*dt.Size():(row+1)*n*dt.Size()], v[tt*n:(tt+1)*n], dt)
			}
			dk, dvv := devBytes(t, dv, make([]byte, len(wantK))), devBytes(t, dv, make([]byte, len(wantV)))
			name := "fh_kv_store_" + map[dtype.DType]string{dtype.BF16: "bf16", dtype.F16: "f16", dtype.F32: "f32"}[dt]
			launch(t, dv, name, D1(T), D1(32), 0, devRowPtrs(t, dv, dk, T), devRowPtrs(t, dv, dvv, T), devF32(t, dv, k), devF32(t, dv, v),
				devI32(t, dv, rowPositions(pos0, T)), devRowInts(t, dv, ring, T), n)
			gotK, gotV := make([]byte, len(wantK)), make([]byte, len(wantV))
			if err := dv.Download(gotK, dk, 0); err != nil {
				t.Fatal(err)
			}
			if err := dv.Download(gotV, dvv, 0); err != nil {
				t.Fatal(err)
			}
			if string(gotK) != string(wantK) || string(gotV) != string(wantV) {
				t.Fatalf("%s ring %d: cache bytes differ from formats/dtype's rounding", name, ring)
			}
		}
	}
}

func TestGatedActivation(t *testing.T) {
	dv := testDevice(t)
	r := rand.New(rand.NewPCG(21, 22))
	for _, gelu := range []bool{true, false} {
		n := 1000
		gate, up := randFloats(r, n, 6), randFloats(r, n, 2)
		want := append([]float32(nil), gate...)
		cpu.GatedActivationRef(want, up, gelu) // float64 activation, one rounding (cpu.GatedActivation is float32, a few ulps)
		dg, du := devF32(t, dv, gate), devF32(t, dv, up)
		g := 0
		if gelu {
			g = 1
		}
		got := schedules(t, dv, func() []float32 {
			if err := dv.UploadF32(dg, 0, gate); err != nil {
				t.Fatal(err)
			}
			launch(t, dv, "fh_gated_act", D1(3), D1(128), 0, dg, du, n, g)
			return download(t, dv, dg, n)
		})
		// One rounding of the activation (see ulpBound) times up, plus the
		// product's rounding.
		checkClose(t, fmt.Sprintf("gated gelu=%v", gelu), got, want, ulpBound(want))
	}
}

func TestAddAndSoftcap(t *testing.T) {
	dv := testDevice(t)
	r := rand.New(rand.NewPCG(23, 24))
	n := 777
	x, y := randFloats(r, n, 50), randFloats(r, n, 50)
	want := make([]float32, n)
	for i := range x {
		want[i] = x[i] + y[i]
	}
	dx, dy := devF32(t, dv, x), devF32(t, dv, y)
	launch(t, dv, "fh_add", D1(2), D1(256), 0, dx, dy, n)
	exact(t, "add", download(t, dv, dx, n), want)

	cpu.Softcap(want, 30)
	launch(t, dv, "fh_softcap", D1(2), D1(256), 0, dx, n, float32(30))
	got := download(t, dv, dx, n)
	checkClose(t, "softcap", got, want, ulpBound(want))
}
