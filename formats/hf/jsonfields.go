package hf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// object is one decoded JSON object of a file, read field by field with
// typed getters that record an error naming the file and the field.
//
// A getter reports ok=false for a key that is absent or JSON null; has
// tells the two apart where the difference matters (Hugging Face treats an
// explicit null as "none", not as "use the default").
type object struct {
	file   string // the file, for error messages ("config.json")
	prefix string // the field path of this object ("text_config.")
	m      map[string]json.RawMessage
	// inherited keys were copied down from the parent object; errors about
	// them name the parent's field.
	inherited map[string]bool
	errs      *[]error
}

// decodeObject parses data as a JSON object.
func decodeObject(file string, data []byte, errs *[]error) (object, error) {
	if !json.Valid(data) {
		var v any
		err := json.Unmarshal(data, &v) // for the syntax error's message
		return object{}, fmt.Errorf("%s: invalid JSON: %w", file, err)
	}
	var m map[string]json.RawMessage
	if t := bytes.TrimSpace(data); len(t) == 0 || t[0] != '{' || json.Unmarshal(t, &m) != nil {
		return object{}, fmt.Errorf("%s: want a JSON object, got %s", file, short(t))
	}
	return object{file: file, m: m, errs: errs}, nil
}

// field returns the dotted name of key for messages.
func (o object) field(key string) string {
	if o.inherited[key] {
		return key
	}
	return o.prefix + key
}

// fail records an error about key.
func (o object) fail(key, format string, a ...any) {
	*o.errs = append(*o.errs, fmt.Errorf("%s: %s: %s", o.file, o.field(key), fmt.Sprintf(format, a...)))
}

// failf records an error about the object as a whole.
func (o object) failf(format string, a ...any) {
	*o.errs = append(*o.errs, fmt.Errorf("%s: %s", o.file, fmt.Sprintf(format, a...)))
}

// has reports whether key is present, even with a null value.
func (o object) has(key string) bool {
	_, ok := o.m[key]
	return ok
}

// raw returns the value of key; ok is false when it is absent or null.
func (o object) raw(key string) (json.RawMessage, bool) {
	v, ok := o.m[key]
	if !ok {
		return nil, false
	}
	v = bytes.TrimSpace(v)
	if len(v) == 0 || string(v) == "null" {
		return nil, false
	}
	return v, true
}

// short renders a JSON value for an error message.
func short(v json.RawMessage) string {
	const max = 40
	if len(v) > max {
		return string(v[:max]) + "..."
	}
	return string(v)
}

// parseInt decodes a JSON number with an integral value (256 or 256.0).
func parseInt(v json.RawMessage) (int, bool) {
	if len(v) == 0 || !(v[0] == '-' || (v[0] >= '0' && v[0] <= '9')) {
		return 0, false
	}
	s := string(v)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < math.MinInt || n > math.MaxInt {
			return 0, false
		}
		return int(n), true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int(f), true
}

// parseFloat decodes a finite JSON number.
func parseFloat(v json.RawMessage) (float64, bool) {
	if len(v) == 0 || !(v[0] == '-' || (v[0] >= '0' && v[0] <= '9')) {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	return f, true
}

// int returns an integer field.
func (o object) int(key string) (int, bool) {
	v, ok := o.raw(key)
	if !ok {
		return 0, false
	}
	n, ok := parseInt(v)
	if !ok {
		o.fail(key, "want an integer, got %s", short(v))
		return 0, false
	}
	return n, true
}

// float returns a numeric field.
func (o object) float(key string) (float64, bool) {
	v, ok := o.raw(key)
	if !ok {
		return 0, false
	}
	f, ok := parseFloat(v)
	if !ok {
		o.fail(key, "want a finite number, got %s", short(v))
		return 0, false
	}
	return f, true
}

// bool returns a boolean field.
func (o object) bool(key string) (bool, bool) {
	v, ok := o.raw(key)
	if !ok {
		return false, false
	}
	switch string(v) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	o.fail(key, "want true or false, got %s", short(v))
	return false, false
}

// string returns a string field.
func (o object) string(key string) (string, bool) {
	v, ok := o.raw(key)
	if !ok {
		return "", false
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		o.fail(key, "want a string, got %s", short(v))
		return "", false
	}
	return s, true
}

// strings returns a list-of-strings field.
func (o object) strings(key string) ([]string, bool) {
	v, ok := o.raw(key)
	if !ok {
		return nil, false
	}
	var s []string
	if err := json.Unmarshal(v, &s); err != nil {
		o.fail(key, "want a list of strings, got %s", short(v))
		return nil, false
	}
	return s, true
}

// ints returns a field holding an integer or a list of integers (as
// eos_token_id does). A null entry in a list is an error.
func (o object) ints(key string) ([]int, bool) {
	v, ok := o.raw(key)
	if !ok {
		return nil, false
	}
	if n, ok := parseInt(v); ok {
		return []int{n}, true
	}
	var list []json.RawMessage
	if err := json.Unmarshal(v, &list); err != nil {
		o.fail(key, "want an integer or a list of integers, got %s", short(v))
		return nil, false
	}
	out := make([]int, 0, len(list))
	for i, e := range list {
		n, ok := parseInt(bytes.TrimSpace(e))
		if !ok {
			o.fail(key, "entry %d: want an integer, got %s", i, short(e))
			return nil, false
		}
		out = append(out, n)
	}
	return out, true
}

// object returns a nested object field.
func (o object) object(key string) (object, bool) {
	v, ok := o.raw(key)
	if !ok {
		return object{}, false
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(v, &m); err != nil {
		o.fail(key, "want a JSON object, got %s", short(v))
		return object{}, false
	}
	return object{file: o.file, prefix: o.field(key) + ".", m: m, errs: o.errs}, true
}

// keys reports whether any of keys is present (even null).
func (o object) hasAny(keys ...string) bool {
	for _, k := range keys {
		if o.has(k) {
			return true
		}
	}
	return false
}
