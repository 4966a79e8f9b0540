package serve

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// textMarker stands for the text in the rendered template of a text event;
// its JSON encoding ("\u0000fhkit-text\u0000") appears nowhere else.
const textMarker = "\x00fhkit-text\x00"

// splitTemplate renders piece's text event with the marker as its text and
// returns the JSON before and after the marker's encoding, so that an event
// is head + the text's JSON string + tail. The text comes after the id and
// the model name in every event layout, hence the last occurrence.
func splitTemplate(piece func(text string, fin *string) any) (head, tail []byte) {
	data, _ := json.Marshal(piece(textMarker, nil))
	enc, _ := json.Marshal(textMarker)
	i := bytes.LastIndex(data, enc)
	return data[:i], data[i+len(enc):]
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string, escaped as encoding/json
// escapes it (HTML-safe: <, > and & as \u003c..., U+2028 and U+2029
// escaped, invalid UTF-8 as \ufffd), so events read as before.
func appendJSONString(dst, s []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if (r == utf8.RuneError && size == 1) || r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			switch r {
			case utf8.RuneError:
				dst = append(dst, `\ufffd`...)
			case '\u2028':
				dst = append(dst, `\u2028`...)
			default:
				dst = append(dst, `\u2029`...)
			}
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
