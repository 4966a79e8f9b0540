package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/fhkit/fhkit/internal/cli"
	"github.com/fhkit/fhkit/runtime/serve"
)

const serveHelp = `Usage: fh-run serve --model F [flags]

Serves the model over an OpenAI-compatible HTTP API:
  POST /v1/completions        text completion (stream: true for SSE)
  POST /v1/chat/completions   chat with the model's chat template
  GET  /v1/models             the served model
  GET  /health                200 while serving, 503 while shutting down
  GET  /metrics               Prometheus text: requests, tokens, queue
                              depth, time to first token, inter-token latency

Concurrent requests decode together (continuous batching): every step runs
one forward pass for up to --max-batch sequences, and requests join and
leave between steps. Up to --max-queue more requests wait for a slot; beyond
that the server answers 429 with Retry-After. Each request may use --ctx
tokens (prompt and output). While several requests decode together, a
stream's new text waits up to --stream-interval to go out with the next
steps' (one event instead of several: each costs a write on the server and
a read on the client, as much CPU as decoding a token of a small model); a
request decoding alone gets every token at once. A client that disconnects
cancels its request and frees its slot. A finished request's KV cache
serves the next request whose prompt starts with the same tokens (a chat
template, a system prompt): only the rest of the prompt is computed
(--prefix-cache=false turns this off). SIGTERM or SIGINT stops
accepting requests and lets the running ones finish for
--shutdown-timeout, then cancels them.

Greedy output (temperature 0) is the text 'fh-run generate' prints for the
same prompt and head (the FlashHead when the file has one, unless --head
dense). OpenAI's defaults apply: temperature 1, top_p 1. Extensions with
vLLM's names: top_k, min_p, repetition_penalty, ignore_eos.

With --device cuda the forward pass runs on the GPU: each request has its
own KV cache in device memory next to one copy of the weights, and a step
is one batched pass over all running sequences there too; the head
(FlashHead or dense sampling) and the scheduler stay on the CPU. Nothing of
this has run on a GPU yet: it is tested through the project's CPU emulator
of the CUDA driver (runtime/cuda/README.md).

Examples:
  fh-run serve --model model-fh.fhm --addr 127.0.0.1:8080
  fh-run serve --model gemma.fhm --max-batch 16 --max-queue 64 --ctx 4096 --kv bf16
  fh-run serve --model gemma-fh-w4.fhm --device cuda --max-batch 64
  curl -s 127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{"model":"model-fh","messages":[{"role":"user","content":"Hello"}],"max_tokens":32}'

Flags:
`

// serveFlags are serve's own flags (next to the runtime flags).
type serveFlags struct {
	addr            string
	device          string
	maxBatch        int
	maxQueue        int
	modelName       string
	shutdownTimeout time.Duration
	streamInterval  time.Duration
	prefixCache     bool
	quiet           bool
}

func (s *serveFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&s.addr, "addr", "127.0.0.1:8080", "listen address (host:port; port 0 picks a free port)")
	fs.StringVar(&s.device, "device", "cpu", deviceUsage)
	fs.IntVar(&s.maxBatch, "max-batch", serve.DefaultMaxBatch, "requests decoded together in one batched step")
	fs.IntVar(&s.maxQueue, "max-queue", serve.DefaultMaxQueue, "requests waiting for a slot before new ones get 429")
	fs.StringVar(&s.modelName, "model-name", "", "model id in the API (default: the file name without .fhm)")
	fs.DurationVar(&s.shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM, how long running requests may take to finish before they are cancelled")
	fs.DurationVar(&s.streamInterval, "stream-interval", serve.DefaultStreamInterval, "while several requests decode together, how long a stream's new text may wait to go out with the next (0: every token at once)")
	fs.BoolVar(&s.prefixCache, "prefix-cache", true, prefixCacheUsage)
	fs.BoolVar(&s.quiet, "quiet", false, "no per-request log lines on standard error")
}

const prefixCacheUsage = "reuse finished requests' KV caches for the prompt tokens they share with a new one (--prefix-cache=false: compute every prompt whole)"

func (s *serveFlags) check() error {
	if err := checkDevice(s.device); err != nil {
		return err
	}
	if s.maxBatch < 1 {
		return cli.Usagef("--max-batch %d must be >= 1", s.maxBatch)
	}
	if s.maxQueue < 1 {
		return cli.Usagef("--max-queue %d must be >= 1", s.maxQueue)
	}
	if s.streamInterval < 0 {
		return cli.Usagef("--stream-interval %s must be >= 0", s.streamInterval)
	}
	if s.shutdownTimeout < 0 {
		return cli.Usagef("--shutdown-timeout %s must be >= 0", s.shutdownTimeout)
	}
	return nil
}

// newServer builds a server over a loaded model on the --device backend
// (the device choice reported on msg, requests logged on logw); closeBackend
// frees the device once the server is closed.
func (s *serveFlags) newServer(rf *runtimeFlags, l *loaded, msg, logw io.Writer) (srv *serve.Server, b serve.Backend, closeBackend func(), err error) {
	dr, err := openDevice(s.device, l, rf, msg)
	if err != nil {
		return nil, nil, nil, err
	}
	b, closeBackend = serve.NewCPUBackend(l.run, l.kv), func() {}
	if dr != nil {
		b, closeBackend = serve.NewCUDABackend(dr, l.pool), func() { closeDevice(dr) }
	}
	name := s.modelName
	if name == "" {
		name = serve.DefaultModelName(rf.model)
	}
	if s.quiet {
		logw = nil
	}
	interval := s.streamInterval
	if interval == 0 {
		interval = -1 // Config: every token at once
	}
	srv, err = serve.New(serve.Config{Backend: b, Tokenizer: l.tok, Flash: l.flash, Ctx: rf.ctx,
		MaxBatch: s.maxBatch, MaxQueue: s.maxQueue, StreamInterval: interval, NoPrefixCache: !s.prefixCache, ModelName: name, Log: logw})
	if err != nil {
		closeBackend()
		return nil, nil, nil, fmt.Errorf("%s: %w", rf.model, err)
	}
	return srv, b, closeBackend, nil
}

func runServe(args []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return serveUntil(ctx, args, stdout, stderr, nil)
}

// serveUntil serves until ctx ends, then shuts down gracefully. ready, when
// set, is called with the listening address.
func serveUntil(ctx context.Context, args []string, stdout, stderr io.Writer, ready func(addr string)) error {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	var rf runtimeFlags
	var sf serveFlags
	rf.register(fs)
	sf.register(fs)
	if err := parse(fs, args, serveHelp, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("serve: unexpected argument %q", fs.Arg(0))
	}
	if err := sf.check(); err != nil {
		return err
	}
	l, err := rf.load(true)
	if err != nil {
		return err
	}
	defer l.Close()
	srv, backend, closeBackend, err := sf.newServer(&rf, l, stderr, stderr)
	if err != nil {
		return err
	}
	defer closeBackend()
	ln, err := net.Listen("tcp", sf.addr)
	if err != nil {
		srv.Close()
		return fmt.Errorf("serve: %w", err)
	}
	head := "dense"
	if l.flash != nil {
		head = fmt.Sprintf("flashhead (%d clusters, %d probes)", l.flash.K, l.flash.Probes)
	}
	fmt.Fprintf(stderr, "serving %s as %q on http://%s (device %s, head %s, context %d, max batch %d, max queue %d)\n",
		rf.model, srv.ModelName(), ln.Addr(), backend.Device(), head, srv.ContextLimit(), sf.maxBatch, sf.maxQueue)
	if ready != nil {
		ready(ln.Addr().String())
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		srv.Close()
		return err
	case <-ctx.Done():
	}
	fmt.Fprintf(stderr, "shutting down: finishing running requests (up to %s)\n", sf.shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), sf.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		fmt.Fprintf(stderr, "shutdown: deadline reached, running requests cancelled\n")
	}
	<-done
	fmt.Fprintln(stderr, "stopped")
	return nil
}
