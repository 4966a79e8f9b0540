// Package hugemem allocates large buffers that live as long as a model
// (weights repacked at load, the bandwidth probe's buffer) in anonymous
// memory mappings advised for transparent huge pages.
//
// Decode reads every weight once per token, hundreds of megabytes in 4 KiB
// pages otherwise: a TLB miss (a two-level walk in a virtual machine) every
// 4 KiB, and physical pages scattered over the machine's memory as the
// kernel's free lists happen to hand them out. On the build VMs the
// bandwidth probe read 45 GB/s from Go's heap and 62 GB/s from 2 MiB pages
// in the same seconds (31.5 and 36.5 in the machines' slow memory mode),
// and a gemma-3-1b W4A16 decode step's body took 9.8 ms with the weights
// repacked into the heap at load against 8.3 ms from huge pages.
//
// Where the kernel gives no huge pages (transparent huge pages off, other
// systems) the mappings are ordinary memory; where mapping fails the Go
// heap serves.
package hugemem

import (
	"runtime"
	"sync"
)

// hugePage is the size (and alignment) of a transparent huge page on
// x86-64 and arm64 with 4 KiB base pages.
const hugePage = 2 << 20

// chunkBytes is the mapping size an Arena carves small buffers from.
const chunkBytes = 32 << 20

// align is the alignment of every buffer: a cache line (and a whole
// AVX-512 vector).
const align = 64

// An Arena hands out zeroed byte buffers from huge-page mappings. Buffers
// of a quarter chunk or more get mappings of their own (whole huge
// pages); smaller ones share chunks. The mappings are released when the
// Arena is no longer reachable, so whatever holds a buffer must hold the
// Arena too. An Arena is safe for concurrent use. A nil *Arena allocates
// from the Go heap.
type Arena struct {
	mu   sync.Mutex
	maps *mappings
	free []byte // the unused end of the current chunk
}

// mappings is what the cleanup releases; it must not point back to the
// Arena.
type mappings struct {
	list [][]byte
}

// New returns an empty Arena.
func New() *Arena {
	a := &Arena{maps: &mappings{}}
	runtime.AddCleanup(a, func(m *mappings) {
		for _, b := range m.list {
			unmap(b)
		}
	}, a.maps)
	return a
}

// Bytes returns a zeroed buffer of n bytes, 64-byte aligned.
func (a *Arena) Bytes(n int) []byte {
	if a == nil || n <= 0 {
		return make([]byte, n)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if n >= chunkBytes/4 {
		if b := a.mapHuge(n); b != nil {
			touch(b[:n])
			return b[:n:n]
		}
		return make([]byte, n)
	}
	need := (n + align - 1) &^ (align - 1)
	if len(a.free) < need {
		b := a.mapHuge(chunkBytes)
		if b == nil {
			return make([]byte, n)
		}
		a.free = b
	}
	b := a.free[:n:n]
	a.free = a.free[need:]
	touch(b)
	return b
}

// mapHuge maps n bytes rounded up to whole huge pages, aligned to one,
// and records the mapping; nil when mapping fails.
func (a *Arena) mapHuge(n int) []byte {
	b := mapAligned((n + hugePage - 1) &^ (hugePage - 1))
	if b != nil {
		a.maps.list = append(a.maps.list, b)
	}
	return b
}

// touch writes a zero to every 4 KiB page of b, so that its pages are
// faulted in by a store of this process rather than by the kernel
// writing into b as a read(2) buffer: a BF16 gemma-3-1b read into
// untouched buffers (fhm.File.CopyOut) decoded its body in 27.3 ms where
// one copied through the file mapping took 25.1 (medians of 17 and 18
// runs alternating, fast memory mode), and in 25.7 against 26.1 once
// touched first. Why the kernel's faults give slower memory was not
// pinned down (both had their weights in huge pages).
func touch(b []byte) {
	for i := 0; i < len(b); i += 4096 {
		b[i] = 0
	}
}
