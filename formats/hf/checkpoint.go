package hf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/fhkit/fhkit/formats/arch"
	"github.com/fhkit/fhkit/formats/safetensors"
)

// Weight file names of the two supported layouts.
const (
	SingleWeightsName = "model.safetensors"
	IndexName         = "model.safetensors.index.json"
)

// SourceFile is one file of the checkpoint directory that a conversion
// uses (read by Open, or carried along as a tokenizer file).
type SourceFile struct {
	// Name is the path relative to the directory, with '/' separators.
	Name string
	// Size is the file's size in bytes.
	Size int64
}

// Checkpoint is an open Hugging Face checkpoint directory. Tensor data
// aliases read-only memory maps: it must not be used after Close.
type Checkpoint struct {
	// Dir is the directory as given to Open.
	Dir string
	// Config is the canonical configuration, with generation_config.json's
	// special-token ids merged in (see ApplyGeneration).
	Config arch.Config
	// Info is what config.json says beyond Config.
	Info ConfigInfo
	// RawConfig is config.json as read.
	RawConfig []byte
	// Generation is the parsed generation_config.json, nil when absent.
	Generation *GenerationConfig
	// Tokenizer lists the tokenizer files and the parsed tokenizer config.
	Tokenizer Tokenizer

	files   []*safetensors.File
	tensors map[string]tensorRef // canonical name -> source
	names   []string             // sorted canonical names
	dropped []string             // sorted source names of dropped tensors
	sources []SourceFile         // sorted by Name
}

// tensorRef locates a canonical tensor in its source file.
type tensorRef struct {
	file int
	src  string
}

// CanonicalName maps a source tensor name to fhkit's canonical name (the text
// model under "model.", the head under "lm_head."), undoing the prefixes of
// multimodal checkpoints. keep is false for the vision tower and the
// multimodal projector, which a text-only conversion drops.
func CanonicalName(src string) (name string, keep bool) {
	for _, p := range []string{"vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector."} {
		if strings.HasPrefix(src, p) {
			return "", false
		}
	}
	for _, r := range [][2]string{
		{"language_model.model.", "model."}, // transformers 4.50 multimodal layout
		{"model.language_model.", "model."}, // transformers >= 4.52
		{"language_model.lm_head.", "lm_head."},
	} {
		if strings.HasPrefix(src, r[0]) {
			return r[1] + src[len(r[0]):], true
		}
	}
	return src, true
}

// Open reads the checkpoint directory dir: config.json (required), the
// optional generation_config.json and tokenizer files, and the weights as
// either one model.safetensors or model.safetensors.index.json with its
// shards. Every error names the file and the problem.
func Open(dir string) (*Checkpoint, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("checkpoint directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("checkpoint directory %s: not a directory", dir)
	}
	c := &Checkpoint{Dir: dir, tensors: map[string]tensorRef{}}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()

	cfgPath := filepath.Join(dir, ConfigName)
	c.RawConfig, err = os.ReadFile(cfgPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: missing: a Hugging Face checkpoint directory needs %s: %w", cfgPath, ConfigName, err)
		}
		return nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	c.addSource(ConfigName, int64(len(c.RawConfig)))
	if c.Config, c.Info, err = parseConfig(cfgPath, c.RawConfig); err != nil {
		return nil, err
	}

	if err := c.readTokenizer(); err != nil {
		return nil, err
	}
	if err := c.openWeights(); err != nil {
		return nil, err
	}
	sort.Slice(c.sources, func(i, j int) bool { return c.sources[i].Name < c.sources[j].Name })
	ok = true
	return c, nil
}

// addSource records a file Open read.
func (c *Checkpoint) addSource(name string, size int64) {
	c.sources = append(c.sources, SourceFile{Name: filepath.ToSlash(name), Size: size})
}

// readOptional reads dir/name, returning nil data when it does not exist.
func (c *Checkpoint) readOptional(name string) (path string, data []byte, err error) {
	path = filepath.Join(c.Dir, name)
	data, err = os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil, nil
	}
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", path, err)
	}
	c.addSource(name, int64(len(data)))
	return path, data, nil
}

// readTokenizer finds the tokenizer files and generation_config.json.
func (c *Checkpoint) readTokenizer() error {
	t := &c.Tokenizer
	path, data, err := c.readOptional(GenerationConfigName)
	if err != nil {
		return err
	}
	if path != "" {
		t.GenerationConfigPath = path
		if c.Generation, err = parseGenerationConfig(path, data); err != nil {
			return err
		}
		if err := applyGeneration(path, &c.Config, c.Generation); err != nil {
			return err
		}
	}
	path, data, err = c.readOptional(TokenizerConfigName)
	if err != nil {
		return err
	}
	if path != "" {
		t.ConfigPath = path
		if t.Config, err = parseTokenizerConfig(path, data); err != nil {
			return err
		}
		t.ChatTemplate = t.Config.ChatTemplate
	}
	path, data, err = c.readOptional(ChatTemplateJinjaName)
	if err != nil {
		return err
	}
	if path != "" {
		t.ChatTemplatePath = path
		t.ChatTemplate = string(data)
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{
		{TokenizerModelName, &t.ModelPath},
		{TokenizerJSONName, &t.JSONPath},
		{SpecialTokensMapName, &t.SpecialTokensMapPath},
		{AddedTokensName, &t.AddedTokensPath},
	} {
		path := filepath.Join(c.Dir, f.name)
		st, err := os.Stat(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("%s: not a regular file", path)
		}
		*f.dst = path
		c.addSource(f.name, st.Size())
	}
	return nil
}

// exists reports whether path exists; other stat errors are returned.
func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, fmt.Errorf("%s: %w", path, err)
}

// openWeights opens the weights of one of the two supported layouts.
func (c *Checkpoint) openWeights() error {
	single := filepath.Join(c.Dir, SingleWeightsName)
	index := filepath.Join(c.Dir, IndexName)
	hasSingle, err := exists(single)
	if err != nil {
		return err
	}
	hasIndex, err := exists(index)
	if err != nil {
		return err
	}
	switch {
	case hasSingle && hasIndex:
		return fmt.Errorf("%s: both %s and %s are present: remove the stale one", c.Dir, SingleWeightsName, IndexName)
	case hasSingle:
		return c.openSingle(single)
	case hasIndex:
		return c.openSharded(index)
	}
	var found []string
	if entries, err := os.ReadDir(c.Dir); err == nil {
		for _, e := range entries {
			n := e.Name()
			if strings.HasSuffix(n, ".safetensors") || strings.HasSuffix(n, ".bin") || strings.HasSuffix(n, ".pt") || strings.HasSuffix(n, ".pth") || strings.HasSuffix(n, ".gguf") {
				found = append(found, n)
			}
		}
	}
	msg := "no weights"
	if len(found) > 0 {
		msg = "weights in an unsupported layout (" + strings.Join(found, ", ") + ")"
	}
	return fmt.Errorf("%s: %s: want %s, or %s with its shards", c.Dir, msg, SingleWeightsName, IndexName)
}

// openSingle opens model.safetensors.
func (c *Checkpoint) openSingle(path string) error {
	f, err := safetensors.Open(path)
	if err != nil {
		return err
	}
	c.files = append(c.files, f)
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	c.addSource(SingleWeightsName, st.Size())
	for _, t := range f.Tensors {
		if err := c.addTensor(0, t.Name); err != nil {
			return err
		}
	}
	c.finish()
	return nil
}

// openSharded opens model.safetensors.index.json and the shards it names.
func (c *Checkpoint) openSharded(index string) error {
	data, err := os.ReadFile(index)
	if err != nil {
		return fmt.Errorf("%s: %w", index, err)
	}
	c.addSource(IndexName, int64(len(data)))
	var errs []error
	o, err := decodeObject(index, data, &errs)
	if err != nil {
		return err
	}
	wm, ok := o.object("weight_map")
	if !ok {
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
		return fmt.Errorf("%s: weight_map missing", index)
	}
	if len(wm.m) == 0 {
		return fmt.Errorf("%s: weight_map is empty", index)
	}
	// Tensor name -> clean shard name, and the shards in sorted order.
	mapped := make(map[string]string, len(wm.m))
	shardSet := map[string]bool{}
	names := make([]string, 0, len(wm.m))
	for name := range wm.m {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		shard, ok := wm.string(name)
		if !ok {
			if len(errs) == 0 {
				return fmt.Errorf("%s: weight_map[%q]: want a shard file name, got null", index, name)
			}
			return errors.Join(errs...)
		}
		if !filepath.IsLocal(shard) {
			return fmt.Errorf("%s: weight_map[%q]: shard %q is not a file inside the checkpoint directory", index, name, shard)
		}
		shard = filepath.Clean(shard)
		mapped[name] = shard
		shardSet[shard] = true
	}
	shards := make([]string, 0, len(shardSet))
	for s := range shardSet {
		shards = append(shards, s)
	}
	sort.Strings(shards)
	for i, shard := range shards {
		path := filepath.Join(c.Dir, shard)
		st, err := os.Stat(path)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%s: shard %q is missing: %w", index, shard, err)
			}
			return fmt.Errorf("%s: shard %q: %w", index, shard, err)
		}
		f, err := safetensors.Open(path)
		if err != nil {
			return err
		}
		c.files = append(c.files, f)
		c.addSource(shard, st.Size())
		for _, t := range f.Tensors {
			want, ok := mapped[t.Name]
			if !ok {
				return fmt.Errorf("%s: tensor %q is not listed in %s", path, t.Name, IndexName)
			}
			if want != shard {
				return fmt.Errorf("%s: tensor %q is in shard %q but the index maps it to %q", index, t.Name, shard, want)
			}
			if err := c.addTensor(i, t.Name); err != nil {
				return err
			}
		}
	}
	for _, name := range names {
		shard := mapped[name]
		i := sort.SearchStrings(shards, shard)
		if _, ok := c.files[i].Tensor(name); !ok {
			return fmt.Errorf("%s: tensor %q is mapped to shard %q, which does not contain it", index, name, shard)
		}
	}
	c.finish()
	return nil
}

// addTensor records the source tensor src of file i under its canonical name.
func (c *Checkpoint) addTensor(i int, src string) error {
	name, keep := CanonicalName(src)
	if !keep {
		c.dropped = append(c.dropped, src)
		return nil
	}
	if prev, dup := c.tensors[name]; dup {
		return fmt.Errorf("%s: tensor %q and %s: tensor %q both map to the canonical name %q",
			c.files[prev.file].Path, prev.src, c.files[i].Path, src, name)
	}
	c.tensors[name] = tensorRef{file: i, src: src}
	return nil
}

// finish sorts the name lists.
func (c *Checkpoint) finish() {
	c.names = make([]string, 0, len(c.tensors))
	for n := range c.tensors {
		c.names = append(c.names, n)
	}
	sort.Strings(c.names)
	sort.Strings(c.dropped)
}

// Tensor returns the tensor with the canonical name (its Name field is set
// to the canonical name). Its Data aliases the memory map.
func (c *Checkpoint) Tensor(name string) (safetensors.Tensor, bool) {
	r, ok := c.tensors[name]
	if !ok || r.file >= len(c.files) || c.files[r.file] == nil {
		return safetensors.Tensor{}, false
	}
	t, ok := c.files[r.file].Tensor(r.src)
	if !ok {
		return safetensors.Tensor{}, false
	}
	t.Name = name
	return t, true
}

// Source returns the file path and the source name of the tensor with the
// canonical name, for error messages and provenance.
func (c *Checkpoint) Source(name string) (path, src string, ok bool) {
	r, ok := c.tensors[name]
	if !ok || r.file >= len(c.files) || c.files[r.file] == nil {
		return "", "", false
	}
	return c.files[r.file].Path, r.src, true
}

// Release drops the pages of the named tensor from the resident set once it
// has been consumed (keeps peak memory low when streaming a large model).
func (c *Checkpoint) Release(name string) {
	r, ok := c.tensors[name]
	if !ok || r.file >= len(c.files) || c.files[r.file] == nil {
		return
	}
	if t, ok := c.files[r.file].Tensor(r.src); ok {
		c.files[r.file].Release(t)
	}
}

// ReleaseRange is Release for the bytes [off, off+n) of the named tensor's
// data, so a large tensor streamed in chunks never becomes resident whole.
func (c *Checkpoint) ReleaseRange(name string, off, n int) {
	r, ok := c.tensors[name]
	if !ok || r.file >= len(c.files) || c.files[r.file] == nil {
		return
	}
	t, ok := c.files[r.file].Tensor(r.src)
	if !ok || off < 0 || n < 0 || off+n > len(t.Data) {
		return
	}
	t.Offset += int64(off)
	t.Data = t.Data[off : off+n]
	c.files[r.file].Release(t)
}

// TensorNames returns the canonical tensor names, sorted.
func (c *Checkpoint) TensorNames() []string { return append([]string(nil), c.names...) }

// DroppedTensors returns the source names of the tensors left out (vision
// tower, multimodal projector), sorted.
func (c *Checkpoint) DroppedTensors() []string { return append([]string(nil), c.dropped...) }

// SourceFiles returns every file of the checkpoint a conversion uses: the
// configs, the tokenizer files (detected, not all read by Open), the index
// and the weight shards, sorted by name, for provenance checksums. Sizes
// are those of the symlink targets.
func (c *Checkpoint) SourceFiles() []SourceFile { return append([]SourceFile(nil), c.sources...) }

// Close unmaps the weight files. Tensor data must not be used afterwards.
// Closing twice is harmless.
func (c *Checkpoint) Close() error {
	var errs []error
	for i, f := range c.files {
		if f != nil {
			if err := f.Close(); err != nil {
				errs = append(errs, err)
			}
			c.files[i] = nil
		}
	}
	return errors.Join(errs...)
}
