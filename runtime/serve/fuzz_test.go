package serve

import (
	"bytes"
	"testing"
)

// FuzzRequest feeds arbitrary bodies to the request path up to the queue
// (JSON decoding, validation, tokenization, chat template, context limits):
// it must answer with a 4xx error or a job that respects every limit, and
// never panic. The seed corpus is testdata/fuzz/FuzzRequest.
func FuzzRequest(f *testing.F) {
	ts := startServer(f, true, func(c *Config) { c.Ctx = 96 })
	V := ts.l.m.Config.VocabSize
	f.Fuzz(func(t *testing.T, chat bool, body []byte) {
		j, p, err := ts.prepare(bytes.NewReader(body), chat)
		if err != nil {
			if err.Status < 400 || err.Status >= 500 || err.Message == "" || err.Type == "" {
				t.Fatalf("error %+v for %q", err, body)
			}
			return
		}
		if p == nil || len(j.prompt) == 0 || len(j.prompt) >= ts.limit || j.opts.MaxTokens < 1 || len(j.prompt)+j.opts.MaxTokens > ts.limit {
			t.Fatalf("accepted %q: %d prompt tokens, max tokens %d, limit %d", body, len(j.prompt), j.opts.MaxTokens, ts.limit)
		}
		for _, id := range j.prompt {
			if id < 0 || id >= V {
				t.Fatalf("accepted %q with token %d", body, id)
			}
		}
		if err := j.opts.Sample.Validate(); err != nil {
			t.Fatalf("accepted %q with %v", body, err)
		}
	})
}
