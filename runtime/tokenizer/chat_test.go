package tokenizer

import (
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func readTemplate(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "chat_templates", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func gemmaTemplate(t *testing.T) string {
	t.Helper()
	f, err := os.Open(filepath.Join(sharedDir(t), "tokenizer-gemma3", "tokenizer_config.json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		ChatTemplate string `json:"chat_template"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg.ChatTemplate
}

var (
	llamaTokens = SpecialTokens{BOS: "<|begin_of_text|>", EOS: "<|eot_id|>"}
	qwenTokens  = SpecialTokens{EOS: "<|im_end|>", PAD: "<|endoftext|>"}
	gemmaTokens = SpecialTokens{BOS: "<bos>", EOS: "<end_of_turn>", PAD: "<pad>", UNK: "<unk>"}
	sysHello    = []Message{{"system", "Be helpful."}, {"user", "Hello"}}
	nov23       = time.Date(2025, 11, 23, 15, 4, 5, 0, time.UTC)
)

type chatCase struct {
	name  string
	msgs  []Message
	opts  ChatOptions
	want  string
	error string
}

func runChatCases(t *testing.T, src string, special SpecialTokens, cases []chatCase) {
	t.Helper()
	ct, err := NewChatTemplate(src, special)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		got, err := ct.Render(c.msgs, c.opts)
		if c.error != "" {
			if err == nil || !strings.Contains(err.Error(), c.error) {
				t.Errorf("%s: error %v, want one containing %q (output %q)", c.name, err, c.error, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s:\n got  %q\n want %q", c.name, got, c.want)
		}
	}
}

// TestChatGemma3 renders the real Gemma-3 template: system text folded
// into the first user turn, assistant -> model, content trimmed, roles
// must alternate.
func TestChatGemma3(t *testing.T) {
	runChatCases(t, gemmaTemplate(t), gemmaTokens, []chatCase{
		{name: "system+user", msgs: sysHello, opts: ChatOptions{AddGenerationPrompt: true},
			want: "<bos><start_of_turn>user\nBe helpful.\n\nHello<end_of_turn>\n<start_of_turn>model\n"},
		{name: "multi-turn", msgs: []Message{{"user", "  Hi there \n"}, {"assistant", "Hello! How can I help?"}, {"user", "Tell me a joke."}},
			want: "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\nHello! How can I help?<end_of_turn>\n<start_of_turn>user\nTell me a joke.<end_of_turn>\n"},
		{name: "no system", msgs: []Message{{"user", "Hi"}, {"assistant", " Hello! "}},
			want: "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"},
		{name: "bad order", msgs: []Message{{"assistant", "x"}}, opts: ChatOptions{AddGenerationPrompt: true},
			error: "Conversation roles must alternate user/assistant/user/assistant/..."},
	})
}

// TestChatLlama32 renders Llama-3.2-Instruct's template: a system header
// with "Cutting Knowledge Date" and today's date (strftime_now) always
// comes first; the system message goes after it; contents are trimmed.
func TestChatLlama32(t *testing.T) {
	const head = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 23 Nov 2025\n\n"
	runChatCases(t, readTemplate(t, "llama-3.2-instruct.jinja"), llamaTokens, []chatCase{
		{name: "system+user", msgs: sysHello, opts: ChatOptions{AddGenerationPrompt: true, Now: nov23},
			want: head + "Be helpful.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{name: "no system, multi-turn", msgs: []Message{{"user", " Hi "}, {"assistant", "Hello!"}, {"user", "Bye"}}, opts: ChatOptions{Now: nov23},
			want: head + "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"},
		{name: "date_string variable", msgs: []Message{{"user", "Hi"}}, opts: ChatOptions{AddGenerationPrompt: true, Vars: map[string]any{"date_string": "26 Jul 2024"}},
			want: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
	})
	// Without Now, strftime_now reports today.
	ct, err := NewChatTemplate(readTemplate(t, "llama-3.2-instruct.jinja"), llamaTokens)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ct.Render([]Message{{"user", "Hi"}}, ChatOptions{})
	if err != nil {
		t.Fatal(err)
	}
	today := time.Now().Format("02 Jan 2006")
	if yesterday := time.Now().Add(-time.Minute).Format("02 Jan 2006"); !strings.Contains(got, "Today Date: "+today+"\n") && !strings.Contains(got, "Today Date: "+yesterday+"\n") {
		t.Errorf("no today's date (%s) in %q", today, got)
	}
}

// TestChatLlama3 renders the Llama-3 (3.0) Instruct template.
func TestChatLlama3(t *testing.T) {
	runChatCases(t, readTemplate(t, "llama-3-instruct.jinja"), llamaTokens, []chatCase{
		{name: "system+user", msgs: sysHello, opts: ChatOptions{AddGenerationPrompt: true},
			want: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe helpful.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
	})
}

// TestChatQwen3 renders Qwen3's template: ChatML, no BOS, the reasoning
// of assistant turns before the last user query dropped, the last
// assistant turn rendered with its <think> block, enable_thinking=false
// adding an empty think block to the generation prompt.
func TestChatQwen3(t *testing.T) {
	runChatCases(t, readTemplate(t, "qwen3.jinja"), qwenTokens, []chatCase{
		{name: "system+user", msgs: sysHello, opts: ChatOptions{AddGenerationPrompt: true},
			want: "<|im_start|>system\nBe helpful.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"},
		{name: "thinking history", msgs: []Message{{"user", "What is 2+2?"}, {"assistant", "<think>\nAdd them.\n</think>\n\n4"}, {"user", "And 3+3?"}, {"assistant", "<think>\nSimple.\n</think>\n\n6"}},
			want: "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n<think>\nSimple.\n</think>\n\n6<|im_end|>\n"},
		{name: "generation after thinking history", msgs: []Message{{"user", "What is 2+2?"}, {"assistant", "<think>\nAdd them.\n</think>\n\n4"}, {"user", "And 3+3?"}}, opts: ChatOptions{AddGenerationPrompt: true},
			want: "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n"},
		{name: "enable_thinking=false", msgs: []Message{{"user", "Hi"}}, opts: ChatOptions{AddGenerationPrompt: true, Vars: map[string]any{"enable_thinking": false}},
			want: "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"},
		{name: "reasoning after last query", msgs: []Message{{"system", "S"}, {"user", "Q1"}, {"assistant", "A1"}, {"user", "Q2"}, {"assistant", "<think>\nR2\n</think>\n\nA2"}}, opts: ChatOptions{AddGenerationPrompt: true},
			want: "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n<think>\nR2\n</think>\n\nA2<|im_end|>\n<|im_start|>assistant\n"},
	})
}

func TestChatErrors(t *testing.T) {
	if _, err := NewChatTemplate("{% if %}", SpecialTokens{}); err == nil {
		t.Error("bad template compiled")
	}
	ct, err := NewChatTemplate(`{{ raise_exception("nope") }}`, SpecialTokens{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ct.Render(nil, ChatOptions{}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("raise_exception: %v", err)
	}
	if ct.Source() != `{{ raise_exception("nope") }}` {
		t.Errorf("Source = %q", ct.Source())
	}
	// A template indexing an empty message list fails without panicking.
	ct, err = NewChatTemplate(`{{ messages[0]['role'] }}{{ messages[0].content.foo.bar }}`, SpecialTokens{})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = ct.Render(nil, ChatOptions{})

	// A tokenizer without a template, and one with a broken template.
	tok, err := New(Files{Model: encodeSPM(gemmaStyleSPM())})
	if err != nil {
		t.Fatal(err)
	}
	if tok.ChatTemplate() != nil {
		t.Error("unexpected template")
	}
	if _, err := tok.RenderChat(sysHello, true); err == nil || !strings.Contains(err.Error(), "chat_template") {
		t.Errorf("RenderChat without template: %v", err)
	}
	// Without a config, bos_token and eos_token are the model's pieces.
	tok = mustNew(t, Files{Model: encodeSPM(gemmaStyleSPM()), ChatTemplate: "{{ bos_token }}|{{ eos_token }}"})
	if got, err := tok.RenderChat(nil, false); err != nil || got != "<bos>|<eos>" {
		t.Errorf("default special tokens: %q %v", got, err)
	}
	tok, err = New(Files{Model: encodeSPM(gemmaStyleSPM()), ChatTemplate: "{% for %}"})
	if err != nil {
		t.Fatalf("a broken chat template must not fail loading: %v", err)
	}
	if _, err := tok.RenderChat(sysHello, true); err == nil {
		t.Error("broken template rendered")
	}
}

func TestStrftime(t *testing.T) {
	tm := time.Date(2024, 7, 6, 9, 5, 3, 0, time.UTC)
	for f, want := range map[string]string{
		"%d %b %Y":          "06 Jul 2024",
		"%A %B %e %y":       "Saturday July  6 24",
		"%H:%M:%S %p %I %j": "09:05:03 AM 09 188",
		"%Y-%m-%d %% %q %":  "2024-07-06 % %q %",
		"%a %h %Z %z":       "Sat Jul UTC +0000",
	} {
		if got := strftime(tm, f); got != want {
			t.Errorf("strftime(%q) = %q, want %q", f, got, want)
		}
	}
}
