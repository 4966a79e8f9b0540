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
// rows: BenchmarkDecodeBatch on gemma3-tiny, 32 rows, 211k -> 243-274k
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
	gen     uint64       // the last loop's generation (owned by busy's holder)
	loop    loop         // the loop in progress
	pending atomic.Int64 // posts taken or not yet revoked
	closed  atomic.Bool
	mv      mvScratch // matVec's reusable buffers (matvec.go)
}

// loop is one Run: its parts are claimed one at a time by whoever is free,
// the caller included, so a worker that is late (its vCPU busy with other
// goroutines of the process, a server's connections) leaves its part to
// the caller instead of making it wait.
type loop struct {
	t        Task
	n, per   int
	parts    int64
	nextPart atomic.Int64
}

// claim runs parts of the loop until none is left.
func (l *loop) claim() {
	for {
		i := l.nextPart.Add(1) - 1
		if i >= l.parts {
			return
		}
		lo := int(i) * l.per
		if lo < l.n {
			l.t.Run(lo, min(l.n, lo+l.per))
		}
	}
}

// A worker's post is one word: the loop's generation << 2 | its status.
// The caller posts (postPosted); the worker takes it (postTaken) or the
// caller, done with every part before the worker came, revokes it
// (postRevoked); both use compare-and-swap, so exactly one of them wins.
const (
	postPosted uint64 = 1 + iota
	postTaken
	postRevoked
)

// worker is one pool goroutine's mailbox. sleep says whether it has
// stopped polling and waits on wake.
type worker struct {
	post  atomic.Uint64
	sleep atomic.Int32
	wake  chan struct{}
	_     [64]byte // keep two workers' hot words off one cache line
}

const (
	workerPolling int32 = iota
	workerBlocked
)

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

// work is a worker goroutine: it takes each new post it sees, claims
// parts of the pool's loop, and exits when it takes a post after Close.
func (p *Pool) work(w *worker) {
	var last uint64 // generation of the last post seen
	for {
		post := w.next(last)
		last = post >> 2
		if post&3 != postPosted || !w.post.CompareAndSwap(post, post&^3|postTaken) {
			continue // revoked
		}
		if p.closed.Load() {
			return
		}
		p.loop.claim()
		p.pending.Add(-1)
	}
}

// next waits for a post of a generation after last: it polls for up to
// workerPoll, then blocks on wake. Blocking is announced in sleep first; a
// poster that then finds sleep blocked and swaps it back sends the
// wake-up, and the worker that finds a post after announcing takes the
// same swap, so exactly one of them wins and no wake-up is left unread.
func (w *worker) next(last uint64) uint64 {
	start := time.Now()
	for i := 1; ; i++ {
		if post := w.post.Load(); post>>2 != last {
			return post
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
	w.sleep.Store(workerBlocked)
	if post := w.post.Load(); post>>2 != last && w.sleep.CompareAndSwap(workerBlocked, workerPolling) {
		return post
	}
	<-w.wake
	return w.post.Load()
}

// send posts generation gen to the worker.
func (w *worker) send(gen uint64) {
	w.post.Store(gen<<2 | postPosted)
	if w.sleep.Load() == workerBlocked && w.sleep.CompareAndSwap(workerBlocked, workerPolling) {
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
	l := &p.loop
	l.t, l.n, l.per, l.parts = t, n, per, int64(parts)
	l.nextPart.Store(0)
	p.gen++
	helpers := p.workers[:parts-1]
	p.pending.Store(int64(len(helpers)))
	for _, w := range helpers {
		w.send(p.gen)
	}
	l.claim()
	for _, w := range helpers {
		if w.post.CompareAndSwap(p.gen<<2|postPosted, p.gen<<2|postRevoked) {
			p.pending.Add(-1)
		}
	}
	// The workers that took their post are finishing a part: wait for
	// them polling (blocking would halt this vCPU too, and waking it costs
	// what polling saved).
	for i := 1; p.pending.Load() != 0; i++ {
		spinPause()
		if i%256 == 0 {
			runtime.Gosched()
		}
	}
	l.t = nil // do not pin the task
}

// Close stops the workers. The pool must not be used afterwards.
func (p *Pool) Close() {
	p.closed.Store(true)
	p.gen++
	for _, w := range p.workers {
		w.send(p.gen)
	}
}
