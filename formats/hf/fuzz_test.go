package hf

import (
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestFuzzSeedsAccepted checks that the committed seed corpus holds configs
// ParseConfig accepts, so the fuzzer starts from the success paths.
func TestFuzzSeedsAccepted(t *testing.T) {
	paths, err := filepath.Glob("testdata/fuzz/FuzzParseConfig/*")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no seed corpus: %v", err)
	}
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		if len(lines) != 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") {
			t.Fatalf("%s: not a go test fuzz v1 file", p)
		}
		data, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if _, _, err := ParseConfig([]byte(data)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

// FuzzParseConfig checks that ParseConfig never panics, that every error
// names config.json, and that every accepted configuration is valid. The
// seed corpus is in testdata/fuzz/FuzzParseConfig.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"model_type":"llama","hidden_size":64,"intermediate_size":172,"num_attention_heads":8,"num_hidden_layers":5,"vocab_size":512}`))
	f.Add([]byte(`{"model_type":"gemma3","text_config":{"vocab_size":512,"hidden_size":64,"intermediate_size":256,"num_hidden_layers":8,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":32,"sliding_window":16,"sliding_window_pattern":0}}`))
	f.Add([]byte(`{"model_type":"qwen3","hidden_size":256,"intermediate_size":512,"num_attention_heads":4,"num_hidden_layers":2,"num_key_value_heads":2,"vocab_size":1000,"rope_parameters":{"rope_type":"llama3","factor":1e308}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, info, err := ParseConfig(data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "config.json: ") {
				t.Fatalf("error does not name config.json: %v", err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("accepted an invalid config: %v", err)
		}
		if len(cfg.LayerTypes) != cfg.NumLayers || cfg.NumLayers > maxLayers {
			t.Fatalf("%d layer types for %d layers", len(cfg.LayerTypes), cfg.NumLayers)
		}
		if math.IsInf(cfg.AttentionScale, 0) || math.IsNaN(cfg.EmbedScale) {
			t.Fatalf("attention scale %v, embed scale %v", cfg.AttentionScale, cfg.EmbedScale)
		}
		if info.ModelType == "" {
			t.Fatal("accepted a config without model_type")
		}
	})
}
