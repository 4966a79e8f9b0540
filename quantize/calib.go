package quantize

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/runtime/model"
	"github.com/fhkit/fhkit/runtime/tokenizer"
)

// DefaultPrompts returns the prompts that start the calibration text GPTQ
// uses without --calib: the model continues each prompt (cycled) by
// sampling at temperature 1 from its own distribution until the sequence
// has SeqLen tokens, so the tool
// needs no data set and the activations are ones the model produces. The
// prompts vary in genre (story, dialogue, facts, code, lists, instructions)
// so the text covers more than one register.
func DefaultPrompts() []string {
	return []string{
		"Once upon a time",
		"The weather today is",
		"Q: What is the capital of France?\nA:",
		"def fibonacci(n):",
		"Here is a list of things to pack for a trip:\n1.",
		"Dear Sir or Madam,",
		"In 1969, the first humans",
		"The recipe calls for",
		"Lily and her dog went to the park.",
		"Explain why the sky is blue.",
		"The theorem states that",
		"\"Where are you going?\" asked",
	}
}

// calibDocs reads the documents of a calibration file: one per line of a
// JSONL file (the "text" field, else the first string field), otherwise
// blank-line separated paragraphs of plain text.
func calibDocs(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--calib: %w", err)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, fmt.Errorf("--calib %s: empty file", path)
	}
	var docs []string
	if trimmed[0] == '{' {
		sc := bufio.NewScanner(bytes.NewReader(trimmed))
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		line := 0
		for sc.Scan() {
			line++
			l := bytes.TrimSpace(sc.Bytes())
			if len(l) == 0 {
				continue
			}
			var obj map[string]any
			if err := json.Unmarshal(l, &obj); err != nil {
				return nil, fmt.Errorf("--calib %s: line %d: not a JSON object: %w", path, line, err)
			}
			text, ok := obj["text"].(string)
			if !ok {
				for _, v := range obj {
					if s, isStr := v.(string); isStr {
						text, ok = s, true
						break
					}
				}
			}
			if !ok {
				return nil, fmt.Errorf("--calib %s: line %d: no \"text\" string field", path, line)
			}
			if text != "" {
				docs = append(docs, text)
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("--calib %s: %w", path, err)
		}
	} else {
		for _, p := range strings.Split(string(trimmed), "\n\n") {
			if p = strings.TrimSpace(p); p != "" {
				docs = append(docs, p)
			}
		}
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("--calib %s: no text", path)
	}
	return docs, nil
}

// fileSequences tokenizes docs into up to n sequences of seqLen tokens:
// the documents are joined into one token stream (each starting with BOS
// when the tokenizer adds one) and cut into consecutive windows.
func fileSequences(tok *tokenizer.Tokenizer, docs []string, n, seqLen int) [][]int {
	var stream []int
	for _, d := range docs {
		stream = append(stream, tok.Encode(d, true)...)
		if len(stream) >= n*seqLen {
			break
		}
	}
	var seqs [][]int
	for i := 0; i+2 <= len(stream) && len(seqs) < n; i += seqLen {
		seqs = append(seqs, stream[i:min(i+seqLen, len(stream))])
	}
	return seqs
}

// selfSequences samples n sequences of seqLen tokens from the model,
// continuing DefaultPrompts (or BOS and a random token without a
// tokenizer).
func selfSequences(r *model.Runner, tok *tokenizer.Tokenizer, n, seqLen int, seed uint64) ([][]int, error) {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	V := r.M.Config.VocabSize
	prompts := DefaultPrompts()
	var seqs [][]int
	for i := 0; i < n; i++ {
		var ids []int
		if tok != nil {
			ids = tok.Encode(prompts[i%len(prompts)], true)
		}
		if len(ids) == 0 {
			if b := r.M.Config.BOSTokenID; b >= 0 && b < V {
				ids = append(ids, b)
			}
			ids = append(ids, rng.IntN(V))
		}
		if len(ids) > seqLen {
			ids = ids[:seqLen]
		}
		st, err := r.M.NewState(seqLen, dtype.F32)
		if err != nil {
			return nil, err
		}
		logits, err := r.Forward(st, ids, false)
		for err == nil && len(ids) < seqLen {
			next := sampleT1(logits, rng)
			ids = append(ids, next)
			if len(ids) < seqLen {
				logits, err = r.Forward(st, []int{next}, false)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("generating calibration text: %w", err)
		}
		seqs = append(seqs, ids)
	}
	return seqs, nil
}

// sampleT1 draws from softmax(logits).
func sampleT1(logits []float32, rng *rand.Rand) int {
	mx := math.Inf(-1)
	for _, v := range logits {
		mx = max(mx, float64(v))
	}
	var sum float64
	p := make([]float64, len(logits))
	for i, v := range logits {
		p[i] = math.Exp(float64(v) - mx)
		sum += p[i]
	}
	u := rng.Float64() * sum
	for i, v := range p {
		if u -= v; u < 0 {
			return i
		}
	}
	return len(p) - 1
}
