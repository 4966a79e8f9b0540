package flashhead

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/safetensors"
)

// TestEmbedlRoundTrip: export then import gives an identical Head, and the
// cache has the reference layout (centroids (1,1,D,K) with column k the
// centroid k; cluster_assignments I64 (V,)).
func TestEmbedlRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name       string
		V, D, cap_ int
		dt         dtype.DType
	}{
		{"V1024-cap16-bf16", 1024, 24, 16, dtype.BF16},
		{"V1000-cap16-padding-f32", 1000, 24, 16, dtype.F32},
		{"V5-cap16-one-cluster", 5, 8, 16, dtype.F16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			head := matrix(t, gaussian(tc.V, tc.D, 2), tc.V, tc.D, tc.dt)
			h, err := Build(head, Options{ClusterSize: tc.cap_, Seed: 9, Probes: 3, SpecialTokenIDs: []int{1}})
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			if err := ExportEmbedl(dir, h, "FlashHeadLlamaForCausalLM"); err != nil {
				t.Fatal(err)
			}
			assets, err := ResolveEmbedlDir(dir)
			if err != nil || assets != filepath.Join(dir, EmbedlAssetsDir) {
				t.Fatalf("ResolveEmbedlDir = %q, %v", assets, err)
			}
			g, err := ImportEmbedl(assets, head)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(g.VocabMap, h.VocabMap) || !slices.Equal(f32bits(g.Centroids), f32bits(h.Centroids)) ||
				!bytes.Equal(g.WPerm(), h.WPerm()) || g.NumClusters != h.NumClusters || g.ClusterSize != h.ClusterSize ||
				g.MeanCosine != h.MeanCosine {
				t.Fatal("imported head differs from the exported one")
			}
			if g.Source != "embedl" {
				t.Errorf("source %q", g.Source)
			}

			// The files as the plugin reads them.
			f, err := safetensors.Open(filepath.Join(assets, EmbedlCacheFile))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			c, _ := f.Tensor("centroids")
			a, _ := f.Tensor("cluster_assignments")
			K, D := h.NumClusters, h.Dim
			if c.DType != dtype.F32 || !slices.Equal(c.Shape, []int64{1, 1, int64(D), int64(K)}) {
				t.Fatalf("centroids %s%v", c.DType, c.Shape)
			}
			if a.DType != dtype.I64 || !slices.Equal(a.Shape, []int64{int64(tc.V)}) {
				t.Fatalf("cluster_assignments %s%v", a.DType, a.Shape)
			}
			k, d := K-1, D-1
			if got := math.Float32frombits(binary.LittleEndian.Uint32(c.Data[4*(d*K+k):])); got != h.Centroids[k*D+d] {
				t.Errorf("centroids[0,0,%d,%d] = %g, want centroid %d's element %d = %g", d, k, got, k, d, h.Centroids[k*D+d])
			}
			asg := h.Assignments()
			for v := 0; v < tc.V; v++ {
				if int64(binary.LittleEndian.Uint64(a.Data[8*v:])) != int64(asg[v]) {
					t.Fatalf("cluster_assignments[%d] wrong", v)
				}
			}
			var fields map[string]any
			b, _ := os.ReadFile(filepath.Join(dir, EmbedlFieldsFile))
			if err := json.Unmarshal(b, &fields); err != nil {
				t.Fatal(err)
			}
			if fields["flash_head_cache_dir"] != "flash_head_assets" || fields["n_probes"] != float64(min(3, K)) ||
				fields["n_clusters"] != float64(K) || fields["enforce_equal_cluster_sizes"] != true ||
				!slices.Equal(fields["architectures"].([]any), []any{"FlashHeadLlamaForCausalLM"}) ||
				!slices.Equal(fields["flash_head_special_token_ids"].([]any), []any{float64(1)}) {
				t.Errorf("config fields %v", fields)
			}
			parsed, hasSpecial, err := ParseEmbedlFields(b)
			if err != nil || !hasSpecial || parsed.NProbes != min(3, h.NumClusters) || !slices.Equal(parsed.FlashHeadSpecialTokenIDs, []int{1}) {
				t.Errorf("ParseEmbedlFields: %+v %v %v", parsed, hasSpecial, err)
			}
			var cc EmbedlClusteringConfig
			b, _ = os.ReadFile(filepath.Join(assets, EmbedlConfigFile))
			if err := json.Unmarshal(b, &cc); err != nil || cc.Format != "safetensors" || cc.VocabSize != tc.V || cc.HiddenSize != D ||
				cc.NClusters != K || cc.ClusterSize != tc.cap_ || cc.PaddingSlots != h.PaddingSlots() || !cc.EnforceEqualClusterSizes {
				t.Errorf("clustering_config.json %+v (%v)", cc, err)
			}
		})
	}
}

// writeCache writes a clustering_cache.safetensors with the given tensors.
func writeCache(t *testing.T, dir string, tensors map[string]safetensors.Header, data map[string][]byte) {
	t.Helper()
	var hdrs []safetensors.Header
	for _, h := range tensors {
		hdrs = append(hdrs, h)
	}
	var buf bytes.Buffer
	w, err := safetensors.NewWriter(&buf, hdrs, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range w.Order() {
		w.Write(data[h.Name])
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, EmbedlCacheFile), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func i64s(v []int64) []byte {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
	}
	return b
}

func f32b(n int) []byte {
	b := make([]byte, 4*n)
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(i%7)+0.5))
	}
	return b
}

// TestImportValidation: every malformed cache fails with an error naming
// the file and the problem.
func TestImportValidation(t *testing.T) {
	const V, D, K = 64, 8, 4 // cap 16
	head := matrix(t, gaussian(V, D, 1), V, D, dtype.F32)
	good := make([]int64, V)
	for v := range good {
		good[v] = int64(v % K)
	}
	type cache struct {
		cShape []int64
		cType  dtype.DType
		assign []int64
		aShape []int64
		aType  dtype.DType
		drop   string
		config string
	}
	base := func() cache {
		return cache{cShape: []int64{1, 1, D, K}, cType: dtype.F32, assign: slices.Clone(good), aShape: []int64{V}, aType: dtype.I64}
	}
	for _, tc := range []struct {
		name string
		edit func(c *cache)
		want string
	}{
		{"ok", func(c *cache) {}, ""},
		{"plain D x K", func(c *cache) { c.cShape = []int64{D, K} }, ""},
		{"K x D layout", func(c *cache) { c.cShape = []int64{1, 1, K, D} }, "if the file holds [K, D] = [4, 8], transpose it"},
		{"wrong hidden size", func(c *cache) { c.cShape = []int64{1, 1, D + 1, K - 1} }, "hidden size 8"},
		{"3-d centroids", func(c *cache) { c.cShape = []int64{2, D, K} }, "want (1, 1, D, K)"},
		{"integer centroids", func(c *cache) { c.cType = dtype.I32 }, "float"},
		{"no centroids", func(c *cache) { c.drop = "centroids" }, `no tensor "centroids"`},
		{"no assignments", func(c *cache) { c.drop = "cluster_assignments" }, `no tensor "cluster_assignments"`},
		{"assignments too short", func(c *cache) { c.assign = c.assign[:V-1]; c.aShape = []int64{V - 1} }, "want (64,)"},
		{"assignments 2-d", func(c *cache) { c.aShape = []int64{1, V} }, "want (64,)"},
		{"cluster id out of range", func(c *cache) { c.assign[5] = K }, "cluster_assignments[5] = 4 is outside [0, 4)"},
		{"negative cluster id", func(c *cache) { c.assign[7] = -1 }, "cluster_assignments[7] = -1"},
		{"unequal sizes", func(c *cache) { c.assign[0] = 1 }, "cluster 0 has 15 members, want exactly 16"},
		{"float assignments", func(c *cache) { c.aType = dtype.F64 }, "want an integer type"},
		{"config for another model", func(c *cache) { c.config = `{"vocab_size": 100, "hidden_size": 8}` }, "made for vocab 100"},
		{"config with another cap", func(c *cache) { c.config = `{"cluster_size": 8}` }, "4 clusters of 8 slots"},
		{"config not json", func(c *cache) { c.config = `{` }, EmbedlConfigFile},
		{"config wrong format", func(c *cache) { c.config = `{"format": "pt"}` }, `format "pt"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.edit(&c)
			dir := t.TempDir()
			n := int(c.cShape[0])
			for _, s := range c.cShape[1:] {
				n *= int(s)
			}
			cd := f32b(n)
			if c.cType == dtype.I32 {
				cd = f32b(n) // same size, read as integers
			}
			ad := i64s(c.assign)
			hdrs := map[string]safetensors.Header{
				"centroids":           {Name: "centroids", DType: c.cType, Shape: c.cShape},
				"cluster_assignments": {Name: "cluster_assignments", DType: c.aType, Shape: c.aShape},
			}
			delete(hdrs, c.drop)
			writeCache(t, dir, hdrs, map[string][]byte{"centroids": cd, "cluster_assignments": ad})
			if c.config != "" {
				os.WriteFile(filepath.Join(dir, EmbedlConfigFile), []byte(c.config), 0o644)
			}
			h, err := ImportEmbedl(dir, head)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				checkLayout(t, h, V, 16, false)
				return
			}
			if err == nil {
				t.Fatalf("no error, want one mentioning %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), dir) {
				t.Errorf("error %q should name the file and mention %q", err, tc.want)
			}
		})
	}
	if _, err := ImportEmbedl(t.TempDir(), head); err == nil || !strings.Contains(err.Error(), EmbedlCacheFile) {
		t.Errorf("missing cache: %v", err)
	}
	if _, err := ResolveEmbedlDir(t.TempDir()); err == nil {
		t.Error("ResolveEmbedlDir of an empty directory: no error")
	}
}

// TestImportPadding: a cache for V not a multiple of cap imports with the
// padding slots where the cache puts the short clusters.
func TestImportPadding(t *testing.T) {
	const V, D = 50, 4 // cap 16 -> K 4, 14 padding slots: sizes 12 or 13
	head := matrix(t, gaussian(V, D, 3), V, D, dtype.BF16)
	assign := make([]int64, V)
	sizes := []int{13, 12, 13, 12}
	v := 0
	for k, n := range sizes {
		for j := 0; j < n; j++ {
			assign[v] = int64(k)
			v++
		}
	}
	dir := t.TempDir()
	writeCache(t, dir, map[string]safetensors.Header{
		"centroids":           {Name: "centroids", DType: dtype.F32, Shape: []int64{1, 1, D, 4}},
		"cluster_assignments": {Name: "cluster_assignments", DType: dtype.I64, Shape: []int64{V}},
	}, map[string][]byte{"centroids": f32b(D * 4), "cluster_assignments": i64s(assign)})
	os.WriteFile(filepath.Join(dir, EmbedlConfigFile), []byte(`{"cluster_size": 16}`), 0o644)
	h, err := ImportEmbedl(dir, head)
	if err != nil {
		t.Fatal(err)
	}
	if h.NumClusters != 4 || h.ClusterSize != 16 || h.PaddingSlots() != 14 {
		t.Fatalf("K %d cap %d padding %d", h.NumClusters, h.ClusterSize, h.PaddingSlots())
	}
	for k, n := range sizes {
		slots := h.VocabMap[k*16 : (k+1)*16]
		if slots[n-1] < 0 || (n < 16 && slots[n] != -1) {
			t.Errorf("cluster %d: %v", k, slots)
		}
	}
	// Sizes 14 and 11 are more than one slot off: rejected.
	assign[0], assign[V-1] = 1, 1 // cluster 0: 12, cluster 1: 14, cluster 3: 11
	writeCache(t, dir, map[string]safetensors.Header{
		"centroids":           {Name: "centroids", DType: dtype.F32, Shape: []int64{1, 1, D, 4}},
		"cluster_assignments": {Name: "cluster_assignments", DType: dtype.I64, Shape: []int64{V}},
	}, map[string][]byte{"centroids": f32b(D * 4), "cluster_assignments": i64s(assign)})
	if _, err := ImportEmbedl(dir, head); err == nil || !strings.Contains(err.Error(), "want 12..16") {
		t.Errorf("unbalanced padded cache: %v", err)
	}
}

// f32bits returns the bit patterns of x (for bit-exact comparisons).
func f32bits(x []float32) []uint32 {
	b := make([]uint32, len(x))
	for i, v := range x {
		b[i] = math.Float32bits(v)
	}
	return b
}
