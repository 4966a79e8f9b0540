package serve

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/generate"
	"github.com/fhkit/fhkit/runtime/model"
	"github.com/fhkit/fhkit/runtime/sample"
	"github.com/fhkit/fhkit/runtime/tokenizer"
)

// reference generates greedily with generate.Session, the loop behind
// fh-run generate, on its own runner.
func reference(t *testing.T, l *loadedModel, ids []int, maxTokens int) *generate.Result {
	t.Helper()
	pool := cpu.NewPool(1)
	defer pool.Close()
	sess, err := generate.NewSession(model.NewRunner(l.m, pool), l.tok, 0, dtype.F32)
	if err != nil {
		t.Fatal(err)
	}
	sess.Flash = l.flash
	res, err := sess.Generate(ids, generate.Options{MaxTokens: maxTokens, Sample: sample.Params{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func chatIDs(t *testing.T, tok *tokenizer.Tokenizer, msgs []tokenizer.Message) []int {
	t.Helper()
	text, err := tok.RenderChat(msgs, true)
	if err != nil {
		t.Fatal(err)
	}
	return tok.Encode(text, false)
}

// Greedy output, streamed or not, of both endpoints and both heads equals
// what fh-run generate's loop produces, and usage counts the tokens.
func TestGreedyMatchesGenerate(t *testing.T) {
	for _, flash := range []bool{false, true} {
		ts := startServer(t, flash, nil)
		prompts := []string{"hello there", "Once upon a time", "the"}
		for _, prompt := range prompts {
			for _, chat := range []bool{false, true} {
				var ids []int
				var body map[string]any
				url := ts.url + "/v1/completions"
				if chat {
					ids = chatIDs(t, ts.l.tok, []tokenizer.Message{{Role: "user", Content: prompt}})
					body = map[string]any{"model": "tiny", "messages": []map[string]string{{"role": "user", "content": prompt}}}
					url = ts.url + "/v1/chat/completions"
				} else {
					ids = ts.l.tok.Encode(prompt, true)
					body = map[string]any{"model": "tiny", "prompt": prompt}
				}
				want := reference(t, ts.l, ids, 40)
				wantFinish := map[string]string{"eos": "stop", "length": "length"}[want.StopReason]
				body["max_tokens"], body["temperature"] = 40, 0
				name := fmt.Sprintf("flash=%t chat=%t %q", flash, chat, prompt)

				raw, _ := json.Marshal(body)
				code, _, out := post(t, url, string(raw))
				if code != 200 {
					t.Fatalf("%s: status %d: %s", name, code, out)
				}
				var r struct {
					Object  string `json:"object"`
					Choices []struct {
						Text         string `json:"text"`
						FinishReason string `json:"finish_reason"`
						Message      struct {
							Role, Content string
						} `json:"message"`
					} `json:"choices"`
					Usage usage `json:"usage"`
				}
				if err := json.Unmarshal(out, &r); err != nil || len(r.Choices) != 1 {
					t.Fatalf("%s: response %s: %v", name, out, err)
				}
				text := r.Choices[0].Text
				wantObject := "text_completion"
				if chat {
					text, wantObject = r.Choices[0].Message.Content, "chat.completion"
					if r.Choices[0].Message.Role != "assistant" {
						t.Errorf("%s: role %q", name, r.Choices[0].Message.Role)
					}
				}
				if text != want.Text || r.Choices[0].FinishReason != wantFinish || r.Object != wantObject {
					t.Errorf("%s: got %q (%s, %s), generate gives %q (%s)", name, text, r.Choices[0].FinishReason, r.Object, want.Text, want.StopReason)
				}
				if r.Usage != (usage{len(ids), len(want.Tokens), len(ids) + len(want.Tokens)}) {
					t.Errorf("%s: usage %+v, want %d prompt and %d completion tokens", name, r.Usage, len(ids), len(want.Tokens))
				}

				body["stream"] = true
				body["stream_options"] = map[string]bool{"include_usage": true}
				raw, _ = json.Marshal(body)
				resp, err := http.Post(url, "application/json", strings.NewReader(string(raw)))
				if err != nil {
					t.Fatal(err)
				}
				if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
					t.Fatalf("%s stream: status %d, content type %q", name, resp.StatusCode, ct)
				}
				events, done := readStream(t, resp.Body)
				resp.Body.Close()
				stext, sfinish, su := streamText(events)
				if !done || stext != want.Text || sfinish != wantFinish {
					t.Errorf("%s stream: got %q (%s, [DONE] %t), generate gives %q", name, stext, sfinish, done, want.Text)
				}
				if su == nil || *su != r.Usage {
					t.Errorf("%s stream: usage %+v, want %+v", name, su, r.Usage)
				}
				if chat {
					first := events[0]["choices"].([]any)[0].(map[string]any)["delta"].(map[string]any)
					if first["role"] != "assistant" || events[0]["object"] != "chat.completion.chunk" {
						t.Errorf("%s stream: first chunk %v", name, events[0])
					}
				}
			}
		}
	}
}

// Requests decoding together give each the text it gets alone.
func TestConcurrentRequestsMatchAlone(t *testing.T) {
	ts := startServer(t, true, func(c *Config) { c.MaxBatch = 8 })
	prompts := []string{"alpha", "a b c d e f g", "hello there", "x", "Once upon a time there was", "zz top", "the end", "7 8 9"}
	want := make([]string, len(prompts))
	for i, p := range prompts {
		want[i] = reference(t, ts.l, ts.l.tok.Encode(p, true), 48).Text
	}
	var wg sync.WaitGroup
	got := make([]string, len(prompts))
	for round := 0; round < 2; round++ {
		for i, p := range prompts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body := fmt.Sprintf(`{"prompt": %q, "max_tokens": 48, "temperature": 0, "stream": %t}`, p, i%2 == 0)
				resp, err := http.Post(ts.url+"/v1/completions", "application/json", strings.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				defer resp.Body.Close()
				if i%2 == 0 {
					events, _ := readStream(t, resp.Body)
					got[i], _, _ = streamText(events)
					return
				}
				var r completionResponse
				json.NewDecoder(resp.Body).Decode(&r)
				if len(r.Choices) == 1 {
					got[i] = r.Choices[0].Text
				}
			}()
		}
		wg.Wait()
		for i := range prompts {
			if got[i] != want[i] {
				t.Errorf("round %d, %q: batched %q, alone %q", round, prompts[i], got[i], want[i])
			}
		}
	}
	// The steps did batch several sequences.
	if ts.metrics.batchRows.n == 0 || ts.metrics.steps.Load() >= uint64(2*len(prompts)*48) {
		t.Errorf("%d steps for %d tokens: nothing was batched", ts.metrics.steps.Load(), 2*len(prompts)*48)
	}
	// The rows of all steps are every prompt token not found in a reused
	// cache and every generated token but each request's last (which ends
	// it unread). The second round's prompts are the first round's: they
	// find their starts in the first round's caches (each request takes
	// the longest match left when it arrives, so not always its own).
	m := ts.metrics
	if rows, want := m.batchRows.sum, float64(m.promptTokens.Load()-m.cachedTokens.Load()+m.genTokens.Load())-float64(2*len(prompts)); rows != want {
		t.Errorf("fhkit_batch_rows sums to %g rows, want %g", rows, want)
	}
	if cached := m.cachedTokens.Load(); cached < uint64(len(prompts)) {
		t.Errorf("%d prompt tokens came from reused caches, want at least %d", cached, len(prompts))
	}
}

// A seeded sampled request is reproducible, and stop strings cut the text.
func TestSamplingSeedAndStop(t *testing.T) {
	ts := startServer(t, true, nil)
	get := func(body string) string {
		code, _, out := post(t, ts.url+"/v1/completions", body)
		var r completionResponse
		if code != 200 || json.Unmarshal(out, &r) != nil || len(r.Choices) != 1 {
			t.Fatalf("status %d: %s", code, out)
		}
		return r.Choices[0].Text
	}
	a := get(`{"prompt": "hi", "max_tokens": 30, "temperature": 1, "top_p": 0.9, "seed": 5, "ignore_eos": true}`)
	b := get(`{"prompt": "hi", "max_tokens": 30, "temperature": 1, "top_p": 0.9, "seed": 5, "ignore_eos": true}`)
	c := get(`{"prompt": "hi", "max_tokens": 30, "temperature": 1, "top_p": 0.9, "seed": 6, "ignore_eos": true}`)
	if a != b || a == c {
		t.Errorf("seed 5 gave %q then %q, seed 6 gave %q", a, b, c)
	}
	full := get(`{"prompt": "hi", "max_tokens": 30, "temperature": 0, "ignore_eos": true}`)
	if len(full) < 6 {
		t.Fatalf("greedy text %q too short to cut", full)
	}
	stop := full[3:6]
	cut := get(fmt.Sprintf(`{"prompt": "hi", "max_tokens": 30, "temperature": 0, "ignore_eos": true, "stop": [%q, "never-appears"]}`, stop))
	if want := full[:strings.Index(full, stop)]; cut != want {
		t.Errorf("stop %q: got %q, want %q", stop, cut, want)
	}
}

// Every bad request gets a 400 (or 404/405/413) with an OpenAI error body,
// and the server keeps serving.
func TestBadRequests(t *testing.T) {
	ts := startServer(t, false, func(c *Config) { c.Ctx = 64 })
	long := strings.Repeat("hello ", 80)
	cases := []struct {
		path, body string
		status     int
		want       string
	}{
		{"/v1/completions", `{"prompt": "hi", "max_tokens": 4`, 400, "malformed JSON"},
		{"/v1/completions", `not json`, 400, "JSON object"},
		{"/v1/completions", ``, 400, "JSON object"},
		{"/v1/completions", `{"prompt": "hi"} {"x": 1}`, 400, "after the object"},
		{"/v1/completions", `{"model": "gpt-4", "prompt": "hi"}`, 400, "does not exist"},
		{"/v1/chat/completions", `{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}`, 400, "does not exist"},
		{"/v1/completions", `{"prompt": "hi", "max_tokens": -5}`, 400, "at least 1"},
		{"/v1/completions", `{"prompt": "hi", "max_tokens": 0}`, 400, "at least 1"},
		{"/v1/completions", `{"prompt": "hi", "max_tokens": 1000000}`, 400, "context limit"},
		{"/v1/completions", `{"prompt": "hi", "max_tokens": 1e30}`, 400, "max_tokens"},
		{"/v1/completions", `{"prompt": "hi", "max_tokens": "ten"}`, 400, "max_tokens"},
		{"/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": -1}`, 400, "max_completion_tokens"},
		{"/v1/completions", fmt.Sprintf(`{"prompt": %q}`, long), 400, "context limit"},
		{"/v1/chat/completions", fmt.Sprintf(`{"messages": [{"role": "user", "content": %q}]}`, long), 400, "context limit"},
		{"/v1/completions", `{"prompt": "hi", "max_tokens": 63}`, 400, "context limit"}, // BOS + "hi" + 63 > 64
		{"/v1/completions", `{"max_tokens": 3}`, 400, "prompt is required"},
		{"/v1/completions", `{"prompt": ["a", "b"]}`, 400, "one prompt"},
		{"/v1/completions", `{"prompt": [1, 2, 99999]}`, 400, "outside the vocabulary"},
		{"/v1/completions", `{"prompt": [1, -2]}`, 400, "outside the vocabulary"},
		{"/v1/completions", `{"prompt": {"a": 1}}`, 400, "prompt must be"},
		{"/v1/completions", `{"prompt": "hi", "n": 2}`, 400, "one choice"},
		{"/v1/completions", `{"prompt": "hi", "temperature": -1}`, 400, "temperature"},
		{"/v1/completions", `{"prompt": "hi", "top_p": 1.5}`, 400, "top_p"},
		{"/v1/completions", `{"prompt": "hi", "logprobs": 3}`, 400, "logprobs"},
		{"/v1/completions", `{"prompt": "hi", "echo": true}`, 400, "echo"},
		{"/v1/completions", `{"prompt": "hi", "stop": 7}`, 400, "stop"},
		{"/v1/completions", `{"prompt": "hi", "stop": ["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]}`, 400, "stop strings"},
		{"/v1/completions", `{"prompt": "hi", "stream_options": {"include_usage": true}}`, 400, "stream_options"},
		{"/v1/completions", `{"prompt": "hi", "presence_penalty": 0.5}`, 400, "presence_penalty"},
		{"/v1/chat/completions", `{"messages": []}`, 400, "non-empty"},
		{"/v1/chat/completions", `{"messages": [{"role": "wizard", "content": "hi"}]}`, 400, "role"},
		{"/v1/chat/completions", `{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}`, 400, "text parts"},
		{"/v1/chat/completions", `{"messages": [{"role": "user", "content": 5}]}`, 400, "content"},
		{"/v1/chat/completions", `{"messages": "hi"}`, 400, "messages"},
		{"/v1/completions", `{"prompt": "` + strings.Repeat("x", maxPromptBytes) + `"}`, 413, "larger than"},
		{"/v1/nothing", `{}`, 404, "no route"},
	}
	for _, c := range cases {
		code, _, out := post(t, ts.url+c.path, c.body)
		var e struct {
			Error struct {
				Message string  `json:"message"`
				Type    string  `json:"type"`
				Param   *string `json:"param"`
			} `json:"error"`
		}
		short := c.body
		if len(short) > 80 {
			short = short[:80] + "..."
		}
		if code != c.status || json.Unmarshal(out, &e) != nil || !strings.Contains(e.Error.Message, c.want) || e.Error.Type == "" {
			t.Errorf("%s %s: status %d, body %.300s; want %d and %q", c.path, short, code, out, c.status, c.want)
		}
	}
	resp, err := http.Get(ts.url + "/v1/completions")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET /v1/completions: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	// Still serving.
	if code, _, out := post(t, ts.url+"/v1/completions", `{"prompt": "hi", "max_tokens": 3}`); code != 200 {
		t.Errorf("after the bad requests: %d %s", code, out)
	}
}

// gate pauses the scheduler at the top of each iteration until released.
type gate struct {
	mu      sync.Mutex
	open    bool
	release chan struct{}
}

func newGate() *gate { return &gate{release: make(chan struct{})} }

func (g *gate) wait() {
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	if !open {
		<-g.release
	}
}

func (g *gate) openUp() {
	g.mu.Lock()
	g.open = true
	g.mu.Unlock()
	close(g.release)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// With one slot and a queue of one, a third request gets 429 with
// Retry-After while the first two are held; once the scheduler runs, both
// complete and new requests are accepted again.
func TestQueueFull(t *testing.T) {
	g := newGate()
	ts := startServer(t, false, func(c *Config) { c.MaxBatch, c.MaxQueue, c.beforeStep = 1, 1, g.wait })

	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _, _ = post(t, ts.url+"/v1/completions", `{"prompt": "hi", "max_tokens": 8, "temperature": 0}`)
		}()
	}
	waitFor(t, "two queued requests", func() bool {
		ts.engine.mu.Lock()
		defer ts.engine.mu.Unlock()
		return len(ts.engine.queue) == 2
	})
	code, hdr, out := post(t, ts.url+"/v1/completions", `{"prompt": "hi", "max_tokens": 8}`)
	var e struct {
		Error apiError `json:"error"`
	}
	if code != 429 || hdr.Get("Retry-After") == "" || json.Unmarshal(out, &e) != nil || e.Error.Type != "rate_limit_error" {
		t.Errorf("third request: status %d, Retry-After %q, body %s", code, hdr.Get("Retry-After"), out)
	}
	g.openUp()
	wg.Wait()
	if codes[0] != 200 || codes[1] != 200 {
		t.Errorf("held requests finished with %v", codes)
	}
	if code, _, out := post(t, ts.url+"/v1/completions", `{"prompt": "hi", "max_tokens": 8}`); code != 200 {
		t.Errorf("after the queue drained: %d %s", code, out)
	}
	if !strings.Contains(scrape(t, ts.url), `fhkit_requests_total{endpoint="/v1/completions",code="429"} 1`) {
		t.Error("the 429 is not counted in /metrics")
	}
}

// scrape returns the /metrics text.
func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return b.String()
}

// metric returns the value of an unlabelled metric line.
func metric(t *testing.T, text, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("metric %s missing from:\n%s", name, text)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// A client that disconnects mid-stream cancels its generation: the slot
// and its KV cache are freed and the next request runs.
func TestDisconnectFreesSlot(t *testing.T) {
	// Slow steps, so the long request cannot finish before it is cancelled.
	ts := startServer(t, false, func(c *Config) { c.MaxBatch, c.beforeStep = 1, func() { time.Sleep(time.Millisecond) } })
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", ts.url+"/v1/completions",
		strings.NewReader(`{"prompt": "hi", "max_tokens": 400, "ignore_eos": true, "temperature": 0, "stream": true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a running request", func() bool { return ts.metrics.running.Load() == 1 && ts.metrics.kvBytes.Load() > 0 })
	cancel()
	resp.Body.Close()
	waitFor(t, "the slot to be freed", func() bool { return ts.metrics.running.Load() == 0 && ts.metrics.kvBytes.Load() == 0 })
	if n := ts.metrics.genTokens.Load(); n >= 400 {
		t.Errorf("the cancelled request generated all %d tokens", n)
	}
	code, _, out := post(t, ts.url+"/v1/completions", `{"prompt": "hi", "max_tokens": 5, "ignore_eos": true}`)
	var r completionResponse
	if code != 200 || json.Unmarshal(out, &r) != nil || r.Usage.CompletionTokens != 5 {
		t.Errorf("next request: %d %s", code, out)
	}
	text := scrape(t, ts.url)
	if metric(t, text, "fhkit_running_requests") != 0 || metric(t, text, "fhkit_queue_depth") != 0 {
		t.Errorf("metrics after the cancel:\n%s", text)
	}
}

func TestModelsHealthMetrics(t *testing.T) {
	ts := startServer(t, true, nil)
	resp, err := http.Get(ts.url + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	var ml modelList
	json.NewDecoder(resp.Body).Decode(&ml)
	resp.Body.Close()
	if ml.Object != "list" || len(ml.Data) != 1 || ml.Data[0].ID != "tiny" || ml.Data[0].MaxModelLen != ts.l.m.Config.MaxPositionEmbeddings {
		t.Errorf("/v1/models: %+v", ml)
	}
	resp, err = http.Get(ts.url + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/health: %d", resp.StatusCode)
	}
	total := 0
	for i := 0; i < 3; i++ {
		code, _, out := post(t, ts.url+"/v1/chat/completions", `{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 7, "stream": true, "stream_options": {"include_usage": true}}`)
		if code != 200 {
			t.Fatalf("%d %s", code, out)
		}
		events, _ := readStream(t, strings.NewReader(string(out)))
		_, _, u := streamText(events)
		total += u.CompletionTokens
	}
	text := scrape(t, ts.url)
	for _, want := range []string{
		`fhkit_requests_total{endpoint="/v1/chat/completions",code="200"} 3`,
		`fhkit_requests_total{endpoint="/v1/models",code="200"} 1`,
		"# TYPE fhkit_time_to_first_token_seconds histogram",
		`fhkit_time_to_first_token_seconds_bucket{le="+Inf"} 3`,
		"# TYPE fhkit_inter_token_latency_seconds histogram",
		"# TYPE fhkit_queue_depth gauge",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if got := metric(t, text, "fhkit_generation_tokens_total"); int(got) != total {
		t.Errorf("generation tokens %v, usage says %d", got, total)
	}
	if got := metric(t, text, "fhkit_inter_token_latency_seconds_count"); int(got) != total-3 {
		t.Errorf("%v inter-token gaps for %d tokens in 3 requests", got, total)
	}
}

// Shutdown lets a running request finish; a deadline cancels the rest and
// their clients are told.
func TestShutdown(t *testing.T) {
	for _, deadline := range []time.Duration{10 * time.Second, 30 * time.Millisecond} {
		l := loadModel(t, false)
		s, err := New(Config{Backend: NewCPUBackend(l.run, dtype.F32), Tokenizer: l.tok, beforeStep: func() { time.Sleep(500 * time.Microsecond) }})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- s.Serve(ln) }()
		url := "http://" + ln.Addr().String()
		resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(`{"prompt": "hi", "max_tokens": 200, "ignore_eos": true, "stream": true}`))
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "a running request", func() bool { return s.metrics.running.Load() == 1 })
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		shut := make(chan error, 1)
		go func() { shut <- s.Shutdown(ctx) }()
		events, done := readStream(t, resp.Body)
		resp.Body.Close()
		err = <-shut
		cancel()
		if e := <-served; e != nil {
			t.Errorf("Serve returned %v", e)
		}
		_, finish, _ := streamText(events)
		if deadline > time.Second {
			if err != nil || finish != "length" || !done {
				t.Errorf("graceful: shutdown %v, finish %q, done %t", err, finish, done)
			}
		} else {
			last := events[len(events)-1]
			if err == nil || last["error"] == nil {
				t.Errorf("deadline: shutdown %v, last event %v", err, last)
			}
		}
		if _, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(`{"prompt": "hi"}`)); err == nil {
			t.Error("a request after shutdown was served")
		}
	}
}

// The request shapes the OpenAI Python client (v1) sends, with its headers,
// and the response fields its models read. The client itself is not
// installed on the build machines, so the shapes are reproduced here.
func TestOpenAIClientShapes(t *testing.T) {
	ts := startServer(t, true, nil)
	do := func(method, path, body string) *http.Response {
		req, _ := http.NewRequest(method, ts.url+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer sk-anything")
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json")
		req.Header.Set("User-Agent", "OpenAI/Python 1.54.0")
		req.Header.Set("X-Stainless-Lang", "python")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	decode := func(resp *http.Response) map[string]any {
		defer resp.Body.Close()
		var v map[string]any
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&v) != nil {
			t.Fatalf("status %d", resp.StatusCode)
		}
		return v
	}
	has := func(what string, v map[string]any, fields ...string) {
		for _, f := range fields {
			if _, ok := v[f]; !ok {
				t.Errorf("%s lacks %q: %v", what, f, v)
			}
		}
	}
	// client.models.list()
	models := decode(do("GET", "/v1/models", ""))
	card := models["data"].([]any)[0].(map[string]any)
	has("model", card, "id", "object", "created", "owned_by")

	// client.completions.create(model="tiny", prompt="Say this is a test", max_tokens=7, temperature=0)
	c := decode(do("POST", "/v1/completions", `{"model":"tiny","prompt":"Say this is a test","max_tokens":7,"temperature":0}`))
	has("completion", c, "id", "object", "created", "model", "choices", "usage")
	has("completion choice", c["choices"].([]any)[0].(map[string]any), "index", "text", "logprobs", "finish_reason")
	if c["object"] != "text_completion" {
		t.Errorf("object %v", c["object"])
	}

	// client.chat.completions.create(model="tiny", messages=[...], max_tokens=8, temperature=0,
	//   seed=1, stop=["\n\n"], top_p=1, n=1, presence_penalty=0, frequency_penalty=0, user="u", logprobs=False)
	chat := decode(do("POST", "/v1/chat/completions", `{"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hello"}],"model":"tiny","frequency_penalty":0,"logprobs":false,"max_tokens":8,"n":1,"presence_penalty":0,"seed":1,"stop":["\n\n"],"temperature":0,"top_p":1,"user":"u"}`))
	has("chat", chat, "id", "object", "created", "model", "choices", "usage")
	choice := chat["choices"].([]any)[0].(map[string]any)
	has("chat choice", choice, "index", "message", "finish_reason", "logprobs")
	if chat["object"] != "chat.completion" || choice["message"].(map[string]any)["role"] != "assistant" {
		t.Errorf("chat %v", chat)
	}
	if fr := choice["finish_reason"]; fr != "stop" && fr != "length" {
		t.Errorf("finish_reason %v", fr)
	}

	// stream=True, stream_options={"include_usage": True}, content as parts
	resp := do("POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":[{"type":"text","text":"Hello"}]}],"model":"tiny","max_tokens":8,"stream":true,"stream_options":{"include_usage":true},"temperature":0}`)
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream content type %q", resp.Header.Get("Content-Type"))
	}
	events, done := readStream(t, resp.Body)
	resp.Body.Close()
	if !done || len(events) < 3 {
		t.Fatalf("%d events, [DONE] %t", len(events), done)
	}
	for i, ev := range events {
		has(fmt.Sprintf("chunk %d", i), ev, "id", "object", "created", "model", "choices")
		if ev["object"] != "chat.completion.chunk" || ev["id"] != events[0]["id"] {
			t.Errorf("chunk %d: %v", i, ev)
		}
	}
	last := events[len(events)-1]
	if len(last["choices"].([]any)) != 0 || last["usage"] == nil {
		t.Errorf("the usage chunk: %v", last)
	}
	// An error is {"error": {"message", "type", "param", "code"}}, as the
	// client's APIStatusError reads it.
	resp = do("POST", "/v1/chat/completions", `{"messages":[],"model":"tiny"}`)
	var e map[string]map[string]any
	json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	has("error", e["error"], "message", "type", "param", "code")
}

// The load generator times requests, not connection set-up: each client
// connects before the run and then sends every request on that one
// connection (a stream read only to [DONE] used to leave the connection
// unusable, and every request opened a new one).
func TestLoadReusesConnections(t *testing.T) {
	l := loadModel(t, true)
	s, err := New(Config{Backend: NewCPUBackend(l.run, dtype.F32), Tokenizer: l.tok, Flash: l.flash, ModelName: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	// The chunked encoding's last chunk comes after a pause (it is written
	// once the handler returns, often in a packet of its own).
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.Handler().ServeHTTP(w, r)
		if f, ok := w.(http.Flusher); ok && r.Method == http.MethodPost {
			f.Flush()
			time.Sleep(5 * time.Millisecond)
		}
	}))
	hs.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	hs.Start()
	t.Cleanup(func() { s.Close(); hs.Close() })
	for _, stream := range []bool{true, false} {
		conns.Store(0)
		rep, err := Load(context.Background(), LoadConfig{URL: hs.URL, Clients: 3, Requests: 6, MaxTokens: 5,
			Prompt: "Once upon a time", Stream: stream, IgnoreEOS: true, Timeout: time.Minute})
		if err != nil || rep.OK != 18 {
			t.Fatalf("stream=%t: %v %+v", stream, err, rep)
		}
		if n := conns.Load(); n != 3 {
			t.Errorf("stream=%t: 3 clients opened %d connections for 18 requests", stream, n)
		}
	}
}

// A server that closes its connections, saying so or not, costs the load
// generator new connections, never errors: a response with "Connection:
// close" ends its connection, and a request on a connection the server
// dropped while it was idle is sent again on a new one.
func TestLoadReconnects(t *testing.T) {
	l := loadModel(t, true)
	s, err := New(Config{Backend: NewCPUBackend(l.run, dtype.F32), Tokenizer: l.tok, Flash: l.flash, ModelName: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for _, silent := range []bool{false, true} {
		var conns atomic.Int64
		hs := httptest.NewUnstartedServer(s.Handler())
		hs.Config.ConnState = func(c net.Conn, st http.ConnState) {
			switch {
			case st == http.StateNew:
				conns.Add(1)
			case st == http.StateIdle && silent:
				c.Close()
			}
		}
		hs.Config.SetKeepAlivesEnabled(silent)
		hs.Start()
		rep, err := Load(context.Background(), LoadConfig{URL: hs.URL, Clients: 2, Requests: 4, MaxTokens: 3,
			Prompt: "Once upon a time", Stream: true, IgnoreEOS: true, Timeout: time.Minute})
		hs.Close()
		if err != nil || rep.OK != 8 || rep.CompletionTokens != 24 {
			t.Fatalf("silent=%t: %v %+v", silent, err, rep)
		}
		if n := conns.Load(); n != 8 {
			t.Errorf("silent=%t: %d connections for 8 requests that each ended theirs", silent, n)
		}
	}
}

// writeLog is a listener whose connections record each Write.
type writeLog struct {
	net.Listener
	mu     sync.Mutex
	writes [][]byte
}

func (l *writeLog) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	return &loggedConn{Conn: c, log: l}, err
}

type loggedConn struct {
	net.Conn
	log *writeLog
}

func (c *loggedConn) Write(b []byte) (int, error) {
	c.log.mu.Lock()
	c.log.writes = append(c.log.writes, append([]byte(nil), b...))
	c.log.mu.Unlock()
	return c.Conn.Write(b)
}

// A stream's last events go out in one write with the chunked body's
// terminator (a flush of their own made one more write on the server and
// one more read on the client, per request).
func TestStreamEndsInOneWrite(t *testing.T) {
	l := loadModel(t, true)
	s, err := New(Config{Backend: NewCPUBackend(l.run, dtype.F32), Tokenizer: l.tok, Flash: l.flash, ModelName: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(s.Handler())
	wl := &writeLog{Listener: hs.Listener}
	hs.Listener = wl
	hs.Start()
	t.Cleanup(func() { s.Close(); hs.Close() })
	for _, chat := range []bool{false, true} {
		path, body := "/v1/completions", `{"prompt": "Once upon a time", "max_tokens": 12, "stream": true, "ignore_eos": true, "stream_options": {"include_usage": true}}`
		if chat {
			path, body = "/v1/chat/completions", `{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 12, "stream": true, "ignore_eos": true}`
		}
		wl.mu.Lock()
		wl.writes = nil
		wl.mu.Unlock()
		code, _, b := post(t, hs.URL+path, body)
		if code != 200 || !strings.HasSuffix(string(b), "data: [DONE]\n\n") {
			t.Fatalf("%s: status %d, body %q", path, code, b)
		}
		wl.mu.Lock()
		writes := wl.writes
		wl.mu.Unlock()
		if len(writes) == 0 {
			t.Fatalf("%s: no writes logged", path)
		}
		lastWrite := string(writes[len(writes)-1])
		// (Chunked, the write ends with the terminator; a stream that
		// ended before its first flush has a Content-Length instead.)
		if !strings.Contains(lastWrite, "data: [DONE]") {
			t.Errorf("%s: the last events and the terminator came in separate writes; last write %q", path, lastWrite)
		}
	}
}

// A request whose prompt starts like a finished request's tokens computes
// only the rest: the same prompt again is served from the first one's
// cache (all but its last token) and gives the same greedy text as alone.
// A cache cannot serve it once the sliding layers' rings have moved past
// the shared start (gemma3-tiny: window 8, ring 8 + MaxChunk), nor with
// NoPrefixCache.
func TestPrefixCache(t *testing.T) {
	for _, c := range []struct {
		name      string
		off       bool
		maxTokens int
		cached    bool
	}{{"reused", false, 24, true}, {"ring moved on", false, model.MaxChunk + 20, false}, {"off", true, 24, false}} {
		t.Run(c.name, func(t *testing.T) {
			ts := startServer(t, true, func(cfg *Config) { cfg.NoPrefixCache = c.off })
			prompt := "Once upon a time there was"
			ids := ts.l.tok.Encode(prompt, true)
			want := reference(t, ts.l, ids, c.maxTokens).Text
			for round := range 2 {
				before := ts.metrics.cachedTokens.Load()
				body := fmt.Sprintf(`{"prompt": %q, "max_tokens": %d, "temperature": 0, "ignore_eos": true}`, prompt, c.maxTokens)
				code, _, b := post(t, ts.url+"/v1/completions", body)
				var r completionResponse
				if err := json.Unmarshal(b, &r); err != nil || code != 200 || len(r.Choices) != 1 {
					t.Fatalf("round %d: %d %s", round, code, b)
				}
				if r.Choices[0].Text != want {
					t.Errorf("round %d: %q, alone %q", round, r.Choices[0].Text, want)
				}
				wantCached := 0
				if round == 1 && c.cached {
					wantCached = len(ids) - 1
				}
				if got := int(ts.metrics.cachedTokens.Load() - before); got != wantCached {
					t.Errorf("round %d: %d prompt tokens from a reused cache, want %d", round, got, wantCached)
				}
			}
		})
	}
}

// The text report names error kinds only when there are some, and counts
// one client in the singular.
func TestLoadReportText(t *testing.T) {
	var b strings.Builder
	(&LoadReport{Clients: 1, Requests: 2, OK: 2}).WriteText(&b, "single client")
	if got := b.String(); !strings.HasPrefix(got, "single client: 1 client, 2 requests: 2 ok, 0 errors in ") {
		t.Errorf("no errors: %q", got)
	}
	b.Reset()
	(&LoadReport{Clients: 3, Requests: 3, OK: 2, Errors: 1, ErrorKinds: map[string]int{"http 429": 1}}).WriteText(&b, "3 clients")
	if got := b.String(); !strings.HasPrefix(got, "3 clients: 3 clients, 3 requests: 2 ok, 1 errors map[http 429:1] in ") {
		t.Errorf("one error: %q", got)
	}
}

// The scheduler hands over to a handler at once (Config.handOver) after a
// step that gave it a stream's first text or its request's end, and only
// then: a stream's later tokens wait for the periodic yield and go out
// together, not in one write each.
func TestHandOver(t *testing.T) {
	var n atomic.Int64
	ts := startServer(t, true, func(c *Config) { c.handOver = func() { n.Add(1); runtime.Gosched() } })
	for _, c := range []struct {
		name, body string
		want       int64
	}{
		{"stream", `{"prompt": "Once upon a time", "max_tokens": 16, "ignore_eos": true, "stream": true}`, 2},
		{"whole", `{"prompt": "Once upon a time", "max_tokens": 16, "ignore_eos": true}`, 1},
	} {
		n.Store(0)
		code, _, b := post(t, ts.url+"/v1/completions", c.body)
		if code != 200 {
			t.Fatalf("%s: status %d: %s", c.name, code, b)
		}
		// The hand-over after the last step may follow the response.
		waitFor(t, c.name+" hand-overs", func() bool { return n.Load() >= c.want })
		if got := n.Load(); got != c.want {
			t.Errorf("%s: %d hand-overs for one request of 16 tokens, want %d", c.name, got, c.want)
		}
	}
}
