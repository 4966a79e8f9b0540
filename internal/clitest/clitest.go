// Package clitest builds a command once for its package's tests, so they
// run the real binary (exit codes, signals, output files).
package clitest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Main builds the main package in the current directory as a static binary
// named name into a temporary directory, stores its path in *bin, runs the
// tests, removes the directory and exits with the tests' code. Call it from
// TestMain.
func Main(m *testing.M, name string, bin *string) {
	dir, err := os.MkdirTemp("", name+"-test")
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	cmd := exec.Command("go", "build", "-o", dir, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	*bin = filepath.Join(dir, name)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
