package tokenizer

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fhkit/fhkit/formats/arch"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/fhm"
)

func mustNew(t testing.TB, f Files) *Tokenizer {
	t.Helper()
	tok, err := New(f)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func streamDecode(tok *Tokenizer, ids []int) (parts []string, all string) {
	return streamDecodeWith(tok.NewDecoder(), ids)
}

func streamDecodeWith(d *Decoder, ids []int) (parts []string, all string) {
	for _, id := range ids {
		parts = append(parts, d.Next(id))
	}
	parts = append(parts, d.Flush())
	return parts, strings.Join(parts, "")
}

// TestByteLevelBPE checks the byte-level BPE pipeline (Llama-3 split
// pattern, ByteLevel, merges, ignore_merges, added tokens, template
// post-processor) on a tiny tokenizer.json. The expected ids were worked
// out by hand from the merges in byteLevelJSON (ids 0-255 are the bytes)
// and agree with Hugging Face tokenizers on the same file.
func TestByteLevelBPE(t *testing.T) {
	tok := mustNew(t, Files{JSON: byteLevelJSON(t)})
	if tok.Backend() != JSON {
		t.Fatalf("backend %v", tok.Backend())
	}
	for _, c := range []struct {
		text string
		ids  []int
	}{
		// the | " cat" | "'s" | " " | 123 | 4 | " café"; "123" is one token
		// (ignore_merges), café merges Ã©, ca, caf, cafÃ©.
		{"the cat's 1234 café", []int{116, 257, 32, 265, 116, 259, 32, 261, 52, 32, 267}},
		// case-insensitive contraction "'S"; "\n\n" split from the spaces
		// that follow; "  x" -> " " + " x".
		{"THE'S\n\n  x", []int{84, 72, 69, 39, 83, 263, 32, 32, 120}},
		// unicode letters with no merges: their UTF-8 bytes.
		{"日本", []int{230, 151, 165, 230, 156, 172}},
		// special tokens written in the text.
		{"<|begin_of_text|>hi<|eot_id|>", []int{268, 104, 105, 269}},
		// digits in groups of three.
		{"1234567", []int{261, 52, 53, 54, 55}},
		// "  the" -> " " + " the"; Ġ t (rank 0) before h e (rank 1).
		{"  the", []int{32, 258}},
		// trailing whitespace with a newline stays one piece.
		{"x  \n", []int{120, 262, 10}},
		{"we'LL<tool>go  \t\n\r\n 42", []int{119, 101, 39, 76, 76, 270, 103, 111, 262, 9, 10, 13, 10, 32, 52, 50}},
		{"", nil},
	} {
		got := tok.Encode(c.text, false)
		if !slices.Equal(got, c.ids) {
			t.Errorf("Encode(%q)\n got  %v\n want %v", c.text, got, c.ids)
		}
		if got := tok.Encode(c.text, true); !slices.Equal(got, append([]int{268}, c.ids...)) {
			t.Errorf("Encode(%q, true) = %v", c.text, got)
		}
		if got := tok.Decode(c.ids); got != c.text {
			t.Errorf("Decode(%v) = %q, want %q", c.ids, got, c.text)
		}
		if _, got := streamDecode(tok, c.ids); got != c.text {
			t.Errorf("stream decode = %q, want %q", got, c.text)
		}
	}
	// A character split over byte tokens is emitted when complete.
	parts, _ := streamDecode(tok, []int{230, 151, 165, 230, 156, 172})
	if !slices.Equal(parts, []string{"", "", "日", "", "", "本", ""}) {
		t.Errorf("stream parts %q", parts)
	}
	// Invalid bytes: one U+FFFD per maximal invalid subsequence.
	if got := tok.Decode([]int{230, 151, 120, 0xff, 104}); got != "\uFFFDx\uFFFDh" {
		t.Errorf("invalid decode %q", got)
	}
	if parts, _ := streamDecode(tok, []int{230, 151}); parts[2] != "\uFFFD" {
		t.Errorf("flush of a partial character: %q", parts)
	}
	if tok.BOS() != 268 || tok.EOS() != nil || !tok.IsSpecial(269) || tok.IsSpecial(270) || tok.IsSpecial(5) || tok.VocabSize() != 271 {
		t.Errorf("BOS %d EOS %v special %v %v size %d", tok.BOS(), tok.EOS(), tok.IsSpecial(269), tok.IsSpecial(270), tok.VocabSize())
	}
	if id, ok := tok.TokenID("Ġthe"); !ok || id != 258 || tok.Piece(258) != "Ġthe" {
		t.Errorf("TokenID(Ġthe) = %d %v", id, ok)
	}
	// add_bos_token=false in the config drops the template's BOS.
	tok = mustNew(t, Files{JSON: byteLevelJSON(t), Config: []byte(`{"add_bos_token": false, "eos_token": "<|eot_id|>"}`)})
	if got := tok.Encode("hi", true); !slices.Equal(got, []int{104, 105}) {
		t.Errorf("add_bos_token=false: %v", got)
	}
	if !slices.Equal(tok.EOS(), []int{269}) {
		t.Errorf("EOS %v", tok.EOS())
	}
}

// TestSentencePieceGemmaStyle checks the tokenizer.model backend on a
// tiny Gemma-like model (no dummy prefix). Pieces are scored by their
// order, so the merges happen in the order of gemmaStyleNormal.
func TestSentencePieceGemmaStyle(t *testing.T) {
	tok := mustNew(t, Files{Model: encodeSPM(gemmaStyleSPM())})
	id := func(p string) int { return gemmaStyleID(t, p) }
	for _, c := range []struct {
		text string
		ids  []int
	}{
		// ll, he, ▁w, or, llo, hello, ▁wor, ld, ▁world
		{"hello world", []int{id("hello"), id("▁world")}},
		// ▁w takes the second space before ▁▁ can form.
		{"hello  world", []int{id("hello"), id("▁"), id("▁world")}},
		// é is not a piece: its bytes <0xC3> <0xA9>.
		{"héllo", []int{id("h"), 7 + 0xC3, 7 + 0xA9, id("llo")}},
		// control and user-defined pieces written in the text.
		{"<bos>hi<end_of_turn>\n", []int{2, id("h"), 7 + 'i', 5, 6}},
		{"<start_of_turn><eos><pad><unk>", []int{4, 1, 0, 3}},
		{" at", []int{id("▁"), id("at")}},
		{"", nil},
	} {
		got := tok.Encode(c.text, false)
		if !slices.Equal(got, c.ids) {
			t.Errorf("Encode(%q)\n got  %v\n want %v", c.text, got, c.ids)
		}
		if got := tok.Encode(c.text, true); !slices.Equal(got, append([]int{2}, c.ids...)) {
			t.Errorf("Encode(%q, true) = %v", c.text, got)
		}
		if got := tok.Decode(c.ids); got != c.text {
			t.Errorf("Decode(%v) = %q, want %q", c.ids, got, c.text)
		}
		if _, got := streamDecode(tok, c.ids); got != c.text {
			t.Errorf("stream decode = %q, want %q", got, c.text)
		}
	}
	parts, _ := streamDecode(tok, []int{id("h"), 7 + 0xC3, 7 + 0xA9, id("llo")})
	if !slices.Equal(parts, []string{"h", "", "é", "llo", ""}) {
		t.Errorf("stream parts %q", parts)
	}
	// An incomplete byte run: U+FFFD per byte piece, as tokenizers'
	// ByteFallback decoder does for a run that is not valid UTF-8.
	if got := tok.Decode([]int{7 + 0xE6, 7 + 0x97, id("h")}); got != "\uFFFD\uFFFDh" {
		t.Errorf("invalid run %q", got)
	}
	if got := tok.Decode([]int{7 + 0xC3, 7 + 0xA9, 7 + 0xC3, id("h")}); got != "\uFFFD\uFFFD\uFFFDh" {
		t.Errorf("partly valid run %q", got)
	}
	// skip_special_tokens: control pieces go, user-defined ones stay.
	if got := tok.DecodeSkipSpecial([]int{2, id("h"), 1, 4, 3, 0, 6}); got != "h<start_of_turn>\n" {
		t.Errorf("DecodeSkipSpecial %q", got)
	}
	// Unknown ids are skipped.
	if got := tok.Decode([]int{-5, id("h"), 1 << 30}); got != "h" {
		t.Errorf("unknown ids: %q", got)
	}
	if tok.BOS() != 2 || !slices.Equal(tok.EOS(), []int{1}) || !tok.IsSpecial(0) || !tok.IsSpecial(3) || tok.IsSpecial(4) || tok.VocabSize() != 284 {
		t.Errorf("BOS %d EOS %v size %d", tok.BOS(), tok.EOS(), tok.VocabSize())
	}
	if tok.Piece(7+'A') != "<0x41>" || tok.Piece(id("▁world")) != "▁world" {
		t.Errorf("Piece %q %q", tok.Piece(7+'A'), tok.Piece(id("▁world")))
	}
	// add_bos_token false; tokenizer_config marks <start_of_turn> special
	// and names <end_of_turn> as eos.
	cfg := `{"add_bos_token": false, "eos_token": "<end_of_turn>", "added_tokens_decoder": {"4": {"content": "<start_of_turn>", "special": true}}}`
	tok = mustNew(t, Files{Model: encodeSPM(gemmaStyleSPM()), Config: []byte(cfg), EOSIDs: []int{1, 5}})
	if got := tok.Encode("hi", true); !slices.Equal(got, []int{id("h"), 7 + 'i'}) {
		t.Errorf("add_bos_token=false: %v", got)
	}
	if !tok.IsSpecial(4) || !tok.IsSpecial(5) || !slices.Equal(tok.EOS(), []int{1, 5}) {
		t.Errorf("special %v %v EOS %v", tok.IsSpecial(4), tok.IsSpecial(5), tok.EOS())
	}
	// Added tokens past the model's pieces (ids out of order, one
	// conflicting with a piece), with an rstrip flag.
	cfg = `{"added_tokens_decoder": {"290": {"content": "<img>", "special": true, "rstrip": true}, "286": {"content": "<x>"}, "5": {"content": "<nope>"}}}`
	tok = mustNew(t, Files{Model: encodeSPM(gemmaStyleSPM()), Config: []byte(cfg), AddedTokens: []byte(`{"<y>": 288}`)})
	if got := tok.Encode("h<img>  <x><y><nope>", false); !slices.Equal(got[:4], []int{id("h"), 290, 286, 288}) || len(got) != 10 {
		t.Errorf("added tokens: %v", got)
	}
	if tok.VocabSize() != 291 || tok.Piece(287) != "" || tok.Piece(290) != "<img>" || !tok.IsSpecial(290) || tok.IsSpecial(286) || tok.Piece(5) != "<end_of_turn>" {
		t.Errorf("VocabSize %d pieces %q %q", tok.VocabSize(), tok.Piece(287), tok.Piece(290))
	}
	if got := tok.Decode([]int{290, 287, 286}); got != "<img><x>" {
		t.Errorf("decode %q", got)
	}
}

// TestSentencePieceLlamaStyle checks the dummy prefix: added to each
// segment between special tokens (transformers' legacy behaviour, and the
// Prepend normalizer of converted tokenizer.json files), stripped once at
// the start of decoding.
func TestSentencePieceLlamaStyle(t *testing.T) {
	tok := mustNew(t, Files{Model: encodeSPM(llamaStyleSPM())})
	// ids: 259 ▁, 260 h, 261 i, 262 ▁h, 263 ▁hi, 264 t, 265 ▁t, 266 o, 267 ▁to
	for _, c := range []struct {
		text string
		ids  []int
		dec  string
	}{
		{"hi to", []int{263, 267}, "hi to"},
		{" hi", []int{259, 263}, " hi"},
		{"hi</s>hi", []int{263, 2, 263}, "hi</s> hi"},
		{"<s>hi", []int{1, 263}, "<s> hi"},
	} {
		if got := tok.Encode(c.text, false); !slices.Equal(got, c.ids) {
			t.Errorf("Encode(%q) = %v, want %v", c.text, got, c.ids)
		}
		if got := tok.Decode(c.ids); got != c.dec {
			t.Errorf("Decode(%v) = %q, want %q", c.ids, got, c.dec)
		}
	}
	if got := tok.Encode("hi", true); !slices.Equal(got, []int{1, 263}) {
		t.Errorf("Encode(hi, true) = %v", got)
	}
	parts, _ := streamDecode(tok, []int{263, 267})
	if !slices.Equal(parts, []string{"hi", " to", ""}) {
		t.Errorf("stream %q", parts)
	}
	// legacy=false: only the start of the text gets the prefix.
	tok = mustNew(t, Files{Model: encodeSPM(llamaStyleSPM()), Config: []byte(`{"legacy": false}`)})
	if got := tok.Encode("hi</s>hi", false); !slices.Equal(got, []int{263, 2, 260, 261}) {
		t.Errorf("legacy=false: %v", got)
	}
}

// TestBackendChoice checks Auto's preference and the errors.
func TestBackendChoice(t *testing.T) {
	model := encodeSPM(gemmaStyleSPM())
	js := byteLevelJSON(t)
	if tok := mustNew(t, Files{Model: model, JSON: js}); tok.Backend() != JSON {
		t.Errorf("Auto with both files chose %v", tok.Backend())
	}
	if tok := mustNew(t, Files{Model: model, JSON: js, Backend: SentencePiece}); tok.Backend() != SentencePiece {
		t.Errorf("SentencePiece chose %v", tok.Backend())
	}
	unigram := []byte(`{"model": {"type": "Unigram", "vocab": [["<unk>", 0.0]]}}`)
	if tok := mustNew(t, Files{Model: model, JSON: unigram}); tok.Backend() != SentencePiece {
		t.Errorf("Auto with an unsupported tokenizer.json chose %v", tok.Backend())
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(js)
	zw.Close()
	if tok := mustNew(t, Files{JSON: gz.Bytes()}); tok.VocabSize() != 271 {
		t.Error("gzip'd tokenizer.json not read")
	}
	for _, c := range []struct {
		name string
		f    Files
		want string
	}{
		{"nothing", Files{}, "neither tokenizer.json nor tokenizer.model"},
		{"unigram json", Files{JSON: unigram}, `tokenizer.json: model type "Unigram" is not supported`},
		{"both bad", Files{JSON: unigram, Model: []byte{0xff, 0xff}}, "tokenizer.model"},
		{"json only, none given", Files{Backend: JSON, Model: model}, "no tokenizer.json"},
		{"model only, none given", Files{Backend: SentencePiece, JSON: js}, "no tokenizer.model"},
		{"garbage json", Files{JSON: []byte("{not json")}, "tokenizer.json"},
		{"bad merge", Files{JSON: []byte(`{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}, "decoder": {"type": "ByteLevel"}}`)}, `tokenizer.json: model.merges[0]: "ab" is not in the vocabulary`},
		{"bad config", Files{JSON: js, Config: []byte("[")}, "tokenizer_config.json"},
		{"bad special map", Files{JSON: js, SpecialTokensMap: []byte(`{"bos_token": 5}`)}, "special_tokens_map.json"},
		{"bad added", Files{JSON: js, AddedTokens: []byte(`{"x": -1}`)}, "added_tokens.json"},
		{"bad gzip", Files{JSON: []byte{0x1f, 0x8b, 0, 0}}, "tokenizer.json: gzip"},
		{"unigram model", Files{Model: encodeSPM(spmFixture{pieces: []spmPiece{{"<unk>", 0, spmUnknown}}, modelType: spmUnigram})}, "tokenizer.model: model type 1 is not supported"},
		{"no unk", Files{Model: encodeSPM(spmFixture{pieces: []spmPiece{{"a", 0, spmNormal}}, unk: -1})}, "tokenizer.model: go-sentencepiece: unk"},
		{"lookahead regex", Files{JSON: []byte(`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "a(?=b)"}, "behavior": "Isolated"}, "decoder": {"type": "ByteLevel"}}`)}, "lookaround is not supported"},
		{"unknown decoder", Files{JSON: []byte(`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "decoder": {"type": "WordPiece"}}`)}, `unsupported decoder "WordPiece"`},
	} {
		_, err := New(c.f)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
}

// TestGarbageInputs feeds corrupted files to New: errors, never panics.
func TestGarbageInputs(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	model := encodeSPM(gemmaStyleSPM())
	js := byteLevelJSON(t)
	for i := 0; i < 300; i++ {
		m := slices.Clone(model)
		for k := 0; k < 1+r.IntN(8); k++ {
			m[r.IntN(len(m))] = byte(r.Uint32())
		}
		m = m[:r.IntN(len(m)+1)]
		if tok, err := New(Files{Model: m}); err == nil {
			tok.Decode(tok.Encode("hello <bos> wörld\n", true))
		}
		j := slices.Clone(js)
		for k := 0; k < 1+r.IntN(4); k++ {
			j[r.IntN(len(j))] = byte(r.Uint32())
		}
		if tok, err := New(Files{JSON: j}); err == nil {
			tok.Decode(tok.Encode("hello <|eot_id|> wörld\n", true))
		}
	}
}

// TestScanner checks the hand-written split patterns against expected
// splits, and translateRegex against the same pattern where Go's regexp
// can express it.
func TestScanner(t *testing.T) {
	split := func(sp splitter, s string) []string {
		var out []string
		for _, m := range sp.matches(s) {
			out = append(out, s[m[0]:m[1]])
		}
		return out
	}
	llama := gptScanner{cl100k: true, maxDigits: 3}
	qwen := gptScanner{cl100k: true, maxDigits: 1}
	gpt2 := gptScanner{}
	for _, c := range []struct {
		sp   splitter
		in   string
		want []string
	}{
		{llama, "Hello, world! I'm here.", []string{"Hello", ",", " world", "!", " I", "'m", " here", "."}},
		{llama, "x   y\n\n\tz", []string{"x", "  ", " y", "\n\n", "\tz"}},
		{llama, "12345 6", []string{"123", "45", " ", "6"}},
		{qwen, "12345", []string{"1", "2", "3", "4", "5"}},
		{llama, "WE'LL 'RE", []string{"WE", "'LL", " '", "RE"}},
		{llama, "a.\n\nb", []string{"a", ".\n\n", "b"}},
		{llama, "end  ", []string{"end", "  "}},
		{llama, "\u3000日本語\u00a0x", []string{"\u3000日本語", "\u00a0x"}},
		{llama, "é\u0301!\u0301x", []string{"é", "\u0301!\u0301", "x"}},
		{gpt2, "WE'LL 'll  x 12!", []string{"WE", "'", "LL", " '", "ll", " ", " x", " 12", "!"}},
		{gpt2, "a\n\nb", []string{"a", "\n", "\n", "b"}},
	} {
		if got := split(c.sp, c.in); !slices.Equal(got, c.want) {
			t.Errorf("%+v %q:\n got  %q\n want %q", c.sp, c.in, got, c.want)
		}
	}
	for _, p := range []string{gpt2Pattern, llama3Pattern, qwen2Pattern} {
		if sp, err := newSplitter(p); err != nil || sp == nil {
			t.Errorf("newSplitter(%q): %v", p, err)
		}
	}
	sp, err := newSplitter(`\s+|[^\s]+`)
	if err != nil {
		t.Fatal(err)
	}
	if got := split(sp, "a\u3000b c"); !slices.Equal(got, []string{"a", "\u3000", "b", " ", "c"}) {
		t.Errorf("translated \\s: %q", got)
	}
	sp, err = newSplitter(`[^\s\p{L}]+|\S+`)
	if err != nil {
		t.Fatal(err)
	}
	if got := split(sp, "ab12 \u00a0c"); !slices.Equal(got, []string{"ab12", "c"}) {
		t.Errorf("translated class: %q", got)
	}
}

// TestPipelinePieces covers normalizers, pre-tokenizers and decoders not
// used by the conformance models. The expected ids agree with Hugging Face
// tokenizers on the same tokenizer.json documents.
func TestPipelinePieces(t *testing.T) {
	doc := func(norm, pre, dec string) []byte {
		return []byte(`{"model": {"type": "BPE", "vocab": {"▁": 0, "a": 1, "b": 2, "▁a": 3, "1": 4, "2": 5, "<unk>": 6}, "merges": ["▁ a"], "unk_token": "<unk>", "fuse_unk": true},
			"normalizer": ` + norm + `, "pre_tokenizer": ` + pre + `, "decoder": ` + dec + `}`)
	}
	ms := `{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true}`
	msDec := `{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first"}`
	tok := mustNew(t, Files{JSON: doc(`{"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]}`, ms, msDec)})
	// NFKC folds the fullwidth Ａ, Lowercase makes it a; Metaspace prepends
	// ▁ to the first piece and splits before each ▁; x and y are unknown
	// and fused.
	if got := tok.Encode("Ａ a xyb", false); !slices.Equal(got, []int{3, 3, 0, 6, 2}) {
		t.Errorf("metaspace: %v", got)
	}
	if got := tok.Decode([]int{3, 3, 2}); got != "a ab" {
		t.Errorf("metaspace decode: %q", got)
	}
	tok = mustNew(t, Files{JSON: doc(`{"type": "Strip", "strip_left": true, "strip_right": true}`,
		`{"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, {"type": "Digits", "individual_digits": true}]}`,
		`{"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}`)})
	if got := tok.Encode("  a 12b  ", false); !slices.Equal(got, []int{1, 4, 5, 2}) {
		t.Errorf("whitespace/digits: %v", got)
	}
	if got := tok.Decode([]int{3, 0, 1}); got != "a a" {
		t.Errorf("strip decode: %q", got)
	}
	// splitPieces behaviours on "a-b--c" split at "-".
	in := []piece{{s: "a-b--c", first: true}}
	for beh, want := range map[splitBehavior][]string{
		splitRemoved:            {"a", "b", "c"},
		splitIsolated:           {"a", "-", "b", "-", "-", "c"},
		splitMergedWithPrevious: {"a-", "b-", "-", "c"},
		splitMergedWithNext:     {"a", "-b", "-", "-c"},
		splitContiguous:         {"a", "-", "b", "--", "c"},
	} {
		var got []string
		for _, p := range splitPieces(in, stringSplitter("-"), beh, false) {
			got = append(got, p.s)
		}
		if !slices.Equal(got, want) {
			t.Errorf("behavior %d: %q, want %q", beh, got, want)
		}
	}
}

// TestAddedTokenFlags covers lstrip/rstrip/single_word and normalized
// added tokens (expected ids checked against Hugging Face tokenizers).
func TestAddedTokenFlags(t *testing.T) {
	js := []byte(`{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, " ": 2, "x": 3}, "merges": []},
		"added_tokens": [
			{"id": 4, "content": "<L>", "special": true, "lstrip": true, "normalized": false},
			{"id": 5, "content": "<R>", "special": true, "rstrip": true, "normalized": false},
			{"id": 6, "content": "ab", "special": false, "single_word": true, "normalized": false},
			{"id": 7, "content": "X", "special": false, "normalized": true}
		],
		"normalizer": {"type": "Lowercase"},
		"decoder": {"type": "Fuse"}}`)
	tok := mustNew(t, Files{JSON: js})
	for in, want := range map[string][]int{
		"a  <L>b":  {0, 4, 1},
		"a<R>  b":  {0, 5, 1},
		"ab xab":   {6, 2, 7, 0, 1},
		"bXa":      {1, 7, 0},
		"a <L><R>": {0, 4, 5},
	} {
		if got := tok.Encode(in, false); !slices.Equal(got, want) {
			t.Errorf("Encode(%q) = %v, want %v", in, got, want)
		}
	}
	// The normalized token "X" is matched in the normalized (lowercased)
	// text with its content normalized too, as tokenizers does: "x" and
	// "X" both give id 7, and "ab" after a word character is not a
	// single_word match.
	if id, _ := tok.TokenID("X"); id != 7 {
		t.Errorf("TokenID(X) = %d", id)
	}
}

// TestFromFHM embeds tokenizer files in a .fhm file and loads them back.
func TestFromFHM(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, files map[string][]byte, tokMeta fhm.Tokenizer) *fhm.File {
		p := filepath.Join(dir, name)
		w, err := fhm.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		tokMeta.Files = map[string]string{}
		for n, b := range files {
			tn := fhm.TokenizerTensorName(n)
			if err := w.WriteTensorBytes(tn, dtype.U8, []int64{int64(len(b))}, b); err != nil {
				t.Fatal(err)
			}
			tokMeta.Files[n] = tn
		}
		cfg := arch.Config{
			Architecture: arch.Llama, VocabSize: 283, HiddenSize: 8, IntermediateSize: 16, NumLayers: 1,
			NumHeads: 2, NumKVHeads: 1, HeadDim: 4, HiddenAct: "silu", RMSNormEps: 1e-5,
			MaxPositionEmbeddings: 64, RopeTheta: 10000, RopeLocalTheta: 10000,
			LayerTypes: []string{arch.FullAttention}, AttentionScale: 0.5, TieWordEmbeddings: true,
			BOSTokenID: 2, EOSTokenIDs: []int{1, 5},
		}
		if err := w.Commit(&fhm.Metadata{Model: cfg, WeightDType: "F32", Converter: "test", Tokenizer: tokMeta}); err != nil {
			t.Fatal(err)
		}
		f, err := fhm.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	yes := true
	tmpl := "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<model>{% endif %}"
	f := write("a.fhm", map[string][]byte{
		"tokenizer.model":       encodeSPM(gemmaStyleSPM()),
		"tokenizer_config.json": []byte(`{"add_bos_token": false, "eos_token": "<eos>"}`),
	}, fhm.Tokenizer{ChatTemplate: tmpl, AddBOSToken: &yes, BOSToken: "<bos>", EOSToken: "<end_of_turn>"})
	tok, err := FromFHM(f)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Backend() != SentencePiece {
		t.Errorf("backend %v", tok.Backend())
	}
	// The metadata's add_bos_token wins over tokenizer_config.json.
	if got := tok.Encode("hello world", true); !slices.Equal(got, []int{2, gemmaStyleID(t, "hello"), gemmaStyleID(t, "▁world")}) {
		t.Errorf("Encode: %v", got)
	}
	if !slices.Equal(tok.EOS(), []int{1, 5}) || tok.BOS() != 2 {
		t.Errorf("EOS %v BOS %d", tok.EOS(), tok.BOS())
	}
	got, err := tok.RenderChat([]Message{{"user", "hi"}}, true)
	if want := "<bos><user>hi<end_of_turn><model>"; err != nil || got != want {
		t.Errorf("RenderChat = %q, %v; want %q", got, err, want)
	}

	// tokenizer.json is preferred when both are embedded.
	f = write("b.fhm", map[string][]byte{"tokenizer.model": encodeSPM(gemmaStyleSPM()), "tokenizer.json": byteLevelJSON(t)}, fhm.Tokenizer{})
	if tok, err := FromFHM(f); err != nil || tok.Backend() != JSON {
		t.Errorf("FromFHM with both files: %v, %v", tok, err)
	}
	// Neither: a clear error naming the file.
	f = write("c.fhm", map[string][]byte{"tokenizer_config.json": []byte(`{}`)}, fhm.Tokenizer{})
	if _, err := FromFHM(f); err == nil || !strings.Contains(err.Error(), "c.fhm: no tokenizer.json or tokenizer.model") {
		t.Errorf("FromFHM without a tokenizer: %v", err)
	}
	if _, err := FromFHM(nil); err == nil {
		t.Error("FromFHM(nil) succeeded")
	}
}

// TestLoadDir reads a Hugging Face directory.
func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), byteLevelJSON(t), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, _ := json.Marshal(map[string]any{"eos_token": "<|eot_id|>", "chat_template": "{{ messages[0].content }}"})
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	tok, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tok.RenderChat([]Message{{"user", "yo"}}, false); err != nil || got != "yo" {
		t.Errorf("RenderChat %q %v", got, err)
	}
	// chat_template.jinja overrides the config's template.
	if err := os.WriteFile(filepath.Join(dir, "chat_template.jinja"), []byte("J{{ messages|length }}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if tok, err = LoadDir(dir); err != nil {
		t.Fatal(err)
	}
	if got, _ := tok.RenderChat([]Message{{"user", "yo"}}, false); got != "J1" {
		t.Errorf("chat_template.jinja: %q", got)
	}
	if _, err := LoadDir(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "neither") {
		t.Errorf("LoadDir of an empty dir: %v", err)
	}
}

// TestLoadDirShared loads stories260K's model directory as it is.
func TestLoadDirShared(t *testing.T) {
	tok, err := LoadDir(filepath.Join(sharedDir(t), "stories260K", "model"))
	if err != nil {
		t.Fatal(err)
	}
	if tok.Backend() != JSON || tok.BOS() != 1 {
		t.Errorf("backend %v BOS %d", tok.Backend(), tok.BOS())
	}
	if got := tok.Decode(tok.Encode("Once upon a time", true)); got != "<s> Once upon a time" {
		t.Errorf("round trip %q", got)
	}
}

// TestConcurrentUse encodes, decodes and renders from several goroutines
// with one Tokenizer.
func TestConcurrentUse(t *testing.T) {
	for _, f := range []Files{{Model: encodeSPM(gemmaStyleSPM()), ChatTemplate: "{{ messages[0].content }}"}, {JSON: byteLevelJSON(t), ChatTemplate: "{{ messages[0].content }}"}} {
		tok := mustNew(t, f)
		texts := []string{"hello world", "héllo <bos> 日本 we'LL 1234567", "  the cat's café\n\n"}
		want := make([][]int, len(texts))
		for i, s := range texts {
			want[i] = tok.Encode(s, true)
		}
		done := make(chan error, 8)
		for g := 0; g < 8; g++ {
			go func() {
				for k := 0; k < 200; k++ {
					i := (g + k) % len(texts)
					got := tok.Encode(texts[i], true)
					if !slices.Equal(got, want[i]) {
						done <- errorf("encode %q: %v, want %v", texts[i], got, want[i])
						return
					}
					if s := tok.Decode(got[1:]); s != texts[i] {
						done <- errorf("decode %q", s)
						return
					}
					if s, err := tok.RenderChat([]Message{{"user", texts[i]}}, false); err != nil || s != texts[i] {
						done <- errorf("render %q %v", s, err)
						return
					}
				}
				done <- nil
			}()
		}
		for g := 0; g < 8; g++ {
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
