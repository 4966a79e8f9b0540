package hf

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/fhkit/fhkit/formats/arch"
)

// conformanceDir is the shared conformance data, relative to this package.
const conformanceDir = "../../../shared/conformance"

// conformance returns the path of a conformance case, skipping the test when
// the shared data is not there.
func conformance(t *testing.T, elem ...string) string {
	t.Helper()
	p := filepath.Join(append([]string{conformanceDir}, elem...)...)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("../shared/conformance not found: %v", err)
	}
	return p
}

// layers returns n layer types, full attention at the given indices and
// sliding elsewhere.
func layers(n int, full ...int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = arch.SlidingAttention
	}
	for _, i := range full {
		out[i] = arch.FullAttention
	}
	return out
}

// allFull returns n full-attention layer types.
func allFull(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = arch.FullAttention
	}
	return out
}

// gemmaTiny is the expected result of the gemma3 configs below (the
// conformance gemma3-tiny shape); cases adjust a copy.
func gemmaTiny() arch.Config {
	return arch.Config{
		Architecture: arch.Gemma3, VocabSize: 512, HiddenSize: 64, IntermediateSize: 256,
		NumLayers: 8, NumHeads: 4, NumKVHeads: 2, HeadDim: 32, HiddenAct: "gelu_pytorch_tanh",
		RMSNormEps: 1e-6, MaxPositionEmbeddings: 4096, RopeTheta: 1e6, RopeLocalTheta: 1e4,
		SlidingWindow: 16, LayerTypes: layers(8, 5), AttentionScale: math.Pow(32, -0.5),
		TieWordEmbeddings: true, QKNorm: true, NormPlusOne: true, EmbedScale: 8, SandwichNorms: true,
		BOSTokenID: 2, EOSTokenIDs: []int{1, 6}, PadTokenID: 0, SourceDType: "bfloat16",
	}
}

func TestParseConfigVariants(t *testing.T) {
	tests := []struct {
		name string
		json string
		want func() arch.Config
		info ConfigInfo
	}{
		{
			name: "gemma3_text legacy sliding_window_pattern",
			json: `{"architectures":["Gemma3ForCausalLM"],"model_type":"gemma3_text","vocab_size":512,"hidden_size":64,
				"intermediate_size":256,"num_hidden_layers":8,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":32,
				"hidden_activation":"gelu_pytorch_tanh","max_position_embeddings":4096,"query_pre_attn_scalar":32,
				"rms_norm_eps":1e-06,"rope_local_base_freq":10000.0,"rope_scaling":null,"rope_theta":1000000.0,
				"sliding_window":16,"sliding_window_pattern":6,"attn_logit_softcapping":null,"final_logit_softcapping":null,
				"bos_token_id":2,"eos_token_id":[1,6],"pad_token_id":0,"torch_dtype":"bfloat16","transformers_version":"4.50.0.dev0"}`,
			want: gemmaTiny,
			info: ConfigInfo{ModelType: "gemma3_text", Architectures: []string{"Gemma3ForCausalLM"}, TransformersVersion: "4.50.0.dev0"},
		},
		{
			name: "gemma3_text pattern 3, defaults for thetas, tie, ids",
			json: `{"model_type":"gemma3_text","vocab_size":512,"hidden_size":64,"intermediate_size":256,"num_hidden_layers":8,
				"num_attention_heads":4,"num_key_value_heads":2,"head_dim":32,"max_position_embeddings":4096,
				"query_pre_attn_scalar":32,"sliding_window":16,"sliding_window_pattern":3,"torch_dtype":"bfloat16"}`,
			want: func() arch.Config {
				c := gemmaTiny()
				c.LayerTypes = layers(8, 2, 5)
				c.EOSTokenIDs = []int{1} // Gemma3TextConfig default eos 1
				return c
			},
			info: ConfigInfo{ModelType: "gemma3_text"},
		},
		{
			name: "gemma3_text _sliding_window_pattern (4.53 BC key)",
			json: `{"model_type":"gemma3_text","vocab_size":512,"hidden_size":64,"intermediate_size":256,"num_hidden_layers":8,
				"num_attention_heads":4,"num_key_value_heads":2,"head_dim":32,"max_position_embeddings":4096,
				"query_pre_attn_scalar":32,"sliding_window":16,"_sliding_window_pattern":4,"eos_token_id":[1,6],"torch_dtype":"bfloat16"}`,
			want: func() arch.Config { c := gemmaTiny(); c.LayerTypes = layers(8, 3, 7); return c },
			info: ConfigInfo{ModelType: "gemma3_text"},
		},
		{
			name: "gemma3_text layer_types wins over the pattern",
			json: `{"model_type":"gemma3_text","vocab_size":512,"hidden_size":64,"intermediate_size":256,"num_hidden_layers":8,
				"num_attention_heads":4,"num_key_value_heads":2,"head_dim":32,"max_position_embeddings":4096,
				"query_pre_attn_scalar":32,"sliding_window":16,"sliding_window_pattern":6,"eos_token_id":[1,6],"torch_dtype":"bfloat16",
				"layer_types":["full_attention","sliding_attention","sliding_attention","sliding_attention",
					"sliding_attention","sliding_attention","sliding_attention","full_attention"]}`,
			want: func() arch.Config { c := gemmaTiny(); c.LayerTypes = layers(8, 0, 7); return c },
			info: ConfigInfo{ModelType: "gemma3_text"},
		},
		{
			name: "gemma3_text v5 rope_parameters and dtype",
			json: `{"model_type":"gemma3_text","vocab_size":512,"hidden_size":64,"intermediate_size":256,"num_hidden_layers":8,
				"num_attention_heads":4,"num_key_value_heads":2,"head_dim":32,"max_position_embeddings":4096,
				"query_pre_attn_scalar":32,"sliding_window":16,"eos_token_id":[1,6],"dtype":"bfloat16",
				"layer_types":["sliding_attention","sliding_attention","sliding_attention","sliding_attention",
					"sliding_attention","full_attention","sliding_attention","sliding_attention"],
				"rope_parameters":{"full_attention":{"rope_type":"linear","factor":8.0,"rope_theta":2000000.0},
					"sliding_attention":{"rope_type":"default","rope_theta":20000.0}},
				"transformers_version":"5.0.0"}`,
			want: func() arch.Config {
				c := gemmaTiny()
				c.RopeTheta, c.RopeLocalTheta = 2e6, 2e4
				c.RopeScaling = arch.RopeScaling{Type: "linear", Factor: 8}
				return c
			},
			info: ConfigInfo{ModelType: "gemma3_text", TransformersVersion: "5.0.0"},
		},
		{
			name: "gemma3_text legacy rope_scaling with the old type key, softcaps, query_pre_attn_scalar 168",
			json: `{"model_type":"gemma3_text","vocab_size":512,"hidden_size":64,"intermediate_size":256,"num_hidden_layers":8,
				"num_attention_heads":4,"num_key_value_heads":2,"head_dim":32,"max_position_embeddings":4096,
				"query_pre_attn_scalar":168,"sliding_window":16,"eos_token_id":[1,6],"torch_dtype":"bfloat16",
				"rope_scaling":{"type":"linear","factor":8},"attn_logit_softcapping":50.0,"final_logit_softcapping":30}`,
			want: func() arch.Config {
				c := gemmaTiny()
				c.AttentionScale = math.Pow(168, -0.5)
				c.RopeScaling = arch.RopeScaling{Type: "linear", Factor: 8}
				c.AttnLogitSoftcap, c.FinalLogitSoftcap = 50, 30
				return c
			},
			info: ConfigInfo{ModelType: "gemma3_text"},
		},
		{
			name: "gemma3 multimodal: text_config, top-level ids and quantization_config copied down",
			json: `{"architectures":["Gemma3ForConditionalGeneration"],"model_type":"gemma3","boi_token_index":255999,
				"bos_token_id":2,"eos_token_id":[1,106],"pad_token_id":0,"torch_dtype":"bfloat16",
				"quantization_config":{"quant_method":"compressed-tensors","format":"pack-quantized"},
				"text_config":{"model_type":"gemma3_text","vocab_size":512,"hidden_size":64,"intermediate_size":256,
					"num_hidden_layers":8,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":32,
					"max_position_embeddings":4096,"query_pre_attn_scalar":32,"sliding_window":16,
					"rope_scaling":{"rope_type":"linear","factor":8.0}},
				"vision_config":{"model_type":"siglip_vision_model","hidden_size":1152}}`,
			want: func() arch.Config {
				c := gemmaTiny()
				c.EOSTokenIDs = []int{1, 106}
				c.VocabSize = 512
				c.RopeScaling = arch.RopeScaling{Type: "linear", Factor: 8}
				return c
			},
			info: ConfigInfo{ModelType: "gemma3", Architectures: []string{"Gemma3ForConditionalGeneration"}, Multimodal: true,
				QuantizationConfig: json.RawMessage(`{"quant_method":"compressed-tensors","format":"pack-quantized"}`)},
		},
		{
			name: "gemma3 multimodal: text_config ids win over the top level, top-level tie copied down",
			json: `{"model_type":"gemma3","eos_token_id":[1,106],"tie_word_embeddings":false,
				"text_config":{"vocab_size":512,"hidden_size":64,"intermediate_size":256,"eos_token_id":6,
					"num_hidden_layers":8,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":32,"torch_dtype":"bfloat16",
					"max_position_embeddings":4096,"query_pre_attn_scalar":32,"sliding_window":16}}`,
			want: func() arch.Config {
				c := gemmaTiny()
				c.EOSTokenIDs = []int{6}
				c.TieWordEmbeddings = false
				return c
			},
			info: ConfigInfo{ModelType: "gemma3", Multimodal: true},
		},
		{
			name: "gemma3_text head_dim absent -> Gemma3TextConfig default 256",
			json: `{"model_type":"gemma3_text","vocab_size":1000,"hidden_size":1152,"intermediate_size":6912,"num_hidden_layers":26,
				"num_attention_heads":4,"num_key_value_heads":1,"sliding_window":512,"eos_token_id":[1,106]}`,
			want: func() arch.Config {
				return arch.Config{
					Architecture: arch.Gemma3, VocabSize: 1000, HiddenSize: 1152, IntermediateSize: 6912,
					NumLayers: 26, NumHeads: 4, NumKVHeads: 1, HeadDim: 256, HiddenAct: "gelu_pytorch_tanh",
					RMSNormEps: 1e-6, MaxPositionEmbeddings: 131072, RopeTheta: 1e6, RopeLocalTheta: 1e4,
					SlidingWindow: 512, LayerTypes: layers(26, 5, 11, 17, 23), AttentionScale: 1.0 / 16,
					TieWordEmbeddings: true, QKNorm: true, NormPlusOne: true, EmbedScale: math.Sqrt(1152), SandwichNorms: true,
					BOSTokenID: 2, EOSTokenIDs: []int{1, 106}, PadTokenID: 0,
				}
			},
			info: ConfigInfo{ModelType: "gemma3_text"},
		},
		{
			name: "llama 3.2 with llama3 rope_scaling",
			json: `{"architectures":["LlamaForCausalLM"],"model_type":"llama","attention_bias":false,"mlp_bias":false,
				"bos_token_id":128000,"eos_token_id":[128001,128008,128009],"head_dim":64,"hidden_act":"silu","hidden_size":2048,
				"intermediate_size":8192,"max_position_embeddings":131072,"num_attention_heads":32,"num_hidden_layers":16,
				"num_key_value_heads":8,"pretraining_tp":1,"rms_norm_eps":1e-05,
				"rope_scaling":{"factor":32.0,"high_freq_factor":4.0,"low_freq_factor":1.0,"original_max_position_embeddings":8192,"rope_type":"llama3"},
				"rope_theta":500000.0,"tie_word_embeddings":true,"torch_dtype":"bfloat16","vocab_size":128256}`,
			want: func() arch.Config {
				return arch.Config{
					Architecture: arch.Llama, VocabSize: 128256, HiddenSize: 2048, IntermediateSize: 8192,
					NumLayers: 16, NumHeads: 32, NumKVHeads: 8, HeadDim: 64, HiddenAct: "silu", RMSNormEps: 1e-5,
					MaxPositionEmbeddings: 131072, RopeTheta: 5e5, RopeLocalTheta: 5e5,
					RopeScaling:    arch.RopeScaling{Type: "llama3", Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 8192},
					LayerTypes:     allFull(16),
					AttentionScale: 0.125, TieWordEmbeddings: true,
					BOSTokenID: 128000, EOSTokenIDs: []int{128001, 128008, 128009}, PadTokenID: -1, SourceDType: "bfloat16",
				}
			},
			info: ConfigInfo{ModelType: "llama", Architectures: []string{"LlamaForCausalLM"}},
		},
		{
			name: "llama v5 flat rope_parameters",
			json: `{"model_type":"llama","hidden_size":2048,"intermediate_size":8192,"num_attention_heads":32,"num_hidden_layers":16,
				"num_key_value_heads":8,"vocab_size":128256,"bos_token_id":128000,"eos_token_id":128001,"tie_word_embeddings":true,
				"max_position_embeddings":131072,"rms_norm_eps":1e-05,"dtype":"bfloat16",
				"rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":32.0,"high_freq_factor":4.0,
					"low_freq_factor":1.0,"original_max_position_embeddings":8192}}`,
			want: func() arch.Config {
				return arch.Config{
					Architecture: arch.Llama, VocabSize: 128256, HiddenSize: 2048, IntermediateSize: 8192,
					NumLayers: 16, NumHeads: 32, NumKVHeads: 8, HeadDim: 64, HiddenAct: "silu", RMSNormEps: 1e-5,
					MaxPositionEmbeddings: 131072, RopeTheta: 5e5, RopeLocalTheta: 5e5,
					RopeScaling:    arch.RopeScaling{Type: "llama3", Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 8192},
					LayerTypes:     allFull(16),
					AttentionScale: 0.125, TieWordEmbeddings: true,
					BOSTokenID: 128000, EOSTokenIDs: []int{128001}, PadTokenID: -1, SourceDType: "bfloat16",
				}
			},
			info: ConfigInfo{ModelType: "llama"},
		},
		{
			name: "llama minimal: LlamaConfig defaults",
			json: `{"model_type":"llama","hidden_size":64,"intermediate_size":172,"num_attention_heads":8,"num_hidden_layers":5,"vocab_size":512}`,
			want: func() arch.Config {
				return arch.Config{
					Architecture: arch.Llama, VocabSize: 512, HiddenSize: 64, IntermediateSize: 172,
					NumLayers: 5, NumHeads: 8, NumKVHeads: 8, HeadDim: 8, HiddenAct: "silu", RMSNormEps: 1e-6,
					MaxPositionEmbeddings: 2048, RopeTheta: 1e4, RopeLocalTheta: 1e4, LayerTypes: allFull(5),
					AttentionScale: math.Pow(8, -0.5), TieWordEmbeddings: false,
					BOSTokenID: 1, EOSTokenIDs: []int{2}, PadTokenID: -1,
				}
			},
			info: ConfigInfo{ModelType: "llama"},
		},
		{
			name: "llama linear rope_scaling",
			json: `{"model_type":"llama","hidden_size":64,"intermediate_size":172,"num_attention_heads":8,"num_hidden_layers":5,"vocab_size":512,
				"rope_scaling":{"type":"linear","factor":2.0},"pad_token_id":null,"eos_token_id":[2,2,3]}`,
			want: func() arch.Config {
				return arch.Config{
					Architecture: arch.Llama, VocabSize: 512, HiddenSize: 64, IntermediateSize: 172,
					NumLayers: 5, NumHeads: 8, NumKVHeads: 8, HeadDim: 8, HiddenAct: "silu", RMSNormEps: 1e-6,
					MaxPositionEmbeddings: 2048, RopeTheta: 1e4, RopeLocalTheta: 1e4, LayerTypes: allFull(5),
					RopeScaling:    arch.RopeScaling{Type: "linear", Factor: 2},
					AttentionScale: math.Pow(8, -0.5), BOSTokenID: 1, EOSTokenIDs: []int{2, 3}, PadTokenID: -1,
				}
			},
			info: ConfigInfo{ModelType: "llama"},
		},
		{
			name: "qwen3 0.6B: explicit head_dim decoupled from hidden_size",
			json: `{"architectures":["Qwen3ForCausalLM"],"attention_bias":false,"attention_dropout":0.0,"bos_token_id":151643,
				"eos_token_id":151645,"head_dim":128,"hidden_act":"silu","hidden_size":1024,"initializer_range":0.02,
				"intermediate_size":3072,"max_position_embeddings":40960,"max_window_layers":28,"model_type":"qwen3",
				"num_attention_heads":16,"num_hidden_layers":28,"num_key_value_heads":8,"rms_norm_eps":1e-06,
				"rope_scaling":null,"rope_theta":1000000,"sliding_window":null,"tie_word_embeddings":true,
				"torch_dtype":"bfloat16","transformers_version":"4.51.0","use_cache":true,"use_sliding_window":false,"vocab_size":151936}`,
			want: func() arch.Config {
				return arch.Config{
					Architecture: arch.Qwen3, VocabSize: 151936, HiddenSize: 1024, IntermediateSize: 3072,
					NumLayers: 28, NumHeads: 16, NumKVHeads: 8, HeadDim: 128, HiddenAct: "silu", RMSNormEps: 1e-6,
					MaxPositionEmbeddings: 40960, RopeTheta: 1e6, RopeLocalTheta: 1e6, LayerTypes: allFull(28),
					AttentionScale: math.Pow(128, -0.5), TieWordEmbeddings: true, QKNorm: true,
					BOSTokenID: 151643, EOSTokenIDs: []int{151645}, PadTokenID: -1, SourceDType: "bfloat16",
				}
			},
			info: ConfigInfo{ModelType: "qwen3", Architectures: []string{"Qwen3ForCausalLM"}, TransformersVersion: "4.51.0"},
		},
		{
			name: "qwen3 minimal: Qwen3Config defaults (head_dim 128, untied, layer_types all full)",
			json: `{"model_type":"qwen3","hidden_size":256,"intermediate_size":512,"num_attention_heads":4,"num_hidden_layers":2,
				"num_key_value_heads":2,"vocab_size":1000,"layer_types":["full_attention","full_attention"]}`,
			want: func() arch.Config {
				return arch.Config{
					Architecture: arch.Qwen3, VocabSize: 1000, HiddenSize: 256, IntermediateSize: 512,
					NumLayers: 2, NumHeads: 4, NumKVHeads: 2, HeadDim: 128, HiddenAct: "silu", RMSNormEps: 1e-6,
					MaxPositionEmbeddings: 32768, RopeTheta: 1e4, RopeLocalTheta: 1e4, LayerTypes: allFull(2),
					AttentionScale: math.Pow(128, -0.5), QKNorm: true, BOSTokenID: -1, PadTokenID: -1,
				}
			},
			info: ConfigInfo{ModelType: "qwen3"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, info, err := ParseConfig([]byte(tt.json))
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			want := tt.want()
			if !reflect.DeepEqual(cfg, want) {
				t.Errorf("config mismatch\n got %+v\nwant %+v", cfg, want)
			}
			if !reflect.DeepEqual(info, tt.info) {
				t.Errorf("info mismatch\n got %+v\nwant %+v", info, tt.info)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	llama := func(extra string) string {
		return `{"model_type":"llama","hidden_size":64,"intermediate_size":172,"num_attention_heads":8,"num_hidden_layers":5,"vocab_size":512` + extra + `}`
	}
	gemma := func(extra string) string {
		return `{"model_type":"gemma3_text","vocab_size":512,"hidden_size":64,"intermediate_size":256,"num_hidden_layers":8,
			"num_attention_heads":4,"num_key_value_heads":2,"head_dim":32,"sliding_window":16` + extra + `}`
	}
	qwen := func(extra string) string {
		return `{"model_type":"qwen3","hidden_size":256,"intermediate_size":512,"num_attention_heads":4,"num_hidden_layers":2,
			"num_key_value_heads":2,"vocab_size":1000` + extra + `}`
	}
	tests := []struct {
		name, json string
		want       []string // substrings of the error
	}{
		{"not JSON", `{"model_type":`, []string{"config.json: invalid JSON"}},
		{"JSON array", `[1,2]`, []string{"config.json: want a JSON object, got [1,2]"}},
		{"JSON null", `null`, []string{"config.json: want a JSON object"}},
		{"no model_type", `{"hidden_size":4}`, []string{"config.json: model_type missing", "gemma3_text, llama, qwen3"}},
		{"model_type not a string", `{"model_type":3}`, []string{"config.json: model_type: want a string"}},
		{"unsupported model_type", `{"model_type":"mistral"}`, []string{`config.json: unsupported model_type "mistral"`, "gemma3_text, llama, qwen3, gemma3"}},
		{"missing hidden_size", `{"model_type":"llama","intermediate_size":172,"num_attention_heads":8,"num_hidden_layers":5,"vocab_size":512}`,
			[]string{"config.json: hidden_size: missing (required)"}},
		{"null vocab_size", llama(`,"vocab_size":null`), []string{"config.json: vocab_size: null (required)"}},
		{"string hidden_size", strings.Replace(llama(""), `"hidden_size":64`, `"hidden_size":"64"`, 1), []string{`config.json: hidden_size: want an integer, got "64"`}},
		{"fractional layers", strings.Replace(llama(""), `"num_hidden_layers":5`, `"num_hidden_layers":5.5`, 1), []string{"config.json: num_hidden_layers: want an integer, got 5.5"}},
		{"negative heads", strings.Replace(llama(""), `"num_attention_heads":8`, `"num_attention_heads":-8`, 1), []string{"config.json: num_attention_heads: -8: must be positive"}},
		{"too many layers", strings.Replace(llama(""), `"num_hidden_layers":5`, `"num_hidden_layers":1e12`, 1), []string{"config.json: num_hidden_layers: 1000000000000: more than 65536 layers"}},
		{"kv heads do not divide", strings.Replace(gemma(""), `"num_attention_heads":4,"num_key_value_heads":2`, `"num_attention_heads":4,"num_key_value_heads":3`, 1),
			[]string{"config.json: num_key_value_heads: 3 does not divide num_attention_heads 4"}},
		{"gemma kv heads required", strings.Replace(gemma(""), `"num_key_value_heads":2,`, ``, 1), []string{"config.json: num_key_value_heads: missing (required)"}},
		{"llama head_dim underivable", strings.Replace(llama(""), `"hidden_size":64`, `"hidden_size":60`, 1), []string{"config.json: head_dim: missing, and hidden_size 60 is not a multiple of num_attention_heads 8"}},
		{"odd head_dim (Validate)", llama(`,"head_dim":7`), []string{"config.json: invalid configuration", "head_dim 7 must be even"}},
		{"eos outside the vocabulary (Validate)", llama(`,"eos_token_id":[2,512]`), []string{"config.json: invalid configuration", "special token id 512 outside the vocabulary"}},
		{"eos not ints", llama(`,"eos_token_id":["x"]`), []string{`config.json: eos_token_id: entry 0: want an integer, got "x"`}},
		{"llama attention_bias", llama(`,"attention_bias":true`), []string{"config.json: attention_bias: true is not supported"}},
		{"llama mlp_bias", llama(`,"mlp_bias":true`), []string{"config.json: mlp_bias: true is not supported"}},
		{"llama gelu", llama(`,"hidden_act":"gelu"`), []string{`config.json: hidden_act: "gelu" is not supported for llama`}},
		{"llama yarn", llama(`,"rope_scaling":{"rope_type":"yarn","factor":4.0}`), []string{`config.json: rope_scaling.rope_type: "yarn" is not supported (supported: default, linear, llama3)`}},
		{"llama dynamic via type", llama(`,"rope_scaling":{"type":"dynamic","factor":4.0}`), []string{`config.json: rope_scaling.rope_type: "dynamic" is not supported`}},
		{"llama3 missing low_freq_factor", llama(`,"rope_scaling":{"rope_type":"llama3","factor":32,"high_freq_factor":4,"original_max_position_embeddings":8192}`),
			[]string{`config.json: rope_scaling.low_freq_factor: missing (required by rope_type "llama3")`}},
		{"llama3 missing original max", llama(`,"rope_scaling":{"rope_type":"llama3","factor":32,"low_freq_factor":1,"high_freq_factor":4}`),
			[]string{`config.json: rope_scaling.original_max_position_embeddings: missing`}},
		{"rope type conflict", llama(`,"rope_scaling":{"rope_type":"linear","type":"llama3","factor":2}`), []string{`config.json: rope_scaling.type: "llama3" conflicts with rope_type "linear"`}},
		{"rope factor without type", llama(`,"rope_scaling":{"factor":2}`), []string{`config.json: rope_scaling.rope_type: missing while factor is given`}},
		{"partial rotary", llama(`,"rope_parameters":{"rope_type":"default","partial_rotary_factor":0.5}`), []string{`config.json: rope_parameters.partial_rotary_factor: 0.5 is not supported`}},
		{"llama nested rope_parameters", llama(`,"rope_parameters":{"full_attention":{"rope_type":"default"}}`), []string{"config.json: rope_parameters: per-layer-type rope parameters are not supported for llama"}},
		{"llama sliding layer", llama(`,"layer_types":["full_attention","sliding_attention","full_attention","full_attention","full_attention"]`),
			[]string{`config.json: layer_types: entry 1 is "sliding_attention": only "full_attention" is supported for llama`}},
		{"qwen3 sliding window", qwen(`,"use_sliding_window":true,"sliding_window":4096`), []string{"config.json: use_sliding_window: true is not supported for qwen3"}},
		{"qwen3 attention_bias", qwen(`,"attention_bias":true`), []string{"config.json: attention_bias: true is not supported (the qwen3 runtime"}},
		{"qwen3 layer_types length", qwen(`,"layer_types":["full_attention"]`), []string{"config.json: layer_types: 1 entries for num_hidden_layers 2"}},
		{"gemma bidirectional", gemma(`,"use_bidirectional_attention":true`), []string{"config.json: use_bidirectional_attention: true (EmbeddingGemma) is not supported"}},
		{"gemma layer_types length", gemma(`,"layer_types":["full_attention"]`), []string{"config.json: layer_types: 1 entries for num_hidden_layers 8"}},
		{"gemma layer_types value", gemma(`,"layer_types":["full_attention","chunked_attention","full_attention","full_attention","full_attention","full_attention","full_attention","full_attention"]`),
			[]string{`config.json: layer_types: entry 1 is "chunked_attention"`}},
		{"gemma pattern 0", gemma(`,"sliding_window_pattern":0`), []string{"config.json: sliding_window_pattern: 0: must be positive"}},
		{"gemma null window", strings.Replace(gemma(""), `"sliding_window":16`, `"sliding_window":null`, 1), []string{"config.json: sliding_window: 0: sliding_attention layers need a window >= 1"}},
		{"gemma query_pre_attn_scalar 0", gemma(`,"query_pre_attn_scalar":0`), []string{"config.json: query_pre_attn_scalar: 0: must be positive"}},
		{"gemma negative softcap", gemma(`,"final_logit_softcapping":-1`), []string{"config.json: final_logit_softcapping: -1: must be positive or null"}},
		{"gemma silu", gemma(`,"hidden_activation":"silu"`), []string{`config.json: hidden_activation: "silu" is not supported for gemma3`}},
		{"gemma flat rope_parameters", gemma(`,"rope_parameters":{"rope_type":"default","rope_theta":10000}`), []string{`config.json: rope_parameters: want {"full_attention": {...}, "sliding_attention": {...}} for gemma3`}},
		{"gemma scaled sliding layers", gemma(`,"rope_parameters":{"full_attention":{"rope_type":"default"},"sliding_attention":{"rope_type":"linear","factor":2}}`),
			[]string{`config.json: rope_parameters.sliding_attention.rope_type: "linear": RoPE scaling on sliding_attention layers is not supported`}},
		{"gemma3 without text_config", `{"model_type":"gemma3","eos_token_id":[1,106]}`, []string{`config.json: model_type "gemma3" needs a text_config object`}},
		{"gemma3 text_config not an object", `{"model_type":"gemma3","text_config":[1]}`, []string{`config.json: text_config: want a JSON object, got [1]`}},
		{"gemma3 text_config of another model", `{"model_type":"gemma3","text_config":{"model_type":"llama"}}`, []string{`config.json: text_config.model_type: want "gemma3_text" inside a "gemma3" config, got "llama"`}},
		{"gemma3 text_config missing field", `{"model_type":"gemma3","text_config":{"model_type":"gemma3_text"}}`, []string{`config.json: text_config.vocab_size: missing (required)`}},
		{"gemma3 inherited field named at the top", `{"model_type":"gemma3","eos_token_id":"x","text_config":{}}`, []string{`config.json: eos_token_id: want an integer or a list of integers`}},
		{"quantization_config not an object", llama(`,"quantization_config":"gptq"`), []string{`config.json: quantization_config: want a JSON object, got "gptq"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ParseConfig([]byte(tt.json))
			if err == nil {
				t.Fatal("ParseConfig succeeded, want an error")
			}
			t.Log(err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseConfigConformance(t *testing.T) {
	t.Run("gemma3-tiny", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join(conformance(t, "gemma3-tiny", "model"), ConfigName))
		if err != nil {
			t.Fatal(err)
		}
		cfg, info, err := ParseConfig(data)
		if err != nil {
			t.Fatal(err)
		}
		if info.ModelType != arch.Gemma3 || info.Multimodal {
			t.Errorf("info = %+v", info)
		}
		for i := 0; i < cfg.NumLayers; i++ {
			if got, want := cfg.IsSliding(i), i != 5; got != want {
				t.Errorf("layer %d sliding = %v, want %v", i, got, want)
			}
		}
		if cfg.SlidingWindow != 16 {
			t.Errorf("sliding window = %d, want 16", cfg.SlidingWindow)
		}
		if want := math.Pow(32, -0.5); cfg.AttentionScale != want {
			t.Errorf("attention scale = %v, want %v", cfg.AttentionScale, want)
		}
		hasEOS1 := false
		for _, id := range cfg.EOSTokenIDs {
			hasEOS1 = hasEOS1 || id == 1
		}
		if !hasEOS1 {
			t.Errorf("eos ids %v lack 1", cfg.EOSTokenIDs)
		}
		if !reflect.DeepEqual(cfg, gemmaTiny()) {
			t.Errorf("config\n got %+v\nwant %+v", cfg, gemmaTiny())
		}
	})
	t.Run("stories260K", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join(conformance(t, "stories260K", "model"), ConfigName))
		if err != nil {
			t.Fatal(err)
		}
		cfg, _, err := ParseConfig(data)
		if err != nil {
			t.Fatal(err)
		}
		want := arch.Config{
			Architecture: arch.Llama, VocabSize: 512, HiddenSize: 64, IntermediateSize: 172,
			NumLayers: 5, NumHeads: 8, NumKVHeads: 4, HeadDim: 8, HiddenAct: "silu", RMSNormEps: 1e-5,
			MaxPositionEmbeddings: 512, RopeTheta: 1e4, RopeLocalTheta: 1e4, LayerTypes: allFull(5),
			AttentionScale: math.Pow(8, -0.5), TieWordEmbeddings: true,
			BOSTokenID: 1, EOSTokenIDs: []int{2}, PadTokenID: -1, SourceDType: "float32",
		}
		if !reflect.DeepEqual(cfg, want) {
			t.Errorf("config\n got %+v\nwant %+v", cfg, want)
		}
	})
}
