// Package hf reads a Hugging Face checkpoint directory: config.json into the
// canonical arch.Config, generation_config.json, the tokenizer files, and the
// safetensors weights (one model.safetensors, or an index and its shards)
// under canonical tensor names.
//
// Supported model_type values: gemma3_text, gemma3 (the text half of the
// multimodal checkpoint), llama and qwen3. Defaults for fields a config.json
// leaves out are the ones of the transformers config classes, cited where
// they are set.
package hf

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/fhkit/fhkit/formats/arch"
)

// ConfigName is the file name of the model configuration.
const ConfigName = "config.json"

// maxLayers bounds num_hidden_layers before anything is allocated for the
// layers (real models have at most a few hundred).
const maxLayers = 1 << 16

// ConfigInfo is what config.json says beyond the hyperparameters in
// arch.Config.
type ConfigInfo struct {
	// ModelType is the model_type as written ("gemma3" for a multimodal
	// Gemma-3, whose Config.Architecture is still arch.Gemma3).
	ModelType string
	// Architectures is the "architectures" list ("Gemma3ForCausalLM").
	Architectures []string
	// Multimodal is true when the hyperparameters came from text_config.
	Multimodal bool
	// QuantizationConfig is the raw quantization_config object (copied down
	// from the top level of a multimodal config), or nil when absent.
	QuantizationConfig json.RawMessage
	// TransformersVersion is transformers_version, if given.
	TransformersVersion string
}

// archDefaults are the values a transformers config class uses for fields
// a config.json leaves out.
type archDefaults struct {
	kvHeadsRequired bool
	headDim         int // 0: hidden_size / num_attention_heads
	maxPos          int
	rmsEps          float64
	ropeTheta       float64
	tie             bool
	bos, pad        int // -1: none
	eos             []int
}

// Defaults of the transformers config classes, as functions so that no
// package-level state can be modified. num_key_value_heads is required where
// the class default is a model-size constant rather than "same as
// num_attention_heads".

// llamaDefaults: LlamaConfig (transformers src/transformers/models/llama/
// configuration_llama.py @008e5743; the same values in the 4.x __init__
// signature): head_dim None -> hidden_size // num_attention_heads,
// num_key_value_heads None -> num_attention_heads,
// max_position_embeddings 2048, rms_norm_eps 1e-6, rope_theta 10000.0,
// tie_word_embeddings False, bos_token_id 1, eos_token_id 2,
// pad_token_id None.
func llamaDefaults() archDefaults {
	return archDefaults{headDim: 0, maxPos: 2048, rmsEps: 1e-6, ropeTheta: 10000, tie: false, bos: 1, pad: -1, eos: []int{2}}
}

// qwen3Defaults: Qwen3Config (configuration_qwen3.py @1f3ae2b3, 4.x __init__, and
// @008e5743, v5): head_dim 128, num_key_value_heads 32 (required here),
// max_position_embeddings 32768, rms_norm_eps 1e-6, rope_theta 10000.0,
// tie_word_embeddings False, use_sliding_window False; bos/eos/pad None.
func qwen3Defaults() archDefaults {
	return archDefaults{kvHeadsRequired: true, headDim: 128, maxPos: 32768, rmsEps: 1e-6, ropeTheta: 10000, tie: false, bos: -1, pad: -1}
}

// gemma3Defaults: Gemma3TextConfig (configuration_gemma3.py @008f5c8c, 4.50, and the v5
// dataclass): head_dim 256, num_key_value_heads 4 (required here),
// max_position_embeddings 131072, rms_norm_eps 1e-6, rope_theta 1e6,
// rope_local_base_freq 1e4, tie_word_embeddings True, pad 0, eos 1,
// bos 2, query_pre_attn_scalar 256, sliding_window 4096,
// sliding_window_pattern 6, hidden_activation "gelu_pytorch_tanh".
func gemma3Defaults() archDefaults {
	return archDefaults{kvHeadsRequired: true, headDim: 256, maxPos: 131072, rmsEps: 1e-6, ropeTheta: 1e6, tie: true, bos: 2, pad: 0, eos: []int{1}}
}

// Further Gemma3TextConfig defaults (see gemma3Defaults).
const (
	gemma3LocalTheta     = 1e4
	gemma3QueryPreAttn   = 256
	gemma3SlidingWindow  = 4096
	gemma3WindowPattern  = 6
	gemma3HiddenAct      = "gelu_pytorch_tanh"
	gemma3MultimodalType = "gemma3"
)

// multimodalCopyDown returns the keys a multimodal config may hold only at
// its top level; they are copied into text_config when absent there.
func multimodalCopyDown() []string {
	return []string{"bos_token_id", "eos_token_id", "pad_token_id", "quantization_config", "torch_dtype", "dtype", "tie_word_embeddings"}
}

// supportedModelTypes lists the model_type values ParseConfig accepts.
func supportedModelTypes() string {
	return strings.Join(arch.Supported(), ", ") + ", " + gemma3MultimodalType + " (text part)"
}

// ParseConfig parses a config.json into the canonical configuration, which
// it validates with arch.Config.Validate. Errors name config.json and the
// field.
func ParseConfig(data []byte) (arch.Config, ConfigInfo, error) {
	return parseConfig(ConfigName, data)
}

// parseConfig is ParseConfig with the file name used in errors.
func parseConfig(file string, data []byte) (arch.Config, ConfigInfo, error) {
	var errs []error
	top, err := decodeObject(file, data, &errs)
	if err != nil {
		return arch.Config{}, ConfigInfo{}, err
	}
	var info ConfigInfo
	mt, ok := top.string("model_type")
	if !ok {
		if len(errs) == 0 {
			return arch.Config{}, ConfigInfo{}, fmt.Errorf("%s: model_type missing (supported: %s)", file, supportedModelTypes())
		}
		return arch.Config{}, ConfigInfo{}, errors.Join(errs...)
	}
	info.ModelType = mt
	info.Architectures, _ = top.strings("architectures")
	info.TransformersVersion, _ = top.string("transformers_version")

	text := top
	switch mt {
	case gemma3MultimodalType:
		tc, ok := top.object("text_config")
		if !ok {
			if len(errs) == 0 {
				top.failf("model_type %q needs a text_config object with the language model's hyperparameters", mt)
			}
			return arch.Config{}, ConfigInfo{}, errors.Join(errs...)
		}
		tc.inherited = map[string]bool{}
		for _, k := range multimodalCopyDown() {
			if _, here := tc.raw(k); !here {
				if v, there := top.m[k]; there {
					tc.m[k] = v
					tc.inherited[k] = true
				}
			}
		}
		if tmt, ok := tc.string("model_type"); ok && tmt != arch.Gemma3 {
			tc.fail("model_type", "want %q inside a %q config, got %q", arch.Gemma3, mt, tmt)
		}
		if len(errs) > 0 {
			return arch.Config{}, ConfigInfo{}, errors.Join(errs...)
		}
		info.Multimodal = true
		text = tc
	case arch.Gemma3, arch.Llama, arch.Qwen3:
	default:
		return arch.Config{}, ConfigInfo{}, fmt.Errorf("%s: unsupported model_type %q (supported: %s)", file, mt, supportedModelTypes())
	}
	if q, ok := text.raw("quantization_config"); ok {
		if q[0] != '{' {
			text.fail("quantization_config", "want a JSON object, got %s", short(q))
		} else {
			info.QuantizationConfig = append(json.RawMessage(nil), q...)
		}
	}

	var cfg arch.Config
	switch mt {
	case arch.Llama:
		parseLlamaLike(text, &cfg, arch.Llama, llamaDefaults())
	case arch.Qwen3:
		parseLlamaLike(text, &cfg, arch.Qwen3, qwen3Defaults())
	default:
		parseGemma3(text, &cfg)
	}
	if len(errs) > 0 {
		return arch.Config{}, ConfigInfo{}, errors.Join(errs...)
	}
	if err := cfg.Validate(); err != nil {
		return arch.Config{}, ConfigInfo{}, fmt.Errorf("%s: invalid configuration: %w", file, err)
	}
	return cfg, info, nil
}

// parseCommon reads the fields every architecture shares. It returns false
// when the shape fields are unusable (later steps would divide by them).
func parseCommon(o object, cfg *arch.Config, d archDefaults) bool {
	required := func(key string) int {
		v, ok := o.int(key)
		if !ok {
			if !o.has(key) {
				o.fail(key, "missing (required)")
			} else if _, present := o.raw(key); !present {
				o.fail(key, "null (required)")
			}
			return 0
		}
		if v <= 0 {
			o.fail(key, "%d: must be positive", v)
			return 0
		}
		return v
	}
	cfg.VocabSize = required("vocab_size")
	cfg.HiddenSize = required("hidden_size")
	cfg.IntermediateSize = required("intermediate_size")
	cfg.NumLayers = required("num_hidden_layers")
	cfg.NumHeads = required("num_attention_heads")
	if cfg.NumLayers > maxLayers {
		o.fail("num_hidden_layers", "%d: more than %d layers", cfg.NumLayers, maxLayers)
		cfg.NumLayers = 0
	}
	if d.kvHeadsRequired {
		cfg.NumKVHeads = required("num_key_value_heads")
	} else if kv, ok := o.int("num_key_value_heads"); ok {
		if kv <= 0 {
			o.fail("num_key_value_heads", "%d: must be positive", kv)
		}
		cfg.NumKVHeads = kv
	} else {
		cfg.NumKVHeads = cfg.NumHeads // transformers: None -> num_attention_heads
	}
	if cfg.NumHeads > 0 && cfg.NumKVHeads > 0 && cfg.NumHeads%cfg.NumKVHeads != 0 {
		o.fail("num_key_value_heads", "%d does not divide num_attention_heads %d", cfg.NumKVHeads, cfg.NumHeads)
	}
	if hd, ok := o.int("head_dim"); ok {
		if hd <= 0 {
			o.fail("head_dim", "%d: must be positive", hd)
		}
		cfg.HeadDim = hd
	} else if d.headDim > 0 {
		cfg.HeadDim = d.headDim
	} else if cfg.NumHeads > 0 && cfg.HiddenSize > 0 {
		if cfg.HiddenSize%cfg.NumHeads != 0 {
			o.fail("head_dim", "missing, and hidden_size %d is not a multiple of num_attention_heads %d to derive it", cfg.HiddenSize, cfg.NumHeads)
		}
		cfg.HeadDim = cfg.HiddenSize / cfg.NumHeads
	}
	cfg.MaxPositionEmbeddings = d.maxPos
	if v, ok := o.int("max_position_embeddings"); ok {
		cfg.MaxPositionEmbeddings = v
	}
	cfg.RMSNormEps = d.rmsEps
	if v, ok := o.float("rms_norm_eps"); ok {
		cfg.RMSNormEps = v
	}
	cfg.TieWordEmbeddings = d.tie
	if v, ok := o.bool("tie_word_embeddings"); ok {
		cfg.TieWordEmbeddings = v
	}
	cfg.BOSTokenID = tokenID(o, "bos_token_id", d.bos)
	cfg.PadTokenID = tokenID(o, "pad_token_id", d.pad)
	cfg.EOSTokenIDs = append([]int(nil), d.eos...)
	if o.has("eos_token_id") {
		ids, _ := o.ints("eos_token_id")
		cfg.EOSTokenIDs = unionIDs(nil, ids)
	}
	if v, ok := o.string("torch_dtype"); ok {
		cfg.SourceDType = v
	} else if v, ok := o.string("dtype"); ok { // transformers v5 name
		cfg.SourceDType = v
	}
	if v, _ := o.bool("attention_bias"); v {
		o.fail("attention_bias", "true is not supported (the %s runtime has no projection biases)", cfg.Architecture)
	}
	if v, _ := o.bool("mlp_bias"); v {
		o.fail("mlp_bias", "true is not supported (the %s runtime has no MLP biases)", cfg.Architecture)
	}
	return cfg.NumLayers > 0 && cfg.NumHeads > 0 && cfg.HeadDim > 0 && cfg.HiddenSize > 0
}

// tokenID reads a special-token id: absent -> def, null -> -1 (none).
func tokenID(o object, key string, def int) int {
	if !o.has(key) {
		return def
	}
	if v, ok := o.int(key); ok {
		return v
	}
	return -1
}

// unionIDs appends to dst the ids of add it does not hold yet, in order.
func unionIDs(dst, add []int) []int {
	for _, id := range add {
		dup := false
		for _, d := range dst {
			if d == id {
				dup = true
				break
			}
		}
		if !dup {
			dst = append(dst, id)
		}
	}
	return dst
}

// parseLlamaLike maps a llama or qwen3 config.
func parseLlamaLike(o object, cfg *arch.Config, name string, d archDefaults) {
	cfg.Architecture = name
	if !parseCommon(o, cfg, d) {
		return
	}
	cfg.QKNorm = name == arch.Qwen3
	cfg.HiddenAct = "silu"
	if v, ok := o.string("hidden_act"); ok {
		cfg.HiddenAct = v
		if v != "silu" {
			o.fail("hidden_act", "%q is not supported for %s (want \"silu\")", v, name)
		}
	}
	cfg.AttentionScale = math.Pow(float64(cfg.HeadDim), -0.5)
	if name == arch.Qwen3 {
		if v, _ := o.bool("use_sliding_window"); v {
			o.fail("use_sliding_window", "true is not supported for qwen3 (only full attention on every layer)")
		}
	}
	cfg.LayerTypes = make([]string, cfg.NumLayers)
	for i := range cfg.LayerTypes {
		cfg.LayerTypes[i] = arch.FullAttention
	}
	if lt, ok := o.strings("layer_types"); ok {
		if len(lt) != cfg.NumLayers {
			o.fail("layer_types", "%d entries for num_hidden_layers %d", len(lt), cfg.NumLayers)
		}
		for i, t := range lt {
			if t != arch.FullAttention {
				o.fail("layer_types", "entry %d is %q: only %q is supported for %s", i, t, arch.FullAttention, name)
				break
			}
		}
	}

	cfg.RopeTheta = d.ropeTheta
	if v, ok := o.float("rope_theta"); ok {
		cfg.RopeTheta = v
	}
	params, hasParams := o.object("rope_parameters")
	if hasParams && params.hasAny(arch.FullAttention, arch.SlidingAttention) {
		params.failf("%s: per-layer-type rope parameters are not supported for %s (want a flat {\"rope_type\": ..., \"rope_theta\": ...})", strings.TrimSuffix(params.prefix, "."), name)
		return
	}
	if hasParams {
		if v, ok := params.float("rope_theta"); ok {
			cfg.RopeTheta = v // v5: rope_parameters wins over a legacy rope_theta
		}
	}
	scaling, hasScaling := o.object("rope_scaling")
	cfg.RopeScaling = ropeScaling(mergeRope(params, hasParams, scaling, hasScaling))
	cfg.RopeLocalTheta = cfg.RopeTheta
}

// parseGemma3 maps a gemma3_text config (or a multimodal text_config).
func parseGemma3(o object, cfg *arch.Config) {
	cfg.Architecture = arch.Gemma3
	if !parseCommon(o, cfg, gemma3Defaults()) {
		return
	}
	cfg.QKNorm = true
	cfg.NormPlusOne = true
	cfg.SandwichNorms = true
	cfg.EmbedScale = math.Sqrt(float64(cfg.HiddenSize))

	cfg.HiddenAct = gemma3HiddenAct
	if v, ok := o.string("hidden_activation"); ok {
		cfg.HiddenAct = v
	} else if v, ok := o.string("hidden_act"); ok {
		cfg.HiddenAct = v
	}
	if cfg.HiddenAct != gemma3HiddenAct {
		o.fail("hidden_activation", "%q is not supported for gemma3 (want %q)", cfg.HiddenAct, gemma3HiddenAct)
	}

	qpas := float64(gemma3QueryPreAttn)
	if v, ok := o.float("query_pre_attn_scalar"); ok {
		qpas = v
		if !(v > 0) {
			o.fail("query_pre_attn_scalar", "%g: must be positive", v)
		}
	}
	cfg.AttentionScale = math.Pow(qpas, -0.5)

	for _, c := range []struct {
		key string
		dst *float64
	}{{"attn_logit_softcapping", &cfg.AttnLogitSoftcap}, {"final_logit_softcapping", &cfg.FinalLogitSoftcap}} {
		if v, ok := o.float(c.key); ok {
			if v < 0 {
				o.fail(c.key, "%g: must be positive or null", v)
			}
			*c.dst = v
		}
	}
	if v, _ := o.bool("use_bidirectional_attention"); v {
		o.fail("use_bidirectional_attention", "true (EmbeddingGemma) is not supported: fhkit runs causal decoders only")
	}

	// Layer types: explicit list (transformers >= 4.53), else derived from
	// the pattern as Gemma3TextConfig does: sliding iff (i+1) % pattern != 0.
	cfg.LayerTypes = make([]string, cfg.NumLayers)
	if lt, ok := o.strings("layer_types"); ok {
		if len(lt) != cfg.NumLayers {
			o.fail("layer_types", "%d entries for num_hidden_layers %d", len(lt), cfg.NumLayers)
		}
		for i, t := range lt {
			if t != arch.FullAttention && t != arch.SlidingAttention {
				o.fail("layer_types", "entry %d is %q: want %q or %q", i, t, arch.FullAttention, arch.SlidingAttention)
				break
			}
		}
		copy(cfg.LayerTypes, lt)
	} else {
		key, pattern := "sliding_window_pattern", gemma3WindowPattern
		if v, ok := o.int(key); ok {
			pattern = v
		} else if v, ok := o.int("_sliding_window_pattern"); ok {
			key, pattern = "_sliding_window_pattern", v
		}
		if pattern <= 0 {
			o.fail(key, "%d: must be positive", pattern)
			pattern = 1
		}
		for i := range cfg.LayerTypes {
			if (i+1)%pattern != 0 {
				cfg.LayerTypes[i] = arch.SlidingAttention
			} else {
				cfg.LayerTypes[i] = arch.FullAttention
			}
		}
	}
	cfg.SlidingWindow = gemma3SlidingWindow
	if o.has("sliding_window") {
		cfg.SlidingWindow = 0 // explicit null: no window
		if v, ok := o.int("sliding_window"); ok {
			cfg.SlidingWindow = v
		}
	}
	if cfg.SlidingWindow <= 0 {
		for _, t := range cfg.LayerTypes {
			if t == arch.SlidingAttention {
				o.fail("sliding_window", "%d: sliding_attention layers need a window >= 1", cfg.SlidingWindow)
				break
			}
		}
	}

	// RoPE: legacy rope_theta / rope_local_base_freq / rope_scaling
	// (global layers only), or the v5 rope_parameters per layer type, which
	// wins for the thetas; a legacy rope_scaling is merged into its
	// full_attention entry, as Gemma3TextConfig.convert_rope_params_to_dict
	// does.
	cfg.RopeTheta = gemma3Defaults().ropeTheta
	if v, ok := o.float("rope_theta"); ok {
		cfg.RopeTheta = v
	}
	cfg.RopeLocalTheta = gemma3LocalTheta
	if v, ok := o.float("rope_local_base_freq"); ok {
		cfg.RopeLocalTheta = v
	}
	var full, sliding object
	var hasFull, hasSliding bool
	if params, ok := o.object("rope_parameters"); ok {
		if !params.hasAny(arch.FullAttention, arch.SlidingAttention) {
			params.failf("%s: want {%q: {...}, %q: {...}} for gemma3", strings.TrimSuffix(params.prefix, "."), arch.FullAttention, arch.SlidingAttention)
			return
		}
		full, hasFull = params.object(arch.FullAttention)
		sliding, hasSliding = params.object(arch.SlidingAttention)
	}
	if hasFull {
		if v, ok := full.float("rope_theta"); ok {
			cfg.RopeTheta = v
		}
	}
	if hasSliding {
		if v, ok := sliding.float("rope_theta"); ok {
			cfg.RopeLocalTheta = v
		}
		if s := ropeScaling(sliding.m, sliding); s.Type != "" {
			sliding.fail("rope_type", "%q: RoPE scaling on sliding_attention layers is not supported", s.Type)
		}
	}
	scaling, hasScaling := o.object("rope_scaling")
	cfg.RopeScaling = ropeScaling(mergeRope(full, hasFull, scaling, hasScaling))
}

// mergeRope combines rope_parameters (v5) and rope_scaling (legacy) into one
// set of scaling fields; rope_scaling's fields win, as in transformers v5,
// and rope_theta is left out. The object returned is the one errors name.
func mergeRope(params object, hasParams bool, scaling object, hasScaling bool) (map[string]json.RawMessage, object) {
	merged := map[string]json.RawMessage{}
	name := params
	if hasParams {
		for k, v := range params.m {
			if k != "rope_theta" {
				merged[k] = v
			}
		}
	}
	if hasScaling {
		name = scaling
		if scaling.hasAny("rope_type", "type") {
			delete(merged, "rope_type")
			delete(merged, "type")
		}
		for k, v := range scaling.m {
			merged[k] = v
		}
	}
	if !hasParams && !hasScaling {
		return nil, object{}
	}
	return merged, name
}

// ropeScaling reads a rope_scaling-style dict: rope_type (or the legacy
// "type"), factor, low_freq_factor, high_freq_factor,
// original_max_position_embeddings. Type "default" is returned as "".
func ropeScaling(m map[string]json.RawMessage, at object) arch.RopeScaling {
	if m == nil {
		return arch.RopeScaling{}
	}
	o := object{file: at.file, prefix: at.prefix, m: m, errs: at.errs}
	var r arch.RopeScaling
	t, hasT := o.string("rope_type")
	if legacy, ok := o.string("type"); ok {
		if hasT && legacy != t {
			o.fail("type", "%q conflicts with rope_type %q", legacy, t)
			return r
		}
		t, hasT = legacy, true
	}
	if !hasT {
		if o.has("factor") {
			o.fail("rope_type", "missing while factor is given")
		}
		return r
	}
	if v, ok := o.float("partial_rotary_factor"); ok && v != 1 {
		o.fail("partial_rotary_factor", "%g is not supported (only 1)", v)
	}
	need := func(key string) float64 {
		v, ok := o.float(key)
		if !ok {
			if _, present := o.raw(key); !present {
				o.fail(key, "missing (required by rope_type %q)", t)
			}
		}
		return v
	}
	switch t {
	case "default":
	case "linear":
		r.Type, r.Factor = t, need("factor")
	case "llama3":
		r.Type, r.Factor = t, need("factor")
		r.LowFreqFactor = need("low_freq_factor")
		r.HighFreqFactor = need("high_freq_factor")
		if v, ok := o.int("original_max_position_embeddings"); ok {
			r.OriginalMaxPositionEmbeddings = v
		} else if _, present := o.raw("original_max_position_embeddings"); !present {
			o.fail("original_max_position_embeddings", "missing (required by rope_type %q)", t)
		}
	default:
		o.fail("rope_type", "%q is not supported (supported: default, linear, llama3)", t)
	}
	return r
}
