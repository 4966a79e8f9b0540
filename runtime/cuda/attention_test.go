package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/runtime/cpu"
)

// refAttention is runtime/model's attention (forward.go) over a cache of
// rows (already rounded to the cache precision): for query t at position
// pos0+t and head h, softmax(q·k·scale, soft-capped) over the visible
// positions, times v. It also returns each output's error bound: a score
// computed with a different summation order moves by at most
// Δs = 2(hd+1)·u·Σ|q·k|·scale, which changes each probability by a relative
// 2Δs (plus (n+4)·u for the exp, sum and normalization), so
// |Δout| ≤ (4Δs + 2(n+hd+8)·u)·max|v| over the n visible keys.
func refAttention(q, keys, vals []float32, T, nh, nkv, hd, pos0, window, ring int, scale, softcap float32) (out, bound []float32) {
	out = make([]float32, T*nh*hd)
	bound = make([]float32, T*nh*hd)
	kvd := nkv * hd
	for t := 0; t < T; t++ {
		qpos := pos0 + t
		first := 0
		if window > 0 {
			first = max(0, qpos-window+1)
		}
		for h := 0; h < nh; h++ {
			g := h / (nh / nkv)
			qh := q[(t*nh+h)*hd : (t*nh+h+1)*hd]
			s := make([]float32, qpos-first+1)
			var maxDS, maxV float64
			for p := first; p <= qpos; p++ {
				row := p
				if ring > 0 {
					row %= ring
				}
				kh := keys[row*kvd+g*hd : row*kvd+(g+1)*hd]
				s[p-first] = cpu.Dot(qh, kh) * scale
				var abs float64
				for i := range qh {
					abs += math.Abs(float64(qh[i]) * float64(kh[i]))
				}
				maxDS = max(maxDS, 2*float64(hd+1)*u32*abs*float64(scale))
				for _, v := range vals[row*kvd+g*hd : row*kvd+(g+1)*hd] {
					maxV = max(maxV, math.Abs(float64(v)))
				}
			}
			if softcap > 0 {
				cpu.Softcap(s, softcap)
			}
			cpu.Softmax(s)
			oh := out[(t*nh+h)*hd : (t*nh+h+1)*hd]
			for p := first; p <= qpos; p++ {
				row := p
				if ring > 0 {
					row %= ring
				}
				cpu.Axpy(oh, s[p-first], vals[row*kvd+g*hd:row*kvd+(g+1)*hd])
			}
			b := float32((4*maxDS + 2*float64(len(s)+hd+8)*u32) * maxV)
			for i := range oh {
				bound[(t*nh+h)*hd+i] = b
			}
		}
	}
	return out, bound
}

func TestAttention(t *testing.T) {
	dv := testDevice(t)
	r := rand.New(rand.NewPCG(25, 26))
	cases := []struct {
		name                 string
		T, nh, nkv, hd, pos0 int
		window, ring         int
		softcap              float32
	}{
		{"decode_first", 1, 4, 2, 32, 0, 0, 0, 0},
		{"decode_global_gqa", 1, 8, 2, 64, 40, 0, 0, 0},
		{"decode_sliding_ring", 1, 4, 2, 32, 50, 16, 16 + 8, 0},
		{"decode_hd8", 1, 8, 4, 8, 9, 0, 0, 0},
		{"decode_hd256_softcap", 1, 2, 1, 256, 20, 0, 0, 50},
		{"prefill_global", 7, 4, 1, 48, 0, 0, 0, 0},
		{"prefill_continue", 9, 4, 2, 32, 13, 0, 0, 0},
		{"prefill_sliding", 12, 3, 3, 40, 30, 8, 8 + 12, 0},
	}
	for _, dt := range []dtype.DType{dtype.F32, dtype.BF16, dtype.F16} {
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s_%s", dt, c.name), func(t *testing.T) {
				kvd := c.nkv * c.hd
				rows := c.pos0 + c.T
				if c.ring > 0 {
					rows = c.ring
				}
				keys, vals := randFloats(r, rows*kvd, 1), randFloats(r, rows*kvd, 1)
				// Round the cache to its precision and keep its bytes.
				kb, vb := make([]byte, len(keys)*dt.Size()), make([]byte, len(vals)*dt.Size())
				dtype.EncodeFloats(kb, keys, dt)
				dtype.EncodeFloats(vb, vals, dt)
				dtype.DecodeFloats(keys, kb, dt)
				dtype.DecodeFloats(vals, vb, dt)
				q := randFloats(r, c.T*c.nh*c.hd, 1)
				scale := float32(1 / math.Sqrt(float64(c.hd)))
				want, bound := refAttention(q, keys, vals, c.T, c.nh, c.nkv, c.hd, c.pos0, c.window, c.ring, scale, c.softcap)
				dq, dk, dvv := devF32(t, dv, q), devBytes(t, dv, kb), devBytes(t, dv, vb)
				dpos := devI32(t, dv, rowPositions(c.pos0, c.T))
				dkcs, dvcs, drings := devRowPtrs(t, dv, dk, c.T), devRowPtrs(t, dv, dvv, c.T), devRowInts(t, dv, c.ring, c.T)
				out := devF32(t, dv, make([]float32, len(q)))
				name := "fh_attention_" + map[dtype.DType]string{dtype.BF16: "bf16", dtype.F16: "f16", dtype.F32: "f32"}[dt]
				got := schedules(t, dv, func() []float32 {
					launch(t, dv, name, Dim3{c.nh, c.T, 1}, D1(128), 0, out, dq, dkcs, dvcs, dpos, drings, c.nh, c.nkv, c.hd, c.window, scale, c.softcap)
					return download(t, dv, out, len(q))
				})
				checkClose(t, name, got, want, bound)
			})
		}
	}
}
