package tokenizer

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ardanlabs/jinja"
)

// Message is one turn of a chat.
type Message struct {
	// Role is "system", "user", "assistant" (or "tool").
	Role string
	// Content is the turn's text.
	Content string
}

// SpecialTokens are the special-token strings a chat template can refer to
// (bos_token, eos_token, unk_token, pad_token); empty ones are left
// undefined, as transformers leaves unset tokens out.
type SpecialTokens struct {
	BOS, EOS, UNK, PAD string
}

// ChatOptions controls RenderChatWith.
type ChatOptions struct {
	// AddGenerationPrompt appends the header of an assistant turn.
	AddGenerationPrompt bool
	// Now is the time strftime_now reports (Llama-3.2 templates print
	// today's date); the zero value means time.Now().
	Now time.Time
	// Vars are extra template variables, such as "enable_thinking": false
	// for Qwen3 or "date_string" for Llama-3.x. They override the defaults.
	Vars map[string]any
}

// ChatTemplate is a compiled Hugging Face chat template (Jinja), rendered
// the way transformers' apply_chat_template does: trim_blocks and
// lstrip_blocks, raise_exception, strftime_now and tojson available, tools
// and documents set to none.
type ChatTemplate struct {
	src     string
	tmpl    *jinja.Template
	special SpecialTokens
}

// NewChatTemplate compiles a chat template.
func NewChatTemplate(src string, special SpecialTokens) (c *ChatTemplate, err error) {
	defer func() {
		if r := recover(); r != nil {
			c, err = nil, fmt.Errorf("chat template: %v", r)
		}
	}()
	tmpl, err := jinja.Compile(src)
	if err != nil {
		return nil, fmt.Errorf("chat template: %w", err)
	}
	return &ChatTemplate{src: src, tmpl: tmpl, special: special}, nil
}

// Source returns the template text.
func (c *ChatTemplate) Source() string { return c.src }

// Render renders messages.
func (c *ChatTemplate) Render(messages []Message, opts ChatOptions) (out string, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = "", fmt.Errorf("chat template: %v", r)
		}
	}()
	msgs := make([]jinja.Value, len(messages))
	for i, m := range messages {
		msgs[i] = jinja.FromGoValue(map[string]any{"role": m.Role, "content": m.Content})
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	vals := map[string]jinja.Value{
		"messages":              jinja.NewList(msgs),
		"add_generation_prompt": jinja.NewBool(opts.AddGenerationPrompt),
		"tools":                 jinja.FromGoValue(nil),
		"documents":             jinja.FromGoValue(nil),
		"strftime_now": jinja.NewCallable("strftime_now", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
			if len(args) != 1 || !args[0].IsString() {
				return jinja.Value{}, errors.New("strftime_now takes one format string")
			}
			return jinja.NewString(strftime(now, args[0].AsString())), nil
		}),
	}
	for name, v := range map[string]string{"bos_token": c.special.BOS, "eos_token": c.special.EOS, "unk_token": c.special.UNK, "pad_token": c.special.PAD} {
		if v != "" {
			vals[name] = jinja.NewString(v)
		}
	}
	for k, v := range opts.Vars {
		vals[k] = jinja.FromGoValue(v)
	}
	out, err = c.tmpl.RenderValues(vals)
	if err != nil {
		return "", fmt.Errorf("chat template: %w", err)
	}
	return out, nil
}

// strftime formats t with Python's strftime directives.
func strftime(t time.Time, format string) string {
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' || i+1 == len(format) {
			b.WriteByte(c)
			continue
		}
		i++
		switch format[i] {
		case 'a':
			b.WriteString(t.Format("Mon"))
		case 'A':
			b.WriteString(t.Format("Monday"))
		case 'b', 'h':
			b.WriteString(t.Format("Jan"))
		case 'B':
			b.WriteString(t.Format("January"))
		case 'd':
			b.WriteString(t.Format("02"))
		case 'e':
			b.WriteString(t.Format("_2"))
		case 'm':
			b.WriteString(t.Format("01"))
		case 'y':
			b.WriteString(t.Format("06"))
		case 'Y':
			b.WriteString(strconv.Itoa(t.Year()))
		case 'H':
			b.WriteString(t.Format("15"))
		case 'I':
			b.WriteString(t.Format("03"))
		case 'M':
			b.WriteString(t.Format("04"))
		case 'S':
			b.WriteString(t.Format("05"))
		case 'p':
			b.WriteString(t.Format("PM"))
		case 'j':
			fmt.Fprintf(&b, "%03d", t.YearDay())
		case 'Z':
			b.WriteString(t.Format("MST"))
		case 'z':
			b.WriteString(t.Format("-0700"))
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(format[i])
		}
	}
	return b.String()
}

// ChatTemplate returns the model's chat template, or nil when it has none.
func (t *Tokenizer) ChatTemplate() *ChatTemplate { return t.chat }

// RenderChat renders messages with the model's chat template (the
// tokenizer_config.json chat_template, or the .fhm metadata's), as
// transformers' apply_chat_template(messages, tokenize=False,
// add_generation_prompt=...) does.
//
// The rendered prompt already holds the BOS token when the template writes
// one (Gemma, Llama-3 do): encode it with Encode(prompt, false), since
// addSpecial=true would add a second BOS.
func (t *Tokenizer) RenderChat(messages []Message, addGenerationPrompt bool) (string, error) {
	return t.RenderChatWith(messages, ChatOptions{AddGenerationPrompt: addGenerationPrompt})
}

// RenderChatWith is RenderChat with options (the clock, extra template
// variables).
func (t *Tokenizer) RenderChatWith(messages []Message, opts ChatOptions) (string, error) {
	if t.chatErr != nil {
		return "", t.chatErr
	}
	if t.chat == nil {
		return "", errors.New("chat template: the model has none (no chat_template in tokenizer_config.json)")
	}
	return t.chat.Render(messages, opts)
}
