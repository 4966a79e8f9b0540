package cpu

import (
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countTask counts how often each index of [0, n) is visited.
type countTask struct{ hits []atomic.Int32 }

func (c *countTask) Run(lo, hi int) {
	for i := lo; i < hi; i++ {
		c.hits[i].Add(1)
	}
}

// TestPoolRunCoversOnce checks that Run visits every index exactly once
// for sizes around the grain and thread counts, with the workers both
// polling (back-to-back runs) and blocked (a pause longer than workerPoll
// before the run).
func TestPoolRunCoversOnce(t *testing.T) {
	for _, threads := range []int{1, 2, 3, 5} {
		p := NewPool(threads)
		for _, blocked := range []bool{false, true} {
			for _, n := range []int{0, 1, 2, 7, 64, 65, 1000} {
				for _, grain := range []int{0, 1, 3, 64} {
					if blocked {
						time.Sleep(2 * workerPoll)
					}
					c := &countTask{hits: make([]atomic.Int32, n)}
					p.Run(n, grain, c)
					for i := range c.hits {
						if got := c.hits[i].Load(); got != 1 {
							t.Fatalf("threads %d n %d grain %d blocked %v: index %d visited %d times", threads, n, grain, blocked, i, got)
						}
					}
				}
			}
		}
		p.Close()
	}
}

// TestPoolRunsInParallel checks that a worker runs its part while the
// caller runs its own: the caller's part waits until the worker's has
// started, which would never happen if the pool ran the parts in turn.
func TestPoolRunsInParallel(t *testing.T) {
	p := NewPool(2)
	defer p.Close()
	for round := 0; round < 50; round++ {
		if round%10 == 9 {
			time.Sleep(2 * workerPoll) // the worker blocks; the post wakes it
		}
		var started atomic.Bool
		p.For(2, 1, func(lo, hi int) {
			if lo == 1 {
				started.Store(true)
				return
			}
			deadline := time.Now().Add(10 * time.Second)
			for !started.Load() {
				if time.Now().After(deadline) {
					t.Error("the worker's part did not start while the caller's ran")
					return
				}
			}
		})
	}
}

// BenchmarkPoolRun measures the cost of one Run handing half of a small
// task to a worker: "serial" runs both halves on the caller, "pool" splits
// them; the difference is the hand-off's cost (or, above a few
// microseconds of work, its gain).
func BenchmarkPoolRun(b *testing.B) {
	p := NewPool(2)
	defer p.Close()
	for _, iters := range []int{0, 1000, 25000} {
		task := &chainTask{iters: iters}
		b.Run("serial/"+strconv.Itoa(iters), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				task.Run(0, 2)
			}
		})
		b.Run("pool/"+strconv.Itoa(iters), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				p.Run(2, 1, task)
			}
		})
	}
}

// chainTask spends iters dependent multiply-adds per index.
type chainTask struct {
	iters int
	sink  [2]float64
}

func (c *chainTask) Run(lo, hi int) {
	for i := lo; i < hi; i++ {
		x := 1.0
		for k := 0; k < c.iters; k++ {
			x = x*1.0000001 + 1e-9
		}
		c.sink[i&1] = x
	}
}

// nestedTask runs an inner loop on the same pool from each part of an
// outer one (on the caller and on the worker).
type nestedTask struct {
	p     *Pool
	inner []*countTask
}

func (n *nestedTask) Run(lo, hi int) {
	for i := lo; i < hi; i++ {
		n.p.Run(len(n.inner[i].hits), 1, n.inner[i])
	}
}

// TestPoolNestedAndConcurrent checks that loops started from inside a
// running Task and from several goroutines at once all complete and cover
// their ranges once (a loop that finds the workers busy runs on its
// caller).
func TestPoolNestedAndConcurrent(t *testing.T) {
	p := NewPool(2)
	defer p.Close()
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := 0; round < 200; round++ {
				nt := &nestedTask{p: p}
				for range 4 {
					nt.inner = append(nt.inner, &countTask{hits: make([]atomic.Int32, 50)})
				}
				p.Run(len(nt.inner), 1, nt)
				for k, c := range nt.inner {
					for i := range c.hits {
						if got := c.hits[i].Load(); got != 1 {
							t.Errorf("inner loop %d: index %d visited %d times", k, i, got)
							return
						}
					}
				}
			}
		}()
	}
	wg.Wait()
}

// TestPoolLateWorker checks that a loop does not wait for a worker that
// has not started: with one P, the worker cannot run while the caller
// does, so the caller runs every part itself and revokes the worker's post
// (a post taken late would then find no part left).
func TestPoolLateWorker(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	p := NewPool(2)
	defer p.Close()
	revoked := 0
	for round := 0; round < 100; round++ {
		c := &countTask{hits: make([]atomic.Int32, 64)}
		p.Run(len(c.hits), 1, c)
		for i := range c.hits {
			if got := c.hits[i].Load(); got != 1 {
				t.Fatalf("round %d: index %d visited %d times", round, i, got)
			}
		}
		if p.workers[0].post.Load()&3 == postRevoked {
			revoked++
		}
	}
	if revoked == 0 {
		t.Error("no post was revoked although the worker could not run during the loops")
	}
}

// A thread's home share of a loop's items is taken from the front by its
// owner and from the back by the others: every item goes to exactly one of
// them, however they race; and next walks a thread through its own share,
// then the others', until every item of the loop is taken.
func TestSharesTakeEachItemOnce(t *testing.T) {
	for _, n := range []int{0, 1, 2, 7, 1000} {
		var h share
		h.set(5, 5+n)
		seen := make([]atomic.Int32, 5+n)
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					c, ok := h.take(g > 0) // goroutine 0 is the owner
					if !ok {
						return
					}
					seen[c].Add(1)
				}
			}()
		}
		wg.Wait()
		for c := range seen {
			want := int32(0)
			if c >= 5 {
				want = 1
			}
			if got := seen[c].Load(); got != want {
				t.Fatalf("share [5, %d): chunk %d taken %d times", 5+n, c, got)
			}
		}
	}
}

// takeShares runs take on parts goroutines over shares of n items, each
// with its home and a mark for the items it takes, and fails unless every
// item was taken exactly once.
func takeShares(t *testing.T, n, parts int, take func(s *shares, me int, mark func(i int))) {
	t.Helper()
	var s shares
	s.reset(n, parts)
	seen := make([]atomic.Int32, n)
	var wg sync.WaitGroup
	for me := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			take(&s, me, func(i int) { seen[i].Add(1) })
		}()
	}
	wg.Wait()
	for i := range seen {
		if got := seen[i].Load(); got != 1 {
			t.Fatalf("n=%d parts=%d: item %d taken %d times", n, parts, i, got)
		}
	}
}

func TestSharesNextCoversLoop(t *testing.T) {
	for _, c := range []struct{ n, parts int }{{0, 1}, {1, 2}, {7, 2}, {100, 3}, {5, 5}} {
		takeShares(t, c.n, c.parts, func(s *shares, me int, mark func(int)) {
			k, prev := 0, -1
			for i, ok := s.next(me, &k); ok; i, ok = s.next(me, &k) {
				// A thread's own share comes first, in order.
				if k == 0 && i != prev+1 && prev >= 0 {
					t.Errorf("n=%d parts=%d: thread %d took %d after %d in its own share", c.n, c.parts, me, i, prev)
				}
				if k == 0 {
					prev = i
				}
				mark(i)
			}
		})
	}
}

// nextRange hands out every item exactly once, in non-empty ranges of
// half of what was left (rounded up); a thread's own share comes first,
// front to back.
func TestSharesNextRangeCoversLoop(t *testing.T) {
	for _, c := range []struct{ n, parts int }{{0, 1}, {100, 1}, {1, 2}, {7, 2}, {100, 3}, {5, 5}, {1000, 2}} {
		takeShares(t, c.n, c.parts, func(s *shares, me int, mark func(int)) {
			k, next := 0, me*c.n/c.parts
			home := (me+1)*c.n/c.parts - next
			for lo, hi, ok := s.nextRange(me, &k); ok; lo, hi, ok = s.nextRange(me, &k) {
				if hi <= lo {
					t.Errorf("n=%d parts=%d: empty range [%d, %d)", c.n, c.parts, lo, hi)
					return
				}
				if k == 0 {
					if lo != next {
						t.Errorf("n=%d parts=%d: thread %d took [%d, %d) after item %d of its own share", c.n, c.parts, me, lo, hi, next-1)
					}
					// Others may have taken items from the back: home
					// bounds what is left, and equals it alone.
					if want := (home + 1) / 2; hi-lo > want || (c.parts == 1 && hi-lo != want) {
						t.Errorf("n=%d parts=%d: thread %d took %d items of at most %d left, want %d", c.n, c.parts, me, hi-lo, home, want)
					}
					next, home = hi, home-(hi-lo)
				}
				for i := lo; i < hi; i++ {
					mark(i)
				}
			}
		})
	}
}
