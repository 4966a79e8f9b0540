// Deliberately broken kernels: the emulator tests (emulator_test.go) check
// that each mistake is reported instead of silently computing something.
// They are tiny and never launched by the backend.
#include "common.cuh"

// fh_selftest_divergent_barrier calls __syncthreads in a branch only the
// first half of the block takes (undefined behaviour on a GPU).
FH_KERNEL fh_selftest_divergent_barrier(float* out) {
	if (threadIdx.x < blockDim.x / 2) __syncthreads();
	out[threadIdx.x] = 1.0f;
}
FH_REGISTER(fh_selftest_divergent_barrier)

// fh_selftest_race reads a neighbour's shared-memory slot without a barrier
// between the write and the read: the result depends on thread order.
FH_KERNEL fh_selftest_race(float* out) {
	__shared__ float s[1024];
	s[threadIdx.x] = float(threadIdx.x);
	out[threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}
FH_REGISTER(fh_selftest_race)

// fh_selftest_shuffle_exited shuffles with the full mask after half of the
// warp has returned.
FH_KERNEL fh_selftest_shuffle_exited(float* out) {
	if (threadIdx.x >= 16) return;
	out[threadIdx.x] = __shfl_down_sync(FH_FULL_MASK, float(threadIdx.x), 1);
}
FH_REGISTER(fh_selftest_shuffle_exited)

// fh_selftest_dyn_smem writes n floats of dynamic shared memory and copies
// them out reversed (checks dynamic shared memory and its size limit).
FH_KERNEL fh_selftest_dyn_smem(float* out, int n) {
	FH_DYNAMIC_SMEM(float, s);
	for (int i = threadIdx.x; i < n; i += blockDim.x) s[i] = float(i);
	__syncthreads();
	for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = s[n - 1 - i];
}
FH_REGISTER(fh_selftest_dyn_smem)
