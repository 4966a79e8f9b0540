package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	flashhead "github.com/fhkit/fhkit/flashhead-build"
	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/runtime/cuda"
	"github.com/fhkit/fhkit/runtime/serve"
)

// lockedBuffer is a bytes.Buffer safe to write from the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startServe runs 'fh-run serve' in this process until the test ends.
func startServe(t *testing.T, args ...string) (url string, stderr *lockedBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	stderr = &lockedBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- serveUntil(ctx, append(args, "--addr", "127.0.0.1:0"), io.Discard, stderr, func(a string) { addr <- a })
	}()
	select {
	case a := <-addr:
		url = "http://" + a
	case err := <-done:
		cancel()
		t.Fatalf("serve: %v (stderr %s)", err, stderr)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return url, stderr
}

func postJSON(t *testing.T, url string, body any) (int, map[string]any) {
	t.Helper()
	raw, _ := json.Marshal(body)
	resp, err := http.Post(url, "application/json", bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// The server's greedy text is fh-run generate's for the same prompt (raw
// and chat), with the FlashHead by default and with --head dense; every
// request is logged on one line.
func TestServeMatchesGenerate(t *testing.T) {
	path := convertFixture(t, "gemma3-tiny")
	fh := filepath.Join(t.TempDir(), "model-fh.fhm")
	buildFlashHead(t, path, fh)
	for _, c := range []struct {
		model string
		extra []string
	}{{fh, nil}, {fh, []string{"--head", "dense"}}, {path, nil}} {
		url, stderr := startServe(t, append([]string{"--model", c.model, "--max-batch", "4"}, c.extra...)...)
		for _, chat := range []bool{false, true} {
			args := append([]string{"generate", "--model", c.model, "--prompt", "hello there", "--max-tokens", "20", "--json"}, c.extra...)
			body := map[string]any{"max_tokens": 20, "temperature": 0}
			endpoint := "/v1/completions"
			if chat {
				args = append(args, "--chat")
				body["messages"] = []map[string]string{{"role": "user", "content": "hello there"}}
				endpoint = "/v1/chat/completions"
			} else {
				body["prompt"] = "hello there"
			}
			code, out, errOut := runArgs(args...)
			var g struct {
				Text         string `json:"text"`
				Tokens       []int  `json:"tokens"`
				PromptTokens int    `json:"prompt_tokens"`
			}
			if code != 0 || json.Unmarshal([]byte(out), &g) != nil {
				t.Fatalf("generate: %d %s", code, errOut)
			}
			status, r := postJSON(t, url+endpoint, body)
			if status != 200 {
				t.Fatalf("%s %v: %d %v", endpoint, c.extra, status, r)
			}
			choice := r["choices"].([]any)[0].(map[string]any)
			text, _ := choice["text"].(string)
			if chat {
				text = choice["message"].(map[string]any)["content"].(string)
			}
			u := r["usage"].(map[string]any)
			if text != g.Text || int(u["completion_tokens"].(float64)) != len(g.Tokens) || int(u["prompt_tokens"].(float64)) != g.PromptTokens {
				t.Errorf("%s %s %v: server %q (usage %v), generate %q (%d + %d tokens)", filepath.Base(c.model), endpoint, c.extra, text, u, g.Text, g.PromptTokens, len(g.Tokens))
			}
		}
		log := stderr.String()
		if n := len(regexp.MustCompile(`(?m) POST /v1/(chat/)?completions 200 .*completion_tokens=`).FindAllString(log, -1)); n != 2 {
			t.Errorf("%d request log lines, want 2:\n%s", n, log)
		}
		if !strings.Contains(log, "serving ") || !strings.Contains(log, "max batch 4") {
			t.Errorf("no start line:\n%s", log)
		}
	}
}

// buildFlashHead writes a copy of in with a FlashHead, as fh-flashhead-build
// does with its defaults.
func buildFlashHead(t *testing.T, in, out string) {
	t.Helper()
	f, err := fhm.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, _, err := flashhead.HeadMatrix(f)
	if err != nil {
		t.Fatal(err)
	}
	h, err := flashhead.Build(rows, flashhead.Options{Threads: 1, SpecialTokenIDs: f.Metadata.Model.EOSTokenIDs})
	if err != nil {
		t.Fatal(err)
	}
	if err := flashhead.Write(f, out, h, h.Metadata(), flashhead.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestServeFlagErrors(t *testing.T) {
	path := convertFixture(t, "gemma3-tiny")
	t.Setenv(cuda.LibEnv, filepath.Join(t.TempDir(), "libcuda.so.1")) // no driver
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"serve", "--model", path, "--device", "cuda"}, 1, "CUDA driver library not found"},
		{[]string{"serve", "--model", path, "--device", "tpu"}, 2, "--device"},
		{[]string{"serve", "--model", path, "--max-batch", "0"}, 2, "--max-batch"},
		{[]string{"serve", "--model", path, "--max-queue", "-1"}, 2, "--max-queue"},
		{[]string{"serve"}, 2, "--model is required"},
		{[]string{"serve", "--model", path, "--addr", "256.1.1.1:99999"}, 1, "serve:"},
		{[]string{"loadgen", "--url", "http://10.0.0.1:8080"}, 2, "loopback"},
		{[]string{"loadgen", "--url", "http://example.com/"}, 2, "loopback"},
		{[]string{"loadgen"}, 2, "exactly one of --url and --model"},
		{[]string{"loadgen", "--url", "http://127.0.0.1:1", "--clients", "100000"}, 2, "--clients"},
	} {
		code, _, errOut := runArgs(c.args...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, %s; want %d and %q", c.args, code, errOut, c.code, c.want)
		}
	}
	for _, cmd := range []string{"serve", "loadgen"} {
		code, out, _ := runArgs(cmd, "--help")
		if code != 0 || !strings.Contains(out, "Examples:") || !strings.Contains(out, "--max-batch") {
			t.Errorf("%s --help: exit %d\n%s", cmd, code, out)
		}
	}
}

// The load generator against an in-process server: every request succeeds
// and the report has both runs.
func TestLoadgen(t *testing.T) {
	path := convertFixture(t, "gemma3-tiny")
	code, out, errOut := runArgs("loadgen", "--model", path, "--clients", "4", "--requests", "2", "--max-tokens", "8", "--json")
	if code != 0 {
		t.Fatalf("loadgen: exit %d: %s", code, errOut)
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	c, _ := raw["concurrent"].(map[string]any)
	single, _ := raw["single"].(map[string]any)
	ratio, _ := raw["throughput_ratio"].(float64)
	if c == nil || single == nil || c["ok"] != 8.0 || c["errors"] != 0.0 || c["completion_tokens"] != 64.0 || single["ok"] != 8.0 || ratio <= 0 {
		t.Errorf("report %s", out)
	}
	if _, ok := c["ttft"].(map[string]any)["p99_ms"]; !ok {
		t.Errorf("no TTFT percentiles in %s", out)
	}
}

// --rounds: every round is listed, and the report's runs and ratio are
// the median round's.
func TestLoadgenRounds(t *testing.T) {
	path := convertFixture(t, "gemma3-tiny")
	code, out, errOut := runArgs("loadgen", "--model", path, "--clients", "3", "--requests", "1", "--max-tokens", "4", "--rounds", "3", "--json")
	if code != 0 {
		t.Fatalf("loadgen: exit %d: %s", code, errOut)
	}
	var rep struct {
		Concurrent struct {
			TokensPerSecond float64 `json:"tokens_per_second"`
		} `json:"concurrent"`
		Ratio  float64 `json:"throughput_ratio"`
		Rounds []struct {
			Concurrent float64 `json:"concurrent_tokens_per_second"`
			Ratio      float64 `json:"throughput_ratio"`
			Errors     int     `json:"errors"`
		} `json:"rounds"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(rep.Rounds) != 3 {
		t.Fatalf("%d rounds, want 3: %s", len(rep.Rounds), out)
	}
	var ratios []float64
	found := false
	for _, r := range rep.Rounds {
		ratios = append(ratios, r.Ratio)
		if r.Errors != 0 || r.Ratio <= 0 {
			t.Errorf("round %+v", r)
		}
		if r.Ratio == rep.Ratio && r.Concurrent == rep.Concurrent.TokensPerSecond {
			found = true
		}
	}
	slices.Sort(ratios)
	if rep.Ratio != ratios[1] || !found {
		t.Errorf("reported ratio %v with concurrent %v, rounds %v: want the median round", rep.Ratio, rep.Concurrent.TokensPerSecond, out)
	}
	for _, bad := range [][]string{{"--rounds", "0"}, {"--rounds", "101"}, {"--rounds", "2", "--baseline=false"}} {
		code, _, errOut := runArgs(append([]string{"loadgen", "--model", path}, bad...)...)
		if code != 2 || !strings.Contains(errOut, "--rounds") {
			t.Errorf("loadgen %v: exit %d, stderr %q", bad, code, errOut)
		}
	}
}

// The median round of an even count is the lower middle one, and ties
// keep the rounds' order.
func TestMedianRound(t *testing.T) {
	round := func(single, conc float64) loadRound {
		return loadRound{&serve.LoadReport{TokensPerSecond: single}, &serve.LoadReport{TokensPerSecond: conc}}
	}
	runs := []loadRound{round(10, 40), round(10, 20), round(10, 35), round(10, 30)}
	if got := medianRound(runs); got.ratio() != 3 {
		t.Errorf("median of ratios 4, 2, 3.5, 3: got %v, want 3", got.ratio())
	}
	if got := medianRound(runs[:3]); got.ratio() != 3.5 {
		t.Errorf("median of ratios 4, 2, 3.5: got %v, want 3.5", got.ratio())
	}
	tie := []loadRound{round(10, 30), round(20, 60)}
	if got := medianRound(tie); got.single.TokensPerSecond != 10 {
		t.Errorf("tie: got the round with single %v, want the first", got.single.TokensPerSecond)
	}
}

// SIGTERM lets a running stream finish, then the process exits 0.
func TestServeSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the fh-run binary")
	}
	bin := filepath.Join(t.TempDir(), "fh-run")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	path := convertFixture(t, "gemma3-tiny")
	cmd := exec.Command(bin, "serve", "--model", path, "--addr", "127.0.0.1:0", "--shutdown-timeout", "20s")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(stderr)
	var url string
	for lines.Scan() {
		if m := regexp.MustCompile(`on (http://\S+)`).FindStringSubmatch(lines.Text()); m != nil {
			url = m[1]
			break
		}
	}
	if url == "" {
		t.Fatal("no address on stderr")
	}
	var rest strings.Builder
	restDone := make(chan struct{})
	go func() {
		for lines.Scan() {
			rest.WriteString(lines.Text() + "\n")
		}
		close(restDone)
	}()
	resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(`{"prompt": "hi", "max_tokens": 400, "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true}}`))
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 16)
	if _, err := resp.Body.Read(first); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"completion_tokens":400`) || !strings.HasSuffix(string(body), "data: [DONE]\n\n") {
		t.Errorf("the stream did not finish: ...%s", body[max(0, len(body)-300):])
	}
	// Standard error ends when the process exits; only then may Wait run.
	select {
	case <-restDone:
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not exit after SIGTERM")
	}
	if err := cmd.Wait(); err != nil || !strings.Contains(rest.String(), "stopped") {
		t.Errorf("exit: %v, stderr:\n%s", err, rest.String())
	}
}
