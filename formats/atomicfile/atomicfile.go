// Package atomicfile writes a file so that readers see either the old file
// or the complete new one, never a partial write: the data goes to a hidden
// temporary file in the same directory, which is synced and renamed over the
// destination only on Commit.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// File is an output file under construction. It embeds the temporary
// *os.File, so it can be written, seeked and synced like one.
type File struct {
	*os.File
	dest string
	done bool
}

// Create starts writing dest. The temporary file is created next to dest
// (same file system, so the final rename is atomic) with mode 0644.
func Create(dest string) (*File, error) {
	dir, base := filepath.Split(dest)
	if dir == "" {
		dir = "."
	}
	if base == "" {
		return nil, fmt.Errorf("%s: output path names a directory", dest)
	}
	if st, err := os.Stat(dest); err == nil && st.IsDir() {
		return nil, fmt.Errorf("%s: output path is a directory", dest)
	}
	f, err := os.OpenFile(TempPath(dest), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: cannot create output: %w", dest, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("%s: %w", dest, err)
	}
	return &File{File: f, dest: dest}, nil
}

// TempPath returns the temporary file Create uses for dest: hidden, next to
// dest, and named after this process, so a signal handler can know it before
// the file exists (no window in which an interrupt would leave it behind).
func TempPath(dest string) string {
	dir, base := filepath.Split(dest)
	return filepath.Join(dir, "."+base+".tmp-"+strconv.Itoa(os.Getpid()))
}

// TempName returns the path of the temporary file (for cleanup on signals).
func (f *File) TempName() string { return f.File.Name() }

// Commit flushes the data to stable storage and moves it to its destination.
func (f *File) Commit() error {
	if f.done {
		return fmt.Errorf("%s: already committed or aborted", f.dest)
	}
	f.done = true
	tmp := f.File.Name()
	if err := f.File.Sync(); err != nil {
		f.File.Close()
		os.Remove(tmp)
		return fmt.Errorf("%s: sync: %w", f.dest, err)
	}
	if err := f.File.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%s: close: %w", f.dest, err)
	}
	if err := os.Rename(tmp, f.dest); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%s: %w", f.dest, err)
	}
	// Sync the directory so the rename itself survives a crash.
	if d, err := os.Open(filepath.Dir(f.dest)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Abort discards the temporary file. It is safe to call after Commit (it
// then does nothing), so `defer f.Abort()` is the usual pattern.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.File.Close()
	os.Remove(f.File.Name())
}
