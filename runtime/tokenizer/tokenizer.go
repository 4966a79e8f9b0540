// Package tokenizer turns text into token ids and back for the models fhkit
// runs, with the semantics of Hugging Face tokenizers (tokenizer.json) and
// transformers (special tokens, add_bos_token, chat templates).
//
// Two backends exist:
//
//   - tokenizer.json with a BPE model: byte-level BPE (Llama-3, Qwen2/3,
//     GPT-2) and SentencePiece-converted BPE (Llama-2, Gemma, Mistral) are
//     implemented here, for the subset of normalizers, pre-tokenizers,
//     post-processors and decoders those models use;
//   - tokenizer.model (SentencePiece BPE) through
//     github.com/eliben/go-sentencepiece, with the dummy-prefix and
//     special-token handling of transformers added on top.
//
// In both, added and special tokens written literally in the text (such as
// "<start_of_turn>" or "<|im_start|>") are encoded as their single id, as
// Hugging Face tokenizers does, and Decode renders special tokens as their
// text (skip_special_tokens=False).
//
// A Tokenizer is safe for concurrent use; a Decoder is not.
package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"

	sentencepiece "github.com/eliben/go-sentencepiece"
	"github.com/fhkit/fhkit/formats/fhm"
	"golang.org/x/text/unicode/norm"
)

// Backend selects the tokenizer file a Tokenizer is built from.
type Backend int

const (
	// Auto prefers tokenizer.json when it is present and supported, else
	// tokenizer.model.
	Auto Backend = iota
	// JSON uses tokenizer.json only.
	JSON
	// SentencePiece uses tokenizer.model only.
	SentencePiece
)

// String returns the backend's name.
func (b Backend) String() string {
	switch b {
	case Auto:
		return "auto"
	case JSON:
		return "tokenizer.json"
	case SentencePiece:
		return "tokenizer.model"
	}
	return fmt.Sprintf("Backend(%d)", int(b))
}

// Files are the raw tokenizer files of a model, as found in a Hugging Face
// model directory or embedded in a .fhm file. Each may be nil, and each may
// be gzip-compressed. The remaining fields override what the files say;
// their zero values mean "not set".
type Files struct {
	// Model is tokenizer.model (SentencePiece).
	Model []byte
	// JSON is tokenizer.json (Hugging Face tokenizers).
	JSON []byte
	// Config is tokenizer_config.json.
	Config []byte
	// SpecialTokensMap is special_tokens_map.json.
	SpecialTokensMap []byte
	// AddedTokens is added_tokens.json.
	AddedTokens []byte

	// ChatTemplate replaces the config's chat_template.
	ChatTemplate string
	// AddBOS and AddEOS replace add_bos_token and add_eos_token.
	AddBOS, AddEOS *bool
	// BOSToken and EOSToken replace bos_token and eos_token.
	BOSToken, EOSToken string
	// BOSID is the model's bos_token_id, used when the tokenizer files name
	// no BOS token; nil when unknown.
	BOSID *int
	// EOSIDs are the model's end-of-sequence ids (config.json eos_token_id),
	// listed first by EOS.
	EOSIDs []int
	// Backend chooses the file to use (default Auto).
	Backend Backend
}

// Tokenizer encodes text to token ids and decodes ids to text.
type Tokenizer struct {
	backend Backend
	pieces  []string
	ids     map[string]int
	special []bool
	added   *matcher
	enc     segmentEncoder
	dec     decodeRule
	// inverse of the byte-level alphabet, for byteLevel decoding.
	unByte map[rune]byte
	bos    int
	eos    []int
	prefix []int
	suffix []int
	chat   *ChatTemplate
	// chatErr is the error from compiling the chat template, if any.
	chatErr error
}

// segmentEncoder encodes a segment of plain text (no added tokens).
type segmentEncoder interface {
	encode(seg segment, out []int) []int
}

// New builds a Tokenizer from raw tokenizer files.
func New(f Files) (*Tokenizer, error) {
	var err error
	for _, x := range []struct {
		name string
		b    *[]byte
	}{
		{"tokenizer.model", &f.Model}, {"tokenizer.json", &f.JSON}, {"tokenizer_config.json", &f.Config},
		{"special_tokens_map.json", &f.SpecialTokensMap}, {"added_tokens.json", &f.AddedTokens},
	} {
		if *x.b, err = maybeGunzip(x.name, *x.b); err != nil {
			return nil, err
		}
	}
	var cfg hfConfig
	if len(f.Config) > 0 {
		if err := cfg.parseTokenizerConfig(f.Config); err != nil {
			return nil, err
		}
	}
	if len(f.SpecialTokensMap) > 0 {
		if err := cfg.parseSpecialTokensMap(f.SpecialTokensMap); err != nil {
			return nil, err
		}
	}
	if len(f.AddedTokens) > 0 {
		if err := cfg.parseAddedTokens(f.AddedTokens); err != nil {
			return nil, err
		}
	}
	if cfg.specialNames == nil {
		cfg.specialNames = map[string]bool{}
	}
	if f.ChatTemplate != "" {
		cfg.chatTemplate = f.ChatTemplate
	}
	if f.AddBOS != nil {
		cfg.addBOS = f.AddBOS
	}
	if f.AddEOS != nil {
		cfg.addEOS = f.AddEOS
	}
	if f.BOSToken != "" {
		cfg.bosToken = f.BOSToken
		cfg.specialNames[f.BOSToken] = true
	}
	if f.EOSToken != "" {
		cfg.eosToken = f.EOSToken
		cfg.specialNames[f.EOSToken] = true
	}

	var t *Tokenizer
	switch f.Backend {
	case JSON:
		if len(f.JSON) == 0 {
			return nil, errors.New("tokenizer: no tokenizer.json")
		}
		t, err = newFromJSON(f.JSON, &cfg)
	case SentencePiece:
		if len(f.Model) == 0 {
			return nil, errors.New("tokenizer: no tokenizer.model")
		}
		t, err = newFromSPM(f.Model, &cfg)
	case Auto:
		switch {
		case len(f.JSON) > 0:
			t, err = newFromJSON(f.JSON, &cfg)
			if err != nil && len(f.Model) > 0 {
				var err2 error
				t, err2 = newFromSPM(f.Model, &cfg)
				if err2 != nil {
					err = fmt.Errorf("%w; and %w", err, err2)
				} else {
					err = nil
				}
			}
		case len(f.Model) > 0:
			t, err = newFromSPM(f.Model, &cfg)
		default:
			return nil, errors.New("tokenizer: neither tokenizer.json nor tokenizer.model is present")
		}
	default:
		return nil, fmt.Errorf("tokenizer: unknown backend %d", int(f.Backend))
	}
	if err != nil {
		return nil, err
	}
	t.finish(&cfg, f)
	return t, nil
}

// FromFHM builds the Tokenizer of a .fhm file from its embedded tokenizer
// files and metadata (chat template, add_bos_token, BOS/EOS tokens and the
// model's BOS/EOS ids).
func FromFHM(f *fhm.File) (*Tokenizer, error) {
	if f == nil {
		return nil, errors.New("tokenizer: nil .fhm file")
	}
	get := func(name string) []byte {
		b, _ := f.TokenizerFile(name)
		return b
	}
	md := f.Metadata
	files := Files{
		Model:            get("tokenizer.model"),
		JSON:             get("tokenizer.json"),
		Config:           get("tokenizer_config.json"),
		SpecialTokensMap: get("special_tokens_map.json"),
		AddedTokens:      get("added_tokens.json"),
		ChatTemplate:     md.Tokenizer.ChatTemplate,
		AddBOS:           md.Tokenizer.AddBOSToken,
		AddEOS:           md.Tokenizer.AddEOSToken,
		BOSToken:         md.Tokenizer.BOSToken,
		EOSToken:         md.Tokenizer.EOSToken,
		EOSIDs:           md.Model.EOSTokenIDs,
	}
	if md.Model.VocabSize > 0 && md.Model.BOSTokenID >= 0 {
		id := md.Model.BOSTokenID
		files.BOSID = &id
	}
	if files.JSON == nil && files.Model == nil {
		return nil, fmt.Errorf("%s: no tokenizer.json or tokenizer.model embedded", f.Path)
	}
	t, err := New(files)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Path, err)
	}
	return t, nil
}

// LoadDir builds the Tokenizer of a Hugging Face model directory.
func LoadDir(dir string) (*Tokenizer, error) {
	var f Files
	for _, x := range []struct {
		name string
		dst  *[]byte
	}{
		{"tokenizer.model", &f.Model}, {"tokenizer.json", &f.JSON}, {"tokenizer_config.json", &f.Config},
		{"special_tokens_map.json", &f.SpecialTokensMap}, {"added_tokens.json", &f.AddedTokens},
	} {
		b, err := os.ReadFile(filepath.Join(dir, x.name))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("tokenizer: %w", err)
		}
		*x.dst = b
	}
	if b, err := os.ReadFile(filepath.Join(dir, "chat_template.jinja")); err == nil {
		f.ChatTemplate = string(b)
	}
	t, err := New(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return t, nil
}

// finish sets the special-token ids, the BOS/EOS handling of Encode and the
// chat template.
func (t *Tokenizer) finish(cfg *hfConfig, f Files) {
	if len(t.special) < len(t.pieces) {
		t.special = append(t.special, make([]bool, len(t.pieces)-len(t.special))...)
	}
	for name := range cfg.specialNames {
		if id, ok := t.ids[name]; ok {
			t.special[id] = true
		}
	}
	for _, a := range cfg.added {
		if a.special && a.id < len(t.special) {
			t.special[a.id] = true
		}
	}
	if cfg.bosToken != "" {
		if id, ok := t.ids[cfg.bosToken]; ok {
			t.bos = id
		}
	}
	if t.bos < 0 && f.BOSID != nil && *f.BOSID >= 0 && *f.BOSID < len(t.pieces) {
		t.bos = *f.BOSID
	}
	eosTok := -1
	if cfg.eosToken != "" {
		if id, ok := t.ids[cfg.eosToken]; ok {
			eosTok = id
		}
	}
	nativeEOS := t.eos
	var eos []int
	for _, id := range f.EOSIDs {
		if id >= 0 && id < len(t.pieces) && !slices.Contains(eos, id) {
			eos = append(eos, id)
		}
	}
	for _, id := range append([]int{eosTok}, t.eos...) {
		if id >= 0 && !slices.Contains(eos, id) {
			eos = append(eos, id)
		}
	}
	t.eos = eos

	// add_bos_token / add_eos_token, when given, decide whether Encode adds
	// them (transformers' LlamaTokenizerFast/GemmaTokenizerFast rebuild
	// their post-processor from these flags).
	if cfg.addBOS != nil && t.bos >= 0 {
		t.prefix = slices.DeleteFunc(t.prefix, func(id int) bool { return id == t.bos })
		if *cfg.addBOS {
			t.prefix = append([]int{t.bos}, t.prefix...)
		}
	}
	if cfg.addEOS != nil && eosTok >= 0 {
		t.suffix = slices.DeleteFunc(t.suffix, func(id int) bool { return id == eosTok })
		if *cfg.addEOS {
			t.suffix = append(t.suffix, eosTok)
		}
	}

	if cfg.chatTemplate != "" {
		st := SpecialTokens{BOS: cfg.bosToken, EOS: cfg.eosToken, UNK: cfg.unkToken, PAD: cfg.padToken}
		// Without a config naming them, the model's own BOS/EOS pieces (as
		// a SentencePiece tokenizer's defaults).
		if st.BOS == "" && t.bos >= 0 {
			st.BOS = t.pieces[t.bos]
		}
		if st.EOS == "" && len(nativeEOS) > 0 {
			st.EOS = t.pieces[nativeEOS[0]]
		}
		t.chat, t.chatErr = NewChatTemplate(cfg.chatTemplate, st)
	}
}

// newFromSPM builds a Tokenizer from tokenizer.model.
func newFromSPM(model []byte, cfg *hfConfig) (*Tokenizer, error) {
	p, err := parseSPMProto(model)
	if err != nil {
		return nil, fmt.Errorf("tokenizer.model: %w", err)
	}
	if p.modelType != spmBPE {
		return nil, fmt.Errorf("tokenizer.model: model type %d is not supported (only BPE)", p.modelType)
	}
	if p.wsAsSuffix {
		return nil, errors.New("tokenizer.model: treat_whitespace_as_suffix is not supported")
	}
	if !p.escapeWS {
		return nil, errors.New("tokenizer.model: escape_whitespaces=false is not supported")
	}
	proc, err := newSPMProcessor(p.raw)
	if err != nil {
		return nil, fmt.Errorf("tokenizer.model: %w", err)
	}
	t := &Tokenizer{backend: SentencePiece, ids: make(map[string]int, len(p.pieces)), bos: -1}
	t.pieces = make([]string, len(p.pieces))
	t.special = make([]bool, len(p.pieces))
	var lit []addedToken
	for i, pc := range p.pieces {
		t.pieces[i] = pc.piece
		if _, dup := t.ids[pc.piece]; !dup {
			t.ids[pc.piece] = i
		}
		switch pc.typ {
		case spmControl, spmUnknown:
			t.special[i] = true
			lit = append(lit, addedToken{content: pc.piece, id: i, special: true})
		case spmUserDefined:
			lit = append(lit, addedToken{content: pc.piece, id: i})
		}
	}
	// Tokens from added_tokens_decoder / added_tokens.json: known pieces
	// keep their id; new ones extend the vocabulary. They come first in
	// the matcher so that their lstrip/rstrip flags apply.
	var cfgLit []addedToken
	for _, a := range cfg.added {
		for len(t.pieces) <= a.id {
			t.pieces = append(t.pieces, "")
			t.special = append(t.special, false)
		}
		switch t.pieces[a.id] {
		case a.content:
		case "":
			t.pieces[a.id] = a.content
			if _, dup := t.ids[a.content]; !dup {
				t.ids[a.content] = a.id
			}
		default:
			continue // disagrees with the model; the model wins
		}
		cfgLit = append(cfgLit, a)
	}
	lit = append(cfgLit, lit...)
	t.added = newMatcher(lit)
	t.dec = decodeRule{replace: [][2]string{{"▁", " "}}, byteFallback: true}
	legacy := cfg.legacy == nil || *cfg.legacy
	if p.addDummyPrefix {
		t.dec.stripStart = 1
	}
	t.enc = &spmEncoder{proc: proc, p: p, legacy: legacy, pieces: t.pieces}
	t.bos = p.pieceOfType(p.bosID, spmControl)
	if id := p.pieceOfType(p.eosID, spmControl); id >= 0 {
		t.eos = []int{id}
	}
	if t.bos >= 0 && (cfg.addBOS == nil || *cfg.addBOS) {
		t.prefix = []int{t.bos}
	}
	return t, nil
}

// newSPMProcessor runs go-sentencepiece's constructor, turning a panic on a
// malformed model into an error.
func newSPMProcessor(raw []byte) (proc *sentencepiece.Processor, err error) {
	defer func() {
		if r := recover(); r != nil {
			proc, err = nil, fmt.Errorf("go-sentencepiece: %v", r)
		}
	}()
	proc, err = sentencepiece.NewProcessor(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("go-sentencepiece: %w", err)
	}
	return proc, nil
}

// spmEncoder encodes plain text with a SentencePiece BPE model.
type spmEncoder struct {
	proc   *sentencepiece.Processor
	p      *spmProto
	legacy bool
	pieces []string
}

func (e *spmEncoder) encode(seg segment, out []int) []int {
	text := seg.text
	switch e.p.normName {
	case "nfkc", "nmt_nfkc":
		text = norm.NFKC.String(text)
	case "nfkc_cf", "nmt_nfkc_cf":
		text = strings.ToLower(norm.NFKC.String(text))
	}
	if e.p.removeExtraWS {
		text = strings.Join(strings.FieldsFunc(text, func(r rune) bool { return r == ' ' }), " ")
	}
	if text == "" {
		return out
	}
	// transformers' legacy SentencePiece handling (and tokenizers' Prepend
	// normalizer) adds the dummy prefix to every segment between special
	// tokens; legacy=false only to the start of the text.
	if e.p.addDummyPrefix && (e.legacy || seg.start == 0) {
		text = " " + text
	}
	return e.run(text, out)
}

// run calls go-sentencepiece, falling back to byte pieces should it panic.
func (e *spmEncoder) run(text string, out []int) (res []int) {
	n := len(out)
	defer func() {
		if r := recover(); r != nil {
			res = out[:n]
			for i := 0; i < len(text); i++ {
				id := -1
				if len(e.pieces) > 0 {
					id = indexOf(e.pieces, fmt.Sprintf("<0x%02X>", text[i]))
				}
				if id < 0 {
					id = int(e.p.unkID)
				}
				res = append(res, id)
			}
		}
	}()
	for _, tok := range e.proc.Encode(text) {
		out = append(out, tok.ID)
	}
	return out
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

// maxVocab bounds token ids (the largest vocabularies in use have about
// 260k entries).
const maxVocab = 1 << 22

// newFromJSON builds a Tokenizer from tokenizer.json.
func newFromJSON(data []byte, cfg *hfConfig) (*Tokenizer, error) {
	var tj tokenizerJSON
	if err := json.Unmarshal(data, &tj); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	mj := &tj.Model
	if mj.Type != "BPE" && (mj.Type != "" || mj.Vocab.notMap) {
		return nil, fmt.Errorf("tokenizer.json: model type %q is not supported (only BPE)", mj.Type)
	}
	if len(mj.Vocab.m) == 0 {
		return nil, errors.New("tokenizer.json: model: empty vocabulary")
	}
	m := &bpeModel{
		vocab:        mj.Vocab.m,
		merges:       make(map[uint64]bpeMerge, bytes.Count(mj.Merges.raw, []byte(","))/2+1),
		unk:          -1,
		fuseUnk:      mj.FuseUnk,
		byteFallback: mj.ByteFallback,
		ignoreMerges: mj.IgnoreMerges,
	}
	if mj.ContPrefix != nil {
		m.contPrefix = *mj.ContPrefix
	}
	if mj.EOWSuffix != nil {
		m.eowSuffix = *mj.EOWSuffix
	}
	size := 0
	for tok, id := range mj.Vocab.m {
		if id < 0 || id >= maxVocab {
			return nil, fmt.Errorf("tokenizer.json: model.vocab: token %q has id %d out of range", tok, id)
		}
		size = max(size, id+1)
	}
	for i, a := range tj.AddedTokens {
		if a.ID == nil || *a.ID < 0 || *a.ID >= maxVocab || a.Content == "" {
			return nil, fmt.Errorf("tokenizer.json: added_tokens[%d]: bad id or empty content", i)
		}
		size = max(size, *a.ID+1)
	}
	if mj.UnkToken != nil {
		id, ok := mj.Vocab.m[*mj.UnkToken]
		if !ok {
			return nil, fmt.Errorf("tokenizer.json: model.unk_token %q is not in the vocabulary", *mj.UnkToken)
		}
		m.unk = id
	}
	for b := 0; b < 256; b++ {
		m.byteIDs[b] = -1
		if id, ok := mj.Vocab.m[fmt.Sprintf("<0x%02X>", b)]; ok {
			m.byteIDs[b] = id
		}
	}
	var buf []byte
	err := forEachMerge(mj.Merges.raw, func(i int, a, b []byte) error {
		if err := m.addMerge(i, a, b, &buf); err != nil {
			return fmt.Errorf("merges[%d]: %w", i, err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tokenizer.json: model.%w", err)
	}
	mj.Merges.raw = nil

	t := &Tokenizer{backend: JSON, bos: -1}
	t.pieces = make([]string, size)
	t.special = make([]bool, size)
	t.ids = make(map[string]int, size)
	for tok, id := range mj.Vocab.m {
		t.pieces[id] = tok
		t.ids[tok] = id
	}
	var raw, normalized []addedToken
	for _, a := range tj.AddedTokens {
		at := addedToken{content: a.Content, id: *a.ID, special: a.Special, lstrip: a.LStrip, rstrip: a.RStrip, singleWord: a.SingleWord}
		// tokenizers defaults "normalized" to !special.
		at.normalized = !a.Special
		if a.Normalized != nil {
			at.normalized = *a.Normalized
		}
		t.pieces[at.id] = at.content
		t.ids[at.content] = at.id
		t.special[at.id] = at.special
		if at.normalized {
			normalized = append(normalized, at)
		} else {
			raw = append(raw, at)
		}
	}
	alphabet := byteLevelAlphabet()
	normFn, err := parseNormalizer(tj.Normalizer)
	if err != nil {
		return nil, fmt.Errorf("tokenizer.json: normalizer: %w", err)
	}
	pre, byteLevel, err := parsePreTokenizer(tj.PreTokenizer, &alphabet)
	if err != nil {
		return nil, fmt.Errorf("tokenizer.json: pre_tokenizer: %w", err)
	}
	if t.dec, err = parseDecoder(tj.Decoder); err != nil {
		return nil, fmt.Errorf("tokenizer.json: decoder: %w", err)
	}
	if t.dec.byteLevel != byteLevel {
		return nil, errors.New("tokenizer.json: ByteLevel pre-tokenizer and ByteLevel decoder must come together")
	}
	if t.dec.byteLevel {
		t.unByte = make(map[rune]byte, 256)
		for b, r := range alphabet {
			t.unByte[r] = byte(b)
		}
	}
	if t.prefix, t.suffix, err = parsePostProcessor(tj.PostProcessor, t.ids); err != nil {
		return nil, fmt.Errorf("tokenizer.json: post_processor: %w", err)
	}
	if len(t.prefix) > 0 {
		t.bos = t.prefix[0]
	}
	// Normalized added tokens are matched after normalization, on the
	// normalized form of their content.
	for i := range normalized {
		if normFn != nil {
			normalized[i].content = normFn(normalized[i].content)
		}
	}
	t.added = newMatcher(raw)
	t.enc = &jsonEncoder{model: m, norm: normFn, pre: pre, normAdded: newMatcher(normalized)}
	return t, nil
}

// parsePostProcessor returns the ids a single sequence is wrapped in.
func parsePostProcessor(raw json.RawMessage, ids map[string]int) (prefix, suffix []int, err error) {
	if isNull(raw) {
		return nil, nil, nil
	}
	var t typed
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, nil, err
	}
	switch t.Type {
	case "Sequence":
		var s struct {
			Processors []json.RawMessage `json:"processors"`
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, nil, err
		}
		for i, p := range s.Processors {
			pre, suf, err := parsePostProcessor(p, ids)
			if err != nil {
				return nil, nil, fmt.Errorf("processors[%d]: %w", i, err)
			}
			prefix = append(prefix, pre...)
			suffix = append(suffix, suf...)
		}
		return prefix, suffix, nil
	case "ByteLevel":
		return nil, nil, nil
	case "TemplateProcessing":
		var s struct {
			Single []struct {
				SpecialToken *struct {
					ID string `json:"id"`
				} `json:"SpecialToken"`
				Sequence *struct {
					ID string `json:"id"`
				} `json:"Sequence"`
			} `json:"single"`
			SpecialTokens map[string]struct {
				IDs []int `json:"ids"`
			} `json:"special_tokens"`
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, nil, err
		}
		seen := false
		for _, item := range s.Single {
			switch {
			case item.Sequence != nil:
				seen = true
			case item.SpecialToken != nil:
				st, ok := s.SpecialTokens[item.SpecialToken.ID]
				if !ok {
					return nil, nil, fmt.Errorf("TemplateProcessing: special token %q not defined", item.SpecialToken.ID)
				}
				if seen {
					suffix = append(suffix, st.IDs...)
				} else {
					prefix = append(prefix, st.IDs...)
				}
			}
		}
		return prefix, suffix, nil
	case "RobertaProcessing", "BertProcessing":
		var s struct {
			Sep []json.RawMessage `json:"sep"`
			Cls []json.RawMessage `json:"cls"`
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, nil, err
		}
		id := func(x []json.RawMessage) ([]int, error) {
			if len(x) != 2 {
				return nil, fmt.Errorf("%s: bad cls/sep", t.Type)
			}
			var n int
			if err := json.Unmarshal(x[1], &n); err != nil {
				return nil, err
			}
			return []int{n}, nil
		}
		if prefix, err = id(s.Cls); err != nil {
			return nil, nil, err
		}
		if suffix, err = id(s.Sep); err != nil {
			return nil, nil, err
		}
		return prefix, suffix, nil
	}
	return nil, nil, fmt.Errorf("unsupported post_processor %q", t.Type)
}

// jsonEncoder encodes plain text with a tokenizer.json pipeline.
type jsonEncoder struct {
	model     *bpeModel
	norm      normalizer
	pre       preTokenizer
	normAdded *matcher
}

func (e *jsonEncoder) encode(seg segment, out []int) []int {
	text := seg.text
	if e.norm != nil {
		text = e.norm(text)
	}
	parts := []segment{{text: text, id: -1, start: seg.start}}
	if !e.normAdded.empty() {
		parts = e.normAdded.split(text, seg.start)
	}
	for _, p := range parts {
		if p.id >= 0 {
			out = append(out, p.id)
			continue
		}
		ps := []piece{{s: p.text, first: p.start == 0}}
		if e.pre != nil {
			ps = e.pre(ps)
		}
		for _, x := range ps {
			out = e.model.tokenize(x.s, out)
		}
	}
	return out
}

// Encode returns the token ids of text. With addSpecial it adds the special
// tokens the tokenizer wraps a sequence in, as transformers'
// encode(text, add_special_tokens=True) does: BOS when the tokenizer adds
// one (add_bos_token, true by default for SentencePiece models; false for
// Qwen), EOS when add_eos_token is set. Special and added tokens written in
// the text are matched as single ids either way.
func (t *Tokenizer) Encode(text string, addSpecial bool) []int {
	var ids []int
	if addSpecial {
		ids = append(ids, t.prefix...)
	}
	for _, seg := range t.added.split(text, 0) {
		if seg.id >= 0 {
			ids = append(ids, seg.id)
			continue
		}
		ids = t.enc.encode(seg, ids)
	}
	if addSpecial {
		ids = append(ids, t.suffix...)
	}
	return ids
}

// Decode returns the text of ids, as Hugging Face tokenizers'
// decode(ids, skip_special_tokens=False): special tokens appear as their
// text, SentencePiece's "▁" becomes a space, for models with a dummy prefix
// the space at the very start is dropped, and byte pieces are joined into
// UTF-8. transformers' clean_up_tokenization_spaces is not applied. Bytes that
// do not form valid UTF-8 become U+FFFD the way tokenizers does it: for
// byte-level BPE one per maximal invalid subsequence, for byte-fallback
// pieces one per byte piece of a run that is not valid as a whole. Unknown
// ids are skipped.
func (t *Tokenizer) Decode(ids []int) string {
	if t.dec.byteLevel || !t.dec.byteFallback {
		d := t.NewDecoder()
		var b strings.Builder
		for _, id := range ids {
			b.WriteString(d.Next(id))
		}
		b.WriteString(d.Flush())
		return b.String()
	}
	var out, run []byte
	nrun := 0
	endRun := func() {
		if utf8.Valid(run) {
			out = append(out, run...)
		} else {
			for range nrun {
				out = append(out, "\uFFFD"...)
			}
		}
		run, nrun = run[:0], 0
	}
	for i, id := range ids {
		if v, ok := t.byteToken(id); ok {
			run = append(run, v)
			nrun++
			continue
		}
		endRun()
		out = t.tokenBytes(id, i == 0, out)
	}
	endRun()
	s := strings.ToValidUTF8(string(out), "\uFFFD")
	for k := 0; k < t.dec.stripStart && strings.HasPrefix(s, " "); k++ {
		s = s[1:]
	}
	return s
}

// DecodeSkipSpecial is Decode with the special tokens left out, as
// decode(ids, skip_special_tokens=True): the SentencePiece behaviour of
// dropping control tokens such as BOS and EOS.
func (t *Tokenizer) DecodeSkipSpecial(ids []int) string {
	kept := make([]int, 0, len(ids))
	for _, id := range ids {
		if !t.IsSpecial(id) {
			kept = append(kept, id)
		}
	}
	return t.Decode(kept)
}

// IsSpecial reports whether id is a special token (control tokens such as
// BOS/EOS, and added tokens marked special).
func (t *Tokenizer) IsSpecial(id int) bool {
	return id >= 0 && id < len(t.special) && t.special[id]
}

// VocabSize returns the number of token ids the tokenizer knows (its
// largest id plus one). A model's embedding table may be larger.
func (t *Tokenizer) VocabSize() int { return len(t.pieces) }

// BOS returns the beginning-of-sequence id, or -1 when the tokenizer has
// none (Qwen).
func (t *Tokenizer) BOS() int { return t.bos }

// EOS returns the end-of-sequence ids: the model's eos_token_id list when
// known (a .fhm file), then the tokenizer's eos_token. Generation stops at
// any of them.
func (t *Tokenizer) EOS() []int { return slices.Clone(t.eos) }

// TokenID returns the id of a vocabulary piece as it is spelled in the
// vocabulary ("▁the", "Ġthe", "<0x0A>", "<bos>").
func (t *Tokenizer) TokenID(piece string) (int, bool) {
	id, ok := t.ids[piece]
	return id, ok
}

// Piece returns the vocabulary spelling of id, or "" for an unknown id.
func (t *Tokenizer) Piece(id int) string {
	if id < 0 || id >= len(t.pieces) {
		return ""
	}
	return t.pieces[id]
}

// Backend returns the file the tokenizer was built from (JSON or
// SentencePiece).
func (t *Tokenizer) Backend() Backend { return t.backend }

// tokenBytes appends the decoded bytes of token id to buf. first is true
// for the first token of a decode.
func (t *Tokenizer) tokenBytes(id int, first bool, buf []byte) []byte {
	if id < 0 || id >= len(t.pieces) || t.pieces[id] == "" {
		return buf
	}
	s := t.pieces[id]
	if t.dec.byteLevel {
		n := len(buf)
		for _, r := range s {
			b, ok := t.unByte[r]
			if !ok {
				return append(buf[:n], s...)
			}
			buf = append(buf, b)
		}
		return buf
	}
	if v, ok := t.byteToken(id); ok {
		return append(buf, v)
	}
	for _, r := range t.dec.replace {
		s = strings.ReplaceAll(s, r[0], r[1])
	}
	if t.dec.metaspace != "" {
		if first && t.dec.metaspaceFirst {
			s = strings.ReplaceAll(s, t.dec.metaspace, "")
		} else {
			s = strings.ReplaceAll(s, t.dec.metaspace, " ")
		}
	}
	return append(buf, s...)
}

// byteToken reports whether id is a byte-fallback piece "<0xXX>" and
// returns its byte.
func (t *Tokenizer) byteToken(id int) (byte, bool) {
	if !t.dec.byteFallback || id < 0 || id >= len(t.pieces) {
		return 0, false
	}
	s := t.pieces[id]
	if len(s) != 6 || !strings.HasPrefix(s, "<0x") || s[5] != '>' {
		return 0, false
	}
	return hexByte(s[3], s[4])
}

func hexByte(a, b byte) (byte, bool) {
	h := func(c byte) (byte, bool) {
		switch {
		case c >= '0' && c <= '9':
			return c - '0', true
		case c >= 'A' && c <= 'F':
			return c - 'A' + 10, true
		case c >= 'a' && c <= 'f':
			return c - 'a' + 10, true
		}
		return 0, false
	}
	x, ok1 := h(a)
	y, ok2 := h(b)
	return x<<4 | y, ok1 && ok2
}

// Decoder turns a stream of token ids into text as they are generated,
// emitting only complete UTF-8 characters: a character whose bytes are
// split over several byte-fallback pieces (or byte-level tokens) is held
// back until it is complete. The concatenation of every Next and the final
// Flush equals Decode of all the ids whenever the byte pieces form valid
// UTF-8 (invalid bytes become U+FFFD as soon as they are known to be
// invalid, which for byte-fallback runs can differ from Decode's
// whole-run rule). To continue after a prompt without the start-of-text
// rules applying, feed the prompt ids first and discard what they return.
type Decoder struct {
	// SkipSpecial drops special tokens, as DecodeSkipSpecial does.
	SkipSpecial bool

	t       *Tokenizer
	pending []byte
	n       int
	strip   int
}

// NewDecoder returns a streaming decoder at the start of a text.
func (t *Tokenizer) NewDecoder() *Decoder {
	return &Decoder{t: t, strip: t.dec.stripStart}
}

// Next adds token id and returns the text that became complete.
func (d *Decoder) Next(id int) string {
	if d.SkipSpecial && d.t.IsSpecial(id) {
		return ""
	}
	d.pending = d.t.tokenBytes(id, d.n == 0, d.pending)
	d.n++
	return d.emit(false)
}

// Flush returns what is still held back, with incomplete UTF-8 sequences
// replaced by U+FFFD, and empties the decoder's pending bytes.
func (d *Decoder) Flush() string { return d.emit(true) }

func (d *Decoder) emit(final bool) string {
	var b strings.Builder
	i := 0
	for i < len(d.pending) {
		size, valid, wait := nextChar(d.pending[i:], final, d.t.dec.byteLevel)
		if wait {
			break
		}
		if d.strip > 0 {
			if d.pending[i] == ' ' {
				d.strip--
				i += size
				continue
			}
			d.strip = 0
		}
		if valid {
			b.Write(d.pending[i : i+size])
		} else {
			b.WriteRune(utf8.RuneError)
		}
		i += size
	}
	d.pending = append(d.pending[:0], d.pending[i:]...)
	return b.String()
}

// nextChar measures the UTF-8 character at the start of b: its size, and
// whether it is valid. An invalid sequence is one byte long, or with
// maximal the maximal subpart of a valid sequence (Rust's
// String::from_utf8_lossy). wait is set when b ends inside a sequence that
// could still become valid and final is false.
func nextChar(b []byte, final, maximal bool) (size int, valid, wait bool) {
	c := b[0]
	if c < 0x80 {
		return 1, true, false
	}
	n, lo, hi := 0, byte(0x80), byte(0xBF)
	switch {
	case c >= 0xC2 && c <= 0xDF:
		n = 2
	case c == 0xE0:
		n, lo = 3, 0xA0
	case c >= 0xE1 && c <= 0xEC, c == 0xEE, c == 0xEF:
		n = 3
	case c == 0xED:
		n, hi = 3, 0x9F
	case c == 0xF0:
		n, lo = 4, 0x90
	case c >= 0xF1 && c <= 0xF3:
		n = 4
	case c == 0xF4:
		n, hi = 4, 0x8F
	default:
		return 1, false, false
	}
	k := 1
	for ; k < n && k < len(b); k++ {
		if b[k] < lo || b[k] > hi {
			break
		}
		lo, hi = 0x80, 0xBF
	}
	switch {
	case k == n:
		return n, true, false
	case k == len(b) && !final:
		return 0, false, true
	case maximal:
		return k, false, false
	}
	return 1, false, false
}
