package cpu

import "sync/atomic"

// shares hands the items [0, n) of one parallel loop (rows, panels, tiles)
// to its threads. Each thread has a home share of consecutive items and
// takes them front first, so the weights it reads are one stream for the
// hardware prefetcher; a thread done with its own share takes items from
// the back of the others', so a thread that loses its core for a while
// (the vCPUs are shared with a server's connections and other processes)
// does not hold the loop up. Handing items out in turn instead cut every
// thread's stream into pieces: out-of-cache int4 products of 1024 × 1152
// read 0.63 of the probe that way in the fast memory mode, 0.83 with home
// shares (README, CPU speed).
//
// A loop runs on Pool.Run(parts, 1, task) with len(homes) == parts, and
// the task's Run(lo, hi) takes items with next(lo, &k) from k = 0: Pool
// gives each thread one part, lo being its home, or the caller all of
// them (a nested loop), whose home is then 0.
type shares struct {
	homes []share
}

// share is the items [front, back) of one home not yet taken, in one word
// (back << 32 | front), so that the owner taking the front and another
// thread taking the back never take the same item.
type share struct {
	r atomic.Uint64
	_ [56]byte // keep two threads' words off one cache line
}

// reset splits n items into parts consecutive homes of near-equal size.
func (s *shares) reset(n, parts int) {
	if cap(s.homes) < parts {
		s.homes = make([]share, parts)
	}
	s.homes = s.homes[:parts]
	for i := range s.homes {
		s.homes[i].set(i*n/parts, (i+1)*n/parts)
	}
}

// next returns the next item for the thread whose home is me: from the
// front of its home, then from the back of the others' in turn. k holds
// the thread's progress through the homes (0 at the start of its Run).
func (s *shares) next(me int, k *int) (int, bool) {
	T := len(s.homes)
	for ; *k < T; *k++ {
		if c, ok := s.homes[(me+*k)%T].take(*k > 0); ok {
			return c, true
		}
	}
	return 0, false
}

// nextRange is next for loops whose items are small (a matrix-vector
// product's blocks of rows): it returns items [lo, hi), half of what is
// left of the share it takes them from (at least one), so that a thread
// makes few claims while its share is large and a thread done early finds
// small pieces left at the end instead of waiting for a whole chunk.
func (s *shares) nextRange(me int, k *int) (lo, hi int, ok bool) {
	T := len(s.homes)
	for ; *k < T; *k++ {
		if lo, hi, ok := s.homes[(me+*k)%T].takeHalf(*k > 0); ok {
			return lo, hi, true
		}
	}
	return 0, 0, false
}

func (h *share) set(front, back int) { h.r.Store(uint64(back)<<32 | uint64(front)) }

// takeHalf returns half of the items left in the share (rounded up) from
// its front (or its back), and false when it is empty.
func (h *share) takeHalf(back bool) (lo, hi int, ok bool) {
	for {
		old := h.r.Load()
		f, b := uint32(old), uint32(old>>32)
		if f >= b {
			return 0, 0, false
		}
		n := (b - f + 1) / 2
		next, lo, hi := uint64(b)<<32|uint64(f+n), f, f+n
		if back {
			next, lo, hi = uint64(b-n)<<32|uint64(f), b-n, b
		}
		if h.r.CompareAndSwap(old, next) {
			return int(lo), int(hi), true
		}
	}
}

// take returns the item at the front (or at the back) of the share, and
// false when it is empty.
func (h *share) take(back bool) (int, bool) {
	for {
		old := h.r.Load()
		f, b := uint32(old), uint32(old>>32)
		if f >= b {
			return 0, false
		}
		next, c := uint64(b)<<32|uint64(f+1), f
		if back {
			next, c = uint64(b-1)<<32|uint64(f), b-1
		}
		if h.r.CompareAndSwap(old, next) {
			return int(c), true
		}
	}
}
