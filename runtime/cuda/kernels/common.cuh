// common.cuh: what every fhkit kernel shares, written once for both
// compilers: nvcc (PTX for compute_80) and g++ with the emulator's shim
// (emu/emu.h, which defines CUEMU). No CUDA headers are used, so the
// emulator build needs nothing but g++; 16-bit floats are plain uint16_t
// converted with bit operations.
#pragma once

#ifdef CUEMU
#define FH_KERNEL extern "C" __global__ void
#define FH_REGISTER(name) CUEMU_REGISTER(name)
#define FH_DYNAMIC_SMEM(T, var) CUEMU_DYNAMIC_SMEM(T, var)
#else
#include <stdint.h>
#define FH_KERNEL extern "C" __global__ void
#define FH_REGISTER(name)
// Dynamic shared memory: one extern array per kernel, viewed as T.
#define FH_DYNAMIC_SMEM(T, var)                                 \
	extern __shared__ __align__(16) unsigned char fh_dyn_smem[]; \
	T* var = reinterpret_cast<T*>(fh_dyn_smem)
#endif

#define FH_FULL_MASK 0xffffffffu
#define FH_NEG_INF __int_as_float(0xff800000)

typedef uint16_t fh_bf16;
typedef uint16_t fh_f16;

__device__ __forceinline__ float bf16_to_f32(fh_bf16 v) { return __uint_as_float(uint32_t(v) << 16); }

// Round to nearest even, as formats/dtype does (NaN stays NaN).
__device__ __forceinline__ fh_bf16 f32_to_bf16(float f) {
	uint32_t u = __float_as_uint(f);
	if ((u & 0x7fffffffu) > 0x7f800000u) return fh_bf16((u >> 16) | 0x40);
	u += 0x7fffu + ((u >> 16) & 1u);
	return fh_bf16(u >> 16);
}

// IEEE half → float, exact for every input (subnormals included).
__device__ __forceinline__ float f16_to_f32(fh_f16 h) {
	uint32_t sign = uint32_t(h & 0x8000u) << 16;
	uint32_t exp = (h >> 10) & 0x1fu;
	uint32_t man = h & 0x3ffu;
	if (exp == 0x1fu) return __uint_as_float(sign | 0x7f800000u | (man << 13));
	if (exp == 0) {
		// Subnormal or zero: man · 2^-24 is exact in float.
		float v = float(man) * 5.9604644775390625e-8f;
		return sign ? -v : v;
	}
	return __uint_as_float(sign | ((exp + 112u) << 23) | (man << 13));
}

// Float → IEEE half, round to nearest even (overflow → inf).
__device__ __forceinline__ fh_f16 f32_to_f16(float f) {
	uint32_t u = __float_as_uint(f);
	uint32_t sign = (u >> 16) & 0x8000u;
	uint32_t a = u & 0x7fffffffu;
	if (a > 0x7f800000u) return fh_f16(sign | 0x7e00u);
	if (a >= 0x477ff000u) return fh_f16(sign | 0x7c00u);  // rounds to ≥ 65520: inf
	if (a < 0x38800000u) {
		// Result is subnormal (or zero): scale by 2^24 and round to an integer.
		float v = __uint_as_float(a) * 16777216.0f;
		uint32_t m = uint32_t(v);
		float rem = v - float(m);
		if (rem > 0.5f || (rem == 0.5f && (m & 1u))) m++;
		return fh_f16(sign | m);
	}
	uint32_t m = a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u;
	return fh_f16(sign | (m >> 13));
}

// Sum over the 32 lanes of a warp; every lane gets the total.
__device__ __forceinline__ float warp_sum(float v) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FH_FULL_MASK, v, o);
	return v;
}

__device__ __forceinline__ float warp_max(float v) {
	for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FH_FULL_MASK, v, o));
	return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, ≤ 1024); every
// thread gets the total. scratch holds 32 floats of shared memory; the
// leading barrier makes back-to-back calls with the same scratch safe.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
	v = warp_sum(v);
	unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
	__syncthreads();
	if (lane == 0) scratch[warp] = v;
	__syncthreads();
	unsigned nw = blockDim.x >> 5;
	float t = lane < nw ? scratch[lane] : 0.0f;
	return warp_sum(t);
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
	v = warp_max(v);
	unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
	__syncthreads();
	if (lane == 0) scratch[warp] = v;
	__syncthreads();
	unsigned nw = blockDim.x >> 5;
	float t = lane < nw ? scratch[lane] : FH_NEG_INF;
	return warp_max(t);
}
