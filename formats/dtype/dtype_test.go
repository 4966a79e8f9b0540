package dtype

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

// bf16Reference rounds through float64 arithmetic: the nearest bf16 value,
// ties to the one with an even last mantissa bit.
func bf16Reference(f float32) uint16 {
	u := math.Float32bits(f)
	lo, hi := uint16(u>>16), uint16(u>>16)+1
	dlo := math.Abs(float64(f) - float64(BF16ToF32(lo)))
	dhi := math.Abs(float64(f) - float64(BF16ToF32(hi)))
	if dlo < dhi || (dlo == dhi && lo&1 == 0) {
		return lo
	}
	return hi
}

func TestF32ToBF16RoundsToNearestEven(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200000; i++ {
		f := float32(r.NormFloat64() * math.Pow(10, float64(r.IntN(20)-10)))
		if got, want := F32ToBF16(f), bf16Reference(f); got != want {
			t.Fatalf("F32ToBF16(%g) = %04x, want %04x", f, got, want)
		}
	}
	// Exact ties: 1 + 2^-8 lies halfway between 1 and 1+2^-7; even is 1.
	if got := F32ToBF16(1 + 1.0/256); got != 0x3f80 {
		t.Errorf("tie 1+2^-8 rounded to %04x, want 3f80", got)
	}
	if got := F32ToBF16(1 + 3.0/256); got != 0x3f82 {
		t.Errorf("tie 1+3*2^-8 rounded to %04x, want 3f82 (even)", got)
	}
	if v := BF16ToF32(F32ToBF16(float32(math.NaN()))); !math.IsNaN(float64(v)) {
		t.Errorf("NaN became %g", v)
	}
	if v := BF16ToF32(F32ToBF16(float32(math.Inf(-1)))); !math.IsInf(float64(v), -1) {
		t.Errorf("-Inf became %g", v)
	}
	if v := BF16ToF32(F32ToBF16(math.MaxFloat32)); !math.IsInf(float64(v), 1) {
		t.Errorf("MaxFloat32 should round to +Inf in bf16, got %g", v)
	}
}

func TestConvertFloatsRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	src := make([]float32, 3001)
	for i := range src {
		src[i] = float32(r.NormFloat64())
	}
	for _, from := range []DType{F32, F16, BF16} {
		raw := make([]byte, len(src)*from.Size())
		if err := EncodeFloats(raw, src, from); err != nil {
			t.Fatal(err)
		}
		for _, to := range []DType{F32, F16, BF16} {
			out := make([]byte, len(src)*to.Size())
			nf, err := ConvertFloats(out, to, raw, from)
			if err != nil || nf != -1 {
				t.Fatalf("%s->%s: %v, nonfinite %d", from, to, err, nf)
			}
			got := make([]float32, len(src))
			if err := DecodeFloats(got, out, to); err != nil {
				t.Fatal(err)
			}
			want := make([]float32, len(src))
			DecodeFloats(want, raw, from)
			for i := range want {
				var w float32
				switch to {
				case BF16:
					w = BF16ToF32(F32ToBF16(want[i]))
				case F16:
					w = F16ToF32(F32ToF16(want[i]))
				default:
					w = want[i]
				}
				if got[i] != w {
					t.Fatalf("%s->%s element %d: got %g want %g", from, to, i, got[i], w)
				}
			}
		}
	}
}

func TestFirstNonFinite(t *testing.T) {
	for _, dt := range []DType{F32, F16, BF16} {
		vals := []float32{1, -2, 3, float32(math.Inf(1)), float32(math.NaN())}
		raw := make([]byte, len(vals)*dt.Size())
		EncodeFloats(raw, vals, dt)
		if got := FirstNonFinite(raw, dt); got != 3 {
			t.Errorf("%s: FirstNonFinite = %d, want 3", dt, got)
		}
		if got := FirstNonFinite(raw[:3*dt.Size()], dt); got != -1 {
			t.Errorf("%s: finite prefix reported %d", dt, got)
		}
		out := make([]byte, len(raw))
		if nf, _ := ConvertFloats(out, dt, raw, dt); nf != 3 {
			t.Errorf("%s: ConvertFloats non-finite index %d, want 3", dt, nf)
		}
	}
}

func TestParseAndSizes(t *testing.T) {
	for d := F32; d <= U4; d++ {
		p, err := Parse(d.String())
		if err != nil || p != d {
			t.Errorf("Parse(%q) = %v, %v", d.String(), p, err)
		}
	}
	if _, err := Parse("F8_E4M3"); err == nil {
		t.Error("unknown dtype accepted")
	}
	if U4.ByteSize(7) != 4 || BF16.ByteSize(7) != 14 || Invalid.ByteSize(1) != -1 || I64.ByteSize(1<<61) != -1 {
		t.Error("ByteSize wrong")
	}
}

// The word-at-a-time scan must find exactly what an element-by-element
// check finds, wherever the bad element sits.
func TestFirstNonFiniteAgainstScalar(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, dt := range []DType{F32, F16, BF16, F64} {
		for trial := 0; trial < 2000; trial++ {
			n := 1 + r.IntN(40)
			vals := make([]float32, n)
			for i := range vals {
				vals[i] = float32(r.NormFloat64() * 1000)
			}
			if r.IntN(4) != 0 {
				bad := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))}
				vals[r.IntN(n)] = bad[r.IntN(3)]
			}
			var raw []byte
			if dt == F64 {
				for _, v := range vals {
					raw = binary.LittleEndian.AppendUint64(raw, math.Float64bits(float64(v)))
				}
			} else {
				raw = make([]byte, n*dt.Size())
				EncodeFloats(raw, vals, dt)
			}
			want := -1
			dec := make([]float64, n)
			for i := range dec {
				switch dt {
				case F64:
					dec[i] = math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:]))
				default:
					f := make([]float32, 1)
					DecodeFloats(f, raw[i*dt.Size():(i+1)*dt.Size()], dt)
					dec[i] = float64(f[0])
				}
				if want < 0 && (math.IsNaN(dec[i]) || math.IsInf(dec[i], 0)) {
					want = i
				}
			}
			if got := FirstNonFinite(raw, dt); got != want {
				t.Fatalf("%s %v: FirstNonFinite = %d, want %d", dt, vals, got, want)
			}
		}
	}
}
