package hf

import (
	"encoding/json"
	"errors"
)

// Tokenizer file names a checkpoint directory may hold.
const (
	TokenizerModelName    = "tokenizer.model"         // SentencePiece protobuf
	TokenizerJSONName     = "tokenizer.json"          // HF fast tokenizer
	TokenizerConfigName   = "tokenizer_config.json"   // chat template, special tokens
	SpecialTokensMapName  = "special_tokens_map.json" // special-token strings
	AddedTokensName       = "added_tokens.json"       // extra vocabulary entries
	ChatTemplateJinjaName = "chat_template.jinja"     // newer transformers: the template on its own
)

// defaultChatTemplateEntry names the template used when chat_template is a
// list (transformers' rule when no template name is asked for).
const defaultChatTemplateEntry = "default"

// Tokenizer describes the tokenizer files of a checkpoint directory. A path
// is "" when the file is absent.
type Tokenizer struct {
	ModelPath            string // tokenizer.model
	JSONPath             string // tokenizer.json
	ConfigPath           string // tokenizer_config.json
	SpecialTokensMapPath string // special_tokens_map.json
	AddedTokensPath      string // added_tokens.json
	GenerationConfigPath string // generation_config.json
	ChatTemplatePath     string // chat_template.jinja
	// Config is the parsed tokenizer_config.json, nil when absent.
	Config *TokenizerConfig
	// ChatTemplate is the template to use: chat_template.jinja when present,
	// else Config.ChatTemplate; "" when there is none.
	ChatTemplate string
}

// NamedTemplate is one entry of a chat_template given as a list.
type NamedTemplate struct {
	Name     string `json:"name"`
	Template string `json:"template"`
}

// TokenizerConfig holds the fields of tokenizer_config.json fhkit uses.
type TokenizerConfig struct {
	// ChatTemplate is chat_template when it is a string, or the entry named
	// "default" when it is a list; "" otherwise.
	ChatTemplate string
	// ChatTemplates lists every entry when chat_template is a list.
	ChatTemplates []NamedTemplate
	// AddBOSToken and AddEOSToken are nil when absent.
	AddBOSToken *bool
	AddEOSToken *bool
	// Special-token strings ("" when absent or null); an object
	// {"content": ...} (a serialized AddedToken) gives its content.
	BOSToken, EOSToken, PadToken, UnkToken string
	// TokenizerClass is tokenizer_class ("GemmaTokenizer").
	TokenizerClass string
}

// ParseTokenizerConfig parses tokenizer_config.json. Errors name the file and
// the field.
func ParseTokenizerConfig(data []byte) (*TokenizerConfig, error) {
	return parseTokenizerConfig(TokenizerConfigName, data)
}

// parseTokenizerConfig is ParseTokenizerConfig with the file name used in
// errors.
func parseTokenizerConfig(file string, data []byte) (*TokenizerConfig, error) {
	var errs []error
	o, err := decodeObject(file, data, &errs)
	if err != nil {
		return nil, err
	}
	tc := &TokenizerConfig{}
	if v, ok := o.raw("chat_template"); ok {
		switch v[0] {
		case '"':
			tc.ChatTemplate, _ = o.string("chat_template")
		case '[':
			var list []NamedTemplate
			if err := json.Unmarshal(v, &list); err != nil {
				o.fail("chat_template", "want a string or a list of {\"name\", \"template\"} objects: %v", err)
				break
			}
			seen := map[string]bool{}
			for i, e := range list {
				if seen[e.Name] {
					o.fail("chat_template", "entry %d: duplicate name %q", i, e.Name)
				}
				seen[e.Name] = true
				if e.Name == defaultChatTemplateEntry {
					tc.ChatTemplate = e.Template
				}
			}
			tc.ChatTemplates = list
		default:
			o.fail("chat_template", "want a string or a list of {\"name\", \"template\"} objects, got %s", short(v))
		}
	}
	if v, ok := o.bool("add_bos_token"); ok {
		tc.AddBOSToken = &v
	}
	if v, ok := o.bool("add_eos_token"); ok {
		tc.AddEOSToken = &v
	}
	tc.BOSToken = tokenString(o, "bos_token")
	tc.EOSToken = tokenString(o, "eos_token")
	tc.PadToken = tokenString(o, "pad_token")
	tc.UnkToken = tokenString(o, "unk_token")
	tc.TokenizerClass, _ = o.string("tokenizer_class")
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return tc, nil
}

// tokenString reads a special token given as a string or as an AddedToken
// object {"content": "<bos>", ...}.
func tokenString(o object, key string) string {
	v, ok := o.raw(key)
	if !ok {
		return ""
	}
	if v[0] == '{' {
		obj, _ := o.object(key)
		s, ok := obj.string("content")
		if !ok && obj.m != nil {
			if _, present := obj.raw("content"); !present {
				obj.fail("content", "missing")
			}
		}
		return s
	}
	s, _ := o.string(key)
	return s
}
