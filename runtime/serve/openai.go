package serve

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/fhkit/fhkit/runtime/sample"
	"github.com/fhkit/fhkit/runtime/tokenizer"
)

// Limits on a request's fields, so that one request cannot make the server
// do unbounded work before it is even queued.
const (
	maxStops       = 16
	maxStopBytes   = 256
	maxMessages    = 1024
	maxPromptBytes = 4 << 20
)

// apiError is an OpenAI-style error: the HTTP status and the body
// {"error": {"message", "type", "param", "code"}}.
type apiError struct {
	Status  int     `json:"-"`
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func (e *apiError) Error() string { return e.Message }

// badRequest is a 400 invalid_request_error about param ("" when none).
func badRequest(param, format string, a ...any) *apiError {
	e := &apiError{Status: 400, Message: fmt.Sprintf(format, a...), Type: "invalid_request_error"}
	if param != "" {
		e.Param = &param
	}
	return e
}

func withCode(e *apiError, code string) *apiError {
	e.Code = &code
	return e
}

// streamOptions is the stream_options object of a request.
type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// commonRequest holds the fields /v1/completions and /v1/chat/completions
// share. Pointers tell "absent" from zero. Fields the server does not know
// are ignored, as OpenAI-compatible servers do, so newer clients work.
type commonRequest struct {
	Model         string          `json:"model"`
	MaxTokens     *int            `json:"max_tokens"`
	Temperature   *float64        `json:"temperature"`
	TopP          *float64        `json:"top_p"`
	Seed          *int64          `json:"seed"`
	Stop          json.RawMessage `json:"stop"`
	Stream        bool            `json:"stream"`
	StreamOptions *streamOptions  `json:"stream_options"`
	N             *int            `json:"n"`
	Logprobs      json.RawMessage `json:"logprobs"`
	// Penalties other than the repetition penalty are not implemented; a
	// request that sets one gets a 400 rather than silently different text.
	PresencePenalty  *float64 `json:"presence_penalty"`
	FrequencyPenalty *float64 `json:"frequency_penalty"`
	// Extensions with vLLM's names.
	TopK              *int     `json:"top_k"`
	MinP              *float64 `json:"min_p"`
	RepetitionPenalty *float64 `json:"repetition_penalty"`
	IgnoreEOS         bool     `json:"ignore_eos"`
}

// completionRequest is the body of POST /v1/completions.
type completionRequest struct {
	commonRequest
	// Prompt is a string, a list of one string, or a list of token ids.
	Prompt json.RawMessage `json:"prompt"`
	Echo   bool            `json:"echo"`
	Suffix *string         `json:"suffix"`
}

// chatRequest is the body of POST /v1/chat/completions.
type chatRequest struct {
	commonRequest
	Messages            []chatMessage `json:"messages"`
	MaxCompletionTokens *int          `json:"max_completion_tokens"`
}

// chatMessage is one message; Content is a string, null, or a list of
// parts of which only {"type": "text"} ones are supported.
type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// params is a validated request, ready to be tokenized and queued.
type params struct {
	chat     bool
	model    string
	prompt   string // completions: text prompt
	ids      []int  // completions: token-id prompt (when not text)
	messages []tokenizer.Message
	// maxTokens is 0 when the request left it to the context.
	maxTokens     int
	sample        sample.Params
	seeded        bool
	stop          []string
	stream        bool
	includeUsage  bool
	ignoreEOS     bool
	requestedName string
}

// decodeJSON reads exactly one JSON object from r into v.
func decodeJSON(r io.Reader, v any) *apiError {
	body, err := io.ReadAll(io.LimitReader(r, maxPromptBytes+1))
	if err != nil {
		return badRequest("", "reading the request body: %v", err)
	}
	if len(body) > maxPromptBytes {
		e := badRequest("", "request body larger than %d bytes", maxPromptBytes)
		e.Status = 413
		return e
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return badRequest("", "the request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return badRequest(te.Field, "field %q: want %s, got JSON %s", te.Field, te.Type, te.Value)
		}
		return badRequest("", "malformed JSON: %v", err)
	}
	if dec.More() {
		return badRequest("", "malformed JSON: data after the object")
	}
	return nil
}

// parseCompletion decodes and validates a /v1/completions body.
func parseCompletion(r io.Reader) (*params, *apiError) {
	var req completionRequest
	if err := decodeJSON(r, &req); err != nil {
		return nil, err
	}
	p, err := req.commonRequest.params(req.MaxTokens, "max_tokens")
	if err != nil {
		return nil, err
	}
	if req.Echo {
		return nil, badRequest("echo", "echo is not supported")
	}
	if req.Suffix != nil && *req.Suffix != "" {
		return nil, badRequest("suffix", "suffix is not supported")
	}
	if err := p.parsePrompt(req.Prompt); err != nil {
		return nil, err
	}
	return p, nil
}

// parseChat decodes and validates a /v1/chat/completions body.
func parseChat(r io.Reader) (*params, *apiError) {
	var req chatRequest
	if err := decodeJSON(r, &req); err != nil {
		return nil, err
	}
	maxTok, name := req.MaxTokens, "max_tokens"
	if req.MaxCompletionTokens != nil {
		maxTok, name = req.MaxCompletionTokens, "max_completion_tokens"
	}
	p, err := req.commonRequest.params(maxTok, name)
	if err != nil {
		return nil, err
	}
	p.chat = true
	if len(req.Messages) == 0 {
		return nil, badRequest("messages", "messages must be a non-empty list")
	}
	if len(req.Messages) > maxMessages {
		return nil, badRequest("messages", "%d messages, at most %d", len(req.Messages), maxMessages)
	}
	for i, m := range req.Messages {
		role := m.Role
		switch role {
		case "system", "user", "assistant", "tool":
		case "developer": // OpenAI's newer name for system
			role = "system"
		default:
			return nil, badRequest(fmt.Sprintf("messages[%d].role", i), "role %q: want system, developer, user, assistant or tool", m.Role)
		}
		text, err := messageText(m.Content)
		if err != nil {
			return nil, badRequest(fmt.Sprintf("messages[%d].content", i), "%v", err)
		}
		p.messages = append(p.messages, tokenizer.Message{Role: role, Content: text})
	}
	return p, nil
}

// messageText flattens a message's content: a string, null, or text parts.
func messageText(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("content: %w", err)
		}
		return s, nil
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", errors.New("content must be a string or a list of text parts")
	}
	var b strings.Builder
	for _, part := range parts {
		if part.Type != "text" || part.Text == nil {
			return "", fmt.Errorf("content part of type %q: only text parts are supported", part.Type)
		}
		b.WriteString(*part.Text)
	}
	return b.String(), nil
}

// params checks the shared fields; maxTokens is max_tokens (or the chat's
// max_completion_tokens, named name).
func (c *commonRequest) params(maxTokens *int, name string) (*params, *apiError) {
	p := &params{requestedName: c.Model, stream: c.Stream, ignoreEOS: c.IgnoreEOS}
	if c.StreamOptions != nil {
		if !c.Stream {
			return nil, badRequest("stream_options", "stream_options is only allowed with stream: true")
		}
		p.includeUsage = c.StreamOptions.IncludeUsage
	}
	if maxTokens != nil {
		if *maxTokens < 1 {
			return nil, badRequest(name, "%s %d must be at least 1", name, *maxTokens)
		}
		p.maxTokens = *maxTokens
	}
	if c.N != nil && *c.N != 1 {
		return nil, badRequest("n", "n %d: only one choice per request is supported", *c.N)
	}
	if lp := bytes.TrimSpace(c.Logprobs); len(lp) > 0 && string(lp) != "null" && string(lp) != "false" && string(lp) != "0" {
		return nil, badRequest("logprobs", "logprobs are not supported")
	}
	if c.PresencePenalty != nil && *c.PresencePenalty != 0 {
		return nil, badRequest("presence_penalty", "presence_penalty is not supported (repetition_penalty is)")
	}
	if c.FrequencyPenalty != nil && *c.FrequencyPenalty != 0 {
		return nil, badRequest("frequency_penalty", "frequency_penalty is not supported (repetition_penalty is)")
	}
	// OpenAI's defaults: temperature 1, top_p 1.
	sp := sample.Params{Temperature: 1, TopP: 1}
	if c.Temperature != nil {
		if *c.Temperature < 0 || *c.Temperature > 100 {
			return nil, badRequest("temperature", "temperature %g must be in [0, 100]", *c.Temperature)
		}
		sp.Temperature = *c.Temperature
	}
	if c.TopP != nil {
		if *c.TopP <= 0 || *c.TopP > 1 {
			return nil, badRequest("top_p", "top_p %g must be in (0, 1]", *c.TopP)
		}
		sp.TopP = *c.TopP
	}
	if c.TopK != nil {
		if *c.TopK < -1 {
			return nil, badRequest("top_k", "top_k %d must be >= 0 (or -1 for all)", *c.TopK)
		}
		sp.TopK = max(*c.TopK, 0)
	}
	if c.MinP != nil {
		sp.MinP = *c.MinP
	}
	if c.RepetitionPenalty != nil {
		if *c.RepetitionPenalty <= 0 {
			return nil, badRequest("repetition_penalty", "repetition_penalty %g must be > 0", *c.RepetitionPenalty)
		}
		sp.RepetitionPenalty = *c.RepetitionPenalty
	}
	if c.Seed != nil {
		sp.Seed = uint64(*c.Seed)
		p.seeded = true
	}
	if err := sp.Validate(); err != nil {
		return nil, badRequest("", "%v", err)
	}
	p.sample = sp
	stops, err := parseStop(c.Stop)
	if err != nil {
		return nil, err
	}
	p.stop = stops
	return p, nil
}

// parseStop reads stop: null, a string, or a list of strings.
func parseStop(raw json.RawMessage) ([]string, *apiError) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var list []string
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, badRequest("stop", "stop: %v", err)
		}
		list = []string{s}
	} else if err := json.Unmarshal(raw, &list); err != nil {
		return nil, badRequest("stop", "stop must be a string or a list of strings")
	}
	if len(list) > maxStops {
		return nil, badRequest("stop", "%d stop strings, at most %d", len(list), maxStops)
	}
	var out []string
	for _, s := range list {
		if len(s) > maxStopBytes {
			return nil, badRequest("stop", "stop string of %d bytes, at most %d", len(s), maxStopBytes)
		}
		if s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

// parsePrompt reads a completion prompt: a string, a list of one string, or
// a list of token ids (one prompt per request).
func (p *params) parsePrompt(raw json.RawMessage) *apiError {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return badRequest("prompt", "prompt is required")
	}
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &p.prompt); err != nil {
			return badRequest("prompt", "prompt: %v", err)
		}
		return nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return badRequest("prompt", "prompt must be a string, a list of one string, or a list of token ids")
	}
	if len(list) == 0 {
		return badRequest("prompt", "prompt is an empty list")
	}
	if first := bytes.TrimSpace(list[0]); len(first) > 0 && first[0] == '"' {
		if len(list) != 1 {
			return badRequest("prompt", "%d prompts: one prompt per request is supported", len(list))
		}
		if err := json.Unmarshal(first, &p.prompt); err != nil {
			return badRequest("prompt", "prompt: %v", err)
		}
		return nil
	}
	if first := bytes.TrimSpace(list[0]); len(first) > 0 && first[0] == '[' {
		if len(list) != 1 {
			return badRequest("prompt", "%d prompts: one prompt per request is supported", len(list))
		}
		raw = first
	}
	var ids []int64
	if err := json.Unmarshal(raw, &ids); err != nil {
		return badRequest("prompt", "prompt must be a string, a list of one string, or a list of token ids")
	}
	if len(ids) == 0 {
		return badRequest("prompt", "prompt is an empty list of token ids")
	}
	p.ids = make([]int, len(ids))
	for i, id := range ids {
		if id < 0 || id > math.MaxInt32 {
			return badRequest("prompt", "token id %d outside the vocabulary", id)
		}
		p.ids[i] = int(id)
	}
	return nil
}

// usage is the token accounting of a response.
type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// completionChoice is a choice of a /v1/completions response or chunk.
type completionChoice struct {
	Index        int     `json:"index"`
	Text         string  `json:"text"`
	Logprobs     any     `json:"logprobs"`
	FinishReason *string `json:"finish_reason"`
}

// completionResponse is a /v1/completions response (object
// "text_completion"), streamed or not.
type completionResponse struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"`
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []completionChoice `json:"choices"`
	Usage   *usage             `json:"usage,omitempty"`
}

// chatMessageOut is the assistant message of a chat response.
type chatMessageOut struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// chatChoice is a choice of a non-streamed chat response.
type chatChoice struct {
	Index        int            `json:"index"`
	Message      chatMessageOut `json:"message"`
	Logprobs     any            `json:"logprobs"`
	FinishReason string         `json:"finish_reason"`
}

// chatResponse is a /v1/chat/completions response ("chat.completion").
type chatResponse struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   usage        `json:"usage"`
}

// chatDelta is the increment of a streamed chat choice.
type chatDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

// chatChunkChoice is a choice of a streamed chat chunk.
type chatChunkChoice struct {
	Index        int       `json:"index"`
	Delta        chatDelta `json:"delta"`
	Logprobs     any       `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

// chatChunk is one event of a streamed chat response
// ("chat.completion.chunk").
type chatChunk struct {
	ID      string            `json:"id"`
	Object  string            `json:"object"`
	Created int64             `json:"created"`
	Model   string            `json:"model"`
	Choices []chatChunkChoice `json:"choices"`
	Usage   *usage            `json:"usage,omitempty"`
}

// modelList is the body of GET /v1/models.
type modelList struct {
	Object string      `json:"object"`
	Data   []modelCard `json:"data"`
}

// modelCard describes the served model.
type modelCard struct {
	ID          string `json:"id"`
	Object      string `json:"object"`
	Created     int64  `json:"created"`
	OwnedBy     string `json:"owned_by"`
	MaxModelLen int    `json:"max_model_len"`
}

// finishReason maps a generate stop reason to OpenAI's finish_reason.
func finishReason(stop string) string {
	switch stop {
	case "eos", "stop":
		return "stop"
	case "length", "context":
		return "length"
	}
	return stop
}
