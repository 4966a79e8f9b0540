package serve

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
)

// metrics are the server's counters, gauges and histograms, written in the
// Prometheus text exposition format (version 0.0.4) by GET /metrics.
type metrics struct {
	mu       sync.Mutex
	requests map[requestKey]uint64

	promptTokens atomic.Uint64
	cachedTokens atomic.Uint64 // prompt tokens found in a reused KV cache
	genTokens    atomic.Uint64
	steps        atomic.Uint64
	queueDepth   atomic.Int64
	running      atomic.Int64
	kvBytes      atomic.Int64

	ttft      *histogram
	itl       *histogram
	duration  *histogram
	batchRows *histogram
}

type requestKey struct {
	endpoint string
	code     int
}

func newMetrics() *metrics {
	latency := []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
	return &metrics{
		requests:  map[requestKey]uint64{},
		ttft:      newHistogram(latency),
		itl:       newHistogram([]float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}),
		duration:  newHistogram(append(slices.Clone(latency), 60, 120, 300)),
		batchRows: newHistogram([]float64{1, 2, 4, 8, 16, 32, 64, 128, 256}),
	}
}

// request counts a finished HTTP request.
func (m *metrics) request(endpoint string, code int) {
	m.mu.Lock()
	m.requests[requestKey{endpoint, code}]++
	m.mu.Unlock()
}

// histogram is a cumulative Prometheus histogram with fixed upper bounds.
type histogram struct {
	mu     sync.Mutex
	bounds []float64
	counts []uint64 // per bucket, not cumulative; the last is +Inf
	sum    float64
	n      uint64
}

func newHistogram(bounds []float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]uint64, len(bounds)+1)}
}

func (h *histogram) observe(v float64) {
	i, _ := slices.BinarySearch(h.bounds, v)
	h.mu.Lock()
	h.counts[i]++
	h.sum += v
	h.n++
	h.mu.Unlock()
}

func (h *histogram) write(w io.Writer, name, help string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name)
	var cum uint64
	for i, b := range h.bounds {
		cum += h.counts[i]
		fmt.Fprintf(w, "%s_bucket{le=\"%s\"} %d\n", name, formatFloat(b), cum)
	}
	fmt.Fprintf(w, "%s_bucket{le=\"+Inf\"} %d\n%s_sum %s\n%s_count %d\n", name, h.n, name, formatFloat(h.sum), name, h.n)
}

func formatFloat(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// write renders every metric.
func (m *metrics) write(w io.Writer) {
	m.mu.Lock()
	keys := make([]requestKey, 0, len(m.requests))
	for k := range m.requests {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b requestKey) int {
		if a.endpoint != b.endpoint {
			if a.endpoint < b.endpoint {
				return -1
			}
			return 1
		}
		return a.code - b.code
	})
	fmt.Fprintf(w, "# HELP fhkit_requests_total HTTP requests by endpoint and status code.\n# TYPE fhkit_requests_total counter\n")
	for _, k := range keys {
		fmt.Fprintf(w, "fhkit_requests_total{endpoint=%q,code=\"%d\"} %d\n", k.endpoint, k.code, m.requests[k])
	}
	m.mu.Unlock()
	counter := func(name, help string, v uint64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", name, help, name, name, v)
	}
	gauge := func(name, help string, v int64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %d\n", name, help, name, name, v)
	}
	counter("fhkit_prompt_tokens_total", "Prompt tokens processed.", m.promptTokens.Load())
	counter("fhkit_prompt_tokens_cached_total", "Prompt tokens taken from a finished request's KV cache instead of computed.", m.cachedTokens.Load())
	counter("fhkit_generation_tokens_total", "Tokens generated.", m.genTokens.Load())
	counter("fhkit_decode_steps_total", "Batched forward passes run by the scheduler.", m.steps.Load())
	gauge("fhkit_queue_depth", "Requests waiting for a batch slot.", m.queueDepth.Load())
	gauge("fhkit_running_requests", "Requests in the batch (prefilling or decoding).", m.running.Load())
	gauge("fhkit_kv_cache_bytes", "Memory held by the KV caches of running requests.", m.kvBytes.Load())
	m.ttft.write(w, "fhkit_time_to_first_token_seconds", "Time from a request's arrival to its first generated token.")
	m.itl.write(w, "fhkit_inter_token_latency_seconds", "Time between consecutive tokens of a request.")
	m.duration.write(w, "fhkit_request_duration_seconds", "Time from a generation request's arrival to its last byte.")
	m.batchRows.write(w, "fhkit_batch_rows", "Rows (tokens of all sequences) per batched forward pass.")
}
