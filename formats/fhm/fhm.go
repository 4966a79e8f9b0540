// Package fhm reads and writes the .fhm packed model file: one memory-mappable
// file with the model's hyperparameters, tokenizer files, provenance and
// tensors. The byte layout is specified in SPEC.md next to this file.
package fhm

import (
	"encoding/json"
	"hash/crc32"

	"github.com/fhkit/fhkit/formats/arch"
	"github.com/fhkit/fhkit/formats/dtype"
)

// File-level constants of format version 1 (see SPEC.md).
const (
	Magic       = "FHKITFHM"
	Version     = 1
	HeaderSize  = 128
	PageAlign   = 4096
	TensorAlign = 64
	// LargeTensor is the size from which tensors are page aligned.
	LargeTensor     = 1 << 20
	MaxMetadataSize = 256 << 20
	MaxTensors      = 1_000_000
	MaxNameLen      = 1024
	MaxDims         = 8
	maxDim          = 1 << 40
	maxElements     = 1 << 50
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checksum returns the CRC-32C of b.
func checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// TensorInfo is one entry of the tensor table.
type TensorInfo struct {
	Name  string
	DType dtype.DType
	Shape []int64
	// Offset is relative to the start of the data section.
	Offset int64
	Size   int64
	CRC32C uint32
}

// NumElements returns the product of the shape (1 for a scalar).
func (t TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Metadata is the JSON metadata block.
type Metadata struct {
	Format string      `json:"format"`
	Model  arch.Config `json:"model"`
	// WeightDType is the dtype of the floating-point weights.
	WeightDType string      `json:"weight_dtype"`
	Tokenizer   Tokenizer   `json:"tokenizer"`
	Generation  *Generation `json:"generation,omitempty"`
	Source      Source      `json:"source"`
	Converter   string      `json:"converter"`
	// FlashHead is set when the file holds a FlashHead (clustered LM head).
	FlashHead *FlashHead `json:"flashhead,omitempty"`
	// Quantization is set when linear weights are stored packed (see
	// quant.go and formats/int4).
	Quantization *Quantization     `json:"quantization,omitempty"`
	Extra        map[string]string `json:"extra,omitempty"`
}

// Tensors of a FlashHead (see SPEC.md). K clusters of ClusterSize slots;
// V' = K x ClusterSize >= vocab, the extra slots are padding.
const (
	// FlashHeadCentroids is F32 [K, D]: the mean of each cluster's member
	// head rows, in the rows' original scale.
	FlashHeadCentroids = "flashhead.centroids"
	// FlashHeadVocabMap is I32 [K, ClusterSize]: the vocab id of each slot,
	// ascending within a cluster; -1 marks a padding slot (never wins).
	FlashHeadVocabMap = "flashhead.vocab_map"
	// FlashHeadWeights is [K x ClusterSize, D] in the head's dtype: the head
	// rows permuted so cluster k's rows are contiguous (row k*cap+s is
	// vocab_map[k][s]'s row; padding rows are zero).
	FlashHeadWeights = "flashhead.w_perm"
)

// FlashHead describes the clustered head stored in a file.
type FlashHead struct {
	ClusterSize int `json:"cluster_size"`
	NumClusters int `json:"num_clusters"`
	// Probes is the default number of clusters scored in stage 2.
	Probes int `json:"probes"`
	// SpecialTokenIDs are always scored in stage 2 (end-of-sequence ids).
	SpecialTokenIDs []int `json:"special_token_ids"`
	// Source is "kmeans" (fh-flashhead-build) or "embedl" (imported cache).
	Source     string `json:"source"`
	Seed       uint64 `json:"seed,omitempty"`
	Iterations int    `json:"iterations,omitempty"`
	// MeanCosine is the mean cosine similarity of the normalised head rows
	// to their cluster's normalised centroid (clustering quality).
	MeanCosine float64 `json:"mean_cosine,omitempty"`
}

// Tokenizer records the embedded tokenizer files and chat settings.
type Tokenizer struct {
	// Files maps an original file name to the U8 tensor holding its bytes.
	Files        map[string]string `json:"files"`
	ChatTemplate string            `json:"chat_template,omitempty"`
	// AddBOSToken and AddEOSToken are nil when tokenizer_config.json does
	// not say (the tokenizer's own default applies).
	AddBOSToken *bool  `json:"add_bos_token,omitempty"`
	AddEOSToken *bool  `json:"add_eos_token,omitempty"`
	BOSToken    string `json:"bos_token,omitempty"`
	EOSToken    string `json:"eos_token,omitempty"`
	PadToken    string `json:"pad_token,omitempty"`
	UnkToken    string `json:"unk_token,omitempty"`
}

// Generation holds sampling defaults from generation_config.json; nil
// fields were absent.
type Generation struct {
	DoSample          *bool    `json:"do_sample,omitempty"`
	Temperature       *float64 `json:"temperature,omitempty"`
	TopK              *int     `json:"top_k,omitempty"`
	TopP              *float64 `json:"top_p,omitempty"`
	MinP              *float64 `json:"min_p,omitempty"`
	RepetitionPenalty *float64 `json:"repetition_penalty,omitempty"`
	MaxNewTokens      *int     `json:"max_new_tokens,omitempty"`
}

// Source is the provenance of a converted model.
type Source struct {
	// Format is the source format ("huggingface").
	Format string `json:"format"`
	// ConfigJSON is the source config.json, verbatim.
	ConfigJSON json.RawMessage `json:"config_json,omitempty"`
	Files      []SourceFile    `json:"files"`
}

// SourceFile identifies one input file.
type SourceFile struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	// CRC32C is the CRC-32C (Castagnoli) of the whole file, in hex.
	CRC32C string `json:"crc32c"`
}

// TokenizerTensorName returns the name of the tensor embedding file.
func TokenizerTensorName(file string) string { return "tokenizer/" + file }

// alignFor returns the alignment of a tensor of size bytes.
func alignFor(size int64) int64 {
	if size >= LargeTensor {
		return PageAlign
	}
	return TensorAlign
}

func alignUp(n, a int64) int64 { return (n + a - 1) / a * a }
