package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// tokenizerJSON is the part of tokenizer.json this package reads.
type tokenizerJSON struct {
	AddedTokens   []addedTokenJSON `json:"added_tokens"`
	Normalizer    json.RawMessage  `json:"normalizer"`
	PreTokenizer  json.RawMessage  `json:"pre_tokenizer"`
	PostProcessor json.RawMessage  `json:"post_processor"`
	Decoder       json.RawMessage  `json:"decoder"`
	Model         modelJSON        `json:"model"`
}

// modelJSON is a tokenizer.json model; only BPE is supported.
type modelJSON struct {
	Type         string     `json:"type"`
	Vocab        vocabJSON  `json:"vocab"`
	Merges       mergesJSON `json:"merges"`
	UnkToken     *string    `json:"unk_token"`
	FuseUnk      bool       `json:"fuse_unk"`
	ByteFallback bool       `json:"byte_fallback"`
	IgnoreMerges bool       `json:"ignore_merges"`
	ContPrefix   *string    `json:"continuing_subword_prefix"`
	EOWSuffix    *string    `json:"end_of_word_suffix"`
}

// vocabJSON is a BPE vocabulary {"token": id}. Other models' vocabularies
// (lists) are recorded as such rather than failing the whole decode, so
// that the model type can be reported.
type vocabJSON struct {
	m      map[string]int
	notMap bool
}

// UnmarshalJSON implements json.Unmarshaler.
func (v *vocabJSON) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		v.notMap = true
		return nil
	}
	return json.Unmarshal(b, &v.m)
}

// mergesJSON keeps the raw merges array; it is parsed by forEachMerge once
// the vocabulary is known.
type mergesJSON struct{ raw []byte }

// UnmarshalJSON implements json.Unmarshaler.
func (m *mergesJSON) UnmarshalJSON(b []byte) error {
	m.raw = bytes.Clone(b)
	return nil
}

// jsonScanner reads already-validated JSON.
type jsonScanner struct {
	b   []byte
	i   int
	tmp []byte
}

func (s *jsonScanner) skipSpace() {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\n' || s.b[s.i] == '\r' || s.b[s.i] == '\t') {
		s.i++
	}
}

// expect consumes byte c after optional space.
func (s *jsonScanner) expect(c byte) bool {
	s.skipSpace()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str reads a JSON string. The result aliases the input when the string
// has no escapes, else a scratch buffer valid until the next call that
// unescapes into the same buffer (the caller passes which one).
func (s *jsonScanner) str(scratch *[]byte) ([]byte, error) {
	s.skipSpace()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, errors.New("expected a string")
	}
	start := s.i
	s.i++
	escaped := false
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '\\':
			escaped = true
			s.i += 2
			continue
		case '"':
			s.i++
			if !escaped {
				return s.b[start+1 : s.i-1], nil
			}
			var str string
			if err := json.Unmarshal(s.b[start:s.i], &str); err != nil {
				return nil, err
			}
			*scratch = append((*scratch)[:0], str...)
			return *scratch, nil
		}
		s.i++
	}
	return nil, errors.New("unterminated string")
}

// forEachMerge calls fn with each merge rule of a merges array, given as
// "a b" strings or ["a", "b"] pairs.
func forEachMerge(raw []byte, fn func(i int, a, b []byte) error) error {
	s := &jsonScanner{b: raw}
	var sa, sb []byte
	s.skipSpace()
	if s.i == len(s.b) || string(s.b[s.i:]) == "null" {
		return nil
	}
	if !s.expect('[') {
		return errors.New("merges is not an array")
	}
	if s.expect(']') {
		return nil
	}
	for i := 0; ; i++ {
		s.skipSpace()
		if s.i >= len(s.b) {
			return errors.New("merges: unexpected end")
		}
		var a, b []byte
		if s.b[s.i] == '"' {
			x, err := s.str(&sa)
			if err != nil {
				return fmt.Errorf("merges[%d]: %w", i, err)
			}
			sp := bytes.IndexByte(x, ' ')
			if sp < 0 || bytes.IndexByte(x[sp+1:], ' ') >= 0 {
				return fmt.Errorf("merges[%d]: %q is not two space-separated tokens", i, x)
			}
			a, b = x[:sp], x[sp+1:]
		} else {
			if !s.expect('[') {
				return fmt.Errorf("merges[%d]: not a string or a pair", i)
			}
			var err error
			if a, err = s.str(&sa); err != nil {
				return fmt.Errorf("merges[%d]: %w", i, err)
			}
			if !s.expect(',') {
				return fmt.Errorf("merges[%d]: not a pair", i)
			}
			if b, err = s.str(&sb); err != nil {
				return fmt.Errorf("merges[%d]: %w", i, err)
			}
			if !s.expect(']') {
				return fmt.Errorf("merges[%d]: not a pair", i)
			}
		}
		if err := fn(i, a, b); err != nil {
			return err
		}
		if s.expect(',') {
			continue
		}
		if s.expect(']') {
			return nil
		}
		return fmt.Errorf("merges[%d]: expected ',' or ']'", i)
	}
}
