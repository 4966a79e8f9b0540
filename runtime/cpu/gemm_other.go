//go:build !amd64

package cpu

// gemmKernelsFor returns nil: there are no assembly kernels on this
// architecture, so gemm uses MatMulRef.
func gemmKernelsFor(ISA) *gemmKernels { return nil }
