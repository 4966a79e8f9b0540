// Package bench measures a model's speed on this machine: prefill and
// decode tokens per second, the LM head's time (dense and FlashHead), the
// bytes read per decoded token, and the machine's memory read bandwidth in
// the same run, which bounds decode speed (every token reads every weight).
package bench

import (
	"math/rand/v2"
	"time"
	"unsafe"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/head"
	"github.com/fhkit/fhkit/runtime/hugemem"
	"github.com/fhkit/fhkit/runtime/model"
	"github.com/fhkit/fhkit/runtime/sample"
)

// Options control a benchmark run.
type Options struct {
	PromptTokens int
	GenTokens    int
	KV           dtype.DType
	Seed         uint64
}

// HeadResult is one head's figures.
type HeadResult struct {
	Head          string  `json:"head"`
	DecodeTokS    float64 `json:"decode_tok_s"`
	HeadMsPerTok  float64 `json:"head_ms_per_token"`
	BodyMsPerTok  float64 `json:"body_ms_per_token"`
	BytesPerToken int64   `json:"bytes_per_token"`
	// BandwidthGBs is the read bandwidth that bounds this head's decode
	// loop: the loop runs in windows of ProbeWindow tokens with a probe
	// before, between and after them (ProbesGBs), each window bounded by
	// the mean of its two probes (loopBandwidth).
	BandwidthGBs       float64   `json:"bandwidth_gbs"`
	BandwidthBeforeGBs float64   `json:"bandwidth_before_gbs"` // the first probe
	BandwidthAfterGBs  float64   `json:"bandwidth_after_gbs"`  // the last probe
	ProbesGBs          []float64 `json:"probes_gbs"`
	// BoundRatio is decode tok/s over (bandwidth / bytes per token).
	BoundRatio float64 `json:"bound_ratio"`
}

// Result is a benchmark run.
type Result struct {
	Threads       int          `json:"threads"`
	PromptTokens  int          `json:"prompt_tokens"`
	GenTokens     int          `json:"gen_tokens"`
	PrefillTokS   float64      `json:"prefill_tok_s"`
	BandwidthGBs  float64      `json:"bandwidth_gbs"`
	Heads         []HeadResult `json:"heads"`
	DecodeTokS    float64      `json:"decode_tok_s"` // of the default head (the first)
	BytesPerToken int64        `json:"bytes_per_token"`
	BoundRatio    float64      `json:"bound_ratio"`
}

// Run benchmarks r with the dense head and, when fh is not nil, the
// FlashHead (which is then the default).
func Run(r *model.Runner, fh *head.FlashHead, opts Options) (*Result, error) {
	m := r.M
	res := &Result{Threads: r.Pool.Threads(), PromptTokens: opts.PromptTokens, GenTokens: opts.GenTokens}
	// This machine's bandwidth drifts by tens of percent within seconds
	// (other tenants of the host), so each head's bound uses probes run
	// before, within and after its decode loop (loopBandwidth), and the
	// reported bandwidth is the mean over the heads.
	pr := NewProbe(512 << 20)
	rng := rand.New(rand.NewPCG(opts.Seed, 3))
	prompt := make([]int, opts.PromptTokens)
	for i := range prompt {
		prompt[i] = rng.IntN(m.Config.VocabSize)
	}
	heads := []*head.FlashHead{nil}
	if fh != nil {
		heads = []*head.FlashHead{fh, nil}
	}
	// An untimed pass first: the first touch of each page of the mapped
	// model file faults it in, which would be charged to whichever head
	// runs first. (The FlashHead's blocks, which each token probes at
	// random, are a copy made at load, every page touched.) The dense head
	// writes one reused buffer, as the server's does.
	logits := make([]float32, m.Config.VocabSize)
	for _, h := range heads {
		st, err := m.NewState(0, opts.KV)
		if err != nil {
			return nil, err
		}
		hidden, err := r.ForwardHidden(st, prompt[:min(len(prompt), 2)], false)
		if err != nil {
			return nil, err
		}
		if h != nil {
			h.Argmax(r.Pool, hidden)
		} else {
			r.DenseLogitsInto(logits, hidden)
		}
	}
	for _, h := range heads {
		st, err := m.NewState(0, opts.KV)
		if err != nil {
			return nil, err
		}
		start := time.Now()
		hidden, err := r.ForwardHidden(st, prompt, false)
		if err != nil {
			return nil, err
		}
		if res.PrefillTokS == 0 {
			res.PrefillTokS = float64(len(prompt)) / time.Since(start).Seconds()
		}
		probes := []float64{pr.Measure(r.Pool, 3)}
		var windows []int // tokens between consecutive probes
		var headTime, bodyTime time.Duration
		for i := 0; i < opts.GenTokens; i++ {
			if i > 0 && i%ProbeWindow == 0 {
				probes = append(probes, pr.Measure(r.Pool, 3))
				windows = append(windows, ProbeWindow)
			}
			t0 := time.Now()
			var id int
			if h != nil {
				id = h.Argmax(r.Pool, hidden)
			} else {
				r.DenseLogitsInto(logits, hidden)
				id = sample.Argmax(logits)
			}
			t1 := time.Now()
			headTime += t1.Sub(t0)
			if i+1 == opts.GenTokens {
				break
			}
			if hidden, err = r.ForwardHidden(st, []int{id}, false); err != nil {
				return nil, err
			}
			bodyTime += time.Since(t1)
		}
		probes = append(probes, pr.Measure(r.Pool, 3))
		windows = append(windows, opts.GenTokens-len(windows)*ProbeWindow)
		bw := loopBandwidth(probes, windows)
		res.BandwidthGBs += bw / float64(len(heads))
		n := float64(opts.GenTokens)
		hr := HeadResult{BandwidthGBs: bw, BandwidthBeforeGBs: probes[0], BandwidthAfterGBs: probes[len(probes)-1], ProbesGBs: probes,
			Head: "dense", HeadMsPerTok: ms(headTime) / n, BodyMsPerTok: ms(bodyTime) / max(n-1, 1)}
		hr.DecodeTokS = 1000 / (hr.HeadMsPerTok + hr.BodyMsPerTok)
		hr.BytesPerToken = m.BodyBytes() + DenseHeadBytes(m)
		if h != nil {
			hr.Head = "flashhead"
			hr.BytesPerToken = m.BodyBytes() + FlashHeadBytes(h)
		}
		hr.BoundRatio = hr.DecodeTokS / (bw * 1e9 / float64(hr.BytesPerToken))
		res.Heads = append(res.Heads, hr)
	}
	res.DecodeTokS, res.BytesPerToken, res.BoundRatio = res.Heads[0].DecodeTokS, res.Heads[0].BytesPerToken, res.Heads[0].BoundRatio
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// ProbeWindow is the decoded tokens between two probes. The machine's
// memory can change speed within a loop of 64 tokens (a second or less):
// with probes only before and after it, a loop that ran half in each
// mode was held to a bound that neither half had.
const ProbeWindow = 16

// loopBandwidth returns the bandwidth that bounds a decode loop run in
// windows of windows[i] tokens with probes[i] and probes[i+1] read
// before and after window i: window i is bounded by the mean of its two
// probes, and the loop by the sum of the windows' bounds, which is what
// one bandwidth, the windows' harmonic mean weighted by tokens, gives.
func loopBandwidth(probes []float64, windows []int) float64 {
	var tokens, time float64
	for i, n := range windows {
		tokens += float64(n)
		time += float64(n) / ((probes[i] + probes[i+1]) / 2)
	}
	return tokens / time
}

// DenseHeadBytes is the dense head's weight bytes.
func DenseHeadBytes(m *model.Model) int64 { return m.Head.Bytes() }

// FlashHeadBytes is what the FlashHead reads per token: the stage-1
// centroids and P blocks of cap rows.
func FlashHeadBytes(h *head.FlashHead) int64 {
	return h.Stage1Bytes() + int64(h.Probes*h.Cap*h.D)*int64(h.WeightDType().Size())
}

// Probe is a read-bandwidth probe over a buffer far larger than the
// caches.
type Probe struct {
	mem  *hugemem.Arena // holds buf
	buf  []float32
	sink []float32
}

const probeGrain = 1 << 16

// NewProbe allocates and fills a probe's buffer of size bytes. The buffer
// is in huge pages, as the weights repacked at load are (hugemem): from
// 4 KiB pages of the Go heap the probe read 45 GB/s where it read 62 from
// huge pages, less than decode from huge pages reads: no bound at all.
func NewProbe(size int) *Probe {
	mem := hugemem.New()
	raw := mem.Bytes(size &^ 3)
	buf := unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(raw))), len(raw)/4)
	for i := range buf {
		buf[i] = float32(i&1023) * 0x1p-10
	}
	return &Probe{mem: mem, buf: buf, sink: make([]float32, len(buf)/probeGrain+1)}
}

// Measure returns the best of passes reads of the buffer, in GB/s (STREAM
// reports the best of its passes). The pool's threads stream parts of the
// buffer through the SIMD dot-product kernel: each element is loaded once
// from memory (its second operand is the same cache line) and one FMA per
// element is far below what a core can do, so the probe reads as fast as
// the decode kernels can, not slower.
func (pr *Probe) Measure(p *cpu.Pool, passes int) float64 {
	best := 0.0
	for pass := 0; pass < passes; pass++ {
		start := time.Now()
		p.For(len(pr.buf), probeGrain, func(lo, hi int) {
			pr.sink[lo/probeGrain] = cpu.Dot(pr.buf[lo:hi], pr.buf[lo:hi]) // one slot per range
		})
		best = max(best, float64(4*len(pr.buf))/time.Since(start).Seconds()/1e9)
	}
	return best
}

// Unsteady reports whether two consecutive probes of the head's decode
// loop differ by more than a fifth: the machine's bandwidth changed within
// a window of the loop, and its bound ratio is then only a rough figure.
// It returns the two probes.
func (h HeadResult) Unsteady() (bool, float64, float64) {
	for i := 1; i < len(h.ProbesGBs); i++ {
		a, b := h.ProbesGBs[i-1], h.ProbesGBs[i]
		if max(a, b) > 1.2*min(a, b) {
			return true, a, b
		}
	}
	return false, 0, 0
}
