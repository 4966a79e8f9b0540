package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// addedToken is a token matched literally in the input text before the
// model runs, as Hugging Face tokenizers does with added/special tokens.
type addedToken struct {
	content    string
	id         int
	special    bool
	lstrip     bool
	rstrip     bool
	singleWord bool
	// normalized tokens are matched in the normalized text (tokenizer.json
	// "normalized": true); the others in the raw input.
	normalized bool
}

// segment is a piece of the input: plain text (id < 0) or a matched added
// token. start is the byte offset of the segment in the input.
type segment struct {
	text  string
	id    int
	start int
}

// matcher finds added tokens in text, leftmost match first and the longest
// token at that position (aho-corasick LeftmostLongest, as tokenizers does).
type matcher struct {
	nodes []trieNode
	toks  []addedToken
}

type trieNode struct {
	next map[byte]int32
	tok  int32 // index into toks, -1 if no token ends here
}

func newMatcher(toks []addedToken) *matcher {
	m := &matcher{nodes: []trieNode{{tok: -1}}}
	for _, t := range toks {
		if t.content == "" {
			continue
		}
		n := int32(0)
		for i := 0; i < len(t.content); i++ {
			c := t.content[i]
			nx, ok := m.nodes[n].next[c]
			if !ok {
				if m.nodes[n].next == nil {
					m.nodes[n].next = map[byte]int32{}
				}
				nx = int32(len(m.nodes))
				m.nodes[n].next[c] = nx
				m.nodes = append(m.nodes, trieNode{tok: -1})
			}
			n = nx
		}
		if m.nodes[n].tok < 0 {
			m.nodes[n].tok = int32(len(m.toks))
			m.toks = append(m.toks, t)
		}
	}
	return m
}

// empty reports whether the matcher has no tokens.
func (m *matcher) empty() bool { return m == nil || len(m.toks) == 0 }

// longestAt returns the token index and length of the longest token that
// starts at text[i:], or -1.
func (m *matcher) longestAt(text string, i int) (int, int) {
	best, bestLen := -1, 0
	n := int32(0)
	for j := i; j < len(text); j++ {
		nx, ok := m.nodes[n].next[text[j]]
		if !ok {
			break
		}
		n = nx
		if t := m.nodes[n].tok; t >= 0 {
			best, bestLen = int(t), j+1-i
		}
	}
	return best, bestLen
}

// split cuts text into plain segments and added tokens. base is added to
// the reported offsets.
func (m *matcher) split(text string, base int) []segment {
	if m.empty() {
		return []segment{{text: text, id: -1, start: base}}
	}
	var out []segment
	plainStart := 0
	for i := 0; i < len(text); {
		if m.nodes[0].next[text[i]] == 0 {
			i++
			continue
		}
		t, n := m.longestAt(text, i)
		if t < 0 {
			i++
			continue
		}
		tok := m.toks[t]
		if tok.singleWord && !isWordBoundary(text, i, i+n) {
			i++
			continue
		}
		start, end := i, i+n
		if tok.lstrip {
			for start > plainStart {
				r, size := utf8.DecodeLastRuneInString(text[plainStart:start])
				if !unicode.IsSpace(r) {
					break
				}
				start -= size
			}
		}
		if tok.rstrip {
			for end < len(text) {
				r, size := utf8.DecodeRuneInString(text[end:])
				if !unicode.IsSpace(r) {
					break
				}
				end += size
			}
		}
		if start > plainStart {
			out = append(out, segment{text: text[plainStart:start], id: -1, start: base + plainStart})
		}
		out = append(out, segment{text: text[start:end], id: tok.id, start: base + start})
		i, plainStart = end, end
	}
	if plainStart < len(text) {
		out = append(out, segment{text: text[plainStart:], id: -1, start: base + plainStart})
	}
	return out
}

// isWordBoundary reports whether text[start:end] is not glued to word
// characters on either side (AddedToken single_word).
func isWordBoundary(text string, start, end int) bool {
	isWord := func(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }
	if start > 0 {
		r, _ := utf8.DecodeLastRuneInString(text[:start])
		if isWord(r) {
			return false
		}
	}
	if end < len(text) {
		r, _ := utf8.DecodeRuneInString(text[end:])
		if isWord(r) {
			return false
		}
	}
	return true
}
