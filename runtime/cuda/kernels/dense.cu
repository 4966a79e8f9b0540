// Dense matrix products with 16- or 32-bit weights: out[t·rows + r] =
// Σ_c W[r, c] · x[t·cols + c]. Weights are bf16, f16 or f32 as stored in
// the model file; activations and accumulation are float32 (a bf16 or f16
// weight times a float32 is formed exactly as the CPU kernels form it, only
// the summation order differs).
//
// One warp per output row, blockDim.x/32 rows per block. When cols is a
// multiple of 8 every row starts 16-byte aligned and each lane loads 8
// weights at once; otherwise the lanes stride over single elements.

#include "weights.cuh"

// Up to 8 tokens per warp: each weight chunk is loaded once for all of them.
template <int K>
__device__ __forceinline__ void gemm_rows(float* __restrict__ out, const typename Wt<K>::T* __restrict__ w, const float* __restrict__ x,
                                          int rows, int cols, int T_, int t0) {
	int lane = threadIdx.x & 31;
	int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
	if (row >= rows) return;  // whole warps leave together
	int nt = min(8, T_ - t0);
	const typename Wt<K>::T* wr = w + size_t(row) * cols;
	float acc[8];
#pragma unroll
	for (int t = 0; t < 8; t++) acc[t] = 0.0f;
	if ((cols & 7) == 0) {
		for (int c = lane * 8; c < cols; c += 256) {
			W8 wv;
			Wt<K>::load8(wr + c, wv);
			const float* xc = x + size_t(t0) * cols + c;
#pragma unroll
			for (int t = 0; t < 8; t++)
				if (t < nt) acc[t] = dot8_acc(wv, xc + size_t(t) * cols, acc[t]);
		}
	} else {
		for (int c = lane; c < cols; c += 32) {
			float wv = Wt<K>::load1(wr + c);
#pragma unroll
			for (int t = 0; t < 8; t++)
				if (t < nt) acc[t] = fmaf(wv, x[size_t(t0 + t) * cols + c], acc[t]);
		}
	}
#pragma unroll
	for (int t = 0; t < 8; t++) {
		float v = warp_sum(acc[t]);
		if (lane == 0 && t < nt) out[size_t(t0 + t) * rows + row] = v;
	}
}

// fh_gemm_<type>: blockIdx.x picks blockDim.x/32 rows, blockIdx.y picks 8
// tokens. T = 1 is the decode matrix-vector product.
FH_KERNEL __launch_bounds__(256) fh_gemm_bf16(float* out, const fh_bf16* w, const float* x, int rows, int cols, int T) {
	gemm_rows<W_BF16>(out, w, x, rows, cols, T, blockIdx.y * 8);
}
FH_REGISTER(fh_gemm_bf16)

FH_KERNEL __launch_bounds__(256) fh_gemm_f16(float* out, const fh_f16* w, const float* x, int rows, int cols, int T) {
	gemm_rows<W_F16>(out, w, x, rows, cols, T, blockIdx.y * 8);
}
FH_REGISTER(fh_gemm_f16)

FH_KERNEL __launch_bounds__(256) fh_gemm_f32(float* out, const float* w, const float* x, int rows, int cols, int T) {
	gemm_rows<W_F32>(out, w, x, rows, cols, T, blockIdx.y * 8);
}
FH_REGISTER(fh_gemm_f32)

// fh_gemv_i8: FlashHead stage 1 with int8 centroids and one scale per
// centroid: out[k] = (Σ_i q[k, i] · x[i]) · scale[k].
FH_KERNEL __launch_bounds__(256) fh_gemv_i8(float* __restrict__ out, const int8_t* __restrict__ q,
                                             const float* __restrict__ scale, const float* __restrict__ x, int rows,
                                             int cols) {
	int lane = threadIdx.x & 31;
	int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
	if (row >= rows) return;
	const int8_t* qr = q + size_t(row) * cols;
	float acc = 0.0f;
	for (int c = lane; c < cols; c += 32) acc = fmaf(float(qr[c]), x[c], acc);
	acc = warp_sum(acc);
	if (lane == 0) out[row] = acc * scale[row];
}
FH_REGISTER(fh_gemv_i8)
