package tokenizer

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzEncodeDecode encodes arbitrary text with the Gemma-style
// SentencePiece fixture and the byte-level BPE fixture: nothing may panic,
// valid UTF-8 must come back from Decode unchanged (SentencePiece turns a
// literal "▁" into a space, as Hugging Face does), and the streaming
// decoder must agree with Decode.
func FuzzEncodeDecode(f *testing.F) {
	spm, err := New(Files{Model: encodeSPM(gemmaStyleSPM())})
	if err != nil {
		f.Fatal(err)
	}
	bl, err := New(Files{JSON: byteLevelJSON(f)})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"hello world", "", " <bos>x\n", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		for _, tc := range []struct {
			name string
			tok  *Tokenizer
			want string
		}{
			{"sentencepiece", spm, strings.ReplaceAll(text, "▁", " ")},
			{"byte-level", bl, text},
		} {
			ids := tc.tok.Encode(text, false)
			withSpecial := tc.tok.Encode(text, true)
			if len(withSpecial) != len(ids)+1 {
				t.Fatalf("%s: Encode(%q, true) has %d ids, Encode(false) %d", tc.name, text, len(withSpecial), len(ids))
			}
			for _, id := range ids {
				if id < 0 || id >= tc.tok.VocabSize() {
					t.Fatalf("%s: Encode(%q) gave id %d", tc.name, text, id)
				}
			}
			dec := tc.tok.Decode(ids)
			_, streamed := streamDecode(tc.tok, ids)
			if !utf8.ValidString(text) {
				continue
			}
			if dec != tc.want {
				t.Fatalf("%s: Decode(Encode(%q)) = %q (ids %v)", tc.name, text, dec, ids)
			}
			if streamed != dec {
				t.Fatalf("%s: streamed %q, Decode %q", tc.name, streamed, dec)
			}
		}
	})
}
