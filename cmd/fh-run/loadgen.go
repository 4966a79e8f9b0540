package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/fhkit/fhkit/internal/cli"
	"github.com/fhkit/fhkit/runtime/serve"
)

const loadgenHelp = `Usage: fh-run loadgen (--url URL | --model F) [flags]

Load-tests an OpenAI-compatible server on the loopback: --clients
concurrent clients each send --requests requests one after the other, and
the report gives throughput (completion tokens per second over the wall
time, from each response's usage) and percentiles of the time to first
token, the inter-token latency and the request latency. With --baseline
(the default) one client first sends --baseline-requests requests alone
(default: as many as the concurrent run sends in all, so both runs last
long enough to measure), and the report ends with the ratio of the two
throughputs: what continuous batching buys. Each run's clients open their
connections before the clock starts (a GET /health each) and send all
their requests on them, so a run times requests, not TCP handshakes.
--rounds N repeats the pair of runs N times, alternating, and reports the
round with the median ratio (the lower one for even N) and every round's
figures: on a shared machine one short run can catch a pause, and the
pairs tell the ratio from the moment's speed.

--model starts the server in this process on 127.0.0.1 (with the runtime
flags below, as 'fh-run serve'); --url targets a running one. Only loopback
addresses are accepted, the number of requests is bounded, and --timeout
bounds the run. Requests use ignore_eos (unless --stop-at-eos), so each
generates exactly --max-tokens tokens and runs compare.

Examples:
  fh-run loadgen --model out/demo/model-fh.fhm --clients 32 --requests 4
  fh-run loadgen --model out/demo/model-fh.fhm --rounds 9 --json
  fh-run serve --model m.fhm & fh-run loadgen --url http://127.0.0.1:8080 --chat --json

Flags:
`

func runLoadgen(args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("loadgen", pflag.ContinueOnError)
	var rf runtimeFlags
	rf.register(fs)
	sf := serveFlags{device: "cpu", quiet: true}
	fs.BoolVar(&sf.prefixCache, "prefix-cache", true, "with --model: "+prefixCacheUsage)
	fs.IntVar(&sf.maxBatch, "max-batch", serve.DefaultMaxBatch, "with --model: requests decoded together")
	fs.IntVar(&sf.maxQueue, "max-queue", serve.DefaultMaxQueue, "with --model: requests waiting for a slot")
	fs.DurationVar(&sf.streamInterval, "stream-interval", serve.DefaultStreamInterval, "with --model: as 'fh-run serve --stream-interval' (0: every token at once)")
	fs.StringVar(&sf.device, "device", "cpu", "with --model: "+deviceUsage)
	target := fs.String("url", "", "base URL of a running server (loopback only)")
	clients := fs.Int("clients", 32, "concurrent clients")
	requests := fs.Int("requests", 4, "requests per client, sent one after the other")
	maxTokens := fs.Int("max-tokens", 64, "max_tokens of each request")
	prompt := fs.String("prompt", "Tell me a story about a lighthouse keeper.", "prompt (the user message with --chat)")
	chat := fs.Bool("chat", false, "use /v1/chat/completions instead of /v1/completions")
	noStream := fs.Bool("no-stream", false, "ask for whole responses instead of SSE streams (no TTFT)")
	temperature := fs.Float64("temperature", 0, "sampling temperature of the requests")
	stopAtEOS := fs.Bool("stop-at-eos", false, "let requests end at an end-of-sequence token")
	baseline := fs.Bool("baseline", true, "first measure one client alone and report the throughput ratio")
	baselineRequests := fs.Int("baseline-requests", 0, "requests of the single-client run (0 = clients x requests)")
	timeout := fs.Duration("timeout", 5*time.Minute, "bound on each run")
	rounds := fs.Int("rounds", 1, "pairs of runs (single client, then concurrent); the report is the median round's")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parse(fs, args, loadgenHelp, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("loadgen: unexpected argument %q", fs.Arg(0))
	}
	if (*target == "") == (rf.model == "") {
		return cli.Usagef("loadgen: give exactly one of --url and --model")
	}
	if err := sf.check(); err != nil {
		return err
	}
	cfg := serve.LoadConfig{URL: *target, Clients: *clients, Requests: *requests, MaxTokens: *maxTokens, Prompt: *prompt,
		Chat: *chat, Stream: !*noStream, Temperature: *temperature, IgnoreEOS: !*stopAtEOS, Timeout: *timeout}
	if *target != "" {
		if err := serve.CheckLoopback(*target); err != nil {
			return cli.Usagef("--url: %v", err)
		}
	}
	if *clients < 1 || *clients > serve.MaxLoadClients || *requests < 1 || *requests > serve.MaxLoadRequests {
		return cli.Usagef("--clients must be in 1..%d and --requests in 1..%d", serve.MaxLoadClients, serve.MaxLoadRequests)
	}
	if *baselineRequests < 0 || *baselineRequests > serve.MaxLoadRequests || (*baseline && *baselineRequests == 0 && *clients**requests > serve.MaxLoadRequests) {
		return cli.Usagef("--baseline-requests must be in 0..%d (0: clients x requests, which must then be at most %d)", serve.MaxLoadRequests, serve.MaxLoadRequests)
	}
	if *rounds < 1 || *rounds > maxLoadRounds {
		return cli.Usagef("--rounds must be in 1..%d", maxLoadRounds)
	}
	if *rounds > 1 && !*baseline {
		return cli.Usagef("--rounds needs the single-client baseline (--baseline)")
	}
	if *maxTokens < 1 || *timeout <= 0 || *timeout > serve.MaxLoadTimeout {
		return cli.Usagef("--max-tokens must be >= 1 and --timeout in (0, %s]", serve.MaxLoadTimeout)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if rf.model != "" {
		l, err := rf.load(true)
		if err != nil {
			return err
		}
		defer l.Close()
		srv, _, closeBackend, err := sf.newServer(&rf, l, stderr, nil)
		if err != nil {
			return err
		}
		defer closeBackend()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			srv.Close()
			return fmt.Errorf("loadgen: %w", err)
		}
		go srv.Serve(ln)
		defer srv.Close()
		cfg.URL, cfg.Model = "http://"+ln.Addr().String(), srv.ModelName()
		fmt.Fprintf(stderr, "loadgen: serving %s on %s (max batch %d)\n", rf.model, cfg.URL, sf.maxBatch)
	}

	var runs []loadRound
	failed := 0
	for i := range *rounds {
		var r loadRound
		if *baseline {
			one := cfg
			one.Clients, one.Requests = 1, *clients**requests
			if *baselineRequests > 0 {
				one.Requests = *baselineRequests
			}
			rep, err := serve.Load(ctx, one)
			if err != nil {
				return err
			}
			r.single, failed = rep, failed+rep.Errors
		}
		rep, err := serve.Load(ctx, cfg)
		if err != nil {
			return err
		}
		r.concurrent, failed = rep, failed+rep.Errors
		runs = append(runs, r)
		if *rounds > 1 && !*asJSON {
			fmt.Fprintf(stderr, "loadgen: round %d/%d: 1 client %.0f tok/s, %d clients %.0f tok/s, ratio %.2fx\n",
				i+1, *rounds, r.single.TokensPerSecond, cfg.Clients, rep.TokensPerSecond, r.ratio())
		}
	}
	med := medianRound(runs)
	if *asJSON {
		v := map[string]any{"concurrent": med.concurrent}
		if med.single != nil {
			v["single"] = med.single
			if med.single.TokensPerSecond > 0 {
				v["throughput_ratio"] = med.ratio()
			}
		}
		if *rounds > 1 {
			list := make([]map[string]any, len(runs))
			for i, r := range runs {
				list[i] = map[string]any{"single_tokens_per_second": r.single.TokensPerSecond,
					"concurrent_tokens_per_second": r.concurrent.TokensPerSecond, "throughput_ratio": r.ratio(),
					"errors": r.single.Errors + r.concurrent.Errors}
			}
			v["rounds"] = list
		}
		if err := json.NewEncoder(stdout).Encode(v); err != nil {
			return err
		}
	} else {
		if med.single != nil {
			med.single.WriteText(stdout, "single client")
		}
		med.concurrent.WriteText(stdout, fmt.Sprintf("%d clients", cfg.Clients))
		if med.single != nil && med.single.TokensPerSecond > 0 {
			fmt.Fprintf(stdout, "throughput ratio (%d clients / 1 client): %.2fx", cfg.Clients, med.ratio())
			if len(runs) > 1 {
				ratios := make([]float64, len(runs))
				for i, r := range runs {
					ratios[i] = r.ratio()
				}
				slices.Sort(ratios)
				fmt.Fprintf(stdout, " (median of %d rounds; range %.2f-%.2fx)", len(runs), ratios[0], ratios[len(ratios)-1])
			}
			fmt.Fprintln(stdout)
		}
	}
	if failed > 0 {
		return fmt.Errorf("loadgen: %d requests failed", failed)
	}
	return nil
}

// maxLoadRounds bounds --rounds (each round is two whole runs).
const maxLoadRounds = 100

// loadRound is one pair of runs: the single client's (nil without the
// baseline), then the concurrent clients'.
type loadRound struct {
	single, concurrent *serve.LoadReport
}

// ratio is the concurrent run's throughput over the single client's (0
// without a baseline or when the single client generated nothing).
func (r loadRound) ratio() float64 {
	if r.single == nil || r.single.TokensPerSecond <= 0 {
		return 0
	}
	return r.concurrent.TokensPerSecond / r.single.TokensPerSecond
}

// medianRound returns the round whose ratio is the median, the lower of
// the two middle ones for an even count, so every figure reported comes
// from one real pair of runs.
func medianRound(runs []loadRound) loadRound {
	sorted := slices.Clone(runs)
	slices.SortStableFunc(sorted, func(a, b loadRound) int {
		switch {
		case a.ratio() < b.ratio():
			return -1
		case a.ratio() > b.ratio():
			return 1
		}
		return 0
	})
	return sorted[(len(sorted)-1)/2]
}
