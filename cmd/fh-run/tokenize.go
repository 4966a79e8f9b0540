package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/internal/cli"
	"github.com/fhkit/fhkit/runtime/tokenizer"
)

const tokenizeHelp = `Usage: fh-run tokenize --model F [--text S] [--add-special] [--json] [--decode]

Prints the token ids of S, or of each line of standard input when --text is
absent. No BOS is added unless --add-special. With --decode the input is ids
(space or comma separated, or a JSON array) and the text is printed.

Examples:
  fh-run tokenize --model gemma.fhm --text "Hello world"
  fh-run tokenize --model gemma.fhm --json < prompts.txt
  fh-run tokenize --model gemma.fhm --decode --text "2 9259 1902"

Flags:
`

func runTokenize(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := pflag.NewFlagSet("tokenize", pflag.ContinueOnError)
	modelPath := fs.String("model", "", "model file (.fhm) (required)")
	text := fs.String("text", "", "text to tokenize (default: each line of standard input)")
	addSpecial := fs.Bool("add-special", false, "add the special tokens the tokenizer adds (BOS)")
	asJSON := fs.Bool("json", false, "print a JSON array of ids per text")
	decode := fs.Bool("decode", false, "decode ids to text instead")
	if err := parse(fs, args, tokenizeHelp, stdout); err != nil {
		return err
	}
	if *modelPath == "" {
		return cli.Usagef("tokenize: --model is required")
	}
	if fs.NArg() > 0 {
		return cli.Usagef("tokenize: unexpected argument %q", fs.Arg(0))
	}
	f, err := fhm.Open(*modelPath)
	if err != nil {
		return err
	}
	defer f.Close()
	tok, err := tokenizer.FromFHM(f)
	if err != nil {
		return fmt.Errorf("%s: tokenizer: %w", *modelPath, err)
	}
	one := func(s string) error {
		if *decode {
			ids, err := parseIDs(s, tok.VocabSize())
			if err != nil {
				return err
			}
			if *asJSON {
				return json.NewEncoder(stdout).Encode(tok.Decode(ids))
			}
			_, err = fmt.Fprintln(stdout, tok.Decode(ids))
			return err
		}
		ids := tok.Encode(s, *addSpecial)
		if ids == nil {
			ids = []int{}
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(ids)
		}
		parts := make([]string, len(ids))
		for i, id := range ids {
			parts[i] = strconv.Itoa(id)
		}
		_, err := fmt.Fprintln(stdout, strings.Join(parts, " "))
		return err
	}
	if fs.Changed("text") {
		return one(*text)
	}
	in := bufio.NewScanner(stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	for in.Scan() {
		if err := one(in.Text()); err != nil {
			return err
		}
	}
	return in.Err()
}

// parseIDs reads ids written as "1 2 3", "1,2,3" or "[1, 2, 3]".
func parseIDs(s string, vocab int) ([]int, error) {
	s = strings.Trim(strings.TrimSpace(s), "[]")
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
	ids := make([]int, 0, len(fields))
	for _, f := range fields {
		id, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("--decode: %q is not a token id", f)
		}
		if id < 0 || id >= vocab {
			return nil, fmt.Errorf("--decode: token id %d outside the vocabulary [0, %d)", id, vocab)
		}
		ids = append(ids, id)
	}
	return ids, nil
}
