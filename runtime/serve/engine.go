package serve

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/generate"
	"github.com/fhkit/fhkit/runtime/head"
	"github.com/fhkit/fhkit/runtime/model"
	"github.com/fhkit/fhkit/runtime/sample"
	"github.com/fhkit/fhkit/runtime/tokenizer"
)

var (
	// errQueueFull is returned by submit when the queue is at its bound.
	errQueueFull = errors.New("the request queue is full")
	// errClosed is returned by submit once shutdown has begun.
	errClosed = errors.New("the server is shutting down")
)

// yieldEvery is how often the scheduler goroutine yields its thread between
// steps (see loop).
const yieldEvery = 500 * time.Microsecond

// maxSpareBytes bounds the KV memory of finished requests' states kept for
// reuse (engine.state).
const maxSpareBytes = 16 << 20

// minPrefillPerStep is the number of prompt tokens a step processes at
// least, however many sequences are decoding, so that new requests are
// never starved by a full batch.
const minPrefillPerStep = 16

// job is one request's sequence. The fields above the scheduler block are
// set before submission and only read afterwards.
type job struct {
	prompt  []int
	opts    generate.Options
	sampler *sample.Sampler
	limit   int // context limit in tokens
	arrived time.Time
	// events: the handler streams text as it comes (else it waits for
	// the end and is only woken then).
	events bool

	// Owned by the scheduler goroutine.
	state   Sequence
	fed     int    // prompt tokens already in the cache
	one     [1]int // the token to feed at the next step
	stream  *generate.Stream
	context []int // prompt and generated tokens (repetition penalty)
	lastTok time.Time
	woken   time.Time // when the handler was last woken for new text

	cancelled atomic.Bool
	out       output
}

// cancel asks the scheduler to drop the job (the client went away or the
// server is shutting down); its slot and KV cache are freed at the next
// step.
func (j *job) cancel() { j.cancelled.Store(true) }

// result is how a job ended.
type result struct {
	// reason is a generate stop reason ("eos", "stop", "length",
	// "context"), or "cancelled", or "error" (err says why).
	reason string
	err    error
	tokens int
}

// output carries a job's text from the scheduler to its HTTP handler
// without ever blocking the scheduler: pieces accumulate under a lock and
// notify (capacity 1) wakes the handler, when the scheduler decides (see
// engine.step). The handler copies the text out into its own buffer, so
// neither side allocates per token.
type output struct {
	mu     sync.Mutex
	text   []byte
	unsent atomic.Bool // text is waiting for the handler
	done   bool
	res    result
	notify chan struct{}
}

func (o *output) wake() {
	select {
	case o.notify <- struct{}{}:
	default:
	}
}

// push adds text for the handler (without waking it).
func (o *output) push(s string) {
	o.mu.Lock()
	o.text = append(o.text, s...)
	o.unsent.Store(true)
	o.mu.Unlock()
}

func (o *output) finish(r result) {
	o.mu.Lock()
	o.done, o.res = true, r
	o.mu.Unlock()
	o.wake()
}

// take appends the text produced since the last call to dst and returns
// it, with the result once the job has ended.
func (o *output) take(dst []byte) (text []byte, done bool, res result) {
	o.mu.Lock()
	defer o.mu.Unlock()
	text = append(dst, o.text...)
	o.text = o.text[:0]
	o.unsent.Store(false)
	return text, o.done, o.res
}

// engine is the continuous-batching scheduler: one goroutine owns the
// runner and every active sequence; each step it feeds one token of every
// decoding sequence and a budget of prompt tokens of the prefilling ones
// through one batched forward pass, picks the next tokens with the head
// for all of them at once, and admits queued requests into free slots.
type engine struct {
	backend    Backend
	tok        *tokenizer.Tokenizer
	flash      *head.FlashHead
	eos        map[int]bool
	maxBatch   int
	maxQueue   int
	interval   time.Duration // Config.StreamInterval; < 0: every token
	metrics    *metrics
	beforeStep func() // Config.beforeStep

	mu      sync.Mutex
	queue   []*job
	running int // jobs admitted and not finished
	live    map[*job]struct{}
	closed  bool

	wake   chan struct{}
	exited chan struct{}

	// Scheduler scratch, reused step after step.
	seqs       []Sequence
	tokens     [][]int
	seqJobs    []*job
	admitted   []*job
	hidden     []float32
	logits     []float32
	samplers   []*sample.Sampler
	histories  [][]int
	heads      headTask
	spare      []spareSeq // finished requests' sequences, for reuse
	spareBytes int64
	prefixes   bool // Config.NoPrefixCache is not set
	// handed: a step gave a handler a stream's first text or a request's
	// end, which loop hands over at once (handOver).
	handed   bool
	handOver func() // runtime.Gosched; Config.handOver in tests
}

// spareSeq is a finished request's sequence kept for reuse, with the
// tokens in its cache.
type spareSeq struct {
	st     Sequence
	tokens []int
}

// headTask runs the FlashHead on a share of a step's rows per thread of the
// runner's pool (a cpu.Task, kept in the engine so a step allocates no
// closure). Within a share the head runs on that thread alone, through a
// one-thread pool of its own: a small head's per-row work costs less than
// waking another thread for it, and with many rows the threads are busy
// with rows anyway.
type headTask struct {
	flash     *head.FlashHead
	pools     []*cpu.Pool // one single-thread pool per share (pools keep scratch)
	samplers  []*sample.Sampler
	hidden    []float32
	histories [][]int
	ids       []int
}

func (t *headTask) Run(lo, hi int) {
	d := t.flash.D
	share := lo / max(1, (len(t.samplers)+len(t.pools)-1)/len(t.pools))
	copy(t.ids[lo:hi], t.flash.SampleBatch(t.pools[share], t.samplers[lo:hi], t.hidden[lo*d:hi*d], t.histories[lo:hi]))
}

// flashBatch picks the next token of every row with the FlashHead: a row
// or two (fewer than the pool's threads) with the pool inside each row's
// head, more spread over the threads a share of rows each.
func (e *engine) flashBatch(samplers []*sample.Sampler, hidden []float32, histories [][]int) []int {
	pool := e.backend.Pool()
	n, threads := len(samplers), pool.Threads()
	if n < 2*threads {
		return e.flash.SampleBatch(pool, samplers, hidden, histories)
	}
	t := &e.heads
	for len(t.pools) < threads {
		t.pools = append(t.pools, cpu.NewPool(1))
	}
	if cap(t.ids) < n {
		t.ids = make([]int, n)
	}
	t.flash, t.samplers, t.hidden, t.histories, t.ids = e.flash, samplers, hidden, histories, t.ids[:n]
	// Shares of ceil(n/threads) rows, the share index from the range start.
	pool.Run(n, (n+threads-1)/threads, t)
	ids := append([]int(nil), t.ids...)
	t.samplers, t.hidden, t.histories = nil, nil, nil
	return ids
}

func newEngine(cfg *Config, m *metrics) *engine {
	handOver := cfg.handOver
	if handOver == nil {
		handOver = runtime.Gosched
	}
	return &engine{
		backend: cfg.Backend, tok: cfg.Tokenizer, flash: cfg.Flash,
		eos:      generate.EOSTokens(cfg.Backend.Model(), cfg.Tokenizer),
		maxBatch: cfg.MaxBatch, maxQueue: cfg.MaxQueue, interval: cfg.StreamInterval, metrics: m, beforeStep: cfg.beforeStep,
		prefixes: !cfg.NoPrefixCache, handOver: handOver,
		live: map[*job]struct{}{}, wake: make(chan struct{}, 1), exited: make(chan struct{}),
	}
}

func (e *engine) signal() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// submit queues a job. The queue holds at most maxQueue requests beyond
// the free slots, so a burst that the batch can absorb is never refused.
func (e *engine) submit(j *job) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errClosed
	}
	if len(e.queue) >= e.maxQueue+max(0, e.maxBatch-e.running) {
		return errQueueFull
	}
	j.out.notify = make(chan struct{}, 1)
	e.queue = append(e.queue, j)
	e.live[j] = struct{}{}
	e.metrics.queueDepth.Store(int64(len(e.queue)))
	e.signal()
	return nil
}

// close stops accepting jobs; the scheduler exits once the queued and
// running ones are done.
func (e *engine) close() {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.signal()
}

// cancelAll cancels every queued and running job.
func (e *engine) cancelAll() {
	e.mu.Lock()
	for j := range e.live {
		j.cancel()
	}
	e.mu.Unlock()
	e.signal()
}

// wait waits for the scheduler to exit (after close) or ctx to end; at
// ctx's end it cancels the remaining jobs and still waits for the exit,
// which comes within a step.
func (e *engine) wait(ctx context.Context) error {
	select {
	case <-e.exited:
		return nil
	case <-ctx.Done():
		e.cancelAll()
		<-e.exited
		return ctx.Err()
	}
}

// loop is the scheduler goroutine.
func (e *engine) loop() {
	defer close(e.exited)
	var active []*job
	lastYield := time.Now()
	for {
		if e.beforeStep != nil {
			e.beforeStep()
		}
		// Steps run back to back while any sequence is active, and the
		// pool's workers keep the other cores busy too: Go's scheduler
		// then checks the network only when a thread finds nothing to
		// run, or every 10 ms (sysmon), so new requests and clients'
		// reads wait, and a batch runs with a few sequences while the
		// other clients cannot get in. Yielding every yieldEvery lets
		// the goroutines waiting on this thread run (the handlers this
		// loop woke). It does not make the scheduler poll the network: a
		// yielding goroutine goes to the global run queue, which
		// findRunnable takes from before it polls (Go 1.26); parking
		// instead, so that a thread finds nothing and polls, made things
		// worse (README: serving).
		if now := time.Now(); now.Sub(lastYield) >= yieldEvery {
			runtime.Gosched()
			lastYield = now
		}
		var exit bool
		active, exit = e.admit(active)
		if exit {
			e.closeSpares()
			return
		}
		if len(active) == 0 {
			<-e.wake
			continue
		}
		active = e.step(active)
		// A woken handler waits on this thread's queue until the next
		// yield, up to yieldEvery later. For a stream's first text (its
		// time to first token) and a request's end (its client sends the
		// next request only then) that wait is yielded at once: on the
		// embedded default a lone stream's TTFT p50 went 0.33-0.48 ->
		// 0.08-0.20 ms (loadgen --rounds 9, eleven runs each, alternating).
		// Later text keeps waiting, so that a stream's tokens go out in
		// one write per yield rather than one per token (yielding after
		// every woken handler cost the lone stream ~30% of its speed).
		if e.handed {
			e.handOver()
			e.handed = false
			lastYield = time.Now()
		}
	}
}

// admit drops cancelled jobs from the queue and moves queued jobs into
// free slots. It reports exit when the engine is closed and idle.
func (e *engine) admit(active []*job) ([]*job, bool) {
	e.mu.Lock()
	q := e.queue[:0]
	for _, j := range e.queue {
		if j.cancelled.Load() {
			delete(e.live, j)
			j.out.finish(result{reason: "cancelled"})
			continue
		}
		q = append(q, j)
	}
	e.queue = q
	n := min(len(e.queue), e.maxBatch-len(active))
	// Copied out: the queue's array is reused for the jobs left waiting.
	admitted := append(e.admitted[:0], e.queue[:n]...)
	e.admitted = admitted
	e.queue = append(e.queue[:0], e.queue[n:]...)
	e.running += n
	exit := e.closed && len(e.queue) == 0 && len(active)+n == 0
	e.metrics.queueDepth.Store(int64(len(e.queue)))
	e.mu.Unlock()

	for _, j := range admitted {
		st, cached, err := e.state(j.limit, j.prompt)
		if err != nil {
			e.finish(j, "error", err)
			continue
		}
		j.state, j.fed = st, cached
		e.metrics.promptTokens.Add(uint64(len(j.prompt)))
		e.metrics.cachedTokens.Add(uint64(cached))
		j.context = append(make([]int, 0, len(j.prompt)+16), j.prompt...)
		j.stream = generate.NewStream(e.tok, e.eos, j.opts, func(s string) error {
			j.out.push(s)
			return nil
		})
		active = append(active, j)
	}
	e.metrics.running.Store(int64(len(active)))
	return active, exit
}

// state returns a sequence with context limit limit for prompt, and how
// many of the prompt's tokens its cache already holds: of the finished
// requests' sequences, the one whose tokens share the longest start with
// the prompt (all but its last token, whose forward pass gives the first
// output), rewound to that start; else a new one.
func (e *engine) state(limit int, prompt []int) (Sequence, int, error) {
	best, shared := -1, 0
	for i := len(e.spare) - 1; i >= 0; i-- { // ties: the latest, warmest in cache
		sp := &e.spare[i]
		if sp.st.Limit() != limit {
			continue
		}
		n := 0
		if e.prefixes {
			n = commonPrefix(sp.tokens, prompt[:len(prompt)-1])
		}
		if best < 0 || n > shared {
			best, shared = i, n
		}
	}
	if best < 0 {
		st, err := e.backend.NewSequence(limit)
		return st, 0, err
	}
	st := e.spare[best].st
	last := len(e.spare) - 1
	e.spare[best] = e.spare[last]
	e.spare[last] = spareSeq{}
	e.spare = e.spare[:last]
	e.spareBytes -= st.KVBytes()
	if shared > 0 && st.Rewind(shared) {
		return st, shared, nil
	}
	st.Reset()
	return st, 0, nil
}

// commonPrefix returns how many tokens a and b start with in common.
func commonPrefix(a, b []int) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// closeSpares frees the spare sequences.
func (e *engine) closeSpares() {
	for _, sp := range e.spare {
		sp.st.Close()
	}
	e.spare, e.spareBytes = nil, 0
}

// finish ends a job: its state (KV cache) is dropped and its handler told.
func (e *engine) finish(j *job, reason string, err error) {
	r := result{reason: reason, err: err}
	if j.stream != nil {
		r.tokens = len(j.stream.Tokens)
	}
	// The state's KV cache serves a later request (its memory is already
	// grown and in cache; a new one is zeroed, grown and copied again),
	// within a memory budget: for small caches that cost is per token.
	// Its tokens (the prompt and the output but the last token, which
	// was never fed) may start a later request's prompt. A failed pass
	// may have left the cache half written: it is not kept.
	if j.state != nil {
		if b := j.state.KVBytes(); reason != "error" && len(e.spare) < e.maxBatch && e.spareBytes+b <= maxSpareBytes {
			e.spare = append(e.spare, spareSeq{st: j.state, tokens: j.context[:min(len(j.context), j.state.Pos())]})
			e.spareBytes += b
		} else {
			j.state.Close()
		}
	}
	j.state, j.stream, j.context = nil, nil, nil
	e.handed = true // see loop
	e.mu.Lock()
	e.running--
	delete(e.live, j)
	e.mu.Unlock()
	j.out.finish(r)
}

// step runs one batched forward pass and hands out the next tokens.
func (e *engine) step(active []*job) []*job {
	kept := active[:0]
	for _, j := range active {
		if j.cancelled.Load() {
			e.finish(j, "cancelled", nil)
			continue
		}
		kept = append(kept, j)
	}
	active = kept
	if len(active) == 0 {
		e.metrics.running.Store(0)
		e.metrics.kvBytes.Store(0)
		return active
	}

	// Decoding sequences first, one row each; then prompt chunks within
	// the step's budget, oldest request first.
	seqs, tokens, jobs := e.seqs[:0], e.tokens[:0], e.seqJobs[:0]
	for _, j := range active {
		if j.fed == len(j.prompt) {
			seqs, tokens = append(seqs, j.state), append(tokens, j.one[:])
			jobs = append(jobs, j)
		}
	}
	budget := max(model.MaxChunk-len(seqs), minPrefillPerStep)
	for _, j := range active {
		if j.fed < len(j.prompt) && budget > 0 {
			n := min(len(j.prompt)-j.fed, budget)
			seqs, tokens = append(seqs, j.state), append(tokens, j.prompt[j.fed:j.fed+n])
			jobs = append(jobs, j)
			budget -= n
		}
	}
	e.seqs, e.tokens, e.seqJobs = seqs, tokens, jobs
	H := e.backend.Model().Config.HiddenSize
	if cap(e.hidden) < len(seqs)*H {
		e.hidden = make([]float32, len(seqs)*H)
	}
	hidden := e.hidden[:len(seqs)*H]
	err := e.backend.Forward(hidden, seqs, tokens)
	// The scratch must not keep finished requests' sequences and tokens.
	defer clear(tokens)
	defer clear(seqs)
	if err != nil {
		return e.fail(active, fmt.Errorf("forward pass: %w", err))
	}
	e.metrics.steps.Add(1)
	rows := 0
	for _, t := range tokens {
		rows += len(t)
	}
	e.metrics.batchRows.observe(float64(rows))

	// Rows whose sequence is ready for its next token: every decoding
	// sequence, and prompts whose last chunk was in this step.
	need := 0
	for i, j := range jobs {
		if j.fed < len(j.prompt) {
			j.fed += len(tokens[i])
			if j.fed < len(j.prompt) {
				continue
			}
		}
		if need != i {
			copy(hidden[need*H:(need+1)*H], hidden[i*H:(i+1)*H])
		}
		jobs[need] = j
		need++
	}
	jobs = jobs[:need]
	ids, err := e.pick(hidden[:need*H], jobs)
	if err != nil {
		return e.fail(active, fmt.Errorf("head: %w", err))
	}

	now := time.Now()
	// Several requests share the steps: their text may wait for the
	// stream interval (Config.StreamInterval).
	coalesce := e.interval > 0 && need > 1
	for i, j := range jobs {
		id := ids[i]
		j.context = append(j.context, id)
		if j.lastTok.IsZero() {
			e.metrics.ttft.observe(now.Sub(j.arrived).Seconds())
		} else {
			e.metrics.itl.observe(now.Sub(j.lastTok).Seconds())
		}
		j.lastTok = now
		done, _ := j.stream.Push(id) // emit never fails
		switch {
		case done:
			e.finish(j, j.stream.StopReason, nil)
		case j.state.Pos()+1 > j.limit:
			j.stream.End("context")
			e.finish(j, "context", nil)
		default:
			j.one[0] = id
			e.deliver(j, now, coalesce)
		}
	}
	e.metrics.genTokens.Add(uint64(need))

	kept = active[:0]
	var kv int64
	for _, j := range active {
		if j.state != nil {
			kept = append(kept, j)
			kv += j.state.KVBytes()
		}
	}
	e.metrics.running.Store(int64(len(kept)))
	e.metrics.kvBytes.Store(kv)
	return kept
}

// fail ends every active job with err and returns the empty batch. The CPU
// backend fails only on a bug (requests are validated against their
// context before they are queued), a device on its own errors (out of
// memory, a lost device): the batch fails rather than the server.
func (e *engine) fail(active []*job, err error) []*job {
	for _, j := range active {
		e.finish(j, "error", err)
	}
	e.metrics.running.Store(0)
	return active[:0]
}

// deliver wakes j's handler for its new text: at once, or with coalesce
// once the stream interval has passed since the last wake-up (the first
// text goes at once). Whole (non-streamed) responses are only woken at the
// end (finish).
func (e *engine) deliver(j *job, now time.Time, coalesce bool) {
	if !j.events || !j.out.unsent.Load() {
		return
	}
	if coalesce && !j.woken.IsZero() && now.Sub(j.woken) < e.interval {
		return
	}
	if j.woken.IsZero() {
		e.handed = true // the first text: see loop
	}
	j.woken = now
	j.out.wake()
}

// pick chooses the next token of each row (n x hidden) with the head the
// single-sequence path uses: the FlashHead (batched greedy and sampled
// rows) or the dense head (one matrix product for all rows).
func (e *engine) pick(hidden []float32, jobs []*job) ([]int, error) {
	n := len(jobs)
	if n == 0 {
		return nil, nil
	}
	samplers, histories := e.samplers[:0], e.histories[:0]
	for _, j := range jobs {
		samplers, histories = append(samplers, j.sampler), append(histories, j.context)
	}
	e.samplers, e.histories = samplers, histories
	// The scratch must not keep finished requests' samplers and contexts.
	defer func() {
		clear(samplers)
		clear(histories)
	}()
	if e.flash != nil {
		return e.flashBatch(samplers, hidden, histories), nil
	}
	V := e.backend.Model().Config.VocabSize
	if cap(e.logits) < n*V {
		e.logits = make([]float32, n*V)
	}
	logits := e.logits[:n*V]
	if err := e.backend.DenseLogits(logits, hidden); err != nil {
		return nil, err
	}
	ids := make([]int, n)
	for i := range ids {
		ids[i] = samplers[i].Next(logits[i*V:(i+1)*V], histories[i])
	}
	return ids, nil
}
