package serve

import (
	"encoding/json"
	"testing"
)

// A finished request's state serves the next one: the output is the same
// as on a fresh state, whatever the earlier request left in the cache
// (longer prompt, more tokens, past the sliding window).
func TestStateReuse(t *testing.T) {
	complete := func(ts *testServer, prompt string, n int) string {
		t.Helper()
		code, _, out := post(t, ts.url+"/v1/completions", `{"prompt": "`+prompt+`", "max_tokens": `+itoa(n)+`, "temperature": 0, "ignore_eos": true}`)
		var r completionResponse
		if err := json.Unmarshal(out, &r); code != 200 || err != nil || len(r.Choices) != 1 {
			t.Fatalf("status %d, %s: %v", code, out, err)
		}
		return r.Choices[0].Text
	}
	fresh := startServer(t, false, nil)
	want := complete(fresh, "Hi", 20)

	ts := startServer(t, false, nil)
	complete(ts, "A much longer prompt about lighthouses, keepers and the sea at night", 40)
	if n := len(ts.engine.spare); n != 1 {
		t.Fatalf("%d spare states after a request, want 1", n)
	}
	for i := 0; i < 2; i++ {
		if got := complete(ts, "Hi", 20); got != want {
			t.Fatalf("request %d on a reused state: %q, on a fresh one %q", i, got, want)
		}
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
