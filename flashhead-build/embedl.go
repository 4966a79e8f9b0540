package flashhead

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/fhkit/fhkit/formats/arch"
	"github.com/fhkit/fhkit/formats/atomicfile"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/formats/safetensors"
	"github.com/fhkit/fhkit/runtime/cpu"
)

// The reference plugin's file layout (flashhead-method.md §6): the cache
// lives in <model dir>/<flash_head_cache_dir>/, by default
// flash_head_assets/.
const (
	EmbedlAssetsDir  = "flash_head_assets"
	EmbedlCacheFile  = "clustering_cache.safetensors"
	EmbedlConfigFile = "clustering_config.json"
	// EmbedlFieldsFile holds the config.json fields the plugin reads; the
	// Hugging Face exporter merges them into the model's config.json.
	EmbedlFieldsFile = "flashhead_config_fields.json"
)

// EmbedlClusteringConfig is clustering_config.json: provenance only (the
// current plugin ignores it; older ones checked vocab_size, hidden_size
// and format).
type EmbedlClusteringConfig struct {
	Format                   string  `json:"format"`
	VocabSize                int     `json:"vocab_size"`
	HiddenSize               int     `json:"hidden_size"`
	NClusters                int     `json:"n_clusters"`
	ClusterSize              int     `json:"cluster_size"`
	PaddingSlots             int     `json:"padding_slots"`
	EnforceEqualClusterSizes bool    `json:"enforce_equal_cluster_sizes"`
	CreationTime             float64 `json:"creation_time"`
	Method                   string  `json:"method"`
	Seed                     uint64  `json:"seed"`
	Iterations               int     `json:"iterations"`
	MeanCosine               float64 `json:"mean_cosine"`
	Tool                     string  `json:"tool"`
}

// EmbedlFields are the config.json fields of a FlashHead model that the
// plugin reads (and a few it carries for provenance).
type EmbedlFields struct {
	Architectures            []string `json:"architectures,omitempty"`
	FlashHeadCacheDir        string   `json:"flash_head_cache_dir"`
	NProbes                  int      `json:"n_probes,omitempty"`
	FlashHeadSpecialTokenIDs []int    `json:"flash_head_special_token_ids"`
	NClusters                int      `json:"n_clusters,omitempty"`
	EnforceEqualClusterSizes bool     `json:"enforce_equal_cluster_sizes"`
	CreationTime             float64  `json:"creation_time,omitempty"`
}

// Tool names this package in the files it writes.
const Tool = "fhkit fh-flashhead-build 1"

// FlashHeadArchitecture returns the architectures entry of a FlashHead
// model: "FlashHead" + the base class ("FlashHeadGemma3ForCausalLM"),
// taken from the source config.json when recorded, else from the
// architecture.
func FlashHeadArchitecture(md *fhm.Metadata) string {
	base := ""
	if len(md.Source.ConfigJSON) > 0 {
		var c struct {
			Architectures []string `json:"architectures"`
		}
		if json.Unmarshal(md.Source.ConfigJSON, &c) == nil && len(c.Architectures) > 0 {
			base = c.Architectures[0]
		}
	}
	if base == "" {
		switch md.Model.Architecture {
		case arch.Gemma3:
			base = "Gemma3ForCausalLM"
		case arch.Llama:
			base = "LlamaForCausalLM"
		case arch.Qwen3:
			base = "Qwen3ForCausalLM"
		default:
			base = "ForCausalLM"
		}
	}
	if strings.HasPrefix(base, "FlashHead") {
		return base
	}
	return "FlashHead" + base
}

// ExportEmbedl writes head in the reference plugin's format under dir:
// dir/flash_head_assets/clustering_cache.safetensors (centroids F32
// (1, 1, D, K), column k = centroid k; cluster_assignments I64 (V,)),
// dir/flash_head_assets/clustering_config.json, and
// dir/flashhead_config_fields.json with the config.json fields (architecture
// is the "architectures" entry, e.g. from FlashHeadArchitecture; "" leaves
// it out). Each file appears only complete.
//
// The plugin requires K*cap == V: a head with padding slots (V not a
// multiple of cap) is written all the same, but only fhkit can read it.
func ExportEmbedl(dir string, h *Head, architecture string) error {
	if err := h.Validate(); err != nil {
		return err
	}
	assets := filepath.Join(dir, EmbedlAssetsDir)
	if err := os.MkdirAll(assets, 0o755); err != nil {
		return err
	}
	// The cache.
	V, D, K := h.Vocab, h.Dim, h.NumClusters
	cent := make([]byte, 4*D*K)
	for k := 0; k < K; k++ {
		for d := 0; d < D; d++ {
			binary.LittleEndian.PutUint32(cent[4*(d*K+k):], math.Float32bits(h.Centroids[k*D+d]))
		}
	}
	asg := make([]byte, 8*V)
	for v, k := range h.Assignments() {
		binary.LittleEndian.PutUint64(asg[8*v:], uint64(k))
	}
	data := map[string][]byte{"centroids": cent, "cluster_assignments": asg}
	hdrs := []safetensors.Header{
		{Name: "centroids", DType: dtype.F32, Shape: []int64{1, 1, int64(D), int64(K)}},
		{Name: "cluster_assignments", DType: dtype.I64, Shape: []int64{int64(V)}},
	}
	cachePath := filepath.Join(assets, EmbedlCacheFile)
	f, err := atomicfile.Create(cachePath)
	if err != nil {
		return err
	}
	defer f.Abort()
	sw, err := safetensors.NewWriter(f, hdrs, map[string]string{"format": "pt"})
	if err != nil {
		return fmt.Errorf("%s: %w", cachePath, err)
	}
	for _, t := range sw.Order() {
		if _, err := sw.Write(data[t.Name]); err != nil {
			return fmt.Errorf("%s: %w", cachePath, err)
		}
	}
	if err := sw.Close(); err != nil {
		return fmt.Errorf("%s: %w", cachePath, err)
	}

	cfg := EmbedlClusteringConfig{
		Format: "safetensors", VocabSize: V, HiddenSize: D, NClusters: K, ClusterSize: h.ClusterSize,
		PaddingSlots: h.PaddingSlots(), EnforceEqualClusterSizes: true, CreationTime: round3(h.Seconds),
		Method: h.Source, Seed: h.Seed, Iterations: h.Iterations, MeanCosine: h.MeanCosine, Tool: Tool,
	}
	fields := EmbedlFields{
		FlashHeadCacheDir: EmbedlAssetsDir, NProbes: h.Probes, FlashHeadSpecialTokenIDs: append([]int{}, h.SpecialTokenIDs...),
		NClusters: K, EnforceEqualClusterSizes: true, CreationTime: round3(h.Seconds),
	}
	if architecture != "" {
		fields.Architectures = []string{architecture}
	}
	cf, err := createJSON(filepath.Join(assets, EmbedlConfigFile), cfg)
	if err != nil {
		return err
	}
	defer cf.Abort()
	ff, err := createJSON(filepath.Join(dir, EmbedlFieldsFile), fields)
	if err != nil {
		return err
	}
	defer ff.Abort()
	for _, a := range []*atomicfile.File{f, cf, ff} {
		if err := a.Commit(); err != nil {
			return err
		}
	}
	return nil
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// createJSON writes v, indented, to an uncommitted atomic file at path.
func createJSON(path string, v any) (*atomicfile.File, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	f, err := atomicfile.Create(path)
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Abort()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// ResolveEmbedlDir returns the directory holding clustering_cache.safetensors
// for dir: dir/flash_head_assets when it has one, else dir itself.
func ResolveEmbedlDir(dir string) (string, error) {
	for _, d := range []string{filepath.Join(dir, EmbedlAssetsDir), dir} {
		if st, err := os.Stat(filepath.Join(d, EmbedlCacheFile)); err == nil && !st.IsDir() {
			return d, nil
		}
	}
	return "", fmt.Errorf("%s: no %s there nor in %s/", dir, EmbedlCacheFile, EmbedlAssetsDir)
}

// ParseEmbedlFields reads the FlashHead fields of a config.json (or a
// flashhead_config_fields.json). flash_head_special_token_ids may be an
// integer or a list; hasSpecial reports whether it was present.
func ParseEmbedlFields(data []byte) (f EmbedlFields, hasSpecial bool, err error) {
	var raw struct {
		Architectures []string        `json:"architectures"`
		CacheDir      string          `json:"flash_head_cache_dir"`
		NProbes       *int            `json:"n_probes"`
		Special       json.RawMessage `json:"flash_head_special_token_ids"`
		NClusters     int             `json:"n_clusters"`
		Enforce       bool            `json:"enforce_equal_cluster_sizes"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return f, false, err
	}
	f = EmbedlFields{Architectures: raw.Architectures, FlashHeadCacheDir: raw.CacheDir, NClusters: raw.NClusters, EnforceEqualClusterSizes: raw.Enforce}
	if raw.NProbes != nil {
		if *raw.NProbes < 1 {
			return f, false, fmt.Errorf("n_probes %d: must be at least 1", *raw.NProbes)
		}
		f.NProbes = *raw.NProbes
	}
	if s := bytes.TrimSpace(raw.Special); len(s) > 0 && !bytes.Equal(s, []byte("null")) {
		hasSpecial = true
		var one int
		if json.Unmarshal(s, &one) == nil {
			f.FlashHeadSpecialTokenIDs = []int{one}
		} else if err := json.Unmarshal(s, &f.FlashHeadSpecialTokenIDs); err != nil {
			return f, false, fmt.Errorf("flash_head_special_token_ids: want an integer or a list of integers: %s", s)
		}
	}
	return f, hasSpecial, nil
}

// ImportEmbedl builds the Head of head's rows from the reference plugin's
// cache in dir (the directory holding clustering_cache.safetensors, see
// ResolveEmbedlDir): each cluster's members in ascending vocab id, the
// centroids as stored. It checks the shapes, that every cluster id is in
// range and that the clusters are equal-sized (with at most one padding
// slot each when V is not a multiple of the cluster size, which
// clustering_config.json's cluster_size gives, or ceil(V/K)). Probes
// default to min(256, K) and the special ids are left empty: the caller
// sets both from the configuration.
func ImportEmbedl(dir string, head cpu.Mat) (*Head, error) {
	path := filepath.Join(dir, EmbedlCacheFile)
	if _, err := cpu.NewMat(head.Rows, head.Cols, head.DType, head.Data); err != nil {
		return nil, fmt.Errorf("head: %w", err)
	}
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	V, D := head.Rows, head.Cols
	ct, ok := f.Tensor("centroids")
	if !ok {
		return nil, fmt.Errorf("%s: no tensor \"centroids\"", path)
	}
	at, ok := f.Tensor("cluster_assignments")
	if !ok {
		return nil, fmt.Errorf("%s: no tensor \"cluster_assignments\"", path)
	}
	// The cluster size.
	cap_ := 0
	cfgPath := filepath.Join(dir, EmbedlConfigFile)
	if b, err := os.ReadFile(cfgPath); err == nil {
		var cc EmbedlClusteringConfig
		if err := json.Unmarshal(b, &cc); err != nil {
			return nil, fmt.Errorf("%s: %w", cfgPath, err)
		}
		if cc.Format != "" && cc.Format != "safetensors" {
			return nil, fmt.Errorf("%s: format %q, want \"safetensors\"", cfgPath, cc.Format)
		}
		if (cc.VocabSize != 0 && cc.VocabSize != V) || (cc.HiddenSize != 0 && cc.HiddenSize != D) {
			return nil, fmt.Errorf("%s: made for vocab %d x hidden %d, the head is [%d, %d]", cfgPath, cc.VocabSize, cc.HiddenSize, V, D)
		}
		if cc.ClusterSize < 0 {
			return nil, fmt.Errorf("%s: cluster_size %d", cfgPath, cc.ClusterSize)
		}
		cap_ = cc.ClusterSize
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	// centroids: (1, 1, D, K) or (D, K).
	shape := ct.Shape
	for len(shape) > 2 && shape[0] == 1 {
		shape = shape[1:]
	}
	if len(shape) != 2 {
		return nil, fmt.Errorf("%s: centroids has shape %v, want (1, 1, D, K) or (D, K)", path, ct.Shape)
	}
	if shape[0] != int64(D) {
		if shape[1] == int64(D) {
			return nil, fmt.Errorf("%s: centroids has shape %v: the plugin reads (1, 1, D, K) (column k = centroid k), so D = %d, but the head has hidden size %d; if the file holds [K, D] = [%d, %d], transpose it", path, ct.Shape, shape[0], D, shape[0], shape[1])
		}
		return nil, fmt.Errorf("%s: centroids has shape %v: D = %d, but the head has hidden size %d", path, ct.Shape, shape[0], D)
	}
	K := int(shape[1])
	if K < 1 || K > V {
		return nil, fmt.Errorf("%s: centroids has %d clusters for a vocabulary of %d", path, K, V)
	}
	if !ct.DType.IsFloat() {
		return nil, fmt.Errorf("%s: centroids has dtype %s, want a float type", path, ct.DType)
	}
	if len(at.Shape) != 1 || at.Shape[0] != int64(V) {
		return nil, fmt.Errorf("%s: cluster_assignments has shape %v, want (%d,): one cluster id per head row", path, at.Shape, V)
	}
	assign, err := readInts(at)
	if err != nil {
		return nil, fmt.Errorf("%s: cluster_assignments: %w", path, err)
	}
	sizes := make([]int, K)
	for v, k := range assign {
		if k < 0 || k >= int64(K) {
			return nil, fmt.Errorf("%s: cluster_assignments[%d] = %d is outside [0, %d)", path, v, k, K)
		}
		sizes[k]++
	}
	if cap_ == 0 {
		cap_ = (V + K - 1) / K
	}
	if K != (V+cap_-1)/cap_ {
		return nil, fmt.Errorf("%s: %d clusters of %d slots do not fit %d rows (want ceil(V/cap) = %d clusters)", path, K, cap_, V, (V+cap_-1)/cap_)
	}
	pad := K*cap_ - V
	minSize := cap_ - (pad+K-1)/K
	for k, s := range sizes {
		if s > cap_ || s < max(minSize, 1) {
			if pad == 0 {
				return nil, fmt.Errorf("%s: cluster %d has %d members, want exactly %d = V/K (FlashHead needs equal-size clusters)", path, k, s, cap_)
			}
			return nil, fmt.Errorf("%s: cluster %d has %d members, want %d..%d (%d slots, %d padding slots in all)", path, k, s, max(minSize, 1), cap_, cap_, pad)
		}
	}
	cent := make([]float32, int(shape[0]*shape[1]))
	if err := dtype.DecodeFloats(cent, ct.Data, ct.DType); err != nil {
		return nil, fmt.Errorf("%s: centroids: %w", path, err)
	}
	h := &Head{Vocab: V, Dim: D, NumClusters: K, ClusterSize: cap_, Rows: head,
		VocabMap: make([]int32, K*cap_), Centroids: make([]float32, K*D), Source: "embedl",
		Probes: min(DefaultProbes, K), SpecialTokenIDs: []int{}}
	for k := 0; k < K; k++ {
		for d := 0; d < D; d++ {
			x := cent[d*K+k]
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				return nil, fmt.Errorf("%s: centroid %d has a non-finite value", path, k)
			}
			h.Centroids[k*D+d] = x
		}
	}
	for i := range h.VocabMap {
		h.VocabMap[i] = -1
	}
	fill := make([]int, K)
	for v, k := range assign {
		h.VocabMap[int(k)*cap_+fill[k]] = int32(v)
		fill[k]++
	}
	pool := cpu.NewPool(0)
	defer pool.Close()
	h.MeanCosine = h.meanCosine(pool)
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return h, nil
}

// readInts decodes an integer tensor.
func readInts(t safetensors.Tensor) ([]int64, error) {
	n := int(t.NumElements())
	out := make([]int64, n)
	le := binary.LittleEndian
	b := t.Data
	switch t.DType {
	case dtype.I64:
		for i := range out {
			out[i] = int64(le.Uint64(b[8*i:]))
		}
	case dtype.U64:
		for i := range out {
			u := le.Uint64(b[8*i:])
			if u > math.MaxInt64 {
				out[i] = -1
			} else {
				out[i] = int64(u)
			}
		}
	case dtype.I32:
		for i := range out {
			out[i] = int64(int32(le.Uint32(b[4*i:])))
		}
	case dtype.U32:
		for i := range out {
			out[i] = int64(le.Uint32(b[4*i:]))
		}
	case dtype.I16:
		for i := range out {
			out[i] = int64(int16(le.Uint16(b[2*i:])))
		}
	case dtype.U16:
		for i := range out {
			out[i] = int64(le.Uint16(b[2*i:]))
		}
	case dtype.I8:
		for i := range out {
			out[i] = int64(int8(b[i]))
		}
	case dtype.U8:
		for i := range out {
			out[i] = int64(b[i])
		}
	default:
		return nil, fmt.Errorf("dtype %s, want an integer type", t.DType)
	}
	return out, nil
}
