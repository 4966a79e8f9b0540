// weights.cuh: loading 16/32-bit weight rows as float32, and the dot
// product of one row with an activation vector by one warp.
#pragma once
#include "common.cuh"

struct W8 {
	float v[8];
};

// Weight element types: fh_bf16 and fh_f16 are both uint16_t, so the
// loaders are selected by a tag, not by overloading.
enum { W_BF16, W_F16, W_F32 };

template <int K>
struct Wt;

template <>
struct Wt<W_BF16> {
	typedef fh_bf16 T;
	static __device__ __forceinline__ void load8(const T* p, W8& w) {
		uint4 u = *reinterpret_cast<const uint4*>(p);
		uint32_t a[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
		for (int i = 0; i < 4; i++) {
			w.v[2 * i] = __uint_as_float(a[i] << 16);
			w.v[2 * i + 1] = __uint_as_float(a[i] & 0xffff0000u);
		}
	}
	static __device__ __forceinline__ float load1(const T* p) { return bf16_to_f32(*p); }
};

template <>
struct Wt<W_F16> {
	typedef fh_f16 T;
	static __device__ __forceinline__ void load8(const T* p, W8& w) {
		uint4 u = *reinterpret_cast<const uint4*>(p);
		uint32_t a[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
		for (int i = 0; i < 4; i++) {
			w.v[2 * i] = f16_to_f32(fh_f16(a[i] & 0xffffu));
			w.v[2 * i + 1] = f16_to_f32(fh_f16(a[i] >> 16));
		}
	}
	static __device__ __forceinline__ float load1(const T* p) { return f16_to_f32(*p); }
};

template <>
struct Wt<W_F32> {
	typedef float T;
	static __device__ __forceinline__ void load8(const T* p, W8& w) {
		float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
		w.v[0] = a.x, w.v[1] = a.y, w.v[2] = a.z, w.v[3] = a.w;
		w.v[4] = b.x, w.v[5] = b.y, w.v[6] = b.z, w.v[7] = b.w;
	}
	static __device__ __forceinline__ float load1(const T* p) { return *p; }
};

__device__ __forceinline__ float dot8(const W8& w, const float* x) {
	float4 a = reinterpret_cast<const float4*>(x)[0], b = reinterpret_cast<const float4*>(x)[1];
	float s = w.v[0] * a.x;
	s = fmaf(w.v[1], a.y, s);
	s = fmaf(w.v[2], a.z, s);
	s = fmaf(w.v[3], a.w, s);
	s = fmaf(w.v[4], b.x, s);
	s = fmaf(w.v[5], b.y, s);
	s = fmaf(w.v[6], b.z, s);
	s = fmaf(w.v[7], b.w, s);
	return s;
}

// dot8_acc returns acc + w · x[0..8) as one FMA chain.
__device__ __forceinline__ float dot8_acc(const W8& w, const float* x, float acc) {
	float4 a = reinterpret_cast<const float4*>(x)[0], b = reinterpret_cast<const float4*>(x)[1];
	acc = fmaf(w.v[0], a.x, acc);
	acc = fmaf(w.v[1], a.y, acc);
	acc = fmaf(w.v[2], a.z, acc);
	acc = fmaf(w.v[3], a.w, acc);
	acc = fmaf(w.v[4], b.x, acc);
	acc = fmaf(w.v[5], b.y, acc);
	acc = fmaf(w.v[6], b.z, acc);
	return fmaf(w.v[7], b.w, acc);
}

// row_dot returns W[row, :] · x to every lane of the calling warp. With
// cols a multiple of 8 rows are 16-byte aligned and lanes load 8 weights
// at a time; otherwise they stride over single elements.
template <int K>
__device__ __forceinline__ float row_dot(const typename Wt<K>::T* __restrict__ wr, const float* __restrict__ x, int cols) {
	int lane = threadIdx.x & 31;
	float acc = 0.0f;
	if ((cols & 7) == 0) {
		for (int c = lane * 8; c < cols; c += 256) {
			W8 wv;
			Wt<K>::load8(wr + c, wv);
			acc += dot8(wv, x + c);
		}
	} else {
		for (int c = lane; c < cols; c += 32) acc = fmaf(Wt<K>::load1(wr + c), x[c], acc);
	}
	return warp_sum(acc);
}
