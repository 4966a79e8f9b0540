// Package serve is an OpenAI-compatible HTTP server over a loaded model:
// POST /v1/completions and /v1/chat/completions (streamed as server-sent
// events or not), GET /v1/models, /health and /metrics (Prometheus text).
// Requests are decoded together by a continuous-batching scheduler: one
// batched forward pass per step for every running sequence, which join and
// leave between steps; a bounded queue answers 429 when full.
package serve

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	randv2 "math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/fhkit/fhkit/runtime/generate"
	"github.com/fhkit/fhkit/runtime/head"
	"github.com/fhkit/fhkit/runtime/sample"
	"github.com/fhkit/fhkit/runtime/tokenizer"
)

// Defaults of Config.
const (
	DefaultMaxBatch = 32
	DefaultMaxQueue = 256
	// DefaultStreamInterval is how long a streamed response's new text
	// may wait for more while other requests share the batch (see
	// Config.StreamInterval). Only streams faster than 200 tokens/s are
	// held back at all (a Gemma-3-1B-class model on a CPU, some tens of
	// tokens/s per stream, sends every token at once), and 200 events a
	// second is faster than a screen shows them; a tiny model's 32 streams
	// gain ~8% throughput over 2 ms (README, Serving).
	DefaultStreamInterval = 5 * time.Millisecond
)

// Config configures a Server.
type Config struct {
	// Backend runs the model (NewCPUBackend, NewCUDABackend); the
	// server's scheduler goroutine becomes its only user.
	Backend Backend
	// Tokenizer encodes prompts, renders chat templates, decodes output.
	Tokenizer *tokenizer.Tokenizer
	// Flash picks tokens with the FlashHead; nil means the dense head.
	Flash *head.FlashHead
	// Ctx is each request's context limit in tokens (prompt and output);
	// 0 or more than the model's maximum means the model's maximum.
	Ctx int
	// MaxBatch is how many requests decode together (0: DefaultMaxBatch).
	MaxBatch int
	// MaxQueue is how many requests may wait for a slot beyond the free
	// ones before new requests get 429 (0: DefaultMaxQueue).
	MaxQueue int
	// StreamInterval bounds how long a streamed response's new text waits
	// before it is written while the batch decodes several requests: the
	// text of the steps in between goes out in one event. Every event
	// costs a write and a wake-up on the server and a read on the client,
	// as much CPU as decoding the token on a small model, so under load
	// this gives decoding the CPU. A request decoding alone, first tokens
	// and the end are written at once. 0 means DefaultStreamInterval; a
	// negative value writes every token's text at once.
	StreamInterval time.Duration
	// NoPrefixCache turns off the reuse of finished requests' KV caches:
	// by default a new request takes the spare cache that shares the
	// longest start with its prompt and computes only the rest (chat
	// templates and system prompts repeat).
	NoPrefixCache bool
	// ModelName is the model's id in the API (empty: "fhkit").
	ModelName string
	// Log receives one line per request (nil: no log).
	Log io.Writer
	// beforeStep, when set (by tests), runs at the top of every scheduler
	// iteration.
	beforeStep func()
	// handOver, when set (by tests), replaces the scheduler's yield to a
	// handler it gave a first text or an end (runtime.Gosched).
	handOver func()
}

// Server is an OpenAI-compatible server. Create it with New, serve its
// Handler (or call Serve), and stop it with Shutdown or Close.
type Server struct {
	cfg     Config
	limit   int
	engine  *engine
	metrics *metrics
	log     *log.Logger
	mux     *http.ServeMux
	http    *http.Server
	created int64
}

// New checks cfg and starts the scheduler.
func New(cfg Config) (*Server, error) {
	if cfg.Backend == nil {
		return nil, errors.New("serve: a backend is required")
	}
	if cfg.Tokenizer == nil {
		return nil, errors.New("serve: a tokenizer is required")
	}
	if cfg.MaxBatch < 0 || cfg.MaxQueue < 0 || cfg.Ctx < 0 {
		return nil, fmt.Errorf("serve: max batch %d, max queue %d and context %d must be >= 0", cfg.MaxBatch, cfg.MaxQueue, cfg.Ctx)
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.MaxQueue == 0 {
		cfg.MaxQueue = DefaultMaxQueue
	}
	if cfg.StreamInterval == 0 {
		cfg.StreamInterval = DefaultStreamInterval
	}
	if cfg.ModelName == "" {
		cfg.ModelName = "fhkit"
	}
	// A sequence reports its effective limit (the model's maximum caps
	// --ctx) and checks the KV precision once, here rather than per
	// request.
	st, err := cfg.Backend.NewSequence(cfg.Ctx)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	limit := st.Limit()
	if err := st.Close(); err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	s := &Server{cfg: cfg, limit: limit, metrics: newMetrics(), mux: http.NewServeMux(), created: time.Now().Unix()}
	if cfg.Log != nil {
		s.log = log.New(cfg.Log, "", log.LstdFlags|log.Lmicroseconds)
	}
	s.engine = newEngine(&s.cfg, s.metrics)
	s.mux.HandleFunc("/v1/completions", func(w http.ResponseWriter, r *http.Request) { s.handleGenerate(w, r, false) })
	s.mux.HandleFunc("/v1/chat/completions", func(w http.ResponseWriter, r *http.Request) { s.handleGenerate(w, r, true) })
	s.mux.HandleFunc("/v1/models", s.handleModels)
	s.mux.HandleFunc("/health", s.handleHealth)
	s.mux.HandleFunc("/metrics", s.handleMetrics)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{Status: 404, Message: fmt.Sprintf("no route %s %s", r.Method, r.URL.Path), Type: "invalid_request_error"})
	})
	go s.engine.loop()
	return s, nil
}

// ModelName is the model's id in the API.
func (s *Server) ModelName() string { return s.cfg.ModelName }

// ContextLimit is each request's context limit in tokens.
func (s *Server) ContextLimit() int { return s.limit }

// Handler returns the HTTP handler (every route, with request logging and
// counting).
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// Serve accepts connections on ln until Shutdown or Close; it returns nil
// after a shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.http = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	if err := s.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	}
	return nil
}

// Shutdown stops accepting requests and lets the running and queued ones
// finish; when ctx ends first, it cancels them (streams get an error event,
// others a 503) and closes the remaining connections. It returns ctx's
// error in that case.
func (s *Server) Shutdown(ctx context.Context) error {
	s.engine.close()
	var err error
	if s.http != nil {
		if err = s.http.Shutdown(ctx); err != nil {
			s.engine.cancelAll()
			// Handlers of cancelled jobs answer within a step; give them a
			// moment to tell their clients before cutting connections.
			grace, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if s.http.Shutdown(grace) != nil {
				s.http.Close()
			}
			cancel()
		}
	}
	if werr := s.engine.wait(ctx); err == nil {
		err = werr
	}
	return err
}

// Close cancels every request and stops the scheduler at once.
func (s *Server) Close() {
	s.engine.close()
	s.engine.cancelAll()
	if s.http != nil {
		s.http.Close()
	}
	<-s.engine.exited
}

// recorder keeps the status and a note of a response for the request log
// and the request counter. It passes Flush through for streaming.
type recorder struct {
	http.ResponseWriter
	status int
	note   string
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = 200
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	s.mux.ServeHTTP(rec, r)
	endpoint := r.URL.Path
	switch endpoint {
	case "/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics":
	default:
		endpoint = "other" // unknown paths must not grow the label set
	}
	if rec.status == 0 {
		rec.status = 200
	}
	s.metrics.request(endpoint, rec.status)
	if endpoint == "/v1/completions" || endpoint == "/v1/chat/completions" {
		s.metrics.duration.observe(time.Since(start).Seconds())
	}
	if s.log != nil {
		s.log.Printf("%s %s %s %d %s %s", r.RemoteAddr, r.Method, r.URL.Path, rec.status, time.Since(start).Round(time.Microsecond), rec.note)
	}
}

// writeJSON writes v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// writeError writes an OpenAI-style error body.
func writeError(w http.ResponseWriter, e *apiError) {
	if rec, ok := w.(*recorder); ok {
		rec.note = "error=" + strconvQuote(e.Message)
	}
	writeJSON(w, e.Status, map[string]*apiError{"error": e})
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func allow(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method {
		return true
	}
	w.Header().Set("Allow", method)
	writeError(w, &apiError{Status: 405, Message: fmt.Sprintf("%s %s: use %s", r.Method, r.URL.Path, method), Type: "invalid_request_error"})
	return false
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet) {
		return
	}
	writeJSON(w, 200, modelList{Object: "list", Data: []modelCard{{ID: s.cfg.ModelName, Object: "model", Created: s.created, OwnedBy: "fhkit", MaxModelLen: s.limit}}})
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet) {
		return
	}
	s.engine.mu.Lock()
	closed := s.engine.closed
	s.engine.mu.Unlock()
	if closed {
		writeJSON(w, 503, map[string]string{"status": "shutting down"})
		return
	}
	writeJSON(w, 200, map[string]string{"status": "ok"})
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet) {
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	s.metrics.write(w)
}

// newID returns a response id with prefix.
func newID(prefix string) string {
	var b [12]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// promptIDs tokenizes a request's prompt the way fh-run generate does: a
// text prompt with the tokenizer's BOS, a chat rendered by the model's
// template (which writes its own BOS).
func (s *Server) promptIDs(p *params) ([]int, *apiError) {
	tok := s.cfg.Tokenizer
	V := s.cfg.Backend.Model().Config.VocabSize
	switch {
	case p.chat:
		if tok.ChatTemplate() == nil {
			return nil, badRequest("messages", "the model has no chat template; use /v1/completions")
		}
		text, err := tok.RenderChat(p.messages, true)
		if err != nil {
			return nil, badRequest("messages", "%v", err)
		}
		return tok.Encode(text, false), nil
	case p.ids != nil:
		for _, id := range p.ids {
			if id >= V {
				return nil, badRequest("prompt", "token id %d outside the vocabulary [0, %d)", id, V)
			}
		}
		return p.ids, nil
	}
	return tok.Encode(p.prompt, true), nil
}

// handleGenerate serves both generation endpoints.
func (s *Server) handleGenerate(w http.ResponseWriter, r *http.Request, chat bool) {
	if !allow(w, r, http.MethodPost) {
		return
	}
	arrived := time.Now()
	j, p, perr := s.prepare(r.Body, chat)
	if perr != nil {
		writeError(w, perr)
		return
	}
	j.arrived = arrived
	switch err := s.engine.submit(j); {
	case errors.Is(err, errQueueFull):
		w.Header().Set("Retry-After", "1")
		writeError(w, withCode(&apiError{Status: 429, Message: "the server is at capacity (queue full); retry later", Type: "rate_limit_error"}, "rate_limit_exceeded"))
		return
	case err != nil:
		writeError(w, &apiError{Status: 503, Message: err.Error(), Type: "server_error"})
		return
	}
	// The job never outlives its handler: a client that goes away, or a
	// handler that returns for any reason, frees the slot.
	defer j.cancel()
	id, object := newID("cmpl-"), "text_completion"
	if chat {
		id, object = newID("chatcmpl-"), "chat.completion"
	}
	resp := responder{s: s, w: w, r: r, p: p, j: j, id: id, object: object, created: arrived.Unix(), prompt: len(j.prompt)}
	if p.stream {
		resp.stream()
	} else {
		resp.whole()
	}
}

// prepare decodes and validates a generation request and turns it into a
// job: everything but running it, so that bad input is answered with a 400
// before it takes a place in the queue.
func (s *Server) prepare(body io.Reader, chat bool) (*job, *params, *apiError) {
	var p *params
	var perr *apiError
	if chat {
		p, perr = parseChat(body)
	} else {
		p, perr = parseCompletion(body)
	}
	if perr != nil {
		return nil, nil, perr
	}
	if p.requestedName != "" && p.requestedName != s.cfg.ModelName {
		return nil, nil, withCode(badRequest("model", "model %q does not exist; this server serves %q", p.requestedName, s.cfg.ModelName), "model_not_found")
	}
	ids, perr := s.promptIDs(p)
	if perr != nil {
		return nil, nil, perr
	}
	promptParam := "prompt"
	if chat {
		promptParam = "messages"
	}
	if len(ids) == 0 {
		return nil, nil, badRequest(promptParam, "the prompt is empty")
	}
	if len(ids) >= s.limit {
		return nil, nil, withCode(badRequest(promptParam, "the prompt has %d tokens; the context limit is %d tokens", len(ids), s.limit), "context_length_exceeded")
	}
	maxTokens := p.maxTokens
	if maxTokens == 0 {
		maxTokens = s.limit - len(ids)
	} else if len(ids)+maxTokens > s.limit {
		return nil, nil, withCode(badRequest("max_tokens", "max_tokens %d and the prompt's %d tokens exceed the context limit of %d tokens", maxTokens, len(ids), s.limit), "context_length_exceeded")
	}
	sp := p.sample
	if !p.seeded {
		sp.Seed = randv2.Uint64()
	}
	return &job{
		prompt:  ids,
		opts:    generate.Options{MaxTokens: maxTokens, Sample: sp, Stop: p.stop, IgnoreEOS: p.ignoreEOS},
		sampler: sample.New(sp),
		limit:   s.limit,
		events:  p.stream,
	}, p, nil
}

// responder writes one generation's response.
type responder struct {
	s       *Server
	w       http.ResponseWriter
	r       *http.Request
	p       *params
	j       *job
	id      string
	object  string
	created int64
	prompt  int
}

// wait returns the next text (appended to buf) and whether the job has
// ended, or ok false when the client has gone away (the job is then
// cancelled).
func (a *responder) wait(buf []byte) (text []byte, done bool, res result, ok bool) {
	for {
		text, done, res = a.j.out.take(buf[:0])
		if len(text) > 0 || done {
			return text, done, res, true
		}
		select {
		case <-a.j.out.notify:
		case <-a.r.Context().Done():
			a.j.cancel()
			return nil, false, result{}, false
		}
	}
}

func (a *responder) note(res result) {
	if rec, ok := a.w.(*recorder); ok {
		rec.note = fmt.Sprintf("stream=%t prompt_tokens=%d completion_tokens=%d finish=%s", a.p.stream, a.prompt, res.tokens, res.reason)
		if res.err != nil {
			rec.note += " error=" + strconvQuote(res.err.Error())
		}
	}
}

// failure maps a job that did not finish normally to an API error.
func failure(res result) *apiError {
	if res.reason == "cancelled" {
		return &apiError{Status: 503, Message: "the request was cancelled: the server is shutting down", Type: "server_error"}
	}
	msg := "generation failed"
	if res.err != nil {
		msg += ": " + res.err.Error()
	}
	return &apiError{Status: 500, Message: msg, Type: "server_error"}
}

func (a *responder) usage(res result) usage {
	return usage{PromptTokens: a.prompt, CompletionTokens: res.tokens, TotalTokens: a.prompt + res.tokens}
}

// whole waits for the whole generation and writes one JSON response.
func (a *responder) whole() {
	var b strings.Builder
	var buf []byte
	for {
		text, done, res, ok := a.wait(buf)
		if !ok {
			a.note(result{reason: "client-gone"})
			return
		}
		buf = text
		b.Write(text)
		if !done {
			continue
		}
		a.note(res)
		if res.reason == "cancelled" || res.reason == "error" {
			writeError(a.w, failure(res))
			return
		}
		fin := finishReason(res.reason)
		u := a.usage(res)
		if a.p.chat {
			writeJSON(a.w, 200, chatResponse{ID: a.id, Object: a.object, Created: a.created, Model: a.s.cfg.ModelName,
				Choices: []chatChoice{{Message: chatMessageOut{Role: "assistant", Content: b.String()}, FinishReason: fin}}, Usage: u})
		} else {
			writeJSON(a.w, 200, completionResponse{ID: a.id, Object: a.object, Created: a.created, Model: a.s.cfg.ModelName,
				Choices: []completionChoice{{Text: b.String(), FinishReason: &fin}}, Usage: &u})
		}
		return
	}
}

// stream writes the generation as server-sent events: one chunk per batch
// of text that is ready, a last chunk with the finish reason, a usage chunk
// when stream_options.include_usage is set, and "data: [DONE]".
func (a *responder) stream() {
	h := a.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	a.w.WriteHeader(200)
	chunkObject := "text_completion"
	if a.p.chat {
		chunkObject = "chat.completion.chunk"
	}
	flusher, _ := a.w.(http.Flusher)
	send := func(v any) bool {
		data, _ := json.Marshal(v)
		if _, err := fmt.Fprintf(a.w, "data: %s\n\n", data); err != nil {
			a.j.cancel()
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	piece := func(text string, fin *string) any {
		if a.p.chat {
			d := chatDelta{}
			if fin == nil {
				d.Content = &text
			}
			return chatChunk{ID: a.id, Object: chunkObject, Created: a.created, Model: a.s.cfg.ModelName, Choices: []chatChunkChoice{{Delta: d, FinishReason: fin}}}
		}
		return completionResponse{ID: a.id, Object: chunkObject, Created: a.created, Model: a.s.cfg.ModelName, Choices: []completionChoice{{Text: text, FinishReason: fin}}}
	}
	// Text events are the bulk of a stream: they are written from the
	// event's JSON rendered once around a marker, with only the text
	// escaped per event, into a reused buffer (no reflection or allocation
	// per token).
	head, tail := splitTemplate(piece)
	// Events are appended to a reused buffer and written with one flush:
	// each text as it comes, and at the end the last text, the finish
	// chunk, the usage chunk and [DONE] together (every flush is a write
	// on the server and a read on the client).
	var buf, events []byte
	appendText := func(text []byte) {
		events = append(events, "data: "...)
		events = append(events, head...)
		events = appendJSONString(events, text)
		events = append(events, tail...)
		events = append(events, "\n\n"...)
	}
	appendEvent := func(v any) {
		data, _ := json.Marshal(v)
		events = append(events, "data: "...)
		events = append(events, data...)
		events = append(events, "\n\n"...)
	}
	flush := func() bool {
		_, err := a.w.Write(events)
		events = events[:0]
		if err != nil {
			a.j.cancel()
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	// The last events are only buffered: net/http writes them with the
	// chunked body's terminator when the handler returns, one write for
	// the server and one read for the client where a flush would make two.
	last := func() {
		a.w.Write(events)
		events = events[:0]
	}
	if a.p.chat {
		empty := ""
		if !send(chatChunk{ID: a.id, Object: chunkObject, Created: a.created, Model: a.s.cfg.ModelName, Choices: []chatChunkChoice{{Delta: chatDelta{Role: "assistant", Content: &empty}}}}) {
			return
		}
	}
	for {
		text, done, res, ok := a.wait(buf)
		if !ok {
			a.note(result{reason: "client-gone"})
			return
		}
		buf = text
		if len(text) > 0 {
			appendText(text)
		}
		if !done {
			if !flush() {
				a.note(result{reason: "client-gone"})
				return
			}
			continue
		}
		a.note(res)
		if res.reason == "cancelled" || res.reason == "error" {
			appendEvent(map[string]*apiError{"error": failure(res)})
			events = append(events, "data: [DONE]\n\n"...)
			last()
			return
		}
		fin := finishReason(res.reason)
		appendEvent(piece("", &fin))
		if a.p.includeUsage {
			u := a.usage(res)
			if a.p.chat {
				appendEvent(chatChunk{ID: a.id, Object: chunkObject, Created: a.created, Model: a.s.cfg.ModelName, Choices: []chatChunkChoice{}, Usage: &u})
			} else {
				appendEvent(completionResponse{ID: a.id, Object: chunkObject, Created: a.created, Model: a.s.cfg.ModelName, Choices: []completionChoice{}, Usage: &u})
			}
		}
		events = append(events, "data: [DONE]\n\n"...)
		last()
		return
	}
}

// DefaultModelName derives an API model id from a model file path: its
// base name without the extension.
func DefaultModelName(path string) string {
	return strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
}
