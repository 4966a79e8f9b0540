package cuda

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/fhkit/fhkit/runtime/bench"
	"github.com/fhkit/fhkit/runtime/head"
)

// BenchHead is one head's decode measurement on the device.
type BenchHead struct {
	Head          string  `json:"head"`
	DecodeTokS    float64 `json:"decode_tok_s"`
	MsPerToken    float64 `json:"ms_per_token"`
	BytesPerToken int64   `json:"bytes_per_token"`
	// BoundRatio is decode speed over the bandwidth bound
	// (BandwidthGBs / bytes per token).
	BoundRatio float64 `json:"bound_ratio"`
}

// BenchResult is `fh-run bench --device cuda`'s measurement.
type BenchResult struct {
	Device       string  `json:"device"`
	Emulated     bool    `json:"emulated"`
	PromptTokens int     `json:"prompt_tokens"`
	GenTokens    int     `json:"gen_tokens"`
	PrefillTokS  float64 `json:"prefill_tok_s"`
	// BandwidthGBs is the device's measured copy bandwidth (bytes read
	// plus written by a device-to-device copy, per second).
	BandwidthGBs float64     `json:"bandwidth_gbs"`
	Graphs       bool        `json:"graphs"`
	Heads        []BenchHead `json:"heads"`
}

// Bench measures prefill and greedy decode on the device: prefill of
// promptTokens random ids, then genTokens decode steps with the FlashHead
// (when fh is not nil and loaded in r) and with the dense head. Each phase
// is timed from the host around synchronizing calls, so the figures include
// launch overhead (small with graphs). Under the emulator the numbers
// measure the emulator, not a GPU.
func Bench(r *Runner, fh *head.FlashHead, promptTokens, genTokens int, seed uint64) (*BenchResult, error) {
	m := r.M
	if promptTokens+genTokens > r.Limit {
		return nil, fmt.Errorf("bench: %d + %d tokens exceed the context limit %d", promptTokens, genTokens, r.Limit)
	}
	res := &BenchResult{Device: r.Dev.String(), Emulated: r.Dev.Drv.IsEmulator(), PromptTokens: promptTokens, GenTokens: genTokens, Graphs: r.UseGraphs}
	rng := rand.New(rand.NewPCG(seed, 99))
	prompt := make([]int, promptTokens)
	for i := range prompt {
		prompt[i] = rng.IntN(m.Config.VocabSize)
	}
	bw, err := r.copyBandwidth()
	if err != nil {
		return nil, err
	}
	res.BandwidthGBs = bw
	flash := r.flash
	defer func() { r.flash = flash }()
	type variant struct {
		name  string
		flash *devFlash
		bytes int64
	}
	var vs []variant
	if flash != nil && fh != nil {
		vs = append(vs, variant{"flashhead", flash, m.BodyBytes() + bench.FlashHeadBytes(fh)})
	}
	vs = append(vs, variant{"dense", nil, m.BodyBytes() + bench.DenseHeadBytes(m)})
	for i, v := range vs {
		r.flash = v.flash
		r.Reset()
		t0 := time.Now()
		id, err := r.Greedy(prompt)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			res.PrefillTokS = float64(promptTokens) / time.Since(t0).Seconds()
		}
		// The first step captures the graph; time the rest.
		if id, err = r.Greedy([]int{id}); err != nil {
			return nil, err
		}
		t0 = time.Now()
		for s := 1; s < genTokens; s++ {
			if id, err = r.Greedy([]int{id}); err != nil {
				return nil, err
			}
		}
		el := time.Since(t0).Seconds()
		n := max(1, genTokens-1)
		h := BenchHead{Head: v.name, DecodeTokS: float64(n) / el, MsPerToken: 1000 * el / float64(n), BytesPerToken: v.bytes}
		if bw > 0 {
			h.BoundRatio = h.DecodeTokS / (bw * 1e9 / float64(v.bytes))
		}
		res.Heads = append(res.Heads, h)
	}
	return res, nil
}

// copyBandwidth times device-to-device copies of a 64 MiB buffer (or a
// quarter of the free memory, if smaller).
func (r *Runner) copyBandwidth() (float64, error) {
	free, _, err := r.Dev.MemInfo()
	if err != nil {
		return 0, err
	}
	n := min(64<<20, int(free/4))
	if n < 1<<20 {
		return 0, nil
	}
	a, err := r.Dev.Alloc(n)
	if err != nil {
		return 0, err
	}
	defer r.Dev.Free(a)
	b, err := r.Dev.Alloc(n)
	if err != nil {
		return 0, err
	}
	defer r.Dev.Free(b)
	if err := r.Dev.CopyDtoD(b, 0, a, 0, n); err != nil { // warm up
		return 0, err
	}
	const reps = 5
	t0 := time.Now()
	for i := 0; i < reps; i++ {
		if err := r.Dev.CopyDtoD(b, 0, a, 0, n); err != nil {
			return 0, err
		}
	}
	if err := r.Dev.Synchronize(); err != nil {
		return 0, err
	}
	return float64(2*reps*n) / time.Since(t0).Seconds() / 1e9, nil
}
