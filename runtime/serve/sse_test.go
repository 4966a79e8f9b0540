package serve

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
)

// appendJSONString writes what encoding/json writes, for any bytes
// (control characters, HTML characters, separators, invalid UTF-8).
func TestAppendJSONString(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "Z", " ", "\"", "\\", "<", ">", "&", "\n", "\r", "\t", "\b", "\f", "\x00", "\x1f", "\x7f",
		"é", "☃", "\u2028", "\u2029", "😀", "\xff", "\xe2\x82", "\xc0\x80", "\xed\xa0\x80"}
	cases := []string{"", "plain", textMarker}
	for i := 0; i < 5000; i++ {
		var b []byte
		for n := rng.IntN(12); n > 0; n-- {
			b = append(b, alphabet[rng.IntN(len(alphabet))]...)
		}
		cases = append(cases, string(b))
	}
	for _, c := range cases {
		want, _ := json.Marshal(c)
		got := appendJSONString([]byte("x"), []byte(c))
		if !bytes.Equal(got[1:], want) || got[0] != 'x' {
			t.Fatalf("%q: got %s, want %s", c, got[1:], want)
		}
	}
}

// A text event built from the template is the event json.Marshal writes.
func TestTextEventTemplate(t *testing.T) {
	for _, chat := range []bool{false, true} {
		piece := func(text string, fin *string) any {
			if chat {
				return chatChunk{ID: "chatcmpl-1", Object: "chat.completion.chunk", Created: 7, Model: "m\x00", Choices: []chatChunkChoice{{Delta: chatDelta{Content: &text}, FinishReason: fin}}}
			}
			return completionResponse{ID: "cmpl-1", Object: "text_completion", Created: 7, Model: "m<&>", Choices: []completionChoice{{Text: text, FinishReason: fin}}}
		}
		head, tail := splitTemplate(piece)
		for _, text := range []string{"hello", "", "a\"b\n<c>", "\u2028\xff"} {
			want, _ := json.Marshal(piece(text, nil))
			got := append(appendJSONString(append([]byte(nil), head...), []byte(text)), tail...)
			if !bytes.Equal(got, want) {
				t.Errorf("chat %t %q: template gives %s, want %s", chat, text, got, want)
			}
		}
	}
}

// The load generator's quick check of text events agrees with a full
// decode, and leaves every other line to it.
func TestQuickTextEvent(t *testing.T) {
	cases := []struct {
		line          string
		hasText, fast bool
	}{
		{`{"id":"c","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":"hi","logprobs":null,"finish_reason":null}]}`, true, true},
		{`{"id":"c","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":"","logprobs":null,"finish_reason":"length"}]}`, false, true},
		{`{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"\"x"},"logprobs":null,"finish_reason":null}]}`, true, true},
		{`{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}`, false, true},
		{`{"id":"c","object":"text_completion","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`, false, false},
		{`{"error":{"message":"x","type":"server_error"}}`, false, false},
		{`{"choices":[{"text": "spaced"}]}`, false, false},
		{`{"choices":[{"text":"cut`, false, false},
		{`{"choices":[{"delta":{}}]}`, false, false},
	}
	for _, c := range cases {
		hasText, fast := quickTextEvent([]byte(c.line))
		if hasText != c.hasText || fast != c.fast {
			t.Errorf("%s: quick check (%t, %t), want (%t, %t)", c.line, hasText, fast, c.hasText, c.fast)
		}
	}
}
