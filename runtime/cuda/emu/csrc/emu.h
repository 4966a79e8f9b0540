// emu.h is force-included (g++ -include emu.h) before every kernel source
// when the kernels are compiled for the CPU emulator. It supplies the CUDA
// C++ vocabulary the kernels use, implemented on top of the fiber scheduler
// in emu.cpp: one fiber per CUDA thread, the threads of a block switching
// only at barriers (__syncthreads, warp operations).
//
// Only what fhkit's kernels need is here; a kernel using anything else fails
// to compile for the emulator, which is the point.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#define CUEMU 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __restrict__ __restrict
#define __align__(n) alignas(n)
#define __launch_bounds__(...)
// Static shared memory is one copy per block: blocks run one after another
// on the launching thread (launches are serialized), so function-local
// statics are exactly per-block storage.
#define __shared__ static

struct dim3 {
	unsigned x = 1, y = 1, z = 1;
};
// CUDA's vector types, with its alignment (16-byte loads).
struct alignas(8) float2 {
	float x, y;
};
struct alignas(16) float4 {
	float x, y, z, w;
};
struct alignas(16) uint4 {
	unsigned x, y, z, w;
};
struct alignas(8) uint2 {
	unsigned x, y;
};

// The scheduler sets these before resuming a fiber.
extern dim3 threadIdx, blockIdx, blockDim, gridDim;
constexpr int warpSize = 32;

namespace cuemu {

// Barrier entry points (emu.cpp). warp_exchange publishes v for the warp,
// waits until every live lane of the warp arrived and returns the 32 values
// published in this round (indexed by lane).
void syncthreads();
const uint64_t* warp_exchange(unsigned mask, uint64_t v);
void* dyn_smem();
unsigned lane_id();
[[noreturn]] void trap(const char* what);

template <typename T>
inline uint64_t to_bits(T v) {
	static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type wider than 8 bytes");
	uint64_t b = 0;
	std::memcpy(&b, &v, sizeof(T));
	return b;
}

template <typename T>
inline T from_bits(uint64_t b) {
	T v;
	std::memcpy(&v, &b, sizeof(T));
	return v;
}

// shfl returns the value of lane src (computed by pick from this lane's
// index), or this lane's own value when pick says the source is outside
// the segment.
template <typename T, typename F>
inline T shfl(unsigned mask, T v, F pick) {
	const uint64_t* all = warp_exchange(mask, to_bits(v));
	int src = pick(int(lane_id()));
	if (src < 0) return v;
	return from_bits<T>(all[src]);
}

// Kernel registration: the trampoline unpacks cuLaunchKernel's
// kernelParams with the kernel's own parameter types, so the driver API
// needs no signature table.
using Invoke = void (*)(void* fn, void** params);
void register_kernel(const char* name, void* fn, Invoke inv, const size_t* sizes, const size_t* aligns, size_t n);

template <typename... A>
struct Invoker {
	template <size_t... I>
	static void call(void (*f)(A...), void** p, std::index_sequence<I...>) {
		f(*static_cast<std::decay_t<A>*>(p[I])...);
	}
	static void invoke(void* fn, void** p) {
		call(reinterpret_cast<void (*)(A...)>(fn), p, std::index_sequence_for<A...>{});
	}
};

struct Registrar {
	template <typename... A>
	Registrar(const char* name, void (*f)(A...)) {
		static const size_t sizes[] = {sizeof(std::decay_t<A>)..., 0};
		static const size_t aligns[] = {alignof(std::decay_t<A>)..., 0};
		register_kernel(name, reinterpret_cast<void*>(f), &Invoker<A...>::invoke, sizes, aligns, sizeof...(A));
	}
};

}  // namespace cuemu

#define CUEMU_REGISTER(name) static ::cuemu::Registrar cuemu_registrar_##name(#name, &name);
#define CUEMU_DYNAMIC_SMEM(T, var) T* var = reinterpret_cast<T*>(::cuemu::dyn_smem())

inline void __syncthreads() { cuemu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { cuemu::warp_exchange(mask, 0); }
inline void __trap() { cuemu::trap("__trap()"); }

template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = warpSize) {
	return cuemu::shfl(mask, v, [&](int lane) { return (lane / width) * width + (src % width + width) % width; });
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
	return cuemu::shfl(mask, v, [&](int lane) { return lane % width + int(delta) < width ? lane + int(delta) : -1; });
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
	return cuemu::shfl(mask, v, [&](int lane) { return lane % width >= int(delta) ? lane - int(delta) : -1; });
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int laneMask, int width = warpSize) {
	return cuemu::shfl(mask, v, [&](int lane) {
		int src = lane ^ laneMask;
		return src / width == lane / width ? src : -1;
	});
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
	const uint64_t* all = cuemu::warp_exchange(mask, pred != 0);
	unsigned b = 0;
	for (int i = 0; i < 32; i++)
		if ((mask >> i & 1) && all[i]) b |= 1u << i;
	return b;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == mask; }

// Atomics: fibers switch only at barriers, so a plain read-modify-write
// cannot be interleaved with another thread's.
template <typename T>
inline T atomicAdd(T* p, T v) {
	T old = *p;
	*p = old + v;
	return old;
}
template <typename T>
inline T atomicMax(T* p, T v) {
	T old = *p;
	if (v > old) *p = v;
	return old;
}
template <typename T>
inline T atomicMin(T* p, T v) {
	T old = *p;
	if (v < old) *p = v;
	return old;
}
template <typename T>
inline T atomicExch(T* p, T v) {
	T old = *p;
	*p = v;
	return old;
}
template <typename T>
inline T atomicCAS(T* p, T cmp, T v) {
	T old = *p;
	if (old == cmp) *p = v;
	return old;
}
inline void __threadfence() {}
inline void __threadfence_block() {}

// Bit casts and math intrinsics. glibc declares some __-prefixed names
// (e.g. __expf) without exporting them, so these are macros onto the
// standard functions: the emulator computes them exactly where the GPU
// approximates, which the tests' tolerances allow for.
inline float __uint_as_float(unsigned u) { return cuemu::from_bits<float>(u); }
inline unsigned __float_as_uint(float f) { return unsigned(cuemu::to_bits(f)); }
inline float __int_as_float(int u) { return cuemu::from_bits<float>(uint32_t(u)); }
inline int __float_as_int(float f) { return int(uint32_t(cuemu::to_bits(f))); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
#define __expf(x) std::exp(float(x))
#define __logf(x) std::log(float(x))
#define __fdividef(a, b) (float(a) / float(b))
#define __fmaf_rn(a, b, c) std::fma(float(a), float(b), float(c))
#define __fmul_rn(a, b) (float(a) * float(b))
#define __fadd_rn(a, b) (float(a) + float(b))
#define __fsub_rn(a, b) (float(a) - float(b))
#define __fdiv_rn(a, b) (float(a) / float(b))
#define __saturatef(x) std::fmin(std::fmax(float(x), 0.0f), 1.0f)
using std::cos;
using std::exp;
using std::sin;
using std::fabs;
using std::fmax;
using std::fmin;
using std::sqrt;
using std::tanh;
using ::expf;
using ::fabsf;
using ::fmaxf;
using ::fminf;
using ::sqrtf;
using ::tanhf;
using ::cosf;
using ::sinf;
using ::powf;
using ::logf;
using ::fmaf;
using ::floorf;
using ::ceilf;
using ::exp2f;
using ::log2f;
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
