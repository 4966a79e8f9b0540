//go:build unix

package hugemem

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// mapAligned maps size bytes (a multiple of hugePage) of anonymous memory
// at a huge-page boundary and advises huge pages for it; nil on failure.
// A mapping only starts at a huge-page boundary by chance, so it maps one
// huge page more and unmaps the unaligned ends. (The pointer forms of
// mmap and munmap: unix.Munmap only takes whole mappings of unix.Mmap.)
func mapAligned(size int) []byte {
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(size+hugePage), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		return nil
	}
	start := uintptr(p)
	head := (hugePage - start%hugePage) % hugePage
	if head > 0 {
		unix.MunmapPtr(p, head)
	}
	if tail := hugePage - head; tail > 0 {
		unix.MunmapPtr(unsafe.Add(p, head+uintptr(size)), tail)
	}
	b := unsafe.Slice((*byte)(unsafe.Add(p, head)), size)
	// Not every kernel offers transparent huge pages: the advice failing
	// leaves ordinary pages, which work the same.
	unix.Madvise(b, unix.MADV_HUGEPAGE)
	return b
}

func unmap(b []byte) { unix.MunmapPtr(unsafe.Pointer(&b[0]), uintptr(len(b))) }
