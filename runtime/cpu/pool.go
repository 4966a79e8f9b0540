// Package cpu holds the CPU kernels of the runtime and the worker pool that
// runs them on several cores. The plain-Go kernels here are the reference
// every faster kernel (assembly, CUDA) is tested against.
package cpu

import (
	"runtime"
	"sync"
)

// ParallelMACs is the size of a matrix product (multiply-adds) below which
// callers keep it on the calling thread: waking a worker and waiting for
// it costs several microseconds, more than half of such a product (a small
// model's layers at any batch size; a large model's from one token on are
// well above it).
const ParallelMACs = 1 << 18

// Pool runs loops over a range on a fixed set of goroutines: threads-1
// workers plus the calling goroutine. Workers block on channels between
// jobs (no spinning: the machines have 2 vCPUs shared with other work).
type Pool struct {
	threads int
	jobs    []chan job
	wg      sync.WaitGroup
	mv      mvScratch // matVec's reusable buffers (matvec.go)
}

type job struct {
	t      Task
	lo, hi int
}

// Task is a loop body that Pool.Run calls on sub-ranges of [0, n).
//
// Run exists for the decode path: a closure passed to For escapes to the
// heap (it is handed to another goroutine), one allocation per parallel
// operation; a Task that is a pointer into a reused struct (a kernel's
// scratch) costs none.
type Task interface {
	Run(lo, hi int)
}

// funcTask adapts a closure to Task (a func value is pointer-shaped, so the
// conversion does not allocate by itself).
type funcTask func(lo, hi int)

func (f funcTask) Run(lo, hi int) { f(lo, hi) }

// NewPool starts a pool of threads goroutines (GOMAXPROCS when threads <= 0).
func NewPool(threads int) *Pool {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	p := &Pool{threads: threads, jobs: make([]chan job, threads-1)}
	for i := range p.jobs {
		ch := make(chan job, 1)
		p.jobs[i] = ch
		go func() {
			for j := range ch {
				j.t.Run(j.lo, j.hi)
				p.wg.Done()
			}
		}()
	}
	return p
}

// Threads returns the number of goroutines a loop runs on.
func (p *Pool) Threads() int { return p.threads }

// For calls fn on contiguous sub-ranges covering [0, n), in parallel, and
// returns when all are done. Ranges are multiples of grain (except the
// last), so work is split on cache-friendly boundaries; a loop smaller than
// two grains runs on the caller alone.
func (p *Pool) For(n, grain int, fn func(lo, hi int)) {
	p.Run(n, grain, funcTask(fn))
}

// Run is For with a Task: the same split, without the closure's allocation.
func (p *Pool) Run(n, grain int, t Task) {
	if grain < 1 {
		grain = 1
	}
	chunks := (n + grain - 1) / grain
	parts := min(p.threads, chunks)
	if parts <= 1 {
		if n > 0 {
			t.Run(0, n)
		}
		return
	}
	per := (chunks + parts - 1) / parts * grain
	p.wg.Add(parts - 1)
	for i := 1; i < parts; i++ {
		lo := i * per
		hi := min(n, lo+per)
		if lo >= hi {
			p.wg.Done()
			continue
		}
		p.jobs[i-1] <- job{t, lo, hi}
	}
	t.Run(0, min(n, per))
	p.wg.Wait()
}

// Close stops the workers. The pool must not be used afterwards.
func (p *Pool) Close() {
	for _, ch := range p.jobs {
		close(ch)
	}
}
