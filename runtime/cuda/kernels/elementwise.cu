// Element-wise and per-token kernels of the transformer block: embedding
// lookup, RoPE, the KV-cache store, gated activations, residual add and
// logit soft-capping. Kernels whose arguments change every decode step
// (token ids, the position) read them from device memory, so a captured
// CUDA graph of the step stays valid: the host only updates that memory.
//
// Where the CPU reference computes in float64 and rounds (GELU, SiLU, the
// RoPE tables, tanh), these kernels do the same in double; where it uses
// float32 products and sums (RoPE rotation), __fmul_rn/__fadd_rn keep
// nvcc from fusing them into FMAs, so the results are bit-identical to
// runtime/cpu and runtime/model.
#include "common.cuh"

// fh_embed_<type>: x[t, :] = table[tokens[t], :] · scale. Grid T, any
// block size.
#define FH_EMBED(name, T, CONV)                                                                               \
	FH_KERNEL name(float* __restrict__ x, const T* __restrict__ table, const int* __restrict__ tokens, int h, \
	               float scale) {                                                                          \
		const T* row = table + size_t(tokens[blockIdx.x]) * h;                                              \
		float* o = x + size_t(blockIdx.x) * h;                                                              \
		for (int i = threadIdx.x; i < h; i += blockDim.x) o[i] = __fmul_rn(CONV(row[i]), scale);            \
	}                                                                                                       \
	FH_REGISTER(name)

__device__ __forceinline__ float ident(float v) { return v; }
FH_EMBED(fh_embed_bf16, fh_bf16, bf16_to_f32)
FH_EMBED(fh_embed_f16, fh_f16, f16_to_f32)
FH_EMBED(fh_embed_f32, float, ident)

// fh_rope_table: cos/sin [T, half] for row t at position pos[t], with the
// angle formed in float32 (inv_freq · position) and cos/sin in double,
// rounded to float, as runtime/model does. Grid T, any block size.
FH_KERNEL fh_rope_table(float* __restrict__ cosv, float* __restrict__ sinv, const float* __restrict__ inv_freq,
                        const int* __restrict__ pos, int half) {
	float p = float(pos[blockIdx.x]);
	for (int i = threadIdx.x; i < half; i += blockDim.x) {
		float a = __fmul_rn(inv_freq[i], p);
		cosv[blockIdx.x * half + i] = float(cos(double(a)));
		sinv[blockIdx.x * half + i] = float(sin(double(a)));
	}
}
FH_REGISTER(fh_rope_table)

// fh_rope rotates x [T, heads, 2·half] in place with the "rotate_half"
// pairing (i, i + half): grid (heads, T), any block size.
FH_KERNEL fh_rope(float* __restrict__ x, const float* __restrict__ cosv, const float* __restrict__ sinv, int heads,
                  int half) {
	int t = blockIdx.y;
	float* xh = x + (size_t(t) * heads + blockIdx.x) * 2 * half;
	const float* c = cosv + size_t(t) * half;
	const float* s = sinv + size_t(t) * half;
	for (int i = threadIdx.x; i < half; i += blockDim.x) {
		float a = xh[i], b = xh[i + half];
		xh[i] = __fsub_rn(__fmul_rn(a, c[i]), __fmul_rn(b, s[i]));
		xh[i + half] = __fadd_rn(__fmul_rn(b, c[i]), __fmul_rn(a, s[i]));
	}
}
FH_REGISTER(fh_rope)

// fh_kv_store_<type> writes the keys and values of T rows into their
// sequences' caches of a layer: row t, at position pos[t], into kcs[t] and
// vcs[t] at row (p mod rings[t]) when rings[t] > 0 (sliding layers), row p
// otherwise. Grid T, any block size; n = KV heads · dim.
#define FH_KV_STORE(name, T, CONV)                                                                              \
	FH_KERNEL name(T* const* __restrict__ kcs, T* const* __restrict__ vcs, const float* __restrict__ k,        \
	               const float* __restrict__ v, const int* __restrict__ pos, const int* __restrict__ rings, int n) { \
		int t = int(blockIdx.x), p = pos[t], ring = rings[t];                                                    \
		size_t row = size_t(ring > 0 ? p % ring : p);                                                            \
		T* kc = kcs[t];                                                                                          \
		T* vc = vcs[t];                                                                                          \
		for (int i = threadIdx.x; i < n; i += blockDim.x) {                                                      \
			kc[row * n + i] = CONV(k[size_t(t) * n + i]);                                                        \
			vc[row * n + i] = CONV(v[size_t(t) * n + i]);                                                        \
		}                                                                                                        \
	}                                                                                                            \
	FH_REGISTER(name)

FH_KV_STORE(fh_kv_store_f32, float, ident)
FH_KV_STORE(fh_kv_store_bf16, fh_bf16, f32_to_bf16)
FH_KV_STORE(fh_kv_store_f16, fh_f16, f32_to_f16)

// fh_gated_act: gate[i] = act(gate[i]) · up[i], act = GELU-tanh (gelu != 0)
// or SiLU, each in double like runtime/cpu. Grid-stride over n.
FH_KERNEL fh_gated_act(float* __restrict__ gate, const float* __restrict__ up, int n, int gelu) {
	for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
		double x = gate[i];
		float a;
		if (gelu) {
			const double c = 0.7978845608028654;  // sqrt(2/pi)
			a = float(0.5 * x * (1.0 + tanh(c * (x + 0.044715 * x * x * x))));
		} else {
			a = float(x / (1.0 + exp(-x)));
		}
		gate[i] = __fmul_rn(a, up[i]);
	}
}
FH_REGISTER(fh_gated_act)

// fh_add: x[i] += y[i]. Grid-stride over n.
FH_KERNEL fh_add(float* __restrict__ x, const float* __restrict__ y, int n) {
	for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) x[i] = __fadd_rn(x[i], y[i]);
}
FH_REGISTER(fh_add)

// fh_softcap: x[i] = cap · tanh(x[i] / cap), tanh in double as runtime/cpu.
FH_KERNEL fh_softcap(float* x, int n, float cap) {
	for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
		x[i] = __fmul_rn(cap, float(tanh(double(__fdiv_rn(x[i], cap)))));
}
FH_REGISTER(fh_softcap)
