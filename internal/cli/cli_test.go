package cli

import (
	"errors"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// --help returns ErrHelp without calling Usage (the caller prints it once),
// and leaves Usage in place; a bad flag is a usage error.
func TestParseFlags(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.Int("n", 1, "a number")
	calls := 0
	fs.Usage = func() { calls++ }
	if err := ParseFlags(fs, []string{"--help"}); !errors.Is(err, pflag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	if calls != 0 {
		t.Errorf("Usage called %d times during the parse", calls)
	}
	fs.Usage()
	if calls != 1 {
		t.Error("Usage not restored after the parse")
	}
	var ue *UsageError
	if err := ParseFlags(fs, []string{"--nope"}); !errors.As(err, &ue) || !strings.Contains(err.Error(), "nope") {
		t.Errorf("--nope: %v", err)
	}
}
