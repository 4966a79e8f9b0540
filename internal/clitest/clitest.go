// Package clitest builds a command once for its package's tests, so they
// run the real binary (exit codes, signals, output files), and runs it.
package clitest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

// Result is how a command run by Run ended: its exit code and output.
type Result struct {
	Code           int
	Stdout, Stderr string
}

// Run runs bin with args and returns its exit code and output; a command
// that cannot be started fails the test.
func Run(t testing.TB, bin string, args ...string) Result {
	t.Helper()
	return RunShell(t, "", bin, args...)
}

// RunShell is Run under a bash prefix such as a ulimit (empty: none); the
// arguments are single-quoted for the shell.
func RunShell(t testing.TB, prefix, bin string, args ...string) Result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	if prefix != "" {
		quoted := make([]string, len(args))
		for i, a := range args {
			quoted[i] = "'" + a + "'"
		}
		cmd = exec.Command("bash", "-c", prefix+"; exec "+bin+" "+strings.Join(quoted, " "))
	}
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return Result{code, so.String(), se.String()}
}
