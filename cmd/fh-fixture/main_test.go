package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	out := t.TempDir()
	file := filepath.Join(out, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args       []string
		code       int
		stdout     string
		stderr     string
		wroteFiles string
	}{
		{args: []string{"--list"}, stdout: "gemma3-1b"},
		{args: []string{"--help"}, stdout: "Examples:"},
		{args: nil, code: 2, stderr: "--preset and --out are required"},
		{args: []string{"--preset", "gemma3-tiny"}, code: 2, stderr: "required"},
		{args: []string{"--preset", "nope", "--out", out}, code: 2, stderr: `unknown preset "nope"`},
		{args: []string{"--bogus"}, code: 2, stderr: "unknown flag"},
		{args: []string{"--all"}, code: 2, stderr: "--all needs --out"},
		{args: []string{"--all", "--preset", "qwen3-tiny", "--out", out}, code: 2, stderr: "--all needs --out"},
		{args: []string{"--all", "--out", filepath.Join(out, "all")}, stderr: "wrote qwen3-tiny", wroteFiles: filepath.Join(out, "all", "gemma3-mm-new", "tokenizer.model")},
		{args: []string{"--list", "extra"}, code: 2, stderr: "unexpected argument"},
		{args: []string{"--seed", "x"}, code: 2, stderr: "invalid argument"},
		{args: []string{"--preset", "qwen3-tiny", "--out", filepath.Join(file, "sub")}, code: 1, stderr: "qwen3-tiny"},
		{args: []string{"--preset", "llama-sharded", "--out", filepath.Join(out, "ls"), "--seed", "3"}, stderr: "wrote llama-sharded", wroteFiles: filepath.Join(out, "ls", "model.safetensors.index.json")},
	} {
		var stdout, stderr bytes.Buffer
		code := run(c.args, &stdout, &stderr, false)
		if code != c.code || !strings.Contains(stdout.String(), c.stdout) || !strings.Contains(stderr.String(), c.stderr) {
			t.Errorf("run(%q) = %d\nstdout: %s\nstderr: %s", c.args, code, stdout.String(), stderr.String())
		}
		if c.wroteFiles != "" {
			if _, err := os.Stat(c.wroteFiles); err != nil {
				t.Errorf("run(%q): %v", c.args, err)
			}
		}
	}
}
