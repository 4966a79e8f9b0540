// Package arch describes the decoder-only text models fhkit supports, in one
// canonical form shared by the converter, the .fhm metadata and the runtime:
// the hyperparameters (Config) and the tensors a model must have (Tensors).
//
// Tensor names are the Hugging Face names with the text model under
// "model." ("model.layers.3.mlp.up_proj.weight"), whatever prefix the source
// checkpoint used.
package arch

import (
	"errors"
	"fmt"
	"strings"
)

// The supported architectures (the Hugging Face text model_type values).
const (
	Gemma3 = "gemma3_text"
	Llama  = "llama"
	Qwen3  = "qwen3"
)

// Supported lists the architectures fhkit converts and runs.
var supported = []string{Gemma3, Llama, Qwen3}

// Supported returns the supported architecture names.
func Supported() []string { return append([]string(nil), supported...) }

// Layer attention kinds (the Hugging Face layer_types values).
const (
	FullAttention    = "full_attention"
	SlidingAttention = "sliding_attention"
)

// RopeScaling is a RoPE frequency scaling rule (Hugging Face rope_scaling /
// rope_parameters). Type "" or "default" means none.
type RopeScaling struct {
	Type                          string  `json:"type"`
	Factor                        float64 `json:"factor,omitempty"`
	LowFreqFactor                 float64 `json:"low_freq_factor,omitempty"`
	HighFreqFactor                float64 `json:"high_freq_factor,omitempty"`
	OriginalMaxPositionEmbeddings int     `json:"original_max_position_embeddings,omitempty"`
}

// Config holds every hyperparameter the forward pass needs.
type Config struct {
	Architecture     string `json:"architecture"`
	VocabSize        int    `json:"vocab_size"`
	HiddenSize       int    `json:"hidden_size"`
	IntermediateSize int    `json:"intermediate_size"`
	NumLayers        int    `json:"num_layers"`
	NumHeads         int    `json:"num_heads"`
	NumKVHeads       int    `json:"num_kv_heads"`
	HeadDim          int    `json:"head_dim"`
	// HiddenAct is "gelu_pytorch_tanh" (Gemma) or "silu" (Llama, Qwen3).
	HiddenAct             string  `json:"hidden_act"`
	RMSNormEps            float64 `json:"rms_norm_eps"`
	MaxPositionEmbeddings int     `json:"max_position_embeddings"`
	// RopeTheta is the RoPE base of full-attention layers; RopeLocalTheta
	// that of sliding-window layers (Gemma-3; equal to RopeTheta otherwise).
	RopeTheta      float64 `json:"rope_theta"`
	RopeLocalTheta float64 `json:"rope_local_theta"`
	// RopeScaling applies to full-attention layers only.
	RopeScaling RopeScaling `json:"rope_scaling"`
	// SlidingWindow W: a query at q sees keys k with q-W < k <= q on sliding layers.
	SlidingWindow int `json:"sliding_window,omitempty"`
	// LayerTypes has NumLayers entries, FullAttention or SlidingAttention.
	LayerTypes []string `json:"layer_types"`
	// AttentionScale multiplies q·k (query_pre_attn_scalar^-0.5 for Gemma,
	// head_dim^-0.5 otherwise).
	AttentionScale float64 `json:"attention_scale"`
	// Softcaps: 0 means none.
	AttnLogitSoftcap  float64 `json:"attn_logit_softcap,omitempty"`
	FinalLogitSoftcap float64 `json:"final_logit_softcap,omitempty"`
	TieWordEmbeddings bool    `json:"tie_word_embeddings"`
	// QKNorm: per-head RMSNorm of q and k before RoPE (Gemma-3, Qwen3).
	QKNorm bool `json:"qk_norm"`
	// NormPlusOne: RMSNorm weights are applied as (1 + w) (Gemma).
	NormPlusOne bool `json:"norm_plus_one"`
	// EmbedScale multiplies the embeddings (sqrt(hidden) for Gemma; 0 = none).
	// The runtime rounds it to the weight dtype, as transformers does.
	EmbedScale float64 `json:"embed_scale,omitempty"`
	// SandwichNorms: Gemma's four norms per layer (post-attention and
	// post-feedforward norms on the sub-block outputs).
	SandwichNorms bool  `json:"sandwich_norms"`
	BOSTokenID    int   `json:"bos_token_id"`
	EOSTokenIDs   []int `json:"eos_token_ids"`
	PadTokenID    int   `json:"pad_token_id"`
	// SourceDType is the checkpoint's torch_dtype ("bfloat16", ...).
	SourceDType string `json:"source_dtype,omitempty"`
}

// IsSliding reports whether layer i uses sliding-window attention.
func (c *Config) IsSliding(i int) bool {
	return i < len(c.LayerTypes) && c.LayerTypes[i] == SlidingAttention
}

// GELU reports whether the MLP's activation is GELU-tanh (else SiLU; the
// two Validate accepts).
func (c *Config) GELU() bool { return c.HiddenAct == "gelu_pytorch_tanh" }

// Validate checks that the configuration is complete and self-consistent.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if !IsSupported(c.Architecture) {
		bad("unsupported architecture %q (supported: %s)", c.Architecture, strings.Join(supported, ", "))
	}
	positive := []struct {
		name string
		v    int
	}{
		{"vocab_size", c.VocabSize}, {"hidden_size", c.HiddenSize}, {"intermediate_size", c.IntermediateSize},
		{"num_hidden_layers", c.NumLayers}, {"num_attention_heads", c.NumHeads},
		{"num_key_value_heads", c.NumKVHeads}, {"head_dim", c.HeadDim}, {"max_position_embeddings", c.MaxPositionEmbeddings},
	}
	const limit = 1 << 24 // far above any real model; keeps products in range
	for _, p := range positive {
		if p.v <= 0 || p.v > limit {
			bad("%s = %d: must be in [1, %d]", p.name, p.v, limit)
		}
	}
	if c.NumKVHeads > 0 && c.NumHeads%c.NumKVHeads != 0 {
		bad("num_attention_heads %d is not a multiple of num_key_value_heads %d", c.NumHeads, c.NumKVHeads)
	}
	if c.HeadDim%2 != 0 {
		bad("head_dim %d must be even for RoPE", c.HeadDim)
	}
	if !(c.RMSNormEps > 0 && c.RMSNormEps < 1) {
		bad("rms_norm_eps = %g: must be in (0, 1)", c.RMSNormEps)
	}
	if !(c.RopeTheta > 1) || !(c.RopeLocalTheta > 1) {
		bad("rope theta must be > 1 (global %g, local %g)", c.RopeTheta, c.RopeLocalTheta)
	}
	if !(c.AttentionScale > 0) {
		bad("attention scale %g must be > 0", c.AttentionScale)
	}
	switch c.HiddenAct {
	case "gelu_pytorch_tanh", "silu":
	default:
		bad("unsupported activation %q (supported: gelu_pytorch_tanh, silu)", c.HiddenAct)
	}
	switch c.RopeScaling.Type {
	case "", "default":
	case "linear":
		if !(c.RopeScaling.Factor > 0) {
			bad("rope_scaling linear: factor %g must be > 0", c.RopeScaling.Factor)
		}
	case "llama3":
		r := c.RopeScaling
		if !(r.Factor > 0) || !(r.LowFreqFactor > 0) || !(r.HighFreqFactor > r.LowFreqFactor) || r.OriginalMaxPositionEmbeddings <= 0 {
			bad("rope_scaling llama3: need factor > 0, 0 < low_freq_factor < high_freq_factor, original_max_position_embeddings > 0 (got %+v)", r)
		}
	default:
		bad("unsupported rope_scaling type %q (supported: default, linear, llama3)", c.RopeScaling.Type)
	}
	if len(c.LayerTypes) != c.NumLayers {
		bad("layer_types has %d entries for %d layers", len(c.LayerTypes), c.NumLayers)
	}
	sliding := false
	for i, t := range c.LayerTypes {
		switch t {
		case FullAttention:
		case SlidingAttention:
			sliding = true
		default:
			bad("layer_types[%d] = %q: want %q or %q", i, t, FullAttention, SlidingAttention)
		}
	}
	if sliding && c.SlidingWindow <= 0 {
		bad("sliding_window = %d: sliding layers need a window >= 1", c.SlidingWindow)
	}
	if c.VocabSize > 0 {
		ids := append([]int{c.BOSTokenID, c.PadTokenID}, c.EOSTokenIDs...)
		for _, id := range ids {
			if id < -1 || id >= c.VocabSize {
				bad("special token id %d outside the vocabulary [0, %d)", id, c.VocabSize)
			}
		}
	}
	return errors.Join(errs...)
}

// IsSupported reports whether name is a supported architecture.
func IsSupported(name string) bool {
	for _, s := range supported {
		if s == name {
			return true
		}
	}
	return false
}

// TensorSpec is a tensor a model must have, with its shape.
type TensorSpec struct {
	Name  string
	Shape []int64
}

// Tensors returns the tensors of the model described by c, in forward-pass
// order. Norm weights and the embedding are listed with the linear weights.
func (c *Config) Tensors() []TensorSpec {
	h, inter := int64(c.HiddenSize), int64(c.IntermediateSize)
	q, kv := int64(c.NumHeads*c.HeadDim), int64(c.NumKVHeads*c.HeadDim)
	hd := int64(c.HeadDim)
	specs := []TensorSpec{{"model.embed_tokens.weight", []int64{int64(c.VocabSize), h}}}
	for i := 0; i < c.NumLayers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		add := func(name string, shape ...int64) { specs = append(specs, TensorSpec{p + name, shape}) }
		add("input_layernorm.weight", h)
		add("self_attn.q_proj.weight", q, h)
		add("self_attn.k_proj.weight", kv, h)
		add("self_attn.v_proj.weight", kv, h)
		if c.QKNorm {
			add("self_attn.q_norm.weight", hd)
			add("self_attn.k_norm.weight", hd)
		}
		add("self_attn.o_proj.weight", h, q)
		add("post_attention_layernorm.weight", h)
		if c.SandwichNorms {
			add("pre_feedforward_layernorm.weight", h)
		}
		add("mlp.gate_proj.weight", inter, h)
		add("mlp.up_proj.weight", inter, h)
		add("mlp.down_proj.weight", h, inter)
		if c.SandwichNorms {
			add("post_feedforward_layernorm.weight", h)
		}
	}
	specs = append(specs, TensorSpec{"model.norm.weight", []int64{h}})
	if !c.TieWordEmbeddings {
		specs = append(specs, TensorSpec{"lm_head.weight", []int64{int64(c.VocabSize), h}})
	}
	return specs
}

// NumParams returns the number of weights in Tensors().
func (c *Config) NumParams() int64 {
	var n int64
	for _, t := range c.Tensors() {
		m := int64(1)
		for _, d := range t.Shape {
			m *= d
		}
		n += m
	}
	return n
}
