//go:build !unix

package hugemem

// mapAligned has no mappings to offer here: the Go heap serves.
func mapAligned(size int) []byte { return nil }

func unmap(b []byte) {}
