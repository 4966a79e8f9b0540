// Command fh-run runs and examines fhkit model files.
package main

import (
	"fmt"
	"io"

	"github.com/fhkit/fhkit/internal/cli"
)

const usage = `fh-run: run and examine fhkit model files

Usage:
  fh-run <command> [flags]

Commands:
  inspect   show a .fhm or .safetensors file: metadata, tensors, checksums

Run 'fh-run <command> --help' for a command's flags and examples.
`

func main() { cli.Main("fh-run", run) }

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return cli.Usagef("no command given")
	}
	switch args[0] {
	case "inspect":
		return runInspect(args[1:], stdout)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return cli.Usagef("unknown command %q (commands: inspect)", args[0])
}
