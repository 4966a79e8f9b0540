package cpu

// The kernel sets of gemm_amd64.s. The panel and tile sizes are those the
// generator (internal/asmgen/gemm) was written for.
var (
	gemmAVX512 = &gemmKernels{
		panel: 32,
		strip: 16,
		kernel: []func(w, x *float32, xStride, k int, out *float32, outStride, acc int){
			gemmKernel512x1, gemmKernel512x2, gemmKernel512x3, gemmKernel512x4,
			gemmKernel512x5, gemmKernel512x6, gemmKernel512x7, gemmKernel512x8,
			gemmKernel512x9, gemmKernel512x10, gemmKernel512x11, gemmKernel512x12,
		},
		packQ4:     gemmPackQ4AVX512,
		q4Block:    128,
		packBF16:   gemmPackBF16AVX512,
		packF16:    gemmPackF16AVX512,
		packF32:    gemmPackF32AVX512,
		denseBlock: 16,
		small: [][3]func(out *float32, outStride int, w *byte, stride int, scales *byte, sstride int, ng int, gbytes int, x *float32, xStride int, rows int){
			{gemmQ4T2BF16AVX512, gemmQ4T2F16AVX512, gemmQ4T2F32AVX512},
			{gemmQ4T3BF16AVX512, gemmQ4T3F16AVX512, gemmQ4T3F32AVX512},
			{gemmQ4T4BF16AVX512, gemmQ4T4F16AVX512, gemmQ4T4F32AVX512},
		},
		smallChunk: 32,
		smallMaxT:  24,
		smallDense: [][3]func(out *float32, outStride int, w *byte, stride int, x *float32, xStride int, n int, rows int){
			{gemmDenseT2BF16AVX512, gemmDenseT2F16AVX512, gemmDenseT2F32AVX512},
			{gemmDenseT3BF16AVX512, gemmDenseT3F16AVX512, gemmDenseT3F32AVX512},
			{gemmDenseT4BF16AVX512, gemmDenseT4F16AVX512, gemmDenseT4F32AVX512},
		},
		smallDenseMaxT: 24,
	}
	gemmAVX2 = &gemmKernels{
		panel: 16,
		strip: 8,
		kernel: []func(w, x *float32, xStride, k int, out *float32, outStride, acc int){
			gemmKernel256x1, gemmKernel256x2, gemmKernel256x3,
			gemmKernel256x4, gemmKernel256x5, gemmKernel256x6,
		},
		packQ4:     gemmPackQ4AVX2,
		q4Block:    64,
		packBF16:   gemmPackBF16AVX2,
		packF16:    gemmPackF16AVX2,
		packF32:    gemmPackF32AVX2,
		denseBlock: 8,
		small: [][3]func(out *float32, outStride int, w *byte, stride int, scales *byte, sstride int, ng int, gbytes int, x *float32, xStride int, rows int){
			{gemmQ4T2BF16AVX2, gemmQ4T2F16AVX2, gemmQ4T2F32AVX2},
			{gemmQ4T3BF16AVX2, gemmQ4T3F16AVX2, gemmQ4T3F32AVX2},
			{gemmQ4T4BF16AVX2, gemmQ4T4F16AVX2, gemmQ4T4F32AVX2},
		},
		smallChunk: 16,
		smallMaxT:  12,
		smallDense: [][3]func(out *float32, outStride int, w *byte, stride int, x *float32, xStride int, n int, rows int){
			{gemmDenseT2BF16AVX2, gemmDenseT2F16AVX2, gemmDenseT2F32AVX2},
			{gemmDenseT3BF16AVX2, gemmDenseT3F16AVX2, gemmDenseT3F32AVX2},
			{gemmDenseT4BF16AVX2, gemmDenseT4F16AVX2, gemmDenseT4F32AVX2},
		},
		smallDenseMaxT: 12,
	}
)

// gemmKernelsFor returns the kernels of level i, nil for plain Go.
func gemmKernelsFor(i ISA) *gemmKernels {
	switch i {
	case AVX512:
		return gemmAVX512
	case AVX2:
		return gemmAVX2
	}
	return nil
}
