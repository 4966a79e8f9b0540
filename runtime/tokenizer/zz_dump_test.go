package tokenizer

import (
	"os"
	"testing"
)

func TestZZDump(t *testing.T) {
	if os.Getenv("ZZDIFF") == "" {
		t.Skip()
	}
	os.WriteFile("/tmp/diff/tiny_bl.json", byteLevelJSON(t), 0o644)
}
