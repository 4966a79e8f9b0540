package tokenizer

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
)

// hfConfig is what this package reads from tokenizer_config.json,
// special_tokens_map.json and added_tokens.json.
type hfConfig struct {
	addBOS, addEOS *bool
	legacy         *bool
	bosToken       string
	eosToken       string
	unkToken       string
	padToken       string
	chatTemplate   string
	// added lists added_tokens_decoder and added_tokens.json entries.
	added []addedToken
	// specialNames are the contents named as special tokens (bos, eos, unk,
	// pad, additional_special_tokens).
	specialNames map[string]bool
}

// tokenValue decodes a special-token field, which is either a string, null
// or an AddedToken object {"content": ...}.
func tokenValue(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	}
	var obj struct {
		Content string `json:"content"`
	}
	err := json.Unmarshal(raw, &obj)
	return obj.Content, err
}

// addedTokenJSON is an AddedToken as serialized by tokenizers and
// transformers.
type addedTokenJSON struct {
	ID         *int   `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized *bool  `json:"normalized"`
	Special    bool   `json:"special"`
}

// parseTokenizerConfig reads tokenizer_config.json into c.
func (c *hfConfig) parseTokenizerConfig(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("tokenizer_config.json: %w", err)
	}
	boolField := func(name string) (*bool, error) {
		v, ok := raw[name]
		if !ok || string(bytes.TrimSpace(v)) == "null" {
			return nil, nil
		}
		var x bool
		if err := json.Unmarshal(v, &x); err != nil {
			return nil, fmt.Errorf("tokenizer_config.json: %s: %w", name, err)
		}
		return &x, nil
	}
	var err error
	if c.addBOS, err = boolField("add_bos_token"); err != nil {
		return err
	}
	if c.addEOS, err = boolField("add_eos_token"); err != nil {
		return err
	}
	if c.legacy, err = boolField("legacy"); err != nil {
		return err
	}
	if err := c.readSpecialNames(raw, "tokenizer_config.json"); err != nil {
		return err
	}
	if v, ok := raw["chat_template"]; ok {
		t, err := chatTemplateValue(v)
		if err != nil {
			return fmt.Errorf("tokenizer_config.json: chat_template: %w", err)
		}
		c.chatTemplate = t
	}
	if v, ok := raw["added_tokens_decoder"]; ok && string(bytes.TrimSpace(v)) != "null" {
		var dec map[string]addedTokenJSON
		if err := json.Unmarshal(v, &dec); err != nil {
			return fmt.Errorf("tokenizer_config.json: added_tokens_decoder: %w", err)
		}
		for k, a := range dec {
			id, err := strconv.Atoi(k)
			if err != nil || id < 0 || id >= maxVocab {
				return fmt.Errorf("tokenizer_config.json: added_tokens_decoder: bad id %q", k)
			}
			if a.Content == "" {
				return fmt.Errorf("tokenizer_config.json: added_tokens_decoder[%s]: empty content", k)
			}
			c.added = append(c.added, addedToken{
				content: a.Content, id: id, special: a.Special,
				lstrip: a.LStrip, rstrip: a.RStrip, singleWord: a.SingleWord,
			})
		}
		sort.Slice(c.added, func(i, j int) bool { return c.added[i].id < c.added[j].id })
	}
	return nil
}

// readSpecialNames reads bos/eos/unk/pad and additional_special_tokens
// from a tokenizer_config.json or special_tokens_map.json object. Fields
// already set are kept (tokenizer_config.json is read first).
func (c *hfConfig) readSpecialNames(raw map[string]json.RawMessage, file string) error {
	if c.specialNames == nil {
		c.specialNames = map[string]bool{}
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"bos_token", &c.bosToken}, {"eos_token", &c.eosToken}, {"unk_token", &c.unkToken}, {"pad_token", &c.padToken}} {
		v, ok := raw[f.name]
		if !ok {
			continue
		}
		s, err := tokenValue(v)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", file, f.name, err)
		}
		if s != "" {
			c.specialNames[s] = true
			if *f.dst == "" {
				*f.dst = s
			}
		}
	}
	if v, ok := raw["additional_special_tokens"]; ok && string(bytes.TrimSpace(v)) != "null" {
		var list []json.RawMessage
		if err := json.Unmarshal(v, &list); err != nil {
			return fmt.Errorf("%s: additional_special_tokens: %w", file, err)
		}
		for i, item := range list {
			s, err := tokenValue(item)
			if err != nil {
				return fmt.Errorf("%s: additional_special_tokens[%d]: %w", file, i, err)
			}
			if s != "" {
				c.specialNames[s] = true
			}
		}
	}
	return nil
}

// parseSpecialTokensMap reads special_tokens_map.json into c.
func (c *hfConfig) parseSpecialTokensMap(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("special_tokens_map.json: %w", err)
	}
	return c.readSpecialNames(raw, "special_tokens_map.json")
}

// parseAddedTokens reads added_tokens.json ({"content": id, ...}) into c.
func (c *hfConfig) parseAddedTokens(b []byte) error {
	var m map[string]int
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("added_tokens.json: %w", err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "" || m[k] < 0 || m[k] >= maxVocab {
			return fmt.Errorf("added_tokens.json: bad entry %q: %d", k, m[k])
		}
		c.added = append(c.added, addedToken{content: k, id: m[k]})
	}
	return nil
}

// chatTemplateValue decodes a chat_template field: a string, or a list of
// {"name", "template"} objects from which "default" (else the first) is
// taken.
func chatTemplateValue(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	}
	var list []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return "", err
	}
	for _, t := range list {
		if t.Name == "default" {
			return t.Template, nil
		}
	}
	if len(list) > 0 {
		return list[0].Template, nil
	}
	return "", nil
}

// maxFileSize bounds a decompressed tokenizer file.
const maxFileSize = 1 << 30

// maybeGunzip returns b decompressed when it is gzip data, else b.
func maybeGunzip(name string, b []byte) ([]byte, error) {
	if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		return b, nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: gzip: %w", name, err)
	}
	out, err := io.ReadAll(io.LimitReader(zr, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: gzip: %w", name, err)
	}
	if len(out) > maxFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes decompressed", name, maxFileSize)
	}
	return out, nil
}
