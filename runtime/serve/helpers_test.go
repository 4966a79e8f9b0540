package serve

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/fhkit/fhkit/convert"
	flashhead "github.com/fhkit/fhkit/flashhead-build"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/head"
	"github.com/fhkit/fhkit/runtime/model"
	"github.com/fhkit/fhkit/runtime/tokenizer"
)

// testDir holds the converted fixtures for the whole test binary.
var testDir string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "serve-test")
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	testDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

func tempDir() (string, error) { return testDir, nil }

// fixtureFiles converts the gemma3-tiny fixture (the README demo's model)
// once per test binary: dense bf16, and with a FlashHead.
var fixtureFiles = sync.OnceValues(func() ([2]string, error) {
	dir, err := tempDir()
	if err != nil {
		return [2]string{}, err
	}
	dense := filepath.Join(dir, "model.fhm")
	if _, err := convert.Dir(filepath.Join("..", "..", "testdata", "fixtures", "gemma3-tiny"), dense, convert.Options{}); err != nil {
		return [2]string{}, err
	}
	f, err := fhm.Open(dense)
	if err != nil {
		return [2]string{}, err
	}
	defer f.Close()
	rows, _, err := flashhead.HeadMatrix(f)
	if err != nil {
		return [2]string{}, err
	}
	h, err := flashhead.Build(rows, flashhead.Options{Seed: 1, Threads: 1, SpecialTokenIDs: f.Metadata.Model.EOSTokenIDs})
	if err != nil {
		return [2]string{}, err
	}
	fh := filepath.Join(dir, "model-fh.fhm")
	if err := flashhead.Write(f, fh, h, h.Metadata(), flashhead.WriteOptions{}); err != nil {
		return [2]string{}, err
	}
	return [2]string{dense, fh}, nil
})

// loadedModel is a model opened the way fh-run opens it.
type loadedModel struct {
	m     *model.Model
	pool  *cpu.Pool
	run   *model.Runner
	tok   *tokenizer.Tokenizer
	flash *head.FlashHead
}

func loadModel(t testing.TB, withFlash bool) *loadedModel {
	t.Helper()
	files, err := fixtureFiles()
	if err != nil {
		t.Fatal(err)
	}
	path := files[0]
	if withFlash {
		path = files[1]
	}
	m, err := model.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	l := &loadedModel{m: m, pool: cpu.NewPool(2)}
	t.Cleanup(func() { l.pool.Close(); m.Close() })
	l.run = model.NewRunner(m, l.pool)
	if l.tok, err = tokenizer.FromFHM(m.File); err != nil {
		t.Fatal(err)
	}
	if withFlash {
		if l.flash, err = head.Load(m.File, m.Head, 0, head.Stage1BF16, m.Config.FinalLogitSoftcap); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// testServer is a Server on an httptest listener (127.0.0.1).
type testServer struct {
	*Server
	url string
	l   *loadedModel
}

func startServer(t testing.TB, withFlash bool, edit func(*Config)) *testServer {
	t.Helper()
	l := loadModel(t, withFlash)
	cfg := Config{Backend: NewCPUBackend(l.run, dtype.F32), Tokenizer: l.tok, Flash: l.flash, ModelName: "tiny"}
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() { s.Close(); ts.Close() })
	return &testServer{Server: s, url: ts.URL, l: l}
}

// post sends a JSON body and returns the status, headers and body.
func post(t testing.TB, url, body string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// event is one decoded SSE data line of a stream (nil for [DONE]).
type event map[string]any

// readStream reads an SSE response to the end.
func readStream(t testing.TB, r io.Reader) (events []event, done bool) {
	t.Helper()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("stream line %q is not a data line", line)
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var ev event
		dec := json.NewDecoder(bytes.NewReader([]byte(data)))
		dec.UseNumber()
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("stream event %q: %v", data, err)
		}
		events = append(events, ev)
	}
	return events, done
}

// streamText joins the text of a stream's events (completion text or chat
// delta content) and returns the finish reason and the usage, if any.
func streamText(events []event) (text, finish string, u *usage) {
	var b strings.Builder
	for _, ev := range events {
		if raw, ok := ev["usage"].(map[string]any); ok {
			num := func(k string) int {
				n, _ := raw[k].(json.Number).Int64()
				return int(n)
			}
			u = &usage{PromptTokens: num("prompt_tokens"), CompletionTokens: num("completion_tokens"), TotalTokens: num("total_tokens")}
		}
		choices, _ := ev["choices"].([]any)
		for _, c := range choices {
			ch := c.(map[string]any)
			if s, ok := ch["text"].(string); ok {
				b.WriteString(s)
			}
			if d, ok := ch["delta"].(map[string]any); ok {
				if s, ok := d["content"].(string); ok {
					b.WriteString(s)
				}
			}
			if f, ok := ch["finish_reason"].(string); ok {
				finish = f
			}
		}
	}
	return b.String(), finish, u
}
