package tokenizer

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// splitter finds the non-overlapping matches of a pre-tokenizer pattern in
// s, in order, as [start, end) byte ranges.
type splitter interface {
	matches(s string) [][2]int
}

// The split patterns of the byte-level BPE tokenizers in use. Go's regexp
// has no lookahead, so these are matched by gptScanner instead.
const (
	// gpt2Pattern is GPT-2's pattern, also the ByteLevel pre-tokenizer's
	// built-in one (use_regex: true).
	gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
	// llama3Pattern is cl100k's pattern as used by Llama-3 (digits in
	// groups of up to three).
	llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	// qwen2Pattern is the same with single digits (Qwen2, Qwen2.5, Qwen3).
	qwen2Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// gptScanner matches one of the GPT-2 / cl100k family patterns by hand.
// Character classes follow Oniguruma as tokenizers uses it: \s is Unicode
// White_Space, \p{L} and \p{N} are the Unicode categories.
type gptScanner struct {
	// cl100k selects the cl100k shape (case-insensitive contractions,
	// optional non-letter prefix of words, newline handling); otherwise the
	// GPT-2 shape.
	cl100k bool
	// maxDigits is the digit group length for cl100k (1 or 3).
	maxDigits int
}

// newSplitter returns the splitter for a Split pre-tokenizer regex.
func newSplitter(pattern string) (splitter, error) {
	switch pattern {
	case gpt2Pattern:
		return gptScanner{}, nil
	case llama3Pattern:
		return gptScanner{cl100k: true, maxDigits: 3}, nil
	case qwen2Pattern:
		return gptScanner{cl100k: true, maxDigits: 1}, nil
	}
	re, err := translateRegex(pattern)
	if err != nil {
		return nil, err
	}
	return regexSplitter{re}, nil
}

// isSpace is Unicode White_Space, Oniguruma's \s.
func isSpace(r rune) bool {
	switch r {
	case '\t', '\n', '\v', '\f', '\r', ' ', 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
		return true
	}
	return r >= 0x2000 && r <= 0x200A
}

func isLetter(r rune) bool { return unicode.IsLetter(r) }
func isNumber(r rune) bool { return unicode.IsNumber(r) }

// isOther is [^\s\p{L}\p{N}].
func isOther(r rune) bool { return !isSpace(r) && !isLetter(r) && !isNumber(r) }

func (g gptScanner) matches(s string) [][2]int {
	var out [][2]int
	for i := 0; i < len(s); {
		n := g.matchAt(s, i)
		if n <= 0 { // cannot happen: the last alternatives match any rune
			_, n = utf8.DecodeRuneInString(s[i:])
		}
		out = append(out, [2]int{i, i + n})
		i += n
	}
	return out
}

// runeAt decodes the rune at s[i:]; it returns size 0 at the end.
func runeAt(s string, i int) (rune, int) {
	if i >= len(s) {
		return -1, 0
	}
	return utf8.DecodeRuneInString(s[i:])
}

// contraction matches 's 't 're 've 'm 'll 'd at s[i:].
func (g gptScanner) contraction(s string, i int) int {
	if i >= len(s) || s[i] != '\'' {
		return 0
	}
	lower := func(r rune) rune {
		if !g.cl100k {
			return r
		}
		if r == 0x17F { // LATIN SMALL LETTER LONG S folds to s
			return 's'
		}
		if r == 0x212A { // KELVIN SIGN folds to k
			return 'k'
		}
		return unicode.ToLower(r)
	}
	r1, n1 := runeAt(s, i+1)
	switch lower(r1) {
	case 's', 't', 'm', 'd':
		return 1 + n1
	case 'r', 'v', 'l':
		want := 'e'
		if lower(r1) == 'l' {
			want = 'l'
		}
		r2, n2 := runeAt(s, i+1+n1)
		if n2 > 0 && lower(r2) == want {
			return 1 + n1 + n2
		}
	}
	return 0
}

// run returns the end of the run of runes satisfying f from s[i:].
func run(s string, i int, f func(rune) bool) int {
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if !f(r) {
			break
		}
		i += n
	}
	return i
}

// matchAt returns the length of the match at s[i:].
func (g gptScanner) matchAt(s string, i int) int {
	if n := g.contraction(s, i); n > 0 {
		return n
	}
	r0, n0 := runeAt(s, i)
	r1, n1 := runeAt(s, i+n0)
	if g.cl100k {
		// [^\r\n\p{L}\p{N}]?\p{L}+
		if r0 != '\r' && r0 != '\n' && !isLetter(r0) && !isNumber(r0) && n1 > 0 && isLetter(r1) {
			return run(s, i+n0, isLetter) - i
		}
		if isLetter(r0) {
			return run(s, i, isLetter) - i
		}
		// \p{N}{1,3}
		if isNumber(r0) {
			j := i
			for k := 0; k < g.maxDigits && j < len(s); k++ {
				r, n := utf8.DecodeRuneInString(s[j:])
				if !isNumber(r) {
					break
				}
				j += n
			}
			return j - i
		}
		// ' ?[^\s\p{L}\p{N}]+[\r\n]*'
		start := i
		if r0 == ' ' && n1 > 0 && isOther(r1) {
			start = i + n0
		}
		if r, _ := runeAt(s, start); start < len(s) && isOther(r) {
			j := run(s, start, isOther)
			return run(s, j, func(r rune) bool { return r == '\r' || r == '\n' }) - i
		}
		// \s*[\r\n]+
		end := run(s, i, isSpace)
		if end > i {
			lastNL := -1
			for j := i; j < end; {
				r, n := utf8.DecodeRuneInString(s[j:])
				if r == '\r' || r == '\n' {
					lastNL = j + n
				}
				j += n
			}
			if lastNL > 0 {
				return lastNL - i
			}
		}
	} else {
		// ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+'
		for _, f := range []func(rune) bool{isLetter, isNumber, isOther} {
			if r0 == ' ' && n1 > 0 && f(r1) {
				return run(s, i+n0, f) - i
			}
			if f(r0) {
				return run(s, i, f) - i
			}
		}
	}
	// \s+(?!\S) then \s+
	end := run(s, i, isSpace)
	if end > i {
		if end == len(s) {
			return end - i
		}
		_, last := utf8.DecodeLastRuneInString(s[i:end])
		if end-last > i {
			return end - last - i
		}
		return end - i
	}
	return 0
}

// regexSplitter matches a pattern Go's regexp can express.
type regexSplitter struct{ re *regexp.Regexp }

func (r regexSplitter) matches(s string) [][2]int {
	var out [][2]int
	for _, m := range r.re.FindAllStringIndex(s, -1) {
		out = append(out, [2]int{m[0], m[1]})
	}
	return out
}

// unicodeSpaceClass is \s as Oniguruma reads it (Unicode White_Space),
// without the brackets.
const unicodeSpaceClass = `\t\n\v\f\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}`

// translateRegex compiles an Oniguruma pattern with Go's regexp, mapping \s
// and \S to their Unicode meaning. Lookaround and backreferences are
// rejected.
func translateRegex(pattern string) (*regexp.Regexp, error) {
	var b strings.Builder
	inClass := false
	for i := 0; i < len(pattern); i++ {
		c := pattern[i]
		switch {
		case c == '\\' && i+1 < len(pattern):
			d := pattern[i+1]
			i++
			switch {
			case d == 's' && inClass:
				b.WriteString(unicodeSpaceClass)
			case d == 's':
				b.WriteString("[" + unicodeSpaceClass + "]")
			case d == 'S' && !inClass:
				b.WriteString("[^" + unicodeSpaceClass + "]")
			case d == 'S':
				return nil, fmt.Errorf("regex %q: \\S inside a character class is not supported", pattern)
			default:
				b.WriteByte('\\')
				b.WriteByte(d)
			}
		case c == '[' && !inClass:
			inClass = true
			b.WriteByte(c)
			// a ']' or '^]' right after '[' is literal
			if i+1 < len(pattern) && pattern[i+1] == '^' {
				b.WriteByte('^')
				i++
			}
			if i+1 < len(pattern) && pattern[i+1] == ']' {
				b.WriteString(`\]`)
				i++
			}
		case c == ']' && inClass:
			inClass = false
			b.WriteByte(c)
		case c == '(' && !inClass && (strings.HasPrefix(pattern[i:], "(?=") || strings.HasPrefix(pattern[i:], "(?!") ||
			strings.HasPrefix(pattern[i:], "(?<=") || strings.HasPrefix(pattern[i:], "(?<!")):
			return nil, fmt.Errorf("regex %q: lookaround is not supported", pattern)
		default:
			b.WriteByte(c)
		}
	}
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", pattern, err)
	}
	return re, nil
}
