package generate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fhkit/fhkit/runtime/tokenizer"
)

func fixtureTokenizer(t *testing.T) *tokenizer.Tokenizer {
	t.Helper()
	dir := filepath.Join("..", "..", "testdata", "fixtures", "gemma3-tiny")
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tok, err := tokenizer.New(tokenizer.Files{Model: read("tokenizer.model"), Config: read("tokenizer_config.json"), SpecialTokensMap: read("special_tokens_map.json")})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestStreamEndings(t *testing.T) {
	tok := fixtureTokenizer(t)
	text := "hello there world"
	ids := tok.Encode(text, false)
	eos := map[int]bool{1: true}
	run := func(opts Options, ids []int) (*Stream, string) {
		var got strings.Builder
		s := NewStream(tok, eos, opts, func(p string) error { got.WriteString(p); return nil })
		for _, id := range ids {
			done, err := s.Push(id)
			if err != nil {
				t.Fatal(err)
			}
			if done {
				return s, got.String()
			}
		}
		if err := s.End("context"); err != nil {
			t.Fatal(err)
		}
		return s, got.String()
	}
	// A stop string cuts the text before it and ends the sequence there.
	s, got := run(Options{MaxTokens: 100, Stop: []string{"there"}}, ids)
	if s.StopReason != "stop" || strings.Contains(got, "there") || !strings.HasPrefix(text, got) || s.Text() != got {
		t.Errorf("stop string: reason %q, emitted %q, text %q", s.StopReason, got, s.Text())
	}
	// End of sequence: the token counts, the text is complete.
	s, got = run(Options{MaxTokens: 100}, append(append([]int(nil), ids...), 1, 5))
	if s.StopReason != "eos" || len(s.Tokens) != len(ids)+1 || got != text {
		t.Errorf("eos: reason %q, %d tokens, text %q", s.StopReason, len(s.Tokens), got)
	}
	// IgnoreEOS goes on; MaxTokens ends it.
	s, _ = run(Options{MaxTokens: len(ids) + 2, IgnoreEOS: true}, append(append([]int(nil), ids...), 1, 5, 6))
	if s.StopReason != "length" || len(s.Tokens) != len(ids)+2 {
		t.Errorf("ignore eos: reason %q, %d tokens", s.StopReason, len(s.Tokens))
	}
	// A caller's reason releases the text held back for a possible stop.
	s, got = run(Options{MaxTokens: 100, Stop: []string{"world!"}}, ids)
	if s.StopReason != "context" || got != text {
		t.Errorf("context: reason %q, emitted %q", s.StopReason, got)
	}
}
