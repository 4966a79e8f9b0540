package hf

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/fhkit/fhkit/formats/arch"
)

func ptr[T any](v T) *T { return &v }

func TestParseGenerationConfig(t *testing.T) {
	tests := []struct {
		name, json string
		want       *GenerationConfig
		err        string
	}{
		{"gemma-3-1b-it", `{"bos_token_id":2,"eos_token_id":[1,106],"pad_token_id":0,"do_sample":true,"top_k":64,"top_p":0.95,"cache_implementation":"hybrid","transformers_version":"4.50.0.dev0"}`,
			&GenerationConfig{BOSTokenID: ptr(2), EOSTokenIDs: []int{1, 106}, PadTokenID: ptr(0), DoSample: ptr(true), TopK: ptr(64), TopP: ptr(0.95)}, ""},
		{"int eos, sampling", `{"bos_token_id":1,"eos_token_id":2,"max_length":512,"temperature":0.6,"min_p":0.05,"repetition_penalty":1.1,"max_new_tokens":100}`,
			&GenerationConfig{BOSTokenID: ptr(1), EOSTokenIDs: []int{2}, MaxLength: ptr(512), Temperature: ptr(0.6), MinP: ptr(0.05), RepetitionPenalty: ptr(1.1), MaxNewTokens: ptr(100)}, ""},
		{"nulls and duplicates", `{"bos_token_id":null,"eos_token_id":[2,2],"temperature":null}`, &GenerationConfig{EOSTokenIDs: []int{2}}, ""},
		{"empty", `{}`, &GenerationConfig{}, ""},
		{"bad eos", `{"eos_token_id":"x"}`, nil, `generation_config.json: eos_token_id: want an integer or a list of integers, got "x"`},
		{"negative eos", `{"eos_token_id":[-3]}`, nil, `generation_config.json: eos_token_id: -3: must be >= 0`},
		{"top_p above 1", `{"top_p":1.5}`, nil, `generation_config.json: top_p: 1.5: must be in [0, 1]`},
		{"negative top_k", `{"top_k":-1}`, nil, `generation_config.json: top_k: -1: must be >= 0`},
		{"do_sample string", `{"do_sample":"yes"}`, nil, `generation_config.json: do_sample: want true or false, got "yes"`},
		{"zero repetition penalty", `{"repetition_penalty":0}`, nil, `generation_config.json: repetition_penalty: 0: must be positive`},
		{"array", `[]`, nil, `generation_config.json: want a JSON object, got []`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := ParseGenerationConfig([]byte(tt.json))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(g, tt.want) {
				t.Errorf("got %+v\nwant %+v", g, tt.want)
			}
		})
	}
}

func TestApplyGeneration(t *testing.T) {
	base := arch.Config{VocabSize: 300, BOSTokenID: -1, PadTokenID: 0, EOSTokenIDs: []int{106, 1}}
	cfg := base
	if err := ApplyGeneration(&cfg, &GenerationConfig{EOSTokenIDs: []int{1, 2, 106}, BOSTokenID: ptr(2), PadTokenID: ptr(5)}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg.EOSTokenIDs, []int{106, 1, 2}) || cfg.BOSTokenID != 2 || cfg.PadTokenID != 0 {
		t.Errorf("merged = eos %v bos %d pad %d; want [106 1 2], 2 (filled), 0 (kept)", cfg.EOSTokenIDs, cfg.BOSTokenID, cfg.PadTokenID)
	}
	if !reflect.DeepEqual(base.EOSTokenIDs, []int{106, 1}) {
		t.Errorf("ApplyGeneration modified the caller's slice: %v", base.EOSTokenIDs)
	}
	if err := ApplyGeneration(&cfg, nil); err != nil {
		t.Errorf("nil generation config: %v", err)
	}
	err := ApplyGeneration(&cfg, &GenerationConfig{BOSTokenID: ptr(300)})
	if err == nil || !strings.Contains(err.Error(), "generation_config.json: bos_token_id 300 outside the vocabulary [0, 300)") {
		t.Errorf("error = %v", err)
	}
}

func TestParseTokenizerConfig(t *testing.T) {
	tests := []struct {
		name, json string
		want       *TokenizerConfig
		err        string
	}{
		{"string template, string tokens", `{"add_bos_token":true,"add_eos_token":false,"bos_token":"<bos>","eos_token":"<eos>","pad_token":null,"chat_template":"{{ bos_token }}","tokenizer_class":"GemmaTokenizer"}`,
			&TokenizerConfig{ChatTemplate: "{{ bos_token }}", AddBOSToken: ptr(true), AddEOSToken: ptr(false), BOSToken: "<bos>", EOSToken: "<eos>", TokenizerClass: "GemmaTokenizer"}, ""},
		{"AddedToken objects", `{"bos_token":{"__type":"AddedToken","content":"<s>","lstrip":false},"unk_token":{"content":"<unk>"}}`,
			&TokenizerConfig{BOSToken: "<s>", UnkToken: "<unk>"}, ""},
		{"template list with default", `{"chat_template":[{"name":"default","template":"D"},{"name":"rag","template":"R"}]}`,
			&TokenizerConfig{ChatTemplate: "D", ChatTemplates: []NamedTemplate{{"default", "D"}, {"rag", "R"}}}, ""},
		{"template list without default", `{"chat_template":[{"name":"tool_use","template":"T"}]}`,
			&TokenizerConfig{ChatTemplates: []NamedTemplate{{"tool_use", "T"}}}, ""},
		{"empty", `{}`, &TokenizerConfig{}, ""},
		{"template number", `{"chat_template":1}`, nil, `tokenizer_config.json: chat_template: want a string or a list of {"name", "template"} objects, got 1`},
		{"template list of strings", `{"chat_template":["x"]}`, nil, `tokenizer_config.json: chat_template: want a string or a list`},
		{"duplicate template names", `{"chat_template":[{"name":"a","template":"1"},{"name":"a","template":"2"}]}`, nil, `tokenizer_config.json: chat_template: entry 1: duplicate name "a"`},
		{"token object without content", `{"eos_token":{"lstrip":true}}`, nil, `tokenizer_config.json: eos_token.content: missing`},
		{"token number", `{"eos_token":1}`, nil, `tokenizer_config.json: eos_token: want a string, got 1`},
		{"add_bos_token string", `{"add_bos_token":"true"}`, nil, `tokenizer_config.json: add_bos_token: want true or false`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc, err := ParseTokenizerConfig([]byte(tt.json))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(tc, tt.want) {
				t.Errorf("got %+v\nwant %+v", tc, tt.want)
			}
		})
	}
}

func TestParseTokenizerConfigGemma3(t *testing.T) {
	path := conformance(t, "tokenizer-gemma3", "tokenizer_config.json.gz")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := ParseTokenizerConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tc.ChatTemplate, "{{ bos_token }}") || !strings.Contains(tc.ChatTemplate, "<start_of_turn>") {
		t.Errorf("chat template = %.80q...", tc.ChatTemplate)
	}
	if tc.AddBOSToken == nil || !*tc.AddBOSToken || tc.BOSToken != "<bos>" || tc.EOSToken != "<end_of_turn>" || tc.PadToken != "<pad>" {
		t.Errorf("got %+v", tc)
	}
}
