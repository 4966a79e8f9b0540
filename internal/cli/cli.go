// Package cli holds what every fhkit command shares: exit codes, usage
// errors, progress bars that appear only on a terminal, and removal of a
// partial output file when the process is interrupted.
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/pflag"
	"golang.org/x/term"
)

// Exit codes of every fhkit command.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// UsageError is a mistake in the command line (exit code 2).
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a UsageError.
func Usagef(format string, a ...any) error { return &UsageError{fmt.Sprintf(format, a...)} }

// Main runs a command body and exits with the code its error calls for:
// 2 for usage errors (and pflag parse errors), 1 for others.
func Main(name string, run func(args []string, stdout, stderr io.Writer) error) {
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	os.Exit(Report(name, err, os.Stderr))
}

// Report prints err (if any) on w prefixed by the command name and returns
// the exit code.
func Report(name string, err error, w io.Writer) int {
	if err == nil || errors.Is(err, pflag.ErrHelp) {
		return ExitOK
	}
	fmt.Fprintf(w, "%s: %v\n", name, err)
	var ue *UsageError
	if errors.As(err, &ue) {
		fmt.Fprintf(w, "Run '%s --help' for usage.\n", name)
		return ExitUsage
	}
	return ExitError
}

// ParseFlags parses args with fs, turning parse errors into usage errors.
func ParseFlags(fs *pflag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	// pflag calls Usage itself on --help; the caller prints it on ErrHelp,
	// so it is silenced here (else the help would come out twice).
	usage := fs.Usage
	fs.Usage = func() {}
	defer func() { fs.Usage = usage }()
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return &UsageError{err.Error()}
	}
	return nil
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// Progress is a byte-count progress bar drawn on a terminal, and nothing
// otherwise. The zero value and a nil *Progress are valid no-ops.
type Progress struct{ bar *progressbar.ProgressBar }

// NewProgress returns a progress bar of total bytes on w when w is a
// terminal and quiet is false.
func NewProgress(w io.Writer, total int64, desc string, quiet bool) *Progress {
	if quiet || !IsTerminal(w) {
		return &Progress{}
	}
	return &Progress{bar: progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100_000_000),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionClearOnFinish(),
	)}
}

// Add advances the bar by n bytes.
func (p *Progress) Add(n int64) {
	if p != nil && p.bar != nil {
		p.bar.Add64(n)
	}
}

// Set moves the bar to n bytes.
func (p *Progress) Set(n int64) {
	if p != nil && p.bar != nil {
		p.bar.Set64(n)
	}
}

// Describe changes the label.
func (p *Progress) Describe(s string) {
	if p != nil && p.bar != nil {
		p.bar.Describe(s)
	}
}

// Finish removes the bar from the terminal.
func (p *Progress) Finish() {
	if p != nil && p.bar != nil {
		p.bar.Finish()
	}
}

// RemoveOnSignal removes the files at paths (if they exist) when the process
// gets SIGINT, SIGTERM or SIGHUP, then exits with 128+signal. Pass the
// output's atomicfile.TempPath. The returned stop function ends the watch.
func RemoveOnSignal(paths ...string) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			for _, p := range paths {
				os.Remove(p)
			}
			fmt.Fprintf(os.Stderr, "interrupted (%v): partial output removed\n", s)
			code := 130
			if sig, ok := s.(syscall.Signal); ok {
				code = 128 + int(sig)
			}
			os.Exit(code)
		case <-done:
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}

// HumanBytes formats a byte count with a binary unit.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
