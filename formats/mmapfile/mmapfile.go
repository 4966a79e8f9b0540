// Package mmapfile maps a whole file read-only into memory.
package mmapfile

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// File is a read-only memory mapping of a whole file.
type File struct {
	// Data is the file's content. It stays valid until Close.
	Data []byte
	path string
}

// Open maps path. An empty file maps to an empty Data (no mapping is made).
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	size := st.Size()
	if size == 0 {
		return &File{Data: []byte{}, path: path}, nil
	}
	if int64(int(size)) != size {
		return nil, fmt.Errorf("%s: file too large to map (%d bytes)", path, size)
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("%s: mmap: %w", path, err)
	}
	return &File{Data: data, path: path}, nil
}

// Path returns the path the file was opened with.
func (m *File) Path() string { return m.path }

// Advise tells the kernel the mapping will be read sequentially, so it reads
// ahead and drops pages behind (used when streaming a large file once).
func (m *File) AdviseSequential() {
	if len(m.Data) > 0 {
		unix.Madvise(m.Data, unix.MADV_SEQUENTIAL)
	}
}

// DontNeed tells the kernel the given range will not be read again, so its
// pages can leave this process's resident set.
func (m *File) DontNeed(off, n int) {
	const page = 4096
	start := off &^ (page - 1)
	end := off + n
	if start < 0 || end > len(m.Data) || start >= end {
		return
	}
	unix.Madvise(m.Data[start:end], unix.MADV_DONTNEED)
}

// Close unmaps the file. Data must not be used afterwards.
func (m *File) Close() error {
	if len(m.Data) == 0 {
		return nil
	}
	err := unix.Munmap(m.Data)
	m.Data = nil
	return err
}
