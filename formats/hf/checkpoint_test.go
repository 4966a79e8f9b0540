package hf

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/fhkit/fhkit/formats/arch"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/safetensors"
)

// tinyLlama is a small llama config.json used by the directory tests.
const tinyLlama = `{"model_type":"llama","architectures":["LlamaForCausalLM"],"vocab_size":16,"hidden_size":8,
	"intermediate_size":16,"num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1,"head_dim":4,
	"tie_word_embeddings":false,"bos_token_id":1,"eos_token_id":2,"torch_dtype":"float32"}`

// tinyGemmaMM is a small multimodal gemma3 config.json.
const tinyGemmaMM = `{"model_type":"gemma3","architectures":["Gemma3ForConditionalGeneration"],"eos_token_id":[1,6],
	"bos_token_id":2,"pad_token_id":0,"text_config":{"model_type":"gemma3_text","vocab_size":16,"hidden_size":8,
	"intermediate_size":16,"num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1,"head_dim":4,
	"query_pre_attn_scalar":4,"sliding_window":4,"sliding_window_pattern":2}}`

// stTensor is a tensor to write into a test safetensors file.
type stTensor struct {
	name  string
	shape []int64
}

// fill is the byte every element of the named tensor is filled with.
func fill(name string) byte {
	var h byte = 7
	for i := 0; i < len(name); i++ {
		h = h*31 + name[i]
	}
	return h
}

// writeST writes an F32 safetensors file holding tensors, each filled with
// fill(name).
func writeST(t *testing.T, path string, tensors []stTensor) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	hdrs := make([]safetensors.Header, len(tensors))
	for i, x := range tensors {
		hdrs[i] = safetensors.Header{Name: x.name, DType: dtype.F32, Shape: x.shape}
	}
	w, err := safetensors.NewWriter(&buf, hdrs, map[string]string{"format": "pt"})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range w.Order() {
		n := int64(4)
		for _, d := range h.Shape {
			n *= d
		}
		if _, err := w.Write(bytes.Repeat([]byte{fill(h.Name)}, int(n))); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeFile writes a file of the test directory.
func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// specs returns the tensors config.json's model must have, renamed by
// rename (nil: unchanged).
func specs(t *testing.T, config string, rename func(string) string) []stTensor {
	t.Helper()
	cfg, _, err := ParseConfig([]byte(config))
	if err != nil {
		t.Fatal(err)
	}
	var out []stTensor
	for _, s := range cfg.Tensors() {
		n := s.Name
		if rename != nil {
			n = rename(n)
		}
		out = append(out, stTensor{n, s.Shape})
	}
	return out
}

// writeIndex writes model.safetensors.index.json mapping tensors to shards.
func writeIndex(t *testing.T, dir string, weightMap map[string]string) {
	t.Helper()
	data, err := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 0}, "weight_map": weightMap})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, IndexName, string(data))
}

// shardDir writes tinyLlama with its tensors split over two shards and
// returns the weight map.
func shardDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	writeFile(t, dir, ConfigName, tinyLlama)
	all := specs(t, tinyLlama, nil)
	half := len(all) / 2
	shards := [][]stTensor{all[:half], all[half:]}
	names := []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
	wm := map[string]string{}
	for i, s := range shards {
		writeST(t, filepath.Join(dir, names[i]), s)
		for _, x := range s {
			wm[x.name] = names[i]
		}
	}
	writeIndex(t, dir, wm)
	return wm
}

// checkTensors checks that c holds exactly want (canonical names), with
// their shapes and the fill bytes of the source names.
func checkTensors(t *testing.T, c *Checkpoint, want []stTensor, source func(string) string) {
	t.Helper()
	var names []string
	for _, w := range want {
		names = append(names, w.name)
	}
	sort.Strings(names)
	if got := c.TensorNames(); !reflect.DeepEqual(got, names) {
		t.Fatalf("TensorNames = %v\nwant %v", got, names)
	}
	for _, w := range want {
		tn, ok := c.Tensor(w.name)
		if !ok {
			t.Fatalf("Tensor(%q) missing", w.name)
		}
		if tn.Name != w.name || !reflect.DeepEqual(tn.Shape, w.shape) || tn.DType != dtype.F32 {
			t.Errorf("Tensor(%q) = %s %v %v, want %v F32", w.name, tn.Name, tn.Shape, tn.DType, w.shape)
		}
		src := w.name
		if source != nil {
			src = source(w.name)
		}
		if b := fill(src); len(tn.Data) == 0 || !bytes.Equal(tn.Data, bytes.Repeat([]byte{b}, len(tn.Data))) {
			t.Errorf("Tensor(%q): data is not the bytes of source tensor %q", w.name, src)
		}
		if _, s, ok := c.Source(w.name); !ok || s != src {
			t.Errorf("Source(%q) = %q, %v; want %q", w.name, s, ok, src)
		}
	}
	if _, ok := c.Tensor("model.nope.weight"); ok {
		t.Error("Tensor of an unknown name succeeded")
	}
}

// sourceNames returns the names of c.SourceFiles().
func sourceNames(c *Checkpoint) []string {
	var out []string
	for _, f := range c.SourceFiles() {
		out = append(out, f.Name)
	}
	return out
}

func TestOpenSingleFile(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, ConfigName, tinyLlama)
	want := specs(t, tinyLlama, nil)
	writeST(t, filepath.Join(dir, SingleWeightsName), want)
	writeFile(t, dir, GenerationConfigName, `{"bos_token_id":1,"eos_token_id":[3,2],"pad_token_id":0,"do_sample":true,"temperature":0.7,"top_k":40,"top_p":0.9}`)
	writeFile(t, dir, TokenizerConfigName, `{"add_bos_token":true,"bos_token":{"__type":"AddedToken","content":"<s>"},"eos_token":"</s>",
		"chat_template":[{"name":"tool_use","template":"T"},{"name":"default","template":"D"}]}`)
	writeFile(t, dir, TokenizerModelName, "sp")
	writeFile(t, dir, TokenizerJSONName, "{}")
	writeFile(t, dir, "README.md", "not read")

	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	checkTensors(t, c, want, nil)
	if got := c.Config.EOSTokenIDs; !reflect.DeepEqual(got, []int{2, 3}) {
		t.Errorf("EOS ids = %v, want config's first then generation's: [2 3]", got)
	}
	if c.Config.PadTokenID != 0 || c.Config.BOSTokenID != 1 {
		t.Errorf("pad/bos = %d/%d, want 0/1 (pad filled in from generation_config.json)", c.Config.PadTokenID, c.Config.BOSTokenID)
	}
	if g := c.Generation; g == nil || g.TopK == nil || *g.TopK != 40 || g.Temperature == nil || *g.Temperature != 0.7 {
		t.Errorf("Generation = %+v", g)
	}
	tk := c.Tokenizer
	if tk.ModelPath != filepath.Join(dir, TokenizerModelName) || tk.JSONPath != filepath.Join(dir, TokenizerJSONName) ||
		tk.ConfigPath != filepath.Join(dir, TokenizerConfigName) || tk.GenerationConfigPath != filepath.Join(dir, GenerationConfigName) ||
		tk.SpecialTokensMapPath != "" || tk.AddedTokensPath != "" || tk.ChatTemplatePath != "" {
		t.Errorf("tokenizer paths = %+v", tk)
	}
	if tk.ChatTemplate != "D" || tk.Config.BOSToken != "<s>" || tk.Config.EOSToken != "</s>" {
		t.Errorf("tokenizer = %+v, config %+v", tk, tk.Config)
	}
	wantFiles := []string{ConfigName, GenerationConfigName, SingleWeightsName, TokenizerJSONName, TokenizerModelName, TokenizerConfigName}
	if got := sourceNames(c); !reflect.DeepEqual(got, wantFiles) {
		t.Errorf("SourceFiles = %v, want %v", got, wantFiles)
	}
	for _, f := range c.SourceFiles() {
		st, err := os.Stat(filepath.Join(dir, f.Name))
		if err != nil || st.Size() != f.Size {
			t.Errorf("SourceFile %s size %d, stat %v", f.Name, f.Size, err)
		}
	}
	if !bytes.Equal(c.RawConfig, []byte(tinyLlama)) || c.Info.ModelType != arch.Llama {
		t.Errorf("RawConfig/Info = %q / %+v", c.RawConfig, c.Info)
	}
	c.Release("model.norm.weight")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, ok := c.Tensor("model.norm.weight"); ok {
		t.Error("Tensor after Close succeeded")
	}
}

func TestOpenChatTemplateJinja(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, ConfigName, tinyLlama)
	writeST(t, filepath.Join(dir, SingleWeightsName), specs(t, tinyLlama, nil))
	writeFile(t, dir, TokenizerConfigName, `{"chat_template":"old"}`)
	writeFile(t, dir, ChatTemplateJinjaName, "{{ bos_token }}new")
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Tokenizer.ChatTemplate != "{{ bos_token }}new" || c.Tokenizer.Config.ChatTemplate != "old" ||
		c.Tokenizer.ChatTemplatePath != filepath.Join(dir, ChatTemplateJinjaName) {
		t.Errorf("tokenizer = %+v", c.Tokenizer)
	}
	if got := sourceNames(c); !reflect.DeepEqual(got, []string{ChatTemplateJinjaName, ConfigName, SingleWeightsName, TokenizerConfigName}) {
		t.Errorf("SourceFiles = %v", got)
	}
}

func TestOpenSharded(t *testing.T) {
	dir := t.TempDir()
	shardDir(t, dir)
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	checkTensors(t, c, specs(t, tinyLlama, nil), nil)
	want := []string{ConfigName, "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", IndexName}
	if got := sourceNames(c); !reflect.DeepEqual(got, want) {
		t.Errorf("SourceFiles = %v, want %v", got, want)
	}
	if c.Generation != nil || c.Tokenizer.Config != nil {
		t.Errorf("no generation/tokenizer config expected: %+v %+v", c.Generation, c.Tokenizer)
	}
}

func TestOpenShardedSubdirectory(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, ConfigName, tinyLlama)
	all := specs(t, tinyLlama, nil)
	writeST(t, filepath.Join(dir, "weights", "a.safetensors"), all)
	wm := map[string]string{}
	for _, x := range all {
		wm[x.name] = "./weights/a.safetensors" // spelled unclean on purpose
	}
	writeIndex(t, dir, wm)
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	checkTensors(t, c, all, nil)
	if got := sourceNames(c); !reflect.DeepEqual(got, []string{ConfigName, IndexName, "weights/a.safetensors"}) {
		t.Errorf("SourceFiles = %v", got)
	}
}

// TestOpenSymlinkedShards opens a Hugging Face cache snapshot, whose files
// are symlinks to blobs outside the snapshot directory.
func TestOpenSymlinkedShards(t *testing.T) {
	root := t.TempDir()
	blobs := filepath.Join(root, "blobs")
	snap := filepath.Join(root, "snapshots", "abc")
	shardDir(t, blobs)
	if err := os.MkdirAll(snap, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(blobs)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.Symlink(filepath.Join("..", "..", "blobs", e.Name()), filepath.Join(snap, e.Name())); err != nil {
			t.Skipf("symlinks unavailable: %v", err)
		}
	}
	c, err := Open(snap)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	checkTensors(t, c, specs(t, tinyLlama, nil), nil)
	for _, f := range c.SourceFiles() {
		st, err := os.Stat(filepath.Join(blobs, f.Name))
		if err != nil || st.Size() != f.Size {
			t.Errorf("SourceFile %s: size %d, want the blob's (%v)", f.Name, f.Size, err)
		}
	}
}

func TestOpenMultimodalPrefixes(t *testing.T) {
	canonical := specs(t, tinyGemmaMM, nil)
	vision := []stTensor{{"vision_tower.vision_model.embeddings.patch_embedding.weight", []int64{4, 3}}, {"multi_modal_projector.mm_input_projection_weight", []int64{4, 8}}}
	t.Run("4.50 layout, one file", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, dir, ConfigName, tinyGemmaMM)
		src := specs(t, tinyGemmaMM, func(n string) string { return "language_model." + n })
		writeST(t, filepath.Join(dir, SingleWeightsName), append(src, vision...))
		c, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		checkTensors(t, c, canonical, func(n string) string { return "language_model." + n })
		want := []string{vision[1].name, vision[0].name}
		if got := c.DroppedTensors(); !reflect.DeepEqual(got, want) {
			t.Errorf("DroppedTensors = %v, want %v", got, want)
		}
		if !c.Info.Multimodal || c.Config.Architecture != arch.Gemma3 || !reflect.DeepEqual(c.Config.EOSTokenIDs, []int{1, 6}) {
			t.Errorf("config %+v info %+v", c.Config, c.Info)
		}
	})
	t.Run("4.52 layout, sharded, with lm_head", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, dir, ConfigName, strings.Replace(tinyGemmaMM, `"sliding_window_pattern":2`, `"sliding_window_pattern":2,"tie_word_embeddings":false`, 1))
		rename := func(n string) string { return strings.Replace(n, "model.", "model.language_model.", 1) }
		src := specs(t, tinyGemmaMM, rename)
		src = append(src, stTensor{"lm_head.weight", []int64{16, 8}})
		mv := []stTensor{{"model.vision_tower.vision_model.post_layernorm.weight", []int64{4}}, {"model.multi_modal_projector.mm_soft_emb_norm.weight", []int64{4}}}
		writeST(t, filepath.Join(dir, "text.safetensors"), src)
		writeST(t, filepath.Join(dir, "vision.safetensors"), mv)
		wm := map[string]string{}
		for _, x := range src {
			wm[x.name] = "text.safetensors"
		}
		for _, x := range mv {
			wm[x.name] = "vision.safetensors"
		}
		writeIndex(t, dir, wm)
		c, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		checkTensors(t, c, append(canonical, stTensor{"lm_head.weight", []int64{16, 8}}), func(n string) string {
			if n == "lm_head.weight" {
				return n
			}
			return rename(n)
		})
		if got := c.DroppedTensors(); len(got) != 2 {
			t.Errorf("DroppedTensors = %v", got)
		}
	})
}

func TestCanonicalName(t *testing.T) {
	tests := []struct {
		src, want string
		keep      bool
	}{
		{"model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.up_proj.weight", true},
		{"lm_head.weight", "lm_head.weight", true},
		{"language_model.model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.up_proj.weight", true},
		{"model.language_model.embed_tokens.weight", "model.embed_tokens.weight", true},
		{"language_model.lm_head.weight", "lm_head.weight", true},
		{"vision_tower.vision_model.embeddings.patch_embedding.weight", "", false},
		{"model.vision_tower.vision_model.embeddings.patch_embedding.weight", "", false},
		{"multi_modal_projector.mm_input_projection_weight", "", false},
		{"model.multi_modal_projector.mm_soft_emb_norm.weight", "", false},
		{"model.layers.0.self_attn.q_proj.weight_packed", "model.layers.0.self_attn.q_proj.weight_packed", true},
	}
	for _, tt := range tests {
		got, keep := CanonicalName(tt.src)
		if got != tt.want || keep != tt.keep {
			t.Errorf("CanonicalName(%q) = %q, %v; want %q, %v", tt.src, got, keep, tt.want, tt.keep)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	firstShard := "model-00001-of-00002.safetensors"
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  []string // substrings; "$DIR" is replaced by the directory
	}{
		{"missing config", func(t *testing.T, dir string) {
			writeST(t, filepath.Join(dir, SingleWeightsName), specs(t, tinyLlama, nil))
		}, []string{"$DIR/config.json: missing"}},
		{"invalid config", func(t *testing.T, dir string) {
			writeFile(t, dir, ConfigName, `{"model_type":"gpt2"}`)
		}, []string{`$DIR/config.json: unsupported model_type "gpt2" (supported: gemma3_text, llama, qwen3`}},
		{"no weights", func(t *testing.T, dir string) {
			writeFile(t, dir, ConfigName, tinyLlama)
		}, []string{"$DIR: no weights: want model.safetensors, or model.safetensors.index.json with its shards"}},
		{"shards without an index", func(t *testing.T, dir string) {
			shardDir(t, dir)
			os.Remove(filepath.Join(dir, IndexName))
		}, []string{"$DIR: weights in an unsupported layout (model-00001-of-00002.safetensors, model-00002-of-00002.safetensors)"}},
		{"pytorch bin", func(t *testing.T, dir string) {
			writeFile(t, dir, ConfigName, tinyLlama)
			writeFile(t, dir, "pytorch_model.bin", "x")
		}, []string{"$DIR: weights in an unsupported layout (pytorch_model.bin)"}},
		{"both layouts", func(t *testing.T, dir string) {
			shardDir(t, dir)
			writeST(t, filepath.Join(dir, SingleWeightsName), specs(t, tinyLlama, nil))
		}, []string{"$DIR: both model.safetensors and model.safetensors.index.json are present"}},
		{"escape with ..", func(t *testing.T, dir string) {
			wm := shardDir(t, dir)
			wm["model.norm.weight"] = "../x"
			writeIndex(t, dir, wm)
		}, []string{`$DIR/model.safetensors.index.json: weight_map["model.norm.weight"]: shard "../x" is not a file inside the checkpoint directory`}},
		{"escape with an absolute path", func(t *testing.T, dir string) {
			wm := shardDir(t, dir)
			wm["model.norm.weight"] = "/etc/passwd"
			writeIndex(t, dir, wm)
		}, []string{`$DIR/model.safetensors.index.json: weight_map["model.norm.weight"]: shard "/etc/passwd" is not a file inside`}},
		{"escape through a subdirectory", func(t *testing.T, dir string) {
			wm := shardDir(t, dir)
			wm["model.norm.weight"] = "sub/../../x.safetensors"
			writeIndex(t, dir, wm)
		}, []string{`shard "sub/../../x.safetensors" is not a file inside`}},
		{"empty shard name", func(t *testing.T, dir string) {
			wm := shardDir(t, dir)
			wm["model.norm.weight"] = ""
			writeIndex(t, dir, wm)
		}, []string{`$DIR/model.safetensors.index.json: weight_map["model.norm.weight"]: shard "" is not a file inside`}},
		{"missing shard", func(t *testing.T, dir string) {
			shardDir(t, dir)
			os.Remove(filepath.Join(dir, firstShard))
		}, []string{`$DIR/model.safetensors.index.json: shard "model-00001-of-00002.safetensors" is missing`}},
		{"tensor in the index, not in its shard", func(t *testing.T, dir string) {
			wm := shardDir(t, dir)
			wm["model.layers.9.mlp.up_proj.weight"] = firstShard
			writeIndex(t, dir, wm)
		}, []string{`$DIR/model.safetensors.index.json: tensor "model.layers.9.mlp.up_proj.weight" is mapped to shard "model-00001-of-00002.safetensors", which does not contain it`}},
		{"tensor in a shard, mapped elsewhere", func(t *testing.T, dir string) {
			wm := shardDir(t, dir)
			wm["model.embed_tokens.weight"] = "model-00002-of-00002.safetensors"
			writeIndex(t, dir, wm)
		}, []string{`$DIR/model.safetensors.index.json: tensor "model.embed_tokens.weight" is in shard "model-00001-of-00002.safetensors" but the index maps it to "model-00002-of-00002.safetensors"`}},
		{"tensor in a shard, not in the index", func(t *testing.T, dir string) {
			wm := shardDir(t, dir)
			delete(wm, "model.embed_tokens.weight")
			writeIndex(t, dir, wm)
		}, []string{`$DIR/model-00001-of-00002.safetensors: tensor "model.embed_tokens.weight" is not listed in model.safetensors.index.json`}},
		{"index without weight_map", func(t *testing.T, dir string) {
			shardDir(t, dir)
			writeFile(t, dir, IndexName, `{"metadata":{}}`)
		}, []string{"$DIR/model.safetensors.index.json: weight_map missing"}},
		{"index with an empty weight_map", func(t *testing.T, dir string) {
			shardDir(t, dir)
			writeFile(t, dir, IndexName, `{"weight_map":{}}`)
		}, []string{"$DIR/model.safetensors.index.json: weight_map is empty"}},
		{"index with a numeric shard", func(t *testing.T, dir string) {
			shardDir(t, dir)
			writeFile(t, dir, IndexName, `{"weight_map":{"model.norm.weight":3}}`)
		}, []string{`$DIR/model.safetensors.index.json: weight_map.model.norm.weight: want a string, got 3`}},
		{"index not JSON", func(t *testing.T, dir string) {
			shardDir(t, dir)
			writeFile(t, dir, IndexName, `{`)
		}, []string{"$DIR/model.safetensors.index.json: invalid JSON"}},
		{"corrupt shard", func(t *testing.T, dir string) {
			shardDir(t, dir)
			writeFile(t, dir, firstShard, "garbage")
		}, []string{"$DIR/model-00001-of-00002.safetensors: truncated safetensors file"}},
		{"duplicate canonical names", func(t *testing.T, dir string) {
			writeFile(t, dir, ConfigName, tinyLlama)
			writeST(t, filepath.Join(dir, SingleWeightsName), append(specs(t, tinyLlama, nil), stTensor{"language_model.model.norm.weight", []int64{8}}))
		}, []string{`tensor "language_model.model.norm.weight"`, `tensor "model.norm.weight"`, `both map to the canonical name "model.norm.weight"`}},
		{"duplicate canonical names across shards", func(t *testing.T, dir string) {
			wm := shardDir(t, dir)
			writeST(t, filepath.Join(dir, "extra.safetensors"), []stTensor{{"model.language_model.norm.weight", []int64{8}}})
			wm["model.language_model.norm.weight"] = "extra.safetensors"
			writeIndex(t, dir, wm)
		}, []string{`both map to the canonical name "model.norm.weight"`}},
		{"generation eos outside the vocabulary", func(t *testing.T, dir string) {
			writeFile(t, dir, ConfigName, tinyLlama)
			writeFile(t, dir, GenerationConfigName, `{"eos_token_id":[2,99]}`)
		}, []string{"$DIR/generation_config.json: eos_token_id 99 outside the vocabulary [0, 16)"}},
		{"generation not JSON", func(t *testing.T, dir string) {
			writeFile(t, dir, ConfigName, tinyLlama)
			writeFile(t, dir, GenerationConfigName, `x`)
		}, []string{"$DIR/generation_config.json: invalid JSON"}},
		{"tokenizer config with a bad chat_template", func(t *testing.T, dir string) {
			writeFile(t, dir, ConfigName, tinyLlama)
			writeFile(t, dir, TokenizerConfigName, `{"chat_template":42}`)
		}, []string{"$DIR/tokenizer_config.json: chat_template: want a string or a list"}},
		{"tokenizer.json is a directory", func(t *testing.T, dir string) {
			writeFile(t, dir, ConfigName, tinyLlama)
			os.Mkdir(filepath.Join(dir, TokenizerJSONName), 0o755)
		}, []string{"$DIR/tokenizer.json: not a regular file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(t, dir)
			c, err := Open(dir)
			if err == nil {
				c.Close()
				t.Fatal("Open succeeded, want an error")
			}
			t.Log(err)
			for _, w := range tt.want {
				w = strings.ReplaceAll(w, "$DIR", dir)
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestOpenNotADirectory(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(filepath.Join(dir, "nope")); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "nope")) {
		t.Errorf("Open(missing) error = %v", err)
	}
	f := filepath.Join(dir, "file")
	writeFile(t, dir, "file", "x")
	if _, err := Open(f); err == nil || !strings.Contains(err.Error(), f+": not a directory") {
		t.Errorf("Open(file) error = %v", err)
	}
}

func TestOpenConformance(t *testing.T) {
	tests := []struct {
		name     string
		dt       dtype.DType
		files    []string
		eos      []int
		tokModel bool
		tokJSON  bool
	}{
		{"gemma3-tiny", dtype.BF16, []string{ConfigName, GenerationConfigName, SingleWeightsName, SpecialTokensMapName, TokenizerModelName, TokenizerConfigName}, []int{1, 6}, true, false},
		{"stories260K", dtype.F32, []string{ConfigName, GenerationConfigName, SingleWeightsName, SpecialTokensMapName, TokenizerJSONName, TokenizerModelName, TokenizerConfigName}, []int{2}, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := conformance(t, tt.name, "model")
			c, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			specs := c.Config.Tensors()
			if len(c.TensorNames()) != len(specs) {
				t.Errorf("%d tensors, want %d (%v)", len(c.TensorNames()), len(specs), c.TensorNames())
			}
			for _, s := range specs {
				tn, ok := c.Tensor(s.Name)
				if !ok {
					t.Errorf("tensor %s missing", s.Name)
					continue
				}
				if !reflect.DeepEqual(tn.Shape, s.Shape) || tn.DType != tt.dt {
					t.Errorf("tensor %s: %v %v, want %v %v", s.Name, tn.Shape, tn.DType, s.Shape, tt.dt)
				}
			}
			if got := sourceNames(c); !reflect.DeepEqual(got, tt.files) {
				t.Errorf("SourceFiles = %v, want %v", got, tt.files)
			}
			if !reflect.DeepEqual(c.Config.EOSTokenIDs, tt.eos) {
				t.Errorf("EOS ids = %v, want %v", c.Config.EOSTokenIDs, tt.eos)
			}
			tk := c.Tokenizer
			if (tk.ModelPath != "") != tt.tokModel || (tk.JSONPath != "") != tt.tokJSON || tk.Config == nil ||
				tk.Config.AddBOSToken == nil || !*tk.Config.AddBOSToken || tk.SpecialTokensMapPath == "" {
				t.Errorf("tokenizer = %+v", tk)
			}
			if len(c.DroppedTensors()) != 0 {
				t.Errorf("dropped %v", c.DroppedTensors())
			}
		})
	}
}
