// RMSNorm variants, float32 throughout: out = x · rsqrt(mean(x²) + eps) · s
// with s = w (Llama, Qwen3) or 1 + w (Gemma's stored weights; fhkit's
// loader already folds the 1 in, so the backend passes plus_one = 0).
#include "common.cuh"

// rms_inv returns 1/sqrt(mean(x²) + eps) of one row to every thread.
__device__ __forceinline__ float rms_inv(const float* x, int n, float eps, float* scratch) {
	float ss = 0.0f;
	for (int i = threadIdx.x; i < n; i += blockDim.x) ss = fmaf(x[i], x[i], ss);
	ss = block_sum(ss, scratch);
	// IEEE sqrt and division (nvcc's defaults), not rsqrtf's approximation.
	return 1.0f / sqrtf(ss / float(n) + eps);
}

// fh_rmsnorm normalizes row blockIdx.x of x (rows of n) into out (which
// may be x). One block per row; blockDim.x a multiple of 32. Also used
// per attention head (rows = tokens × heads, n = head_dim).
FH_KERNEL __launch_bounds__(1024) fh_rmsnorm(float* out, const float* x, const float* __restrict__ w, int n, float eps,
                                             int plus_one) {
	__shared__ float scratch[32];
	const float* xr = x + size_t(blockIdx.x) * n;
	float* o = out + size_t(blockIdx.x) * n;
	float inv = rms_inv(xr, n, eps, scratch);
	for (int i = threadIdx.x; i < n; i += blockDim.x) {
		float s = plus_one ? 1.0f + w[i] : w[i];
		o[i] = xr[i] * inv * s;
	}
}
FH_REGISTER(fh_rmsnorm)

// fh_rmsnorm_add adds the normalized row of y to x: x += norm(y) · s
// (Gemma's post-attention and post-feed-forward sandwich norms followed by
// the residual add).
FH_KERNEL __launch_bounds__(1024) fh_rmsnorm_add(float* __restrict__ x, const float* __restrict__ y,
                                                 const float* __restrict__ w, int n, float eps, int plus_one) {
	__shared__ float scratch[32];
	const float* yr = y + size_t(blockIdx.x) * n;
	float* xr = x + size_t(blockIdx.x) * n;
	float inv = rms_inv(yr, n, eps, scratch);
	for (int i = threadIdx.x; i < n; i += blockDim.x) {
		float s = plus_one ? 1.0f + w[i] : w[i];
		xr[i] += yr[i] * inv * s;
	}
}
FH_REGISTER(fh_rmsnorm_add)

// fh_add_rmsnorm adds y into the residual x and normalizes the sum into
// out: x += y; out = norm(x) · s (residual add fused with the next
// block's input norm).
FH_KERNEL __launch_bounds__(1024) fh_add_rmsnorm(float* __restrict__ out, float* __restrict__ x,
                                                 const float* __restrict__ y, const float* __restrict__ w, int n,
                                                 float eps, int plus_one) {
	__shared__ float scratch[32];
	float* xr = x + size_t(blockIdx.x) * n;
	const float* yr = y + size_t(blockIdx.x) * n;
	float* o = out + size_t(blockIdx.x) * n;
	for (int i = threadIdx.x; i < n; i += blockDim.x) xr[i] += yr[i];
	// Each thread reads back only the elements it wrote, so no barrier is
	// needed before the sum of squares.
	float inv = rms_inv(xr, n, eps, scratch);
	for (int i = threadIdx.x; i < n; i += blockDim.x) {
		float s = plus_one ? 1.0f + w[i] : w[i];
		o[i] = xr[i] * inv * s;
	}
}
FH_REGISTER(fh_add_rmsnorm)
