package model

import (
	"fmt"
	"math"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/runtime/cpu"
)

// layerCache stores one layer's keys and values (post-norm, post-RoPE) for
// past positions, one row of kvDim = KV heads x head_dim per position.
// Sliding-window layers keep a ring of W + MaxChunk rows (position p in
// slot p mod that), so their memory does not grow with the context; the
// MaxChunk rows beyond the window let a sequence be rewound by up to that
// many tokens past a shared prefix (State.Rewind). Global layers grow on
// demand up to the context limit.
type layerCache struct {
	kvDim    int
	ring     int // W + MaxChunk for sliding layers, 0 for global layers
	dt       dtype.DType
	k, v     []float32 // F32 storage
	k16, v16 []uint16  // BF16 / F16 storage
	rows     int       // rows allocated
}

func newLayerCache(kvDim, window int, dt dtype.DType) *layerCache {
	c := &layerCache{kvDim: kvDim, dt: dt}
	if window > 0 {
		c.ring = window + MaxChunk
	}
	return c
}

// slot returns the row holding position pos.
func (c *layerCache) slot(pos int) int {
	if c.ring > 0 {
		return pos % c.ring
	}
	return pos
}

// reserve makes room for positions < end.
func (c *layerCache) reserve(end int) {
	need := end
	if c.ring > 0 {
		need = min(end, c.ring)
	}
	if need <= c.rows {
		return
	}
	rows := max(need, 2*c.rows, 64)
	if c.ring > 0 {
		rows = min(rows, c.ring)
	}
	n := rows * c.kvDim
	if c.dt == dtype.F32 {
		c.k = append(c.k, make([]float32, n-len(c.k))...)
		c.v = append(c.v, make([]float32, n-len(c.v))...)
	} else {
		c.k16 = append(c.k16, make([]uint16, n-len(c.k16))...)
		c.v16 = append(c.v16, make([]uint16, n-len(c.v16))...)
	}
	c.rows = rows
}

// store writes the key and value rows of position pos.
func (c *layerCache) store(pos int, k, v []float32) {
	off := c.slot(pos) * c.kvDim
	switch c.dt {
	case dtype.F32:
		copy(c.k[off:off+c.kvDim], k)
		copy(c.v[off:off+c.kvDim], v)
	case dtype.BF16:
		for i := range k {
			c.k16[off+i] = dtype.F32ToBF16(k[i])
			c.v16[off+i] = dtype.F32ToBF16(v[i])
		}
	case dtype.F16:
		for i := range k {
			c.k16[off+i] = dtype.F32ToF16(k[i])
			c.v16[off+i] = dtype.F32ToF16(v[i])
		}
	}
}

// scores writes scale * q·k for the keys of positions from, from+1, ...
// (len(s) of them) into s, reading the cached head at column off in place.
// An f32 cache is scored a run of consecutive slots per call (a ring wraps
// once at most).
func (c *layerCache) scores(s, q []float32, from, off int, scale float32) {
	hd := len(q)
	if c.dt == dtype.F32 {
		for len(s) > 0 {
			slot := c.slot(from)
			run := len(s)
			if c.ring > 0 {
				run = min(run, c.ring-slot)
			}
			cpu.ScaledDots(s[:run], c.k[slot*c.kvDim+off:], c.kvDim, q, scale)
			s, from = s[run:], from+run
		}
		return
	}
	for i := range s {
		o := c.slot(from+i)*c.kvDim + off
		var d float32
		if c.dt == dtype.BF16 {
			d = cpu.DotBF16(c.k16[o:o+hd], q)
		} else {
			d = dotF16(c.k16[o:o+hd], q)
		}
		s[i] = d * scale
	}
}

// run returns the cached keys and values from position from on, when the
// n positions from there sit in consecutive slots of an f32 cache.
func (c *layerCache) run(from, n int) (k, v []float32, ok bool) {
	slot := c.slot(from)
	if c.dt != dtype.F32 || (c.ring > 0 && slot+n > c.ring) || (slot+n)*c.kvDim > len(c.k) {
		return nil, nil, false
	}
	return c.k[slot*c.kvDim:], c.v[slot*c.kvDim:], true
}

// prefetch asks for the cached key and value rows of positions [from, to)
// (an f32 cache's; the others are read position by position anyway).
func (c *layerCache) prefetch(from, to int) {
	if c.dt != dtype.F32 {
		return
	}
	for from < to {
		slot := c.slot(from)
		run := to - from
		if c.ring > 0 {
			run = min(run, c.ring-slot)
		}
		cpu.Prefetch(c.k[slot*c.kvDim : (slot+run)*c.kvDim])
		cpu.Prefetch(c.v[slot*c.kvDim : (slot+run)*c.kvDim])
		from += run
	}
}

// accumulate adds w[i] times the cached value head at column off of
// position from+i to out, reading the cache in place (an f32 cache a run
// of consecutive slots per call).
func (c *layerCache) accumulate(out, w []float32, from, off int) {
	hd := len(out)
	if c.dt == dtype.F32 {
		for len(w) > 0 {
			slot := c.slot(from)
			run := len(w)
			if c.ring > 0 {
				run = min(run, c.ring-slot)
			}
			cpu.WeightedSum(out, w[:run], c.v[slot*c.kvDim+off:], c.kvDim)
			w, from = w[run:], from+run
		}
		return
	}
	for i, a := range w {
		o := c.slot(from+i)*c.kvDim + off
		if c.dt == dtype.BF16 {
			axpyBF16(out, a, c.v16[o:o+hd])
		} else {
			axpyF16(out, a, c.v16[o:o+hd])
		}
	}
}

// dotF16 is cpu.DotBF16 for a float16 operand.
func dotF16(w []uint16, x []float32) float32 {
	var s [8]float32
	n := len(w)
	x = x[:n]
	for i := range n {
		s[i&7] += dtype.F16ToF32(w[i]) * x[i]
	}
	return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]))
}

// axpyBF16 adds a times a bfloat16 row to y.
func axpyBF16(y []float32, a float32, x []uint16) {
	x = x[:len(y)]
	for i := range y {
		y[i] += a * math.Float32frombits(uint32(x[i])<<16)
	}
}

// axpyF16 adds a times a float16 row to y.
func axpyF16(y []float32, a float32, x []uint16) {
	x = x[:len(y)]
	for i := range y {
		y[i] += a * dtype.F16ToF32(x[i])
	}
}

// roundTrip rounds x to the cache precision in place, so keys used within
// the batch that produced them equal the keys later read from the cache
// (prefill and token-by-token decode then agree exactly).
func roundTrip(x []float32, dt dtype.DType) {
	switch dt {
	case dtype.BF16:
		for i, v := range x {
			x[i] = dtype.BF16ToF32(dtype.F32ToBF16(v))
		}
	case dtype.F16:
		for i, v := range x {
			x[i] = dtype.F16ToF32(dtype.F32ToF16(v))
		}
	}
}

// State is one sequence's decoding state: its position and KV cache.
type State struct {
	// Pos is the number of tokens already processed.
	Pos int
	// Limit is the context limit in tokens.
	Limit  int
	layers []*layerCache
	kvDT   dtype.DType
}

// ParseKVDType parses a --kv flag value: f32, bf16 or f16.
func ParseKVDType(s string) (dtype.DType, error) {
	d, err := dtype.ParseFloat(s)
	if err != nil {
		return dtype.Invalid, fmt.Errorf("KV cache dtype: %w", err)
	}
	return d, nil
}

// NewState returns an empty state with a KV cache of kvDT (F32, BF16 or F16)
// and a context limit of ctx tokens (the model's max_position_embeddings
// when ctx <= 0 or larger).
func (m *Model) NewState(ctx int, kvDT dtype.DType) (*State, error) {
	if kvDT != dtype.F32 && kvDT != dtype.BF16 && kvDT != dtype.F16 {
		return nil, fmt.Errorf("KV cache dtype %s not supported (want f32, bf16 or f16)", kvDT)
	}
	limit := m.Config.MaxPositionEmbeddings
	if ctx > 0 && ctx < limit {
		limit = ctx
	}
	s := &State{Limit: limit, kvDT: kvDT}
	kvDim := m.Config.NumKVHeads * m.Config.HeadDim
	for _, l := range m.Layers {
		w := 0
		if l.Sliding {
			w = m.Config.SlidingWindow
		}
		s.layers = append(s.layers, newLayerCache(kvDim, w, kvDT))
	}
	return s, nil
}

// Reset forgets all tokens (the cache memory is kept for reuse).
func (s *State) Reset() { s.Pos = 0 }

// Rewind keeps the first pos tokens and forgets the rest, so that a new
// sequence sharing those tokens continues from them (a server's prefix
// cache). It reports false, changing nothing, when the cache no longer
// holds what the next tokens attend to: a sliding layer's ring has
// overwritten positions within the window before pos.
func (s *State) Rewind(pos int) bool {
	if pos < 0 || pos > s.Pos {
		return false
	}
	for _, c := range s.layers {
		if !RingRewinds(c.ring, c.ring-MaxChunk, s.Pos, pos) {
			return false
		}
	}
	s.Pos = pos
	return true
}

// RingRewinds reports whether a layer cache holding positions [0, from)
// can continue from position to <= from: always for a full cache (ring
// 0); for a sliding layer's ring of ring rows (positions [from-ring,
// from)) and window W, while it still holds the positions a token at to or
// later attends to (none before to-W). The CPU and CUDA caches share it.
func RingRewinds(ring, W, from, to int) bool {
	return ring == 0 || from-ring <= max(0, to-W)
}

// KVBytes returns the memory held by the KV cache.
func (s *State) KVBytes() int64 {
	var n int64
	for _, c := range s.layers {
		n += int64(len(c.k)+len(c.v))*4 + int64(len(c.k16)+len(c.v16))*2
	}
	return n
}
