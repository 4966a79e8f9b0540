// Attention over the KV cache for decode (T = 1) and prefill (T queries
// of one chunk, causal), with grouped-query heads, sliding-window or
// global layers, optional logit soft-capping, and a float32, bf16 or f16
// cache. The chunk's own keys and values must already be in the cache
// (fh_kv_store_*), so every query reads only the cache.
//
// One block per (head, query); each warp walks a strided subset of the
// visible keys with an online softmax (running max, sum and weighted
// values, float32), and the warps' partial results are merged at the end.
// Head dim ≤ 256: lane l holds elements l, l+32, ... of q and of its
// partial output.
#include "common.cuh"

#define FH_ATT_WARPS 4
#define FH_MAX_HEAD_DIM 256

enum { KV_F32, KV_BF16, KV_F16 };

template <int K>
struct KVt;
template <>
struct KVt<KV_F32> {
	typedef float T;
	static __device__ __forceinline__ float load(const T* p) { return *p; }
};
template <>
struct KVt<KV_BF16> {
	typedef fh_bf16 T;
	static __device__ __forceinline__ float load(const T* p) { return bf16_to_f32(*p); }
};
template <>
struct KVt<KV_F16> {
	typedef fh_f16 T;
	static __device__ __forceinline__ float load(const T* p) { return f16_to_f32(*p); }
};

// out, q: [T, nh, hd]. Query t belongs to a sequence whose cache of this
// layer is kcs[t], vcs[t] ([rows, nkv, hd] each), at position pos[t]; the
// rows of a chunk may come from different sequences. window > 0 limits a
// query at p to keys > p − window; rings[t] > 0 stores position p in row
// p mod rings[t]. softcap > 0 applies softcap · tanh(s / softcap) to the
// scaled scores.
template <int K>
__device__ __forceinline__ void attention(float* __restrict__ out, const float* __restrict__ q,
                                          const typename KVt<K>::T* const* __restrict__ kcs,
                                          const typename KVt<K>::T* const* __restrict__ vcs,
                                          const int* __restrict__ pos, const int* __restrict__ rings, int nh, int nkv,
                                          int hd, int window, float scale, float softcap) {
	__shared__ float s_acc[FH_ATT_WARPS][FH_MAX_HEAD_DIM];
	__shared__ float s_m[FH_ATT_WARPS], s_l[FH_ATT_WARPS];
	const int h = blockIdx.x, t = blockIdx.y;
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	const int g = h / (nh / nkv);
	const int kvd = nkv * hd;
	const int qpos = pos[t], ring = rings[t];
	const typename KVt<K>::T* kc = kcs[t];
	const typename KVt<K>::T* vc = vcs[t];
	const int first = window > 0 ? max(0, qpos - window + 1) : 0;
	const float* qh = q + (size_t(t) * nh + h) * hd;
	float qv[FH_MAX_HEAD_DIM / 32], acc[FH_MAX_HEAD_DIM / 32];
#pragma unroll
	for (int i = 0; i < FH_MAX_HEAD_DIM / 32; i++) {
		int d = lane + 32 * i;
		qv[i] = d < hd ? qh[d] : 0.0f;
		acc[i] = 0.0f;
	}
	float m = FH_NEG_INF, l = 0.0f;
	for (int p = first + warp; p <= qpos; p += FH_ATT_WARPS) {
		size_t row = size_t(ring > 0 ? p % ring : p);
		const typename KVt<K>::T* kr = kc + row * kvd + size_t(g) * hd;
		const typename KVt<K>::T* vr = vc + row * kvd + size_t(g) * hd;
		float s = 0.0f;
#pragma unroll
		for (int i = 0; i < FH_MAX_HEAD_DIM / 32; i++) {
			int d = lane + 32 * i;
			if (d < hd) s = fmaf(qv[i], KVt<K>::load(kr + d), s);
		}
		s = warp_sum(s) * scale;
		if (softcap > 0.0f) s = softcap * float(tanh(double(s / softcap)));
		float mn = fmaxf(m, s);
		float corr = expf(m - mn);  // 0 for the first key (m = −inf)
		float e = expf(s - mn);
		l = l * corr + e;
#pragma unroll
		for (int i = 0; i < FH_MAX_HEAD_DIM / 32; i++) {
			int d = lane + 32 * i;
			float v = d < hd ? KVt<K>::load(vr + d) : 0.0f;
			acc[i] = fmaf(e, v, acc[i] * corr);
		}
		m = mn;
	}
	if (lane == 0) {
		s_m[warp] = m;
		s_l[warp] = l;
	}
#pragma unroll
	for (int i = 0; i < FH_MAX_HEAD_DIM / 32; i++) {
		int d = lane + 32 * i;
		if (d < hd) s_acc[warp][d] = acc[i];
	}
	__syncthreads();
	float M = FH_NEG_INF;
	for (int w = 0; w < FH_ATT_WARPS; w++) M = fmaxf(M, s_m[w]);
	float L = 0.0f, f[FH_ATT_WARPS];
	for (int w = 0; w < FH_ATT_WARPS; w++) {
		// A warp that saw no key has m = −inf and l = 0: its factor is 0.
		f[w] = s_l[w] > 0.0f ? expf(s_m[w] - M) : 0.0f;
		L += s_l[w] * f[w];
	}
	float inv = 1.0f / L;
	float* oh = out + (size_t(t) * nh + h) * hd;
	for (int d = threadIdx.x; d < hd; d += blockDim.x) {
		float o = 0.0f;
		for (int w = 0; w < FH_ATT_WARPS; w++)
			if (f[w] > 0.0f) o = fmaf(s_acc[w][d], f[w], o);
		oh[d] = o * inv;
	}
}

// fh_attention_<cache type>: grid (nh, T), block FH_ATT_WARPS·32 = 128.
#define FH_ATTENTION(name, K)                                                                                       \
	FH_KERNEL __launch_bounds__(FH_ATT_WARPS * 32)                                                                  \
	    name(float* out, const float* q, const typename KVt<K>::T* const* kcs, const typename KVt<K>::T* const* vcs, \
	         const int* pos, const int* rings, int nh, int nkv, int hd, int window, float scale, float softcap) {    \
		attention<K>(out, q, kcs, vcs, pos, rings, nh, nkv, hd, window, scale, softcap);                            \
	}                                                                                                               \
	FH_REGISTER(name)

FH_ATTENTION(fh_attention_f32, KV_F32)
FH_ATTENTION(fh_attention_bf16, KV_BF16)
FH_ATTENTION(fh_attention_f16, KV_F16)
