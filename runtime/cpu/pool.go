// Package cpu holds the CPU kernels of the runtime and the worker pool that
// runs them on several cores. The plain-Go kernels here are the reference
// every faster kernel (assembly, CUDA) is tested against.
package cpu

import (
	"runtime"
	"sync/atomic"
	"time"
)

// ParallelMACs is the size of a matrix product (multiply-adds) below which
// callers keep it on the calling thread: handing half of a product to a
// polling worker and waiting for it costs a few hundred nanoseconds
// (BenchmarkPoolRun), more than half of a product this small saves. A
// small model's batched layers are above it (the embedded default's at 32
// rows: BenchmarkDecodeBatch on gemma3-tiny, 32 rows, 211k -> 259-274k
// tokens/s with the bound lowered from 2^18), its one-token layers below.
const ParallelMACs = 1 << 14

// workerPoll is how long a worker polls for its next job after finishing
// one before it blocks. A decode step posts a job every few tens of
// microseconds, so its worker never blocks within a step; an idle pool
// blocks within a fraction of a millisecond.
//
// Polling is what makes the second core useful at all on these VMs: a
// blocked worker's vCPU halts, and waking it took 40–100 µs (measured:
// two halves of 40 µs of work took 81 µs in parallel, the same as on one
// thread; with polling, 41 µs), longer than most of a decode step's
// products.
const workerPoll = 300 * time.Microsecond

// Pool runs loops over a range on a fixed set of goroutines: threads-1
// workers plus the calling goroutine. Any goroutine may call Run, also
// from inside a running Task: a loop that starts while the workers are
// busy with another runs on its caller alone.
type Pool struct {
	threads int
	workers []*worker
	busy    atomic.Bool  // a loop has the workers
	pending atomic.Int64 // jobs posted and not finished
	mv      mvScratch    // matVec's reusable buffers (matvec.go)
}

// worker is one pool goroutine's mailbox: the caller writes job, then
// increments posted; the worker runs it and decrements the pool's pending.
// state says whether the worker has stopped polling and waits on wake.
type worker struct {
	posted atomic.Uint64
	state  atomic.Int32
	wake   chan struct{}
	job    job
	_      [64]byte // keep two workers' hot words off one cache line
}

const (
	workerPolling int32 = iota
	workerBlocked
)

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
	p := &Pool{threads: threads}
	for range threads - 1 {
		w := &worker{wake: make(chan struct{}, 1)}
		p.workers = append(p.workers, w)
		go p.work(w)
	}
	return p
}

// work is a worker goroutine: it runs posted jobs until it gets an empty
// one (Close).
func (p *Pool) work(w *worker) {
	var seen uint64
	for {
		if !w.poll(seen) {
			<-w.wake
		}
		seen++
		j := w.job
		if j.t == nil {
			return
		}
		j.t.Run(j.lo, j.hi)
		w.job = job{} // do not pin the task between jobs
		p.pending.Add(-1)
	}
}

// poll waits up to workerPoll for a job after the seen-th. It returns
// false when the worker must block on wake: it has announced that it
// blocks, and a post after that sends on wake (post and poll race on
// state with compare-and-swap, so exactly one of them wins: either poll
// sees the job, or post sends the wake-up).
func (w *worker) poll(seen uint64) bool {
	start := time.Now()
	for i := 1; ; i++ {
		if w.posted.Load() != seen {
			return true
		}
		spinPause()
		if i%32 == 0 {
			if time.Since(start) > workerPoll {
				break
			}
			// Let other goroutines of the process (a server's
			// connections) have this P while nothing is posted.
			runtime.Gosched()
		}
	}
	w.state.Store(workerBlocked)
	return w.posted.Load() != seen && w.state.CompareAndSwap(workerBlocked, workerPolling)
}

// post hands j to the worker.
func (w *worker) post(j job) {
	w.job = j
	w.posted.Add(1)
	if w.state.Load() == workerBlocked && w.state.CompareAndSwap(workerBlocked, workerPolling) {
		w.wake <- struct{}{}
	}
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
	if parts <= 1 || !p.busy.CompareAndSwap(false, true) {
		if n > 0 {
			t.Run(0, n)
		}
		return
	}
	defer p.busy.Store(false)
	per := (chunks + parts - 1) / parts * grain
	for i := 1; i < parts; i++ {
		lo := i * per
		hi := min(n, lo+per)
		if lo >= hi {
			continue
		}
		p.pending.Add(1)
		p.workers[i-1].post(job{t, lo, hi})
	}
	t.Run(0, min(n, per))
	// The workers' parts take about as long as ours: wait for them
	// polling (blocking would halt this vCPU too, and waking it costs
	// what polling saved).
	for i := 1; p.pending.Load() != 0; i++ {
		spinPause()
		if i%256 == 0 {
			runtime.Gosched()
		}
	}
}

// Close stops the workers. The pool must not be used afterwards.
func (p *Pool) Close() {
	for _, w := range p.workers {
		w.post(job{})
	}
}
