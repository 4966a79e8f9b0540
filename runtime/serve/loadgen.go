package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Bounds of a load test: the generator is a measuring tool for one's own
// server, never a way to flood anything.
const (
	MaxLoadClients  = 1024
	MaxLoadRequests = 10000 // per client
	MaxLoadTimeout  = time.Hour
)

// LoadConfig describes a load test: Clients concurrent clients each send
// Requests requests one after the other.
type LoadConfig struct {
	// URL is the server's base URL; it must be on the loopback.
	URL string
	// Model is the model id sent with each request ("" sends none).
	Model       string
	Clients     int
	Requests    int
	MaxTokens   int
	Prompt      string
	Chat        bool
	Stream      bool
	Temperature float64
	// IgnoreEOS makes every request generate exactly MaxTokens tokens, so
	// runs are comparable.
	IgnoreEOS bool
	// Timeout bounds the whole run (requests still running are cancelled
	// and counted as errors).
	Timeout time.Duration
}

// Percentiles summarises a latency distribution in milliseconds.
type Percentiles struct {
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// LoadReport is the outcome of a load test. Throughput counts completion
// tokens (from each response's usage) over the wall time of the run.
type LoadReport struct {
	Clients          int            `json:"clients"`
	Requests         int            `json:"requests"`
	OK               int            `json:"ok"`
	Errors           int            `json:"errors"`
	ErrorKinds       map[string]int `json:"error_kinds,omitempty"`
	Seconds          float64        `json:"seconds"`
	PromptTokens     int            `json:"prompt_tokens"`
	CompletionTokens int            `json:"completion_tokens"`
	TokensPerSecond  float64        `json:"tokens_per_second"`
	RequestsPerSec   float64        `json:"requests_per_second"`
	// TTFT is the time to the first text (streaming only).
	TTFT Percentiles `json:"ttft"`
	// ITL is each request's mean time per token after the first
	// (streaming only).
	ITL Percentiles `json:"inter_token_latency"`
	// Latency is the time to the whole response.
	Latency Percentiles `json:"latency"`
}

// CheckLoopback returns an error unless rawURL is an http URL whose host is
// a loopback address (or "localhost").
func CheckLoopback(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("load test URL %q: %w", rawURL, err)
	}
	if u.Scheme != "http" {
		return fmt.Errorf("load test URL %q: want http://", rawURL)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("load test URL %q: the load generator only targets the loopback (127.0.0.1, ::1, localhost)", rawURL)
}

func (c *LoadConfig) check() error {
	if err := CheckLoopback(c.URL); err != nil {
		return err
	}
	switch {
	case c.Clients < 1 || c.Clients > MaxLoadClients:
		return fmt.Errorf("load test: %d clients, want 1..%d", c.Clients, MaxLoadClients)
	case c.Requests < 1 || c.Requests > MaxLoadRequests:
		return fmt.Errorf("load test: %d requests per client, want 1..%d", c.Requests, MaxLoadRequests)
	case c.MaxTokens < 1:
		return fmt.Errorf("load test: max tokens %d must be >= 1", c.MaxTokens)
	case c.Timeout <= 0 || c.Timeout > MaxLoadTimeout:
		return fmt.Errorf("load test: timeout %s, want (0, %s]", c.Timeout, MaxLoadTimeout)
	}
	return nil
}

// loadConn is one client's keep-alive connection. Requests are written
// with http.Request.Write and responses read with http.ReadResponse on the
// client's own goroutine: net/http's Transport hands each request to two
// goroutines of its own, and in-process the client shares the CPU with the
// server it measures (its Transport cost 6% of the CPU of a 32-client run,
// as much as the server's response writes).
type loadConn struct {
	addr string // host:port
	conn net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	stop func() bool // ends the context's hold on conn
}

// dial opens the connection (before a run is timed, so that the run times
// requests, not TCP handshakes, for many clients as for one); a cancelled
// ctx then makes its reads and writes fail at once.
func (c *loadConn) dial(ctx context.Context) error {
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return err
	}
	c.conn, c.br, c.bw = conn, bufio.NewReader(conn), bufio.NewWriter(conn)
	c.stop = context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	return nil
}

// close drops the connection; the next request dials a new one.
func (c *loadConn) close() {
	if c.conn != nil {
		c.stop()
		c.conn.Close()
		c.conn = nil
	}
}

// do sends req and reads the response's header. A kept-alive connection
// that the server has closed in the meantime fails before any response:
// the request is then sent once more on a new connection.
func (c *loadConn) do(ctx context.Context, req *http.Request, body []byte) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		reused := c.conn != nil
		if !reused {
			if err := c.dial(ctx); err != nil {
				return nil, err
			}
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		err := req.Write(c.bw)
		if err == nil {
			err = c.bw.Flush()
		}
		var resp *http.Response
		if err == nil {
			resp, err = http.ReadResponse(c.br, req)
		}
		if err == nil {
			return resp, nil
		}
		c.close()
		if !reused || attempt > 0 || ctx.Err() != nil {
			return nil, err
		}
	}
}

// sample is one request's measurements.
type loadSample struct {
	err              string
	prompt, tokens   int
	ttft, latency    time.Duration
	firstText, final time.Time
}

// Load runs a load test and reports throughput and latency percentiles.
func Load(ctx context.Context, cfg LoadConfig) (*LoadReport, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	base, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("load test URL %q: %w", cfg.URL, err)
	}
	addr := base.Host
	if base.Port() == "" {
		addr = net.JoinHostPort(base.Hostname(), "80")
	}
	endpoint := strings.TrimSuffix(cfg.URL, "/") + "/v1/completions"
	body := map[string]any{"max_tokens": cfg.MaxTokens, "temperature": cfg.Temperature, "stream": cfg.Stream}
	if cfg.Chat {
		endpoint = strings.TrimSuffix(cfg.URL, "/") + "/v1/chat/completions"
		body["messages"] = []map[string]string{{"role": "user", "content": cfg.Prompt}}
	} else {
		body["prompt"] = cfg.Prompt
	}
	if cfg.Model != "" {
		body["model"] = cfg.Model
	}
	if cfg.Stream {
		body["stream_options"] = map[string]bool{"include_usage": true}
	}
	if cfg.IgnoreEOS {
		body["ignore_eos"] = true
	}
	payload, _ := json.Marshal(body)

	conns := make([]loadConn, cfg.Clients)
	var wg sync.WaitGroup
	for c := range conns {
		conns[c].addr = addr
		wg.Go(func() { conns[c].dial(ctx) }) // a failure dials again in the run
	}
	wg.Wait()
	defer func() {
		for c := range conns {
			conns[c].close()
		}
	}()

	samples := make([]loadSample, cfg.Clients*cfg.Requests)
	start := time.Now()
	for c := range conns {
		wg.Go(func() {
			for r := 0; r < cfg.Requests; r++ {
				s := &samples[c*cfg.Requests+r]
				if ctx.Err() != nil {
					s.err = "timeout"
					continue
				}
				*s = oneRequest(ctx, &conns[c], endpoint, payload, cfg.Stream)
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)

	rep := &LoadReport{Clients: cfg.Clients, Requests: len(samples), Seconds: wall.Seconds(), ErrorKinds: map[string]int{}}
	var ttft, itl, lat []float64
	for _, s := range samples {
		if s.err != "" {
			rep.Errors++
			rep.ErrorKinds[s.err]++
			continue
		}
		rep.OK++
		rep.PromptTokens += s.prompt
		rep.CompletionTokens += s.tokens
		lat = append(lat, ms(s.latency))
		if cfg.Stream {
			ttft = append(ttft, ms(s.ttft))
			if s.tokens > 1 {
				itl = append(itl, ms(s.final.Sub(s.firstText))/float64(s.tokens-1))
			}
		}
	}
	if len(rep.ErrorKinds) == 0 {
		rep.ErrorKinds = nil
	}
	if wall > 0 {
		rep.TokensPerSecond = float64(rep.CompletionTokens) / wall.Seconds()
		rep.RequestsPerSec = float64(rep.OK) / wall.Seconds()
	}
	rep.TTFT, rep.ITL, rep.Latency = percentiles(ttft), percentiles(itl), percentiles(lat)
	return rep, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentiles uses the nearest-rank method.
func percentiles(v []float64) Percentiles {
	if len(v) == 0 {
		return Percentiles{}
	}
	slices.Sort(v)
	at := func(q float64) float64 {
		i := int(q*float64(len(v))+0.999999) - 1
		return v[max(0, min(i, len(v)-1))]
	}
	return Percentiles{P50: at(0.5), P90: at(0.9), P99: at(0.99), Max: v[len(v)-1]}
}

// oneRequest sends one request and measures it.
func oneRequest(ctx context.Context, conn *loadConn, endpoint string, payload []byte, stream bool) (s loadSample) {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, nil)
	if err != nil {
		return loadSample{err: "request: " + err.Error()}
	}
	req.ContentLength = int64(len(payload))
	req.Header.Set("Content-Type", "application/json")
	resp, err := conn.do(ctx, req, payload)
	if err != nil {
		if ctx.Err() != nil {
			return loadSample{err: "timeout"}
		}
		return loadSample{err: "transport"}
	}
	defer resp.Body.Close()
	// The connection carries the next request only after a response read
	// to its end that did not ask to close it.
	defer func() {
		if s.err != "" || resp.Close {
			conn.close()
		}
	}()
	if resp.StatusCode != 200 {
		io.Copy(io.Discard, resp.Body)
		return loadSample{err: fmt.Sprintf("http %d", resp.StatusCode)}
	}
	var u struct {
		Usage *usage `json:"usage"`
	}
	s = loadSample{}
	if !stream {
		if err := json.NewDecoder(resp.Body).Decode(&u); err != nil || u.Usage == nil {
			return loadSample{err: "bad response body"}
		}
		io.Copy(io.Discard, resp.Body) // to its end, so the connection is reused
	} else {
		sc := bufio.NewScanner(resp.Body)
		// Events are small: a 4 KiB start (grown up to 1 MiB for a long
		// one) instead of 64 KiB zeroed per request, which the GC and the
		// server it shares the CPU with would pay for.
		sc.Buffer(make([]byte, 4<<10), 1<<20)
		done := false
		for sc.Scan() {
			line, ok := bytes.CutPrefix(sc.Bytes(), []byte("data: "))
			if !ok {
				continue
			}
			if string(line) == "[DONE]" {
				done = true
				break
			}
			// Text events, nearly all of them, are only checked (valid
			// JSON, text or not): the client shares the CPU with the
			// server it measures, and a full decode costs more than the
			// server spends on the event.
			if hasText, ok := quickTextEvent(line); ok {
				if hasText {
					now := time.Now()
					if s.firstText.IsZero() {
						s.firstText, s.ttft = now, now.Sub(start)
					}
					s.final = now
				}
				continue
			}
			var ev struct {
				Error   json.RawMessage `json:"error"`
				Usage   *usage          `json:"usage"`
				Choices []struct {
					Text  string `json:"text"`
					Delta struct {
						Content string `json:"content"`
					} `json:"delta"`
				} `json:"choices"`
			}
			if err := json.Unmarshal(line, &ev); err != nil {
				return loadSample{err: "bad event"}
			}
			if ev.Error != nil {
				return loadSample{err: "error event"}
			}
			if ev.Usage != nil {
				u.Usage = ev.Usage
			}
			if len(ev.Choices) > 0 && ev.Choices[0].Text+ev.Choices[0].Delta.Content != "" {
				now := time.Now()
				if s.firstText.IsZero() {
					s.firstText, s.ttft = now, now.Sub(start)
				}
				s.final = now
			}
		}
		if err := sc.Err(); err != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return loadSample{err: "timeout"}
			}
			return loadSample{err: "stream cut"}
		}
		if !done || u.Usage == nil {
			return loadSample{err: "stream without usage or [DONE]"}
		}
		// Read the body to its end (the chunked encoding's last chunk
		// follows [DONE]): a body closed before its end closes the
		// connection, and the client's next request would open a new one.
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return loadSample{err: "stream cut"}
		}
		if s.firstText.IsZero() { // no visible text (e.g. only special tokens)
			s.firstText, s.final, s.ttft = time.Now(), time.Now(), time.Since(start)
		}
	}
	s.latency = time.Since(start)
	s.prompt, s.tokens = u.Usage.PromptTokens, u.Usage.CompletionTokens
	return s
}

// quickTextEvent classifies an SSE data line of the layout this server (and
// vLLM) writes for text: valid JSON with no "usage" or "error" member and
// the first choice's "text" or delta "content" written as "text":"...". It
// reports whether that text is non-empty; ok is false for any other line,
// which the caller decodes in full.
func quickTextEvent(line []byte) (hasText, ok bool) {
	if bytes.Contains(line, []byte(`"usage"`)) || bytes.Contains(line, []byte(`"error"`)) {
		return false, false
	}
	i := bytes.Index(line, []byte(`"text":"`))
	if i < 0 {
		i = bytes.Index(line, []byte(`"content":"`))
		if i < 0 {
			return false, false
		}
		i += len(`"content":"`)
	} else {
		i += len(`"text":"`)
	}
	if !json.Valid(line) {
		return false, false
	}
	return i < len(line) && line[i] != '"', true
}

// WriteText prints a report for people.
func (r *LoadReport) WriteText(w io.Writer, label string) {
	clients := "clients"
	if r.Clients == 1 {
		clients = "client"
	}
	kinds := ""
	if len(r.ErrorKinds) > 0 {
		kinds = fmt.Sprintf(" %v", r.ErrorKinds)
	}
	fmt.Fprintf(w, "%s: %d %s, %d requests: %d ok, %d errors%s in %.2fs\n", label, r.Clients, clients, r.Requests, r.OK, r.Errors, kinds, r.Seconds)
	fmt.Fprintf(w, "  throughput: %.0f completion tok/s (%d tokens), %.1f requests/s\n", r.TokensPerSecond, r.CompletionTokens, r.RequestsPerSec)
	pr := func(name string, p Percentiles) {
		fmt.Fprintf(w, "  %-22s p50 %8.2f  p90 %8.2f  p99 %8.2f  max %8.2f ms\n", name, p.P50, p.P90, p.P99, p.Max)
	}
	if r.TTFT.Max > 0 {
		pr("time to first token", r.TTFT)
		pr("inter-token latency", r.ITL)
	}
	pr("request latency", r.Latency)
}
