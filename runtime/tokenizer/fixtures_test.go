package tokenizer

import (
	"encoding/json"
	"fmt"
	"math"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// spmFixture describes a SentencePiece model built in tests.
type spmFixture struct {
	pieces         []spmPiece
	dummyPrefix    bool
	bos, eos, unk  int
	byteFallback   bool
	modelType      int
	removeExtraWS  bool
	omitNormalizer bool
}

// encodeSPM serializes a SentencePiece ModelProto.
func encodeSPM(f spmFixture) []byte {
	var b []byte
	for _, p := range f.pieces {
		var m []byte
		m = protowire.AppendTag(m, 1, protowire.BytesType)
		m = protowire.AppendString(m, p.piece)
		m = protowire.AppendTag(m, 2, protowire.Fixed32Type)
		m = protowire.AppendFixed32(m, math.Float32bits(p.score))
		m = protowire.AppendTag(m, 3, protowire.VarintType)
		m = protowire.AppendVarint(m, uint64(p.typ))
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, m)
	}
	var ts []byte
	mt := f.modelType
	if mt == 0 {
		mt = spmBPE
	}
	for _, kv := range [][2]int64{{3, int64(mt)}, {35, b2i(f.byteFallback)}, {40, int64(f.unk)}, {41, int64(f.bos)}, {42, int64(f.eos)}, {43, -1}} {
		ts = protowire.AppendTag(ts, protowire.Number(kv[0]), protowire.VarintType)
		ts = protowire.AppendVarint(ts, uint64(kv[1]))
	}
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, ts)
	if !f.omitNormalizer {
		var ns []byte
		ns = protowire.AppendTag(ns, 1, protowire.BytesType)
		ns = protowire.AppendString(ns, "identity")
		ns = protowire.AppendTag(ns, 3, protowire.VarintType)
		ns = protowire.AppendVarint(ns, uint64(b2i(f.dummyPrefix)))
		ns = protowire.AppendTag(ns, 4, protowire.VarintType)
		ns = protowire.AppendVarint(ns, uint64(b2i(f.removeExtraWS)))
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendBytes(b, ns)
	}
	return b
}

func b2i(x bool) int64 {
	if x {
		return 1
	}
	return 0
}

// gemmaStyleSPM is a tiny Gemma-like SentencePiece BPE model: no dummy
// prefix, byte fallback, control and user-defined pieces.
//
//	0 <pad> 1 <eos> 2 <bos> 3 <unk> 4 <start_of_turn> 5 <end_of_turn> 6 "\n"
//	7..262 <0x00>..<0xFF>
//	263.. the normal pieces below, each scored by its position (earlier
//	merges first).
func gemmaStyleSPM() spmFixture {
	f := spmFixture{bos: 2, eos: 1, unk: 3, byteFallback: true}
	f.pieces = []spmPiece{
		{"<pad>", 0, spmControl}, {"<eos>", 0, spmControl}, {"<bos>", 0, spmControl}, {"<unk>", 0, spmUnknown},
		{"<start_of_turn>", 0, spmUserDefined}, {"<end_of_turn>", 0, spmUserDefined}, {"\n", 0, spmUserDefined},
	}
	for b := 0; b < 256; b++ {
		f.pieces = append(f.pieces, spmPiece{fmt.Sprintf("<0x%02X>", b), 0, spmByte})
	}
	for i, p := range gemmaStyleNormal {
		f.pieces = append(f.pieces, spmPiece{p, -float32(i), spmNormal})
	}
	return f
}

// gemmaStyleNormal are the normal pieces of gemmaStyleSPM, ids 263 on.
var gemmaStyleNormal = []string{
	"▁", "h", "e", "l", "o", "w", "r", "d", "a", "t", // 263-272
	"ll", "he", "▁w", "or", "llo", "hello", "▁wor", "▁world", "▁▁", "at", // 273-282
	"ld", // 283
}

// gemmaStyleID returns the id of a normal piece of gemmaStyleSPM.
func gemmaStyleID(t testing.TB, p string) int {
	for i, x := range gemmaStyleNormal {
		if x == p {
			return 263 + i
		}
	}
	t.Fatalf("no piece %q", p)
	return -1
}

// llamaStyleSPM is a tiny Llama-2-like model: dummy prefix, <unk> <s> </s>,
// byte fallback.
func llamaStyleSPM() spmFixture {
	f := spmFixture{bos: 1, eos: 2, unk: 0, byteFallback: true, dummyPrefix: true}
	f.pieces = []spmPiece{{"<unk>", 0, spmUnknown}, {"<s>", 0, spmControl}, {"</s>", 0, spmControl}}
	for b := 0; b < 256; b++ {
		f.pieces = append(f.pieces, spmPiece{fmt.Sprintf("<0x%02X>", b), 0, spmByte})
	}
	// ids 259..
	for i, p := range []string{"▁", "h", "i", "▁h", "▁hi", "t", "▁t", "o", "▁to"} {
		f.pieces = append(f.pieces, spmPiece{p, -float32(i), spmNormal})
	}
	return f
}

// byteLevelJSON is a tiny Llama-3 style byte-level BPE tokenizer.json: the
// 256 byte symbols are ids 0-255 (id = byte value), then the merges below
// create ids 256-267, then added tokens 268-270.
func byteLevelJSON(t testing.TB) []byte {
	alpha := byteLevelAlphabet()
	vocab := map[string]int{}
	for b := 0; b < 256; b++ {
		vocab[string(alpha[b])] = b
	}
	merges := [][2]string{
		{"Ġ", "t"},    // 256 Ġt
		{"h", "e"},    // 257 he
		{"Ġt", "he"},  // 258 Ġthe
		{"'", "s"},    // 259 's
		{"1", "2"},    // 260 12
		{"12", "3"},   // 261 123
		{"Ġ", "Ġ"},    // 262 ĠĠ
		{"Ċ", "Ċ"},    // 263 ĊĊ
		{"Ã", "©"},    // 264 Ã© (é)
		{"c", "a"},    // 265 ca
		{"ca", "f"},   // 266 caf
		{"caf", "Ã©"}, // 267 cafÃ©
	}
	var ms []string
	for i, m := range merges {
		vocab[m[0]+m[1]] = 256 + i
		ms = append(ms, m[0]+" "+m[1])
	}
	doc := map[string]any{
		"version": "1.0",
		"added_tokens": []map[string]any{
			{"id": 268, "content": "<|begin_of_text|>", "special": true, "normalized": false, "lstrip": false, "rstrip": false, "single_word": false},
			{"id": 269, "content": "<|eot_id|>", "special": true, "normalized": false, "lstrip": false, "rstrip": false, "single_word": false},
			{"id": 270, "content": "<tool>", "special": false, "normalized": false, "lstrip": false, "rstrip": false, "single_word": false},
		},
		"normalizer": nil,
		"pre_tokenizer": map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Split", "pattern": map[string]any{"Regex": llama3Pattern}, "behavior": "Isolated", "invert": false},
			map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
		}},
		"post_processor": map[string]any{"type": "Sequence", "processors": []any{
			map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
			map[string]any{"type": "TemplateProcessing",
				"single":         []any{map[string]any{"SpecialToken": map[string]any{"id": "<|begin_of_text|>", "type_id": 0}}, map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}}},
				"pair":           []any{},
				"special_tokens": map[string]any{"<|begin_of_text|>": map[string]any{"id": "<|begin_of_text|>", "ids": []int{268}, "tokens": []string{"<|begin_of_text|>"}}}},
		}},
		"decoder": map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
		"model": map[string]any{"type": "BPE", "dropout": nil, "unk_token": nil, "continuing_subword_prefix": nil, "end_of_word_suffix": nil,
			"fuse_unk": false, "byte_fallback": false, "ignore_merges": true, "vocab": vocab, "merges": ms},
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
