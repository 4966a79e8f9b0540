// LM-head kernels: argmax, FlashHead top-P cluster selection and fused
// stage 2 (block scoring + argmax), and temperature sampling.
//
// Every selection breaks ties towards the smallest index or token id, as
// the CPU code does, so results do not depend on thread order.
#include "weights.cuh"

// better reports whether (v, i) ranks above (w, j): larger value, then
// smaller index; NaN never ranks above anything.
__device__ __forceinline__ bool better(float v, int i, float w, int j) {
	if (i < 0 || v != v) return false;
	if (j < 0) return true;
	return v > w || (v == w && i < j);
}

// warp_best reduces (v, i) over the warp; every lane gets the winner.
__device__ __forceinline__ void warp_best(float& v, int& i) {
	for (int o = 16; o > 0; o >>= 1) {
		float w = __shfl_xor_sync(FH_FULL_MASK, v, o);
		int j = __shfl_xor_sync(FH_FULL_MASK, i, o);
		if (better(w, j, v, i)) v = w, i = j;
	}
}

// block_best reduces (v, i) over the block (blockDim.x a multiple of 32).
__device__ __forceinline__ void block_best(float& v, int& i, float* sv, int* si) {
	warp_best(v, i);
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	__syncthreads();
	if (lane == 0) sv[warp] = v, si[warp] = i;
	__syncthreads();
	int nw = blockDim.x >> 5;
	v = lane < nw ? sv[lane] : FH_NEG_INF;
	i = lane < nw ? si[lane] : -1;
	warp_best(v, i);
}

// fh_argmax_rows: ids[r] = argmax of row r of x [rows, n] (smallest index
// on ties). Grid rows, block ≤ 1024.
FH_KERNEL __launch_bounds__(1024) fh_argmax_rows(int* __restrict__ ids, const float* __restrict__ x, int n) {
	__shared__ float sv[32];
	__shared__ int si[32];
	const float* xr = x + size_t(blockIdx.x) * n;
	float v = FH_NEG_INF;
	int i = -1;
	for (int j = threadIdx.x; j < n; j += blockDim.x)
		if (better(xr[j], j, v, i)) v = xr[j], i = j;
	block_best(v, i, sv, si);
	if (threadIdx.x == 0) ids[blockIdx.x] = i;
}
FH_REGISTER(fh_argmax_rows)

// block_exclusive_scan returns the sum of v over the threads before this
// one, and the block total in *total. scratch: 33 ints of shared memory.
__device__ __forceinline__ int block_exclusive_scan(int v, int* scratch, int* total) {
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	int inc = v;
	for (int o = 1; o < 32; o <<= 1) {
		int u = __shfl_up_sync(FH_FULL_MASK, inc, o);
		if (lane >= o) inc += u;
	}
	__syncthreads();
	if (lane == 31) scratch[warp] = inc;
	__syncthreads();
	if (threadIdx.x == 0) {
		int run = 0;
		for (int w = 0; w < int(blockDim.x >> 5); w++) {
			int s = scratch[w];
			scratch[w] = run;
			run += s;
		}
		scratch[32] = run;
	}
	__syncthreads();
	*total = scratch[32];
	return scratch[warp] + inc - v;
}

// order_key maps a float to an unsigned integer with the same order (NaN
// lowest).
__device__ __forceinline__ uint32_t order_key(float f) {
	if (f != f) return 0;
	uint32_t u = __float_as_uint(f);
	return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// fh_topk: out[0..k) = the indices of the k largest of scores[0..n) (ties
// broken towards smaller indices), in increasing index order. One block
// (blockDim.x a multiple of 32): a 4-pass radix select finds the k-th
// largest key, then an ordered compaction writes the winners.
FH_KERNEL __launch_bounds__(1024) fh_topk(int* __restrict__ out, const float* __restrict__ scores, int n, int k) {
	__shared__ int hist[256];
	__shared__ int scan[33];
	__shared__ uint32_t s_prefix;
	__shared__ int s_remaining;
	if (threadIdx.x == 0) s_prefix = 0, s_remaining = k;
	uint32_t mask = 0;
	for (int shift = 24; shift >= 0; shift -= 8) {
		for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
		__syncthreads();
		uint32_t prefix = s_prefix;
		for (int i = threadIdx.x; i < n; i += blockDim.x) {
			uint32_t key = order_key(scores[i]);
			if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1);
		}
		__syncthreads();
		if (threadIdx.x == 0) {
			int rem = s_remaining, above = 0, b = 255;
			for (; b > 0; b--) {
				if (above + hist[b] >= rem) break;
				above += hist[b];
			}
			s_remaining = rem - above;
			s_prefix = prefix | (uint32_t(b) << shift);
		}
		mask |= 255u << shift;
		__syncthreads();
	}
	const uint32_t thr = s_prefix;
	const int need_eq = s_remaining;  // how many keys equal to thr to take
	int chunk = (n + int(blockDim.x) - 1) / int(blockDim.x);
	int lo = min(n, int(threadIdx.x) * chunk), hi = min(n, lo + chunk);
	int gt = 0, eq = 0;
	for (int i = lo; i < hi; i++) {
		uint32_t key = order_key(scores[i]);
		gt += key > thr;
		eq += key == thr;
	}
	int total;
	int eq_before = block_exclusive_scan(eq, scan, &total);
	int take_eq = max(0, min(eq, need_eq - eq_before));
	int at = block_exclusive_scan(gt + take_eq, scan, &total);
	for (int i = lo; i < hi; i++) {
		uint32_t key = order_key(scores[i]);
		if (key > thr) {
			out[at++] = i;
		} else if (key == thr && take_eq > 0) {
			out[at++] = i;
			take_eq--;
		}
	}
}
FH_REGISTER(fh_topk)

// FlashHead stage 2: block b < P scores the cap rows of cluster
// clusters[b] (w_perm rows b·cap.., token ids from vmap, −1 = padding);
// blocks b ≥ P score the always-scored special tokens, 8 per block, from
// their float32 rows. Each block writes its best (logit, id) to
// part_logit/part_id[b]; fh_argmax_parts reduces them.
template <int K>
__device__ __forceinline__ void stage2(float* __restrict__ part_logit, int* __restrict__ part_id,
                                       const typename Wt<K>::T* __restrict__ wperm, const int* __restrict__ vmap,
                                       const int* __restrict__ clusters, int P, const float* __restrict__ special_w,
                                       const int* __restrict__ special_ids, int nspecial,
                                       const float* __restrict__ hidden, int cap, int D) {
	__shared__ float sv[32];
	__shared__ int si[32];
	int warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
	float v = FH_NEG_INF;
	int id = -1;
	if (int(blockIdx.x) < P) {
		int c = clusters[blockIdx.x];
		for (int s = warp; s < cap; s += nw) {
			size_t slot = size_t(c) * cap + s;
			float logit = row_dot<K>(wperm + slot * D, hidden, D);
			int tok = vmap[slot];
			if (tok >= 0 && better(logit, tok, v, id)) v = logit, id = tok;
		}
	} else {
		int j = (blockIdx.x - P) * 8 + warp;
		if (warp < 8 && j < nspecial) {
			float logit = row_dot<W_F32>(special_w + size_t(j) * D, hidden, D);
			v = logit, id = special_ids[j];
		}
	}
	block_best(v, id, sv, si);
	if (threadIdx.x == 0) part_logit[blockIdx.x] = v, part_id[blockIdx.x] = id;
}

#define FH_STAGE2(name, K)                                                                                          \
	FH_KERNEL __launch_bounds__(256)                                                                                \
	    name(float* part_logit, int* part_id, const typename Wt<K>::T* wperm, const int* vmap, const int* clusters, \
	         int P, const float* special_w, const int* special_ids, int nspecial, const float* hidden, int cap,    \
	         int D) {                                                                                               \
		stage2<K>(part_logit, part_id, wperm, vmap, clusters, P, special_w, special_ids, nspecial, hidden, cap, D); \
	}                                                                                                               \
	FH_REGISTER(name)

FH_STAGE2(fh_flashhead_stage2_bf16, W_BF16)
FH_STAGE2(fh_flashhead_stage2_f16, W_F16)
FH_STAGE2(fh_flashhead_stage2_f32, W_F32)

// fh_argmax_parts: ids[0] = the id of the best (logit, id) pair of n
// (entries with id < 0 are ignored). One block.
FH_KERNEL __launch_bounds__(1024) fh_argmax_parts(int* __restrict__ ids, const float* __restrict__ logit,
                                                  const int* __restrict__ id, int n) {
	__shared__ float sv[32];
	__shared__ int si[32];
	float v = FH_NEG_INF;
	int i = -1;
	for (int j = threadIdx.x; j < n; j += blockDim.x)
		if (id[j] >= 0 && better(logit[j], id[j], v, i)) v = logit[j], i = id[j];
	block_best(v, i, sv, si);
	if (threadIdx.x == 0) ids[0] = i;
}
FH_REGISTER(fh_argmax_parts)

// fh_sample draws one index of logits[0..n) from softmax(logits · inv_temp)
// by inverting the CDF at u[0] ∈ [0, 1) (the host supplies the uniform
// number, so a seed reproduces the draw). One block; each thread sums a
// contiguous chunk, so the CDF is accumulated in index order.
FH_KERNEL __launch_bounds__(1024) fh_sample(int* __restrict__ out, const float* __restrict__ logits, int n,
                                            float inv_temp, const float* __restrict__ u) {
	__shared__ float scratch[32];
	__shared__ float s_part[1024];
	float mx = FH_NEG_INF;
	for (int i = threadIdx.x; i < n; i += blockDim.x) mx = fmaxf(mx, logits[i]);
	mx = block_max(mx, scratch);
	int chunk = (n + int(blockDim.x) - 1) / int(blockDim.x);
	int lo = min(n, int(threadIdx.x) * chunk), hi = min(n, lo + chunk);
	float part = 0.0f;
	for (int i = lo; i < hi; i++) part += expf((logits[i] - mx) * inv_temp);
	s_part[threadIdx.x] = part;
	__syncthreads();
	if (threadIdx.x == 0) {
		float total = 0.0f;
		for (int t = 0; t < int(blockDim.x); t++) total += s_part[t];
		float target = u[0] * total, run = 0.0f;
		int t = 0;
		for (; t < int(blockDim.x) - 1; t++) {
			if (run + s_part[t] > target) break;
			run += s_part[t];
		}
		int a = min(n, t * chunk), b = min(n, a + chunk), pick = b - 1;
		for (int i = a; i < b; i++) {
			run += expf((logits[i] - mx) * inv_temp);
			if (run > target) {
				pick = i;
				break;
			}
		}
		// Never pick an index with zero probability at the chunk's end.
		out[0] = max(pick, 0);
	}
}
FH_REGISTER(fh_sample)
