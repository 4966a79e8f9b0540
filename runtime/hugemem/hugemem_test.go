package hugemem

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// Buffers of every size class come zeroed, 64-byte aligned, writable to
// their end, and never overlap one another, from a fresh Arena and from a
// nil one.
func TestBytes(t *testing.T) {
	for _, a := range []*Arena{New(), nil} {
		type span struct{ lo, hi uintptr }
		var spans []span
		var bufs [][]byte
		for i, n := range []int{1, 63, 64, 65, 4096, 1 << 20, chunkBytes/4 - 1, chunkBytes / 4, chunkBytes/4 + 1, 3 << 20, chunkBytes, 5000} {
			b := a.Bytes(n)
			if len(b) != n || cap(b) != n {
				t.Fatalf("Bytes(%d): len %d cap %d", n, len(b), cap(b))
			}
			p := uintptr(unsafe.Pointer(&b[0]))
			if a != nil && p%align != 0 {
				t.Fatalf("Bytes(%d) at %#x: not %d-byte aligned", n, p, align)
			}
			for j, v := range b {
				if v != 0 {
					t.Fatalf("Bytes(%d)[%d] = %d, want 0", n, j, v)
				}
			}
			for j := range b {
				b[j] = byte(i + 1)
			}
			for _, s := range spans {
				if p < s.hi && s.lo < p+uintptr(n) {
					t.Fatalf("Bytes(%d) at %#x overlaps [%#x, %#x)", n, p, s.lo, s.hi)
				}
			}
			spans = append(spans, span{p, p + uintptr(n)})
			bufs = append(bufs, b)
		}
		// Every buffer still holds what was written to it: no later
		// buffer was carved from it.
		for i, b := range bufs {
			for j, v := range b {
				if v != byte(i+1) {
					t.Fatalf("buffer %d byte %d = %d, want %d", i, j, v, i+1)
				}
			}
		}
		runtime.KeepAlive(a)
	}
	if b := New().Bytes(0); len(b) != 0 {
		t.Fatalf("Bytes(0) has length %d", len(b))
	}
}

// An Arena that nobody holds gives its mappings back: the mapping of a
// dropped Arena leaves /proc/self/maps.
func TestReleasedWhenUnreachable(t *testing.T) {
	if _, err := os.Stat("/proc/self/maps"); err != nil {
		t.Skip("no /proc/self/maps here")
	}
	mapped := func(addr uintptr) bool {
		maps, err := os.ReadFile("/proc/self/maps")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Contains(string(maps), fmt.Sprintf("\n%x-", addr)) || strings.HasPrefix(string(maps), fmt.Sprintf("%x-", addr))
	}
	addr := func() uintptr {
		a := New()
		b := a.Bytes(64 << 20)
		b[0] = 1
		return uintptr(unsafe.Pointer(&b[0]))
	}()
	if !mapped(addr) {
		t.Fatalf("mapping at %#x not in /proc/self/maps while allocated", addr)
	}
	deadline := time.Now().Add(10 * time.Second)
	for mapped(addr) {
		if time.Now().After(deadline) {
			t.Fatalf("mapping at %#x still there 10 s after its Arena was dropped", addr)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}
