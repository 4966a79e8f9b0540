// W4A16 matrix products: int4 weights in groups (formats/int4), float32
// activations and accumulation.
//
// Device layout (the backend converts at upload): q is the packed codes,
// row-major, two per byte, low nibble first, cols/2 bytes per row; scales
// is float32 [rows, cols/group]; zeros is one byte per (row, group), or
// NULL for symmetric weights (zero point 8). The kernels need cols and
// group to be multiples of 8 (one 32-bit word of codes never straddles a
// group), which every quantized layer fhkit writes satisfies; the backend
// checks it.
#include "common.cuh"

// w4_dot8 returns Σ (q_j − z) · x_j over the 8 codes of word w. The codes
// minus the zero point are small integers, exact in float; the scale is
// applied once per word by the caller.
__device__ __forceinline__ float w4_dot8(uint32_t w, float z, float4 a, float4 b) {
	float p = (float(w & 15u) - z) * a.x;
	p = fmaf(float((w >> 4) & 15u) - z, a.y, p);
	p = fmaf(float((w >> 8) & 15u) - z, a.z, p);
	p = fmaf(float((w >> 12) & 15u) - z, a.w, p);
	p = fmaf(float((w >> 16) & 15u) - z, b.x, p);
	p = fmaf(float((w >> 20) & 15u) - z, b.y, p);
	p = fmaf(float((w >> 24) & 15u) - z, b.z, p);
	p = fmaf(float(w >> 28) - z, b.w, p);
	return p;
}

// fh_w4a16_gemv: out[r] = Σ_c W[r, c] · x[c] (decode). One warp per row,
// blockDim.x/32 rows per block; each lane reads 8 codes (one word) per step,
// so a warp streams 128 contiguous bytes of the row at a time.
FH_KERNEL __launch_bounds__(256) fh_w4a16_gemv(float* __restrict__ out, const uint8_t* __restrict__ q,
                                                const float* __restrict__ scales, const uint8_t* __restrict__ zeros,
                                                const float* __restrict__ x, int rows, int cols, int group) {
	int lane = threadIdx.x & 31;
	int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
	if (row >= rows) return;  // whole warps leave together
	int ng = cols / group;
	const uint32_t* qr = reinterpret_cast<const uint32_t*>(q + size_t(row) * size_t(cols / 2));
	const float* sr = scales + size_t(row) * ng;
	const uint8_t* zr = zeros ? zeros + size_t(row) * ng : nullptr;
	float acc = 0.0f;
	for (int c = lane * 8; c < cols; c += 256) {
		int g = c / group;
		float z = zr ? float(zr[g]) : 8.0f;
		const float4* xv = reinterpret_cast<const float4*>(x + c);
		acc = fmaf(w4_dot8(qr[c >> 3], z, xv[0], xv[1]), sr[g], acc);
	}
	acc = warp_sum(acc);
	if (lane == 0) out[row] = acc;
}
FH_REGISTER(fh_w4a16_gemv)

// fh_w4a16_gemm: out[t·rows + r] = Σ_c W[r, c] · x[t·cols + c] for T
// tokens (prefill). One warp per row as in the GEMV; blockIdx.y selects 8
// tokens, so each word of codes is decoded once for 8 tokens.
FH_KERNEL __launch_bounds__(256) fh_w4a16_gemm(float* __restrict__ out, const uint8_t* __restrict__ q,
                                                const float* __restrict__ scales, const uint8_t* __restrict__ zeros,
                                                const float* __restrict__ x, int rows, int cols, int group, int T) {
	int lane = threadIdx.x & 31;
	int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
	if (row >= rows) return;
	int t0 = blockIdx.y * 8;
	int nt = min(8, T - t0);
	int ng = cols / group;
	const uint32_t* qr = reinterpret_cast<const uint32_t*>(q + size_t(row) * size_t(cols / 2));
	const float* sr = scales + size_t(row) * ng;
	const uint8_t* zr = zeros ? zeros + size_t(row) * ng : nullptr;
	float acc[8];
	for (int t = 0; t < 8; t++) acc[t] = 0.0f;
	for (int c = lane * 8; c < cols; c += 256) {
		int g = c / group;
		float z = zr ? float(zr[g]) : 8.0f;
		float s = sr[g];
		uint32_t w = qr[c >> 3];
#pragma unroll
		for (int t = 0; t < 8; t++) {
			if (t < nt) {
				const float4* xv = reinterpret_cast<const float4*>(x + size_t(t0 + t) * cols + c);
				acc[t] = fmaf(w4_dot8(w, z, xv[0], xv[1]), s, acc[t]);
			}
		}
	}
#pragma unroll
	for (int t = 0; t < 8; t++) {
		float v = warp_sum(acc[t]);
		if (lane == 0 && t < nt) out[size_t(t0 + t) * rows + row] = v;
	}
}
FH_REGISTER(fh_w4a16_gemm)
