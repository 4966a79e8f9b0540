package convert

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	flashhead "github.com/fhkit/fhkit/flashhead-build"
	"github.com/fhkit/fhkit/formats/arch"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/formats/hf"
	"github.com/fhkit/fhkit/runtime/cpu"
)

// This file imports the FlashHead of a checkpoint that ships the reference
// vLLM plugin's clustering cache (<dir>/<flash_head_cache_dir>/
// clustering_cache.safetensors, flash_head_cache_dir from config.json, or
// the default flash_head_assets/): the output carries the same clusters,
// with n_probes and flash_head_special_token_ids from config.json (the EOS
// ids when absent). The import code is flashhead-build's.

// ImportFlashHead writes the FlashHead tensors of ck's cache to w (w_perm
// in dtype dt) and returns the metadata and the cache files (for
// provenance); nil when the checkpoint has no cache. fh-convert and the
// W4A16 checkpoint import (quantize.ImportHF) both call it.
func ImportFlashHead(ck *hf.Checkpoint, cfg *arch.Config, dt dtype.DType, w *fhm.Writer) (*fhm.FlashHead, []fhm.SourceFile, error) {
	fields, hasSpecial, err := flashhead.ParseEmbedlFields(ck.RawConfig)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: FlashHead fields: %w", filepath.Join(ck.Dir, hf.ConfigName), err)
	}
	rel := fields.FlashHeadCacheDir
	if rel == "" {
		rel = flashhead.EmbedlAssetsDir
	}
	dir := rel
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(ck.Dir, rel)
	}
	cache := filepath.Join(dir, flashhead.EmbedlCacheFile)
	if _, err := os.Stat(cache); err != nil {
		if fields.FlashHeadCacheDir == "" && os.IsNotExist(err) {
			return nil, nil, nil // no FlashHead
		}
		return nil, nil, fmt.Errorf("%s: flash_head_cache_dir is %q but its cache cannot be read: %w", filepath.Join(ck.Dir, hf.ConfigName), fields.FlashHeadCacheDir, err)
	}

	// The head rows, in the output dtype (w_perm is stored in it).
	name := "lm_head.weight"
	if cfg.TieWordEmbeddings {
		name = "model.embed_tokens.weight"
	}
	src, _ := ck.Tensor(name)
	data := src.Data
	if src.DType != dt {
		data = make([]byte, src.NumElements()*int64(dt.Size()))
		if _, err := dtype.ConvertFloats(data, dt, src.Data, src.DType); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", sourcePath(ck, name), err)
		}
	}
	rows, err := cpu.NewMat(cfg.VocabSize, cfg.HiddenSize, dt, data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", sourcePath(ck, name), err)
	}
	h, err := flashhead.ImportEmbedl(dir, rows)
	if err != nil {
		return nil, nil, err
	}
	if fields.NProbes > 0 {
		h.Probes = min(fields.NProbes, h.NumClusters)
	}
	special := cfg.EOSTokenIDs
	if hasSpecial {
		special = fields.FlashHeadSpecialTokenIDs
	}
	h.SpecialTokenIDs = flashhead.SpecialIDs(special, h.Vocab)
	if err := h.WriteTensors(w); err != nil {
		return nil, nil, err
	}
	meta := h.Metadata()

	// Provenance: the cache files, named relative to the checkpoint.
	var files []hf.SourceFile
	for _, f := range []string{flashhead.EmbedlCacheFile, flashhead.EmbedlConfigFile} {
		p := filepath.Join(dir, f)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			n := filepath.ToSlash(filepath.Join(rel, f))
			if filepath.IsAbs(rel) {
				n = p
			}
			files = append(files, hf.SourceFile{Name: n, Size: st.Size()})
		}
	}
	base := ck.Dir
	if filepath.IsAbs(rel) {
		base = ""
	}
	hashed, err := hashFiles(base, files)
	if err != nil {
		return nil, nil, err
	}
	return &meta, hashed, nil
}

// WithFlashHead sets an imported FlashHead (if any) in meta and adds its
// files to the provenance, kept sorted by name.
func WithFlashHead(meta *fhm.Metadata, fh *fhm.FlashHead, files []fhm.SourceFile) {
	if fh == nil {
		return
	}
	meta.FlashHead = fh
	meta.Source.Files = append(meta.Source.Files, files...)
	slices.SortStableFunc(meta.Source.Files, func(a, b fhm.SourceFile) int { return strings.Compare(a.Name, b.Name) })
}
