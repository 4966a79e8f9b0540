package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// normalizer rewrites the text of a segment (tokenizers normalizers).
type normalizer func(string) string

// piece is a pre-tokenized piece of a segment. first is true for the
// piece that starts the input text (Metaspace prepend_scheme "first").
type piece struct {
	s     string
	first bool
}

// preTokenizer splits and rewrites pieces (tokenizers pre_tokenizers).
type preTokenizer func([]piece) []piece

// typed is the common header of tokenizer.json components.
type typed struct {
	Type string `json:"type"`
}

// patternJSON is a tokenizers Pattern: {"String": s} or {"Regex": r}.
type patternJSON struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

func isNull(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null"
}

// parseNormalizer builds a normalizer from its tokenizer.json object; nil
// means identity.
func parseNormalizer(raw json.RawMessage) (normalizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	var t typed
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, err
	}
	switch t.Type {
	case "Sequence":
		var s struct {
			Normalizers []json.RawMessage `json:"normalizers"`
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		var list []normalizer
		for i, r := range s.Normalizers {
			n, err := parseNormalizer(r)
			if err != nil {
				return nil, fmt.Errorf("normalizers[%d]: %w", i, err)
			}
			if n != nil {
				list = append(list, n)
			}
		}
		return func(s string) string {
			for _, n := range list {
				s = n(s)
			}
			return s
		}, nil
	case "NFC":
		return norm.NFC.String, nil
	case "NFD":
		return norm.NFD.String, nil
	case "NFKC":
		return norm.NFKC.String, nil
	case "NFKD":
		return norm.NFKD.String, nil
	case "Lowercase":
		return strings.ToLower, nil
	case "Prepend":
		var p struct {
			Prepend string `json:"prepend"`
		}
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
		return func(s string) string {
			if s == "" {
				return s
			}
			return p.Prepend + s
		}, nil
	case "Replace":
		var r struct {
			Pattern patternJSON `json:"pattern"`
			Content string      `json:"content"`
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			return nil, err
		}
		switch {
		case r.Pattern.String != nil:
			old := *r.Pattern.String
			if old == "" {
				return nil, errors.New("Replace: empty pattern")
			}
			return func(s string) string { return strings.ReplaceAll(s, old, r.Content) }, nil
		case r.Pattern.Regex != nil:
			re, err := translateRegex(*r.Pattern.Regex)
			if err != nil {
				return nil, fmt.Errorf("Replace: %w", err)
			}
			content := r.Content
			return func(s string) string { return re.ReplaceAllLiteralString(s, content) }, nil
		}
		return nil, errors.New("Replace: no pattern")
	case "Strip":
		var p struct {
			Left  bool `json:"strip_left"`
			Right bool `json:"strip_right"`
		}
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
		return func(s string) string {
			if p.Left {
				s = strings.TrimLeftFunc(s, unicode.IsSpace)
			}
			if p.Right {
				s = strings.TrimRightFunc(s, unicode.IsSpace)
			}
			return s
		}, nil
	}
	return nil, fmt.Errorf("unsupported normalizer %q", t.Type)
}

// splitBehavior is tokenizers' SplitDelimiterBehavior.
type splitBehavior int

const (
	splitRemoved splitBehavior = iota
	splitIsolated
	splitMergedWithPrevious
	splitMergedWithNext
	splitContiguous
)

func parseBehavior(s string) (splitBehavior, error) {
	switch s {
	case "Removed":
		return splitRemoved, nil
	case "Isolated":
		return splitIsolated, nil
	case "MergedWithPrevious":
		return splitMergedWithPrevious, nil
	case "MergedWithNext":
		return splitMergedWithNext, nil
	case "Contiguous":
		return splitContiguous, nil
	}
	return 0, fmt.Errorf("unknown split behavior %q", s)
}

// splitPieces applies a split (tokenizers NormalizedString::split) to each
// piece.
func splitPieces(in []piece, sp splitter, behavior splitBehavior, invert bool) []piece {
	var out []piece
	type span struct {
		start, end int
		match      bool
	}
	for _, p := range in {
		s := p.s
		var spans []span
		prev := 0
		for _, m := range sp.matches(s) {
			if m[0] > prev {
				spans = append(spans, span{prev, m[0], false})
			}
			spans = append(spans, span{m[0], m[1], true})
			prev = m[1]
		}
		if prev < len(s) {
			spans = append(spans, span{prev, len(s), false})
		}
		if invert {
			for i := range spans {
				spans[i].match = !spans[i].match
			}
		}
		var res []span
		switch behavior {
		case splitRemoved:
			for _, sp := range spans {
				if !sp.match {
					res = append(res, sp)
				}
			}
		case splitIsolated:
			res = spans
		case splitMergedWithPrevious:
			prevMatch := false
			for _, sp := range spans {
				if sp.match && !prevMatch && len(res) > 0 {
					res[len(res)-1].end = sp.end
				} else {
					res = append(res, sp)
				}
				prevMatch = sp.match
			}
		case splitMergedWithNext:
			prevMatch := false
			for i := len(spans) - 1; i >= 0; i-- {
				sp := spans[i]
				if sp.match && !prevMatch && len(res) > 0 {
					res[len(res)-1].start = sp.start
				} else {
					res = append(res, sp)
				}
				prevMatch = sp.match
			}
			for i, j := 0, len(res)-1; i < j; i, j = i+1, j-1 {
				res[i], res[j] = res[j], res[i]
			}
		case splitContiguous:
			prevMatch := false
			for i, sp := range spans {
				if i > 0 && sp.match == prevMatch {
					res[len(res)-1].end = sp.end
				} else {
					res = append(res, sp)
				}
				prevMatch = sp.match
			}
		}
		for _, r := range res {
			if r.end > r.start {
				out = append(out, piece{s: s[r.start:r.end], first: p.first && r.start == 0})
			}
		}
	}
	return out
}

// stringSplitter matches every occurrence of a literal string.
type stringSplitter string

func (ss stringSplitter) matches(s string) [][2]int {
	var out [][2]int
	if ss == "" {
		return nil
	}
	for i := 0; ; {
		j := strings.Index(s[i:], string(ss))
		if j < 0 {
			return out
		}
		out = append(out, [2]int{i + j, i + j + len(ss)})
		i += j + len(ss)
	}
}

// runeSplitter matches every rune satisfying f, one match per rune.
type runeSplitter func(rune) bool

func (f runeSplitter) matches(s string) [][2]int {
	var out [][2]int
	for i, r := range s {
		if f(r) {
			out = append(out, [2]int{i, i + len(string(r))})
		}
	}
	return out
}

// byteLevelAlphabet returns GPT-2's bytes_to_unicode table: printable
// bytes map to themselves, the others to U+0100 onwards.
func byteLevelAlphabet() [256]rune {
	var t [256]rune
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			t[b] = rune(b)
		} else {
			t[b] = rune(256 + n)
			n++
		}
	}
	return t
}

// parsePreTokenizer builds a pre-tokenizer from its tokenizer.json object;
// nil means none. byteLevel reports whether a ByteLevel step is present.
func parsePreTokenizer(raw json.RawMessage, alphabet *[256]rune) (pt preTokenizer, byteLevel bool, err error) {
	if isNull(raw) {
		return nil, false, nil
	}
	var t typed
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, false, err
	}
	switch t.Type {
	case "Sequence":
		var s struct {
			PreTokenizers []json.RawMessage `json:"pretokenizers"`
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, false, err
		}
		var list []preTokenizer
		for i, r := range s.PreTokenizers {
			p, bl, err := parsePreTokenizer(r, alphabet)
			if err != nil {
				return nil, false, fmt.Errorf("pretokenizers[%d]: %w", i, err)
			}
			byteLevel = byteLevel || bl
			if p != nil {
				list = append(list, p)
			}
		}
		return func(ps []piece) []piece {
			for _, p := range list {
				ps = p(ps)
			}
			return ps
		}, byteLevel, nil
	case "Split":
		var s struct {
			Pattern  patternJSON `json:"pattern"`
			Behavior string      `json:"behavior"`
			Invert   bool        `json:"invert"`
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, false, err
		}
		beh, err := parseBehavior(s.Behavior)
		if err != nil {
			return nil, false, fmt.Errorf("Split: %w", err)
		}
		var sp splitter
		switch {
		case s.Pattern.String != nil:
			sp = stringSplitter(*s.Pattern.String)
		case s.Pattern.Regex != nil:
			if sp, err = newSplitter(*s.Pattern.Regex); err != nil {
				return nil, false, fmt.Errorf("Split: %w", err)
			}
		default:
			return nil, false, errors.New("Split: no pattern")
		}
		return func(ps []piece) []piece { return splitPieces(ps, sp, beh, s.Invert) }, false, nil
	case "ByteLevel":
		var s struct {
			AddPrefixSpace bool  `json:"add_prefix_space"`
			UseRegex       *bool `json:"use_regex"`
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, false, err
		}
		useRegex := s.UseRegex == nil || *s.UseRegex
		alpha := *alphabet
		return func(ps []piece) []piece {
			if s.AddPrefixSpace {
				for i := range ps {
					if !strings.HasPrefix(ps[i].s, " ") {
						ps[i].s = " " + ps[i].s
					}
				}
			}
			if useRegex {
				ps = splitPieces(ps, gptScanner{}, splitIsolated, false)
			}
			for i := range ps {
				var b strings.Builder
				b.Grow(2 * len(ps[i].s))
				for j := 0; j < len(ps[i].s); j++ {
					b.WriteRune(alpha[ps[i].s[j]])
				}
				ps[i].s = b.String()
			}
			return ps
		}, true, nil
	case "Metaspace":
		var s struct {
			Replacement    string `json:"replacement"`
			PrependScheme  string `json:"prepend_scheme"`
			AddPrefixSpace *bool  `json:"add_prefix_space"`
			Split          *bool  `json:"split"`
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, false, err
		}
		if s.Replacement == "" {
			s.Replacement = "▁"
		}
		scheme := s.PrependScheme
		if scheme == "" {
			scheme = "always"
			if s.AddPrefixSpace != nil && !*s.AddPrefixSpace {
				scheme = "never"
			}
		}
		if scheme != "always" && scheme != "first" && scheme != "never" {
			return nil, false, fmt.Errorf("Metaspace: unknown prepend_scheme %q", scheme)
		}
		split := s.Split == nil || *s.Split
		rep := s.Replacement
		return func(ps []piece) []piece {
			for i := range ps {
				x := strings.ReplaceAll(ps[i].s, " ", rep)
				if !strings.HasPrefix(x, rep) && (scheme == "always" || scheme == "first" && ps[i].first) {
					x = rep + x
				}
				ps[i].s = x
			}
			if split {
				ps = splitPieces(ps, stringSplitter(rep), splitMergedWithNext, false)
			}
			return ps
		}, false, nil
	case "Digits":
		var s struct {
			Individual bool `json:"individual_digits"`
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, false, err
		}
		beh := splitContiguous
		if s.Individual {
			beh = splitIsolated
		}
		return func(ps []piece) []piece { return splitPieces(ps, runeSplitter(unicode.IsNumber), beh, false) }, false, nil
	case "WhitespaceSplit":
		return func(ps []piece) []piece { return splitPieces(ps, runeSplitter(unicode.IsSpace), splitRemoved, false) }, false, nil
	case "Whitespace":
		re := regexp.MustCompile(`\w+|[^\w\s]+`)
		return func(ps []piece) []piece { return splitPieces(ps, regexSplitter{re}, splitRemoved, true) }, false, nil
	}
	return nil, false, fmt.Errorf("unsupported pre_tokenizer %q", t.Type)
}

// decodeRule is a supported tokenizers decoder, applied token by token.
type decodeRule struct {
	// byteLevel maps each token's characters back through the GPT-2 byte
	// alphabet.
	byteLevel bool
	// replace are literal replacements applied to each token.
	replace [][2]string
	// byteFallback decodes "<0xXX>" tokens to the byte.
	byteFallback bool
	// stripStart is how many leading spaces of the whole output are
	// dropped (Strip decoder after Fuse; SentencePiece's dummy prefix).
	stripStart int
	// metaspace, when set, is the replacement character of a Metaspace
	// decoder: it becomes a space, and is dropped from the first token when
	// metaspaceFirst is set.
	metaspace      string
	metaspaceFirst bool
}

// parseDecoder builds the decode rule from a tokenizer.json decoder.
func parseDecoder(raw json.RawMessage) (decodeRule, error) {
	var d decodeRule
	if isNull(raw) {
		return d, errors.New("no decoder")
	}
	var items []json.RawMessage
	var t typed
	if err := json.Unmarshal(raw, &t); err != nil {
		return d, err
	}
	if t.Type == "Sequence" {
		var s struct {
			Decoders []json.RawMessage `json:"decoders"`
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			return d, err
		}
		items = s.Decoders
	} else {
		items = []json.RawMessage{raw}
	}
	fused := false
	for i, item := range items {
		if err := json.Unmarshal(item, &t); err != nil {
			return d, fmt.Errorf("decoders[%d]: %w", i, err)
		}
		if d.stripStart > 0 {
			return d, fmt.Errorf("decoders[%d]: %s after Strip is not supported", i, t.Type)
		}
		switch t.Type {
		case "ByteLevel":
			d.byteLevel = true
		case "ByteFallback":
			d.byteFallback = true
		case "Fuse":
			fused = true
		case "Replace":
			var r struct {
				Pattern patternJSON `json:"pattern"`
				Content string      `json:"content"`
			}
			if err := json.Unmarshal(item, &r); err != nil {
				return d, fmt.Errorf("decoders[%d]: %w", i, err)
			}
			if r.Pattern.String == nil || *r.Pattern.String == "" {
				return d, fmt.Errorf("decoders[%d]: Replace: only string patterns are supported", i)
			}
			if d.byteFallback || d.byteLevel || fused {
				return d, fmt.Errorf("decoders[%d]: Replace after ByteFallback/ByteLevel/Fuse is not supported", i)
			}
			d.replace = append(d.replace, [2]string{*r.Pattern.String, r.Content})
		case "Strip":
			var s struct {
				Content string `json:"content"`
				Start   int    `json:"start"`
				Stop    int    `json:"stop"`
			}
			if err := json.Unmarshal(item, &s); err != nil {
				return d, fmt.Errorf("decoders[%d]: %w", i, err)
			}
			if s.Content != " " || s.Stop != 0 || s.Start < 0 || !fused && !d.byteLevel {
				return d, fmt.Errorf("decoders[%d]: only Strip(' ', start, 0) after Fuse is supported", i)
			}
			d.stripStart = s.Start
		case "Metaspace":
			var s struct {
				Replacement    string `json:"replacement"`
				PrependScheme  string `json:"prepend_scheme"`
				AddPrefixSpace *bool  `json:"add_prefix_space"`
			}
			if err := json.Unmarshal(item, &s); err != nil {
				return d, fmt.Errorf("decoders[%d]: %w", i, err)
			}
			if s.Replacement == "" {
				s.Replacement = "▁"
			}
			d.metaspace = s.Replacement
			switch s.PrependScheme {
			case "never":
				d.metaspaceFirst = false
			case "":
				d.metaspaceFirst = s.AddPrefixSpace == nil || *s.AddPrefixSpace
			default:
				d.metaspaceFirst = true
			}
		default:
			return d, fmt.Errorf("decoders[%d]: unsupported decoder %q", i, t.Type)
		}
	}
	return d, nil
}
