package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestGemma3Parity checks every conformance text against the ids Hugging
// Face tokenizers produced, with both backends.
func TestGemma3Parity(t *testing.T) {
	cases := gemmaCases(t)
	for _, b := range []Backend{SentencePiece, JSON} {
		t.Run(b.String(), func(t *testing.T) {
			tok, dur := gemmaTokenizer(t, b)
			t.Logf("%v loaded in %v", b, dur)
			ok := 0
			for i, c := range cases {
				got := tok.Encode(c.Text, false)
				gotS := tok.Encode(c.Text, true)
				dec := tok.Decode(c.IDs)
				switch {
				case !slices.Equal(got, c.IDs):
					t.Errorf("text %d %q: Encode(false)\n got  %v\n want %v", i, c.Text, got, c.IDs)
				case !slices.Equal(gotS, c.IDsAddSpecial):
					t.Errorf("text %d %q: Encode(true)\n got  %v\n want %v", i, c.Text, gotS, c.IDsAddSpecial)
				case dec != c.Text:
					t.Errorf("text %d: Decode(ids) = %q, want %q", i, dec, c.Text)
				default:
					ok++
				}
				// skip_special_tokens=True drops the special tokens only.
				want := c.Text
				for _, sp := range []string{"<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>"} {
					want = strings.ReplaceAll(want, sp, "")
				}
				if got := tok.DecodeSkipSpecial(c.IDsAddSpecial); got != want {
					t.Errorf("text %d: DecodeSkipSpecial = %q, want %q", i, got, want)
				}
				// The streaming decoder gives the same text.
				d := tok.NewDecoder()
				var sb strings.Builder
				for _, id := range c.IDs {
					sb.WriteString(d.Next(id))
				}
				sb.WriteString(d.Flush())
				if sb.String() != c.Text {
					t.Errorf("text %d: streaming decode = %q, want %q", i, sb.String(), c.Text)
				}
			}
			t.Logf("%v: %d/%d texts match (encode, encode+special, decode)", b, ok, len(cases))
			if tok.BOS() != 2 || !slices.Contains(tok.EOS(), 106) {
				t.Errorf("BOS %d EOS %v, want 2 and containing 106", tok.BOS(), tok.EOS())
			}
			for id, want := range map[int]bool{0: true, 1: true, 2: true, 105: true, 106: true, 4: false, 107: false, 818: false, 255999: true} {
				if got := tok.IsSpecial(id); got != want {
					t.Errorf("IsSpecial(%d %q) = %v, want %v", id, tok.Piece(id), got, want)
				}
			}
			if id, ok := tok.TokenID("<start_of_turn>"); !ok || id != 105 {
				t.Errorf("TokenID(<start_of_turn>) = %d, %v", id, ok)
			}
			if tok.Piece(107) != "\n" || tok.Piece(-1) != "" || tok.Piece(1<<30) != "" {
				t.Errorf("Piece: %q %q %q", tok.Piece(107), tok.Piece(-1), tok.Piece(1<<30))
			}
			if got := tok.VocabSize(); got != 262145 {
				t.Errorf("VocabSize = %d, want 262145", got)
			}
		})
	}
}

// TestGemma3ChatTemplate renders the real Gemma-3 template.
func TestGemma3ChatTemplate(t *testing.T) {
	tok, _ := gemmaTokenizer(t, SentencePiece)
	got, err := tok.RenderChat([]Message{{"system", "Be helpful."}, {"user", "Hello"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	want := "<bos><start_of_turn>user\nBe helpful.\n\nHello<end_of_turn>\n<start_of_turn>model\n"
	if got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	// Encoded without addSpecial: one BOS, the turn markers as single ids.
	ids := tok.Encode(got, false)
	if ids[0] != 2 || ids[1] != 105 || slices.Index(ids[1:], 2) >= 0 || ids[len(ids)-3] != 105 {
		t.Errorf("encoded prompt %v", ids)
	}
}

type greedyJSON struct {
	Prompt       string `json:"prompt"`
	PromptTokens []int  `json:"prompt_tokens"`
	GreedyTokens []int  `json:"greedy_tokens"`
	Text         string `json:"text"`
	FullText     string `json:"full_text"`
}

// TestStories260K checks the Llama-2 style SentencePiece tokenizer (with a
// dummy prefix) through both tokenizer.model and tokenizer.json.
func TestStories260K(t *testing.T) {
	var g, gb greedyJSON
	if err := json.Unmarshal(readShared(t, "stories260K", "greedy.json"), &g); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(readShared(t, "stories260K", "greedy_from_bos.json"), &gb); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(sharedDir(t), "stories260K", "model")
	for _, b := range []Backend{SentencePiece, JSON} {
		t.Run(b.String(), func(t *testing.T) {
			f := Files{Backend: b}
			for name, dst := range map[string]*[]byte{"tokenizer.model": &f.Model, "tokenizer.json": &f.JSON, "tokenizer_config.json": &f.Config, "special_tokens_map.json": &f.SpecialTokensMap} {
				var err error
				if *dst, err = os.ReadFile(filepath.Join(dir, name)); err != nil {
					t.Fatal(err)
				}
			}
			tok, err := New(f)
			if err != nil {
				t.Fatal(err)
			}
			if tok.Backend() != b {
				t.Fatalf("backend %v, want %v", tok.Backend(), b)
			}
			if got := tok.Encode(g.Prompt, true); !slices.Equal(got, g.PromptTokens) {
				t.Errorf("prompt tokens\n got  %v\n want %v", got, g.PromptTokens)
			}
			if got := tok.Encode(g.Prompt, false); !slices.Equal(got, g.PromptTokens[1:]) {
				t.Errorf("prompt tokens without BOS\n got  %v\n want %v", got, g.PromptTokens[1:])
			}
			if got := tok.Decode(g.GreedyTokens); got != g.Text {
				t.Errorf("greedy text\n got  %q\n want %q", got, g.Text)
			}
			all := append(slices.Clone(g.PromptTokens[1:]), g.GreedyTokens...)
			if got := tok.Decode(all); got != g.FullText {
				t.Errorf("full text\n got  %q\n want %q", got, g.FullText)
			}
			// With BOS, HF's decode keeps "<s>" and the space after it.
			withBOS := append(slices.Clone(g.PromptTokens), g.GreedyTokens...)
			if got := tok.Decode(withBOS); got != "<s> "+g.FullText {
				t.Errorf("decode with BOS = %q", got)
			}
			// Re-encoding the decoded greedy text gives the greedy ids back.
			if got := tok.Encode(g.Text, false); !slices.Equal(got, g.GreedyTokens) {
				t.Errorf("re-encoded greedy text\n got  %v\n want %v", got, g.GreedyTokens)
			}
			// Skipping special tokens drops the BOS (and its space), as
			// SentencePiece's decode does.
			if got := tok.DecodeSkipSpecial(withBOS); got != g.FullText {
				t.Errorf("DecodeSkipSpecial with BOS = %q", got)
			}
			d0 := tok.NewDecoder()
			d0.SkipSpecial = true
			if _, got := streamDecodeWith(d0, withBOS); got != g.FullText {
				t.Errorf("streamed with SkipSpecial = %q", got)
			}
			// greedy_from_bos: 346 tokens, the last one <s>; its text is
			// SentencePiece's decode, which drops <s>.
			if got := tok.DecodeSkipSpecial(gb.GreedyTokens); got != gb.Text {
				t.Errorf("greedy_from_bos DecodeSkipSpecial\n got  %q\n want %q", got, gb.Text)
			}
			ids := gb.GreedyTokens
			if n := len(ids); n > 0 && ids[n-1] == 1 {
				ids = ids[:n-1]
			}
			text := tok.Decode(ids)
			if !strings.HasPrefix(text, "Once upon a time, there was a little girl named Lily.") {
				t.Errorf("greedy_from_bos text %q", text)
			}
			if got := tok.Encode(text, false); !slices.Equal(got, ids) {
				t.Errorf("re-encoded greedy_from_bos text differs:\n got  %v\n want %v", got, ids)
			}
			// Streaming continuation after the prompt: the first generated
			// token keeps its space.
			d := tok.NewDecoder()
			for _, id := range g.PromptTokens {
				d.Next(id)
			}
			var sb strings.Builder
			for _, id := range g.GreedyTokens {
				sb.WriteString(d.Next(id))
			}
			sb.WriteString(d.Flush())
			if want := " " + g.Text; sb.String() != want {
				t.Errorf("streamed continuation %q, want %q", sb.String(), want)
			}
			if tok.BOS() != 1 || !slices.Equal(tok.EOS(), []int{2}) || !tok.IsSpecial(1) || tok.IsSpecial(261) || tok.VocabSize() != 512 {
				t.Errorf("BOS %d EOS %v IsSpecial(1)=%v VocabSize %d", tok.BOS(), tok.EOS(), tok.IsSpecial(1), tok.VocabSize())
			}
		})
	}
}
