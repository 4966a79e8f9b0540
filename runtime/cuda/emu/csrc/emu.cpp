// emu.cpp: a CPU emulator of the part of the CUDA driver API that fhkit's
// Go backend uses, running fhkit's own kernels (compiled by g++ from the
// same .cu files nvcc turns into PTX, with emu.h force-included).
//
// Execution model. A launch runs synchronously: blocks one after another on
// the calling thread, each block as one fiber per CUDA thread. A fiber runs
// until it reaches a barrier (__syncthreads, or a warp operation such as a
// shuffle) or exits; when no fiber can run, the scheduler releases the
// barrier every waiting thread agrees on. Threads that wait at different
// barriers, a warp operation naming an exited lane, or a __syncthreads some
// threads never reach are reported as launch errors: they are bugs on a
// GPU too. Between two barriers the ready threads run in forward, reverse
// or shuffled order (cuemuControl "schedule"), so code that relies on an
// order the hardware does not promise gives different results.
//
// Device memory is host memory (malloc), so an AddressSanitizer build
// catches out-of-bounds device accesses. Limits of real hardware are
// enforced at launch: ≤ 1024 threads per block, block and grid dimension
// limits, and dynamic shared memory ≤ 48 KiB unless the kernel opted in
// with cuFuncSetAttribute (up to 99 KiB, the smallest opt-in maximum among
// sm_80..sm_90).
//
// Stream capture records launches, copies and memsets into a graph (kernel
// arguments copied at capture time, as CUDA does); cuGraphLaunch replays
// them.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "emu.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define CUEMU_ASAN 1
#else
#define CUEMU_ASAN 0
#endif

#define CUEMU_EXPORT extern "C" __attribute__((visibility("default")))

dim3 threadIdx, blockIdx, blockDim, gridDim;

typedef int CUresult;
enum : int {
	CUDA_SUCCESS = 0,
	CUDA_ERROR_INVALID_VALUE = 1,
	CUDA_ERROR_OUT_OF_MEMORY = 2,
	CUDA_ERROR_NOT_INITIALIZED = 3,
	CUDA_ERROR_NO_DEVICE = 100,
	CUDA_ERROR_INVALID_DEVICE = 101,
	CUDA_ERROR_INVALID_IMAGE = 200,
	CUDA_ERROR_INVALID_CONTEXT = 201,
	CUDA_ERROR_INVALID_PTX = 218,
	CUDA_ERROR_INVALID_HANDLE = 400,
	CUDA_ERROR_NOT_FOUND = 500,
	CUDA_ERROR_ILLEGAL_ADDRESS = 700,
	CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701,
	CUDA_ERROR_LAUNCH_FAILED = 719,
	CUDA_ERROR_NOT_SUPPORTED = 801,
	CUDA_ERROR_STREAM_CAPTURE_INVALIDATED = 901,
	CUDA_ERROR_UNKNOWN = 999,
};

namespace {

// ---------------------------------------------------------------- limits

constexpr unsigned kMaxThreads = 1024, kMaxBlockX = 1024, kMaxBlockY = 1024, kMaxBlockZ = 64;
constexpr unsigned kMaxGridX = 0x7fffffffu, kMaxGridY = 65535, kMaxGridZ = 65535;
constexpr int kDefaultSmem = 48 * 1024;
constexpr int kOptinSmem = 101376;  // sm_86 / sm_89; sm_80 and sm_90 allow more
constexpr size_t kStackSize = 64 * 1024;

// ---------------------------------------------------------------- kernels

struct Kernel {
	std::string name;
	void* fn;
	cuemu::Invoke invoke;
	std::vector<size_t> sizes, aligns;
	int max_dyn_smem = kDefaultSmem;
};

std::map<std::string, Kernel>& registry() {
	static std::map<std::string, Kernel> r;
	return r;
}

// ---------------------------------------------------------------- state

std::recursive_mutex g_mu;  // every API call; launches are serialized
std::string g_last_error;   // detail of the last failed launch
int g_schedule = 0;         // 0 forward, 1 reverse, 2 shuffled
uint64_t g_seed = 1;
size_t g_mem_limit = size_t(8) << 30;
size_t g_mem_used = 0;
int g_devices = 1;
bool g_inited = false;
std::map<uintptr_t, size_t> g_allocs;  // device pointer → size

void set_error(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void set_error(const char* fmt, ...) {
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	g_last_error = buf;
}

uint64_t rng_next(uint64_t& s) {
	s ^= s << 13;
	s ^= s >> 7;
	s ^= s << 17;
	return s;
}

// ---------------------------------------------------------------- fibers

extern "C" void cuemu_switch(void** save_sp, void* to_sp);
extern "C" void cuemu_fiber_start();

// cuemu_switch saves the callee-saved registers on the current stack,
// stores the stack pointer in *save_sp and resumes the stack to_sp, which
// was saved the same way (or prepared by prepare_stack). MXCSR and the x87
// control word are not switched: kernels never change them.
asm(R"(
	.text
	.globl cuemu_switch
	.hidden cuemu_switch
	.type cuemu_switch, @function
cuemu_switch:
	pushq %rbp
	pushq %rbx
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	movq %rsp, (%rdi)
	movq %rsi, %rsp
	popq %r15
	popq %r14
	popq %r13
	popq %r12
	popq %rbx
	popq %rbp
	ret
	.size cuemu_switch, .-cuemu_switch

	.globl cuemu_fiber_start
	.hidden cuemu_fiber_start
	.type cuemu_fiber_start, @function
cuemu_fiber_start:
	movq %r12, %rdi
	call cuemu_fiber_main
	ud2
	.size cuemu_fiber_start, .-cuemu_fiber_start
)");

enum State : uint8_t { READY, WAIT_BLOCK, WAIT_WARP, DONE };

struct Fiber {
	void* sp = nullptr;
	uint8_t* stack = nullptr;  // usable stack (above the guard page)
	State state = READY;
	unsigned tid = 0;       // linear thread index in the block
	unsigned warp_mask = 0;  // mask given at the pending warp operation
	uint64_t warp_ops = 0;   // warp operations completed
	dim3 idx;
	void* asan_fake = nullptr;
};

struct Block {
	std::vector<Fiber>* fibers;
	Fiber* cur = nullptr;
	void* sched_sp = nullptr;
	const void* sched_stack_bottom = nullptr;
	size_t sched_stack_size = 0;
	void* sched_fake = nullptr;
	Kernel* kernel = nullptr;
	void** params = nullptr;
	void* dyn_smem = nullptr;
	bool failed = false;
	// warp exchange slots: [warp][parity][lane]
	std::vector<uint64_t> slots;
};

Block* g_block = nullptr;
std::vector<uint8_t*> g_stacks;  // mmap'd stacks, reused across launches

uint8_t* stack_for(size_t i) {
	while (g_stacks.size() <= i) {
		size_t page = size_t(sysconf(_SC_PAGESIZE));
		void* m = mmap(nullptr, kStackSize + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (m == MAP_FAILED) return nullptr;
		// Guard page below the stack: an overflow faults instead of
		// corrupting the next fiber's stack.
		mprotect(m, page, PROT_NONE);
		g_stacks.push_back(static_cast<uint8_t*>(m) + page);
	}
	return g_stacks[i];
}

void prepare_stack(Fiber& f) {
#if CUEMU_ASAN
	// A reused stack may carry poison from the previous fiber's frames.
	__asan_unpoison_memory_region(f.stack, kStackSize);
#endif
	uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack) + kStackSize) & ~uintptr_t(15);
	// cuemu_switch pops r15 r14 r13 r12 rbx rbp and returns into
	// cuemu_fiber_start with rsp 16-byte aligned (the SysV call convention
	// then holds at cuemu_fiber_main's entry).
	uint64_t* sp = reinterpret_cast<uint64_t*>(top - 72);
	for (int i = 0; i < 9; i++) sp[i] = 0;
	sp[3] = reinterpret_cast<uint64_t>(&f);  // r12
	sp[6] = reinterpret_cast<uint64_t>(&cuemu_fiber_start);
	f.sp = sp;
}

void switch_to_fiber(Block& b, Fiber& f) {
	b.cur = &f;
	threadIdx = f.idx;
#if CUEMU_ASAN
	__sanitizer_start_switch_fiber(&b.sched_fake, f.stack, kStackSize);
#endif
	cuemu_switch(&b.sched_sp, f.sp);
#if CUEMU_ASAN
	__sanitizer_finish_switch_fiber(b.sched_fake, nullptr, nullptr);
#endif
	b.cur = nullptr;
}

// yield returns from the running fiber to the scheduler.
void yield(Block& b, Fiber& f) {
#if CUEMU_ASAN
	__sanitizer_start_switch_fiber(f.state == DONE ? nullptr : &f.asan_fake, b.sched_stack_bottom, b.sched_stack_size);
#endif
	cuemu_switch(&f.sp, b.sched_sp);
#if CUEMU_ASAN
	__sanitizer_finish_switch_fiber(f.asan_fake, nullptr, nullptr);
#endif
}

[[noreturn]] void fail_in_kernel(const char* what) {
	Block& b = *g_block;
	Fiber& f = *b.cur;
	if (!b.failed) {
		set_error("kernel %s, block (%u,%u,%u), thread (%u,%u,%u): %s", b.kernel->name.c_str(), blockIdx.x, blockIdx.y,
		          blockIdx.z, f.idx.x, f.idx.y, f.idx.z, what);
		b.failed = true;
	}
	f.state = DONE;
	yield(b, f);
	abort();  // never resumed
}

}  // namespace

extern "C" __attribute__((used, visibility("hidden"))) void cuemu_fiber_main(Fiber* f) {
	Block& b = *g_block;
#if CUEMU_ASAN
	__sanitizer_finish_switch_fiber(nullptr, &b.sched_stack_bottom, &b.sched_stack_size);
#endif
	b.kernel->invoke(b.kernel->fn, b.params);
	f->state = DONE;
	yield(b, *f);
	abort();
}

namespace cuemu {

void syncthreads() {
	Block& b = *g_block;
	b.cur->state = WAIT_BLOCK;
	yield(b, *b.cur);
}

const uint64_t* warp_exchange(unsigned mask, uint64_t v) {
	Block& b = *g_block;
	Fiber& f = *b.cur;
	unsigned lane = f.tid & 31, warp = f.tid >> 5;
	if (!(mask >> lane & 1)) fail_in_kernel("warp operation whose mask does not include the calling lane");
	// Two slot sets alternate: a lane can only publish round n+2 after every
	// lane passed round n+1, i.e. after all of them read round n.
	uint64_t* s = &b.slots[(size_t(warp) * 2 + (f.warp_ops & 1)) * 32];
	s[lane] = v;
	f.state = WAIT_WARP;
	f.warp_mask = mask;
	yield(b, f);
	f.warp_ops++;
	return s;
}

void* dyn_smem() { return g_block->dyn_smem; }

unsigned lane_id() { return g_block->cur->tid & 31; }

void trap(const char* what) { fail_in_kernel(what); }

void register_kernel(const char* name, void* fn, Invoke inv, const size_t* sizes, const size_t* aligns, size_t n) {
	Kernel k;
	k.name = name;
	k.fn = fn;
	k.invoke = inv;
	k.sizes.assign(sizes, sizes + n);
	k.aligns.assign(aligns, aligns + n);
	registry()[name] = k;
}

}  // namespace cuemu

namespace {

// release_warp checks the warp operation every live lane of warp w waits
// at and makes those lanes ready. It returns 1 when released, 0 when some
// live lane is not at a warp operation, −1 (with g_last_error) on a bug.
int release_warp(Block& b, unsigned w, unsigned nthreads) {
	std::vector<Fiber>& fs = *b.fibers;
	unsigned lo = w * 32, hi = std::min(nthreads, lo + 32);
	unsigned waiting = 0, alive = 0, mask = 0, done = 0;
	bool same = true;
	for (unsigned t = lo; t < hi; t++) {
		Fiber& f = fs[t];
		if (f.state == DONE) {
			done |= 1u << (t - lo);
			continue;
		}
		alive |= 1u << (t - lo);
		if (f.state != WAIT_WARP) continue;
		if (waiting && (f.warp_mask != mask || f.warp_ops != fs[lo + __builtin_ctz(waiting)].warp_ops)) same = false;
		waiting |= 1u << (t - lo);
		mask = f.warp_mask;
	}
	if (!waiting || waiting != alive) return 0;
	if (!same) {
		set_error("kernel %s, block (%u,%u,%u), warp %u: lanes wait at different warp operations (divergent shuffle or mask)",
		          b.kernel->name.c_str(), blockIdx.x, blockIdx.y, blockIdx.z, w);
		return -1;
	}
	if (mask & done) {
		set_error("kernel %s, block (%u,%u,%u), warp %u: warp operation mask 0x%08x names lanes that have exited (0x%08x)",
		          b.kernel->name.c_str(), blockIdx.x, blockIdx.y, blockIdx.z, w, mask, mask & done);
		return -1;
	}
	unsigned present = hi - lo == 32 ? 0xffffffffu : (1u << (hi - lo)) - 1;
	if (mask & ~present) {
		set_error("kernel %s, block (%u,%u,%u), warp %u: warp operation mask 0x%08x names lanes beyond the block (%u threads)",
		          b.kernel->name.c_str(), blockIdx.x, blockIdx.y, blockIdx.z, w, mask, nthreads);
		return -1;
	}
	for (unsigned t = lo; t < hi; t++)
		if (fs[t].state == WAIT_WARP) fs[t].state = READY;
	return 1;
}

// run_block runs every thread of the current block to completion. It
// returns false (with g_last_error set) on a kernel error or a deadlock.
//
// Between two block barriers the warps run one after another, each until
// all its lanes reach __syncthreads or exit (warps are independent between
// block barriers, so this is a legal GPU schedule; it also keeps one
// warp's 32 stacks hot in the cache). Within a warp, the ready lanes run in
// the schedule's order between warp operations; the warp order follows
// the schedule too.
bool run_block(Block& b, unsigned nthreads, uint64_t& rng) {
	std::vector<Fiber>& fs = *b.fibers;
	for (unsigned t = 0; t < nthreads; t++) {
		Fiber& f = fs[t];
		f.state = READY;
		f.tid = t;
		f.warp_ops = 0;
		f.asan_fake = nullptr;
		f.idx.x = t % blockDim.x;
		f.idx.y = (t / blockDim.x) % blockDim.y;
		f.idx.z = t / (blockDim.x * blockDim.y);
		prepare_stack(f);
	}
	const unsigned nwarps = (nthreads + 31) / 32;
	std::vector<unsigned> warps(nwarps), lanes;
	lanes.reserve(32);
	for (;;) {
		for (unsigned w = 0; w < nwarps; w++) warps[w] = w;
		if (g_schedule == 1) std::reverse(warps.begin(), warps.end());
		if (g_schedule == 2)
			for (size_t i = warps.size(); i > 1; i--) std::swap(warps[i - 1], warps[rng_next(rng) % i]);
		for (unsigned w : warps) {
			unsigned lo = w * 32, hi = std::min(nthreads, lo + 32);
			for (;;) {
				lanes.clear();
				for (unsigned t = lo; t < hi; t++)
					if (fs[t].state == READY) lanes.push_back(t);
				if (g_schedule == 1) std::reverse(lanes.begin(), lanes.end());
				if (g_schedule == 2)
					for (size_t i = lanes.size(); i > 1; i--) std::swap(lanes[i - 1], lanes[rng_next(rng) % i]);
				for (unsigned t : lanes) {
					switch_to_fiber(b, fs[t]);
					if (b.failed) return false;
				}
				int r = release_warp(b, w, nthreads);
				if (r < 0) return false;
				if (r == 0) break;
			}
		}
		// Every warp is now at __syncthreads, exited, or stuck.
		unsigned live = 0, at_block = 0;
		for (unsigned t = 0; t < nthreads; t++) {
			if (fs[t].state != DONE) live++;
			if (fs[t].state == WAIT_BLOCK) at_block++;
		}
		if (live == 0) return true;
		if (at_block == live) {
			if (live != nthreads) {
				set_error("kernel %s, block (%u,%u,%u): __syncthreads while %u of %u threads have exited", b.kernel->name.c_str(),
				          blockIdx.x, blockIdx.y, blockIdx.z, nthreads - live, nthreads);
				return false;
			}
			for (unsigned t = 0; t < nthreads; t++) fs[t].state = READY;
			continue;
		}
		set_error("kernel %s, block (%u,%u,%u): deadlock: %u threads at __syncthreads, %u at warp operations of partly "
		          "diverged warps (a barrier inside a branch)",
		          b.kernel->name.c_str(), blockIdx.x, blockIdx.y, blockIdx.z, at_block, live - at_block);
		return false;
	}
}

// ---------------------------------------------------------------- handles

struct Module {
	std::set<std::string> entries;  // .entry names in the PTX
};

struct Function {
	Kernel* kernel;
};

struct Node {
	enum Kind { LAUNCH, COPY, SET8, SET32 } kind;
	Function* fn = nullptr;
	unsigned grid[3] = {}, block[3] = {};
	unsigned smem = 0;
	std::vector<uint8_t> args;  // argument values, at the kernel's alignment
	std::vector<size_t> offs;
	void* dst = nullptr;
	const void* src = nullptr;
	size_t n = 0;
	uint32_t value = 0;
};

struct Graph {
	std::vector<Node> nodes;
};

struct Stream {
	Graph* capture = nullptr;  // non-null while capturing
};

struct Event {
	std::chrono::steady_clock::time_point t;
	bool recorded = false;
};

int g_ctx_token;  // the one primary context's handle points here

bool valid_range(const void* p, size_t n) {
	if (n == 0) return true;
	uintptr_t a = reinterpret_cast<uintptr_t>(p);
	auto it = g_allocs.upper_bound(a);
	if (it == g_allocs.begin()) return false;
	--it;
	return a >= it->first && a + n <= it->first + it->second;
}

CUresult launch(Function* fn, const unsigned grid[3], const unsigned block[3], unsigned smem, void** params) {
	Kernel* k = fn->kernel;
	unsigned nthreads = block[0] * block[1] * block[2];
	if (!grid[0] || !grid[1] || !grid[2] || !block[0] || !block[1] || !block[2]) {
		set_error("launch of %s: zero grid or block dimension", k->name.c_str());
		return CUDA_ERROR_INVALID_VALUE;
	}
	if (block[0] > kMaxBlockX || block[1] > kMaxBlockY || block[2] > kMaxBlockZ || nthreads > kMaxThreads) {
		set_error("launch of %s: block (%u,%u,%u) exceeds the limits (x,y ≤ 1024, z ≤ 64, ≤ 1024 threads)", k->name.c_str(),
		          block[0], block[1], block[2]);
		return CUDA_ERROR_INVALID_VALUE;
	}
	if (grid[0] > kMaxGridX || grid[1] > kMaxGridY || grid[2] > kMaxGridZ) {
		set_error("launch of %s: grid (%u,%u,%u) exceeds the limits (x < 2^31, y,z ≤ 65535)", k->name.c_str(), grid[0], grid[1],
		          grid[2]);
		return CUDA_ERROR_INVALID_VALUE;
	}
	if (int(smem) > k->max_dyn_smem || smem > unsigned(kOptinSmem)) {
		set_error("launch of %s: %u bytes of dynamic shared memory, the kernel allows %d (cuFuncSetAttribute "
		          "MAX_DYNAMIC_SHARED_SIZE_BYTES opts in up to %d)",
		          k->name.c_str(), smem, k->max_dyn_smem, kOptinSmem);
		return CUDA_ERROR_INVALID_VALUE;
	}
	if (!k->sizes.empty() && !params) {
		set_error("launch of %s: kernelParams is NULL", k->name.c_str());
		return CUDA_ERROR_INVALID_VALUE;
	}
	std::vector<Fiber> fibers(nthreads);
	Block b;
	b.fibers = &fibers;
	b.kernel = k;
	b.params = params;
	b.slots.assign(size_t((nthreads + 31) / 32) * 2 * 32, 0);
	for (unsigned t = 0; t < nthreads; t++) {
		fibers[t].stack = stack_for(t);
		if (!fibers[t].stack) {
			set_error("launch of %s: cannot map %u fiber stacks", k->name.c_str(), nthreads);
			return CUDA_ERROR_OUT_OF_MEMORY;
		}
	}
	// Shared memory starts as garbage on a GPU: NaN-pattern bytes make a
	// read before write visible. Allocated exactly, so ASan sees overruns.
	uint8_t* dyn = static_cast<uint8_t*>(malloc(smem ? smem : 1));
	if (smem) memset(dyn, 0xff, smem);
	b.dyn_smem = smem ? dyn : nullptr;
	blockDim.x = block[0];
	blockDim.y = block[1];
	blockDim.z = block[2];
	gridDim.x = grid[0];
	gridDim.y = grid[1];
	gridDim.z = grid[2];
	uint64_t rng = g_seed * 0x9E3779B97F4A7C15ull + 1;
	g_block = &b;
	bool ok = true;
	for (unsigned z = 0; z < grid[2] && ok; z++)
		for (unsigned y = 0; y < grid[1] && ok; y++)
			for (unsigned x = 0; x < grid[0] && ok; x++) {
				blockIdx.x = x;
				blockIdx.y = y;
				blockIdx.z = z;
				ok = run_block(b, nthreads, rng);
			}
	g_block = nullptr;
	free(dyn);
	if (!ok) {
		fprintf(stderr, "cuemu: %s\n", g_last_error.c_str());
		return CUDA_ERROR_LAUNCH_FAILED;
	}
	return CUDA_SUCCESS;
}

CUresult replay(Graph* g) {
	for (Node& n : g->nodes) {
		CUresult r = CUDA_SUCCESS;
		switch (n.kind) {
		case Node::LAUNCH: {
			std::vector<void*> ptrs(n.offs.size());
			for (size_t i = 0; i < ptrs.size(); i++) ptrs[i] = n.args.data() + n.offs[i];
			r = launch(n.fn, n.grid, n.block, n.smem, ptrs.data());
			break;
		}
		case Node::COPY:
			memmove(n.dst, n.src, n.n);
			break;
		case Node::SET8:
			memset(n.dst, int(n.value), n.n);
			break;
		case Node::SET32:
			for (size_t i = 0; i < n.n; i++) static_cast<uint32_t*>(n.dst)[i] = n.value;
			break;
		}
		if (r != CUDA_SUCCESS) return r;
	}
	return CUDA_SUCCESS;
}

CUresult copy(void* dst, const void* src, size_t n, Stream* s, bool dst_dev, bool src_dev) {
	g_last_error.clear();
	if (n && (!dst || !src)) return CUDA_ERROR_INVALID_VALUE;
	if ((dst_dev && !valid_range(dst, n)) || (src_dev && !valid_range(src, n))) {
		set_error("copy of %zu bytes outside a device allocation", n);
		return CUDA_ERROR_INVALID_VALUE;
	}
	if (s && s->capture) {
		Node nd;
		nd.kind = Node::COPY;
		nd.dst = dst;
		nd.src = src;
		nd.n = n;
		s->capture->nodes.push_back(nd);
		return CUDA_SUCCESS;
	}
	memmove(dst, src, n);
	return CUDA_SUCCESS;
}

CUresult memset_n(void* dst, uint32_t v, size_t n, size_t elem, Stream* s) {
	g_last_error.clear();
	if (!valid_range(dst, n * elem)) {
		set_error("memset of %zu bytes outside a device allocation", n * elem);
		return CUDA_ERROR_INVALID_VALUE;
	}
	if (s && s->capture) {
		Node nd;
		nd.kind = elem == 1 ? Node::SET8 : Node::SET32;
		nd.dst = dst;
		nd.n = n;
		nd.value = v;
		s->capture->nodes.push_back(nd);
		return CUDA_SUCCESS;
	}
	if (elem == 1)
		memset(dst, int(v & 0xff), n);
	else
		for (size_t i = 0; i < n; i++) static_cast<uint32_t*>(dst)[i] = v;
	return CUDA_SUCCESS;
}

const char* error_name(CUresult r) {
	switch (r) {
	case CUDA_SUCCESS: return "CUDA_SUCCESS";
	case CUDA_ERROR_INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
	case CUDA_ERROR_OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
	case CUDA_ERROR_NOT_INITIALIZED: return "CUDA_ERROR_NOT_INITIALIZED";
	case CUDA_ERROR_NO_DEVICE: return "CUDA_ERROR_NO_DEVICE";
	case CUDA_ERROR_INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
	case CUDA_ERROR_INVALID_IMAGE: return "CUDA_ERROR_INVALID_IMAGE";
	case CUDA_ERROR_INVALID_CONTEXT: return "CUDA_ERROR_INVALID_CONTEXT";
	case CUDA_ERROR_INVALID_PTX: return "CUDA_ERROR_INVALID_PTX";
	case CUDA_ERROR_INVALID_HANDLE: return "CUDA_ERROR_INVALID_HANDLE";
	case CUDA_ERROR_NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
	case CUDA_ERROR_ILLEGAL_ADDRESS: return "CUDA_ERROR_ILLEGAL_ADDRESS";
	case CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: return "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES";
	case CUDA_ERROR_LAUNCH_FAILED: return "CUDA_ERROR_LAUNCH_FAILED";
	case CUDA_ERROR_NOT_SUPPORTED: return "CUDA_ERROR_NOT_SUPPORTED";
	case CUDA_ERROR_STREAM_CAPTURE_INVALIDATED: return "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED";
	default: return nullptr;
	}
}

const char* error_string(CUresult r) {
	switch (r) {
	case CUDA_SUCCESS: return "no error";
	case CUDA_ERROR_INVALID_VALUE: return "invalid argument";
	case CUDA_ERROR_OUT_OF_MEMORY: return "out of memory";
	case CUDA_ERROR_NOT_INITIALIZED: return "initialization error";
	case CUDA_ERROR_NO_DEVICE: return "no CUDA-capable device is detected";
	case CUDA_ERROR_INVALID_DEVICE: return "invalid device ordinal";
	case CUDA_ERROR_INVALID_IMAGE: return "device kernel image is invalid";
	case CUDA_ERROR_INVALID_CONTEXT: return "invalid device context";
	case CUDA_ERROR_INVALID_PTX: return "a PTX JIT compilation failed";
	case CUDA_ERROR_INVALID_HANDLE: return "invalid resource handle";
	case CUDA_ERROR_NOT_FOUND: return "named symbol not found";
	case CUDA_ERROR_ILLEGAL_ADDRESS: return "an illegal memory access was encountered";
	case CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: return "too many resources requested for launch";
	case CUDA_ERROR_LAUNCH_FAILED: return "unspecified launch failure";
	case CUDA_ERROR_NOT_SUPPORTED: return "operation not supported";
	case CUDA_ERROR_STREAM_CAPTURE_INVALIDATED: return "operation failed due to a previous error during capture";
	default: return nullptr;
	}
}

// write_log copies msg into a JIT log buffer option pair.
void write_log(unsigned n, int* opts, void** vals, int buf_opt, int size_opt, const std::string& msg) {
	char* buf = nullptr;
	size_t size = 0;
	for (unsigned i = 0; i < n; i++) {
		if (opts[i] == buf_opt) buf = static_cast<char*>(vals[i]);
		if (opts[i] == size_opt) size = reinterpret_cast<uintptr_t>(vals[i]);
	}
	if (!buf || !size) return;
	size_t m = std::min(size - 1, msg.size());
	memcpy(buf, msg.data(), m);
	buf[m] = 0;
	for (unsigned i = 0; i < n; i++)
		if (opts[i] == size_opt) vals[i] = reinterpret_cast<void*>(uintptr_t(m + 1));
}

#define LOCK std::lock_guard<std::recursive_mutex> lock_(g_mu)
#define NEED_INIT \
	if (!g_inited) return CUDA_ERROR_NOT_INITIALIZED

}  // namespace

// ---------------------------------------------------------------- driver API

CUEMU_EXPORT CUresult cuInit(unsigned flags) {
	LOCK;
	if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
	if (g_devices == 0) return CUDA_ERROR_NO_DEVICE;
	g_inited = true;
	return CUDA_SUCCESS;
}

CUEMU_EXPORT CUresult cuDriverGetVersion(int* v) {
	if (!v) return CUDA_ERROR_INVALID_VALUE;
	*v = 11080;
	return CUDA_SUCCESS;
}

CUEMU_EXPORT CUresult cuDeviceGetCount(int* n) {
	LOCK;
	NEED_INIT;
	*n = g_devices;
	return CUDA_SUCCESS;
}

CUEMU_EXPORT CUresult cuDeviceGet(int* dev, int ordinal) {
	LOCK;
	NEED_INIT;
	if (ordinal < 0 || ordinal >= g_devices) return CUDA_ERROR_INVALID_DEVICE;
	*dev = ordinal;
	return CUDA_SUCCESS;
}

CUEMU_EXPORT CUresult cuDeviceGetName(char* name, int len, int dev) {
	LOCK;
	NEED_INIT;
	if (dev < 0 || dev >= g_devices) return CUDA_ERROR_INVALID_DEVICE;
	snprintf(name, size_t(len), "fhkit CUDA emulator%s", CUEMU_ASAN ? " +ASan" : "");
	return CUDA_SUCCESS;
}

CUEMU_EXPORT CUresult cuDeviceTotalMem_v2(size_t* bytes, int dev) {
	LOCK;
	NEED_INIT;
	if (dev < 0 || dev >= g_devices) return CUDA_ERROR_INVALID_DEVICE;
	*bytes = g_mem_limit;
	return CUDA_SUCCESS;
}

CUEMU_EXPORT CUresult cuDeviceGetAttribute(int* v, int attr, int dev) {
	LOCK;
	NEED_INIT;
	if (dev < 0 || dev >= g_devices) return CUDA_ERROR_INVALID_DEVICE;
	switch (attr) {
	case 1: *v = kMaxThreads; break;  // MAX_THREADS_PER_BLOCK
	case 2: *v = kMaxBlockX; break;
	case 3: *v = kMaxBlockY; break;
	case 4: *v = kMaxBlockZ; break;
	case 5: *v = int(kMaxGridX); break;
	case 6: *v = kMaxGridY; break;
	case 7: *v = kMaxGridZ; break;
	case 8: *v = kDefaultSmem; break;  // MAX_SHARED_MEMORY_PER_BLOCK
	case 10: *v = 32; break;           // WARP_SIZE
	case 16: *v = 1; break;            // MULTIPROCESSOR_COUNT
	case 75: *v = 8; break;            // COMPUTE_CAPABILITY_MAJOR
	case 76: *v = 0; break;            // COMPUTE_CAPABILITY_MINOR
	case 97: *v = kOptinSmem; break;   // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
	default: return CUDA_ERROR_INVALID_VALUE;
	}
	return CUDA_SUCCESS;
}

CUEMU_EXPORT CUresult cuDevicePrimaryCtxRetain(void** ctx, int dev) {
	LOCK;
	NEED_INIT;
	if (dev < 0 || dev >= g_devices) return CUDA_ERROR_INVALID_DEVICE;
	*ctx = &g_ctx_token;
	return CUDA_SUCCESS;
}

CUEMU_EXPORT CUresult cuDevicePrimaryCtxRelease_v2(int dev) {
	LOCK;
	NEED_INIT;
	return dev < 0 || dev >= g_devices ? CUDA_ERROR_INVALID_DEVICE : CUDA_SUCCESS;
}

CUEMU_EXPORT CUresult cuCtxSetCurrent(void* ctx) {
	LOCK;
	NEED_INIT;
	return ctx == nullptr || ctx == &g_ctx_token ? CUDA_SUCCESS : CUDA_ERROR_INVALID_CONTEXT;
}

CUEMU_EXPORT CUresult cuCtxSynchronize() { return CUDA_SUCCESS; }

CUEMU_EXPORT CUresult cuModuleLoadDataEx(void** mod, const void* image, unsigned nopts, int* opts, void** vals) {
	LOCK;
	NEED_INIT;
	if (!mod || !image) return CUDA_ERROR_INVALID_VALUE;
	// The emulator cannot JIT PTX, but it checks that the image is PTX text
	// and remembers its entry points, so cuModuleGetFunction only finds
	// kernels that are both in the PTX and compiled into the emulator.
	std::string ptx(static_cast<const char*>(image));
	if (ptx.find(".version") == std::string::npos || ptx.find(".target") == std::string::npos) {
		write_log(nopts, opts, vals, 5, 6, "ptxas fatal   : emulator: image is not PTX text (no .version/.target directive)");
		return CUDA_ERROR_INVALID_PTX;
	}
	Module* m = new Module;
	size_t p = 0;
	while ((p = ptx.find(".entry ", p)) != std::string::npos) {
		p += 7;
		size_t e = ptx.find_first_of("( \t\n", p);
		m->entries.insert(ptx.substr(p, e - p));
	}
	write_log(nopts, opts, vals, 3, 4, "emulator: PTX accepted");
	*mod = m;
	return CUDA_SUCCESS;
}

CUEMU_EXPORT CUresult cuModuleLoadData(void** mod, const void* image) { return cuModuleLoadDataEx(mod, image, 0, nullptr, nullptr); }

CUEMU_EXPORT CUresult cuModuleUnload(void* mod) {
	LOCK;
	delete static_cast<Module*>(mod);
	return CUDA_SUCCESS;
}

CUEMU_EXPORT CUresult cuModuleGetFunction(void** fn, void* mod, const char* name) {
	LOCK;
	NEED_INIT;
	g_last_error.clear();
	Module* m = static_cast<Module*>(mod);
	if (!m || !fn || !name) return CUDA_ERROR_INVALID_VALUE;
	if (!m->entries.count(name)) return CUDA_ERROR_NOT_FOUND;
	auto it = registry().find(name);
	if (it == registry().end()) {
		set_error("kernel %s is in the PTX but was not compiled into the emulator (missing FH_REGISTER?)", name);
		fprintf(stderr, "cuemu: %s\n", g_last_error.c_str());
		return CUDA_ERROR_NOT_FOUND;
	}
	*fn = new Function{&it->second};
	return CUDA_SUCCESS;
}

CUEMU_EXPORT CUresult cuFuncSetAttribute(void* fn, int attr, int value) {
	LOCK;
	Function* f = static_cast<Function*>(fn);
	if (!f) return CUDA_ERROR_INVALID_HANDLE;
	if (attr != 8) return CUDA_ERROR_NOT_SUPPORTED;  // MAX_DYNAMIC_SHARED_SIZE_BYTES
	if (value < 0 || value > kOptinSmem) return CUDA_ERROR_INVALID_VALUE;
	f->kernel->max_dyn_smem = value;
	return CUDA_SUCCESS;
}

CUEMU_EXPORT CUresult cuMemAlloc_v2(uint64_t* dptr, size_t n) {
	LOCK;
	NEED_INIT;
	if (!dptr || n == 0) return CUDA_ERROR_INVALID_VALUE;
	if (n > g_mem_limit - g_mem_used) return CUDA_ERROR_OUT_OF_MEMORY;
	void* p = nullptr;
	if (posix_memalign(&p, 256, n) != 0) return CUDA_ERROR_OUT_OF_MEMORY;
	// Fresh device memory is not zeroed on a GPU either.
	memset(p, 0xa5, n);
	g_mem_used += n;
	g_allocs[reinterpret_cast<uintptr_t>(p)] = n;
	*dptr = reinterpret_cast<uintptr_t>(p);
	return CUDA_SUCCESS;
}

CUEMU_EXPORT CUresult cuMemFree_v2(uint64_t dptr) {
	LOCK;
	auto it = g_allocs.find(uintptr_t(dptr));
	if (it == g_allocs.end()) return CUDA_ERROR_INVALID_VALUE;
	g_mem_used -= it->second;
	g_allocs.erase(it);
	free(reinterpret_cast<void*>(dptr));
	return CUDA_SUCCESS;
}

CUEMU_EXPORT CUresult cuMemGetInfo_v2(size_t* free_, size_t* total) {
	LOCK;
	NEED_INIT;
	*free_ = g_mem_limit - g_mem_used;
	*total = g_mem_limit;
	return CUDA_SUCCESS;
}

CUEMU_EXPORT CUresult cuMemcpyHtoD_v2(uint64_t dst, const void* src, size_t n) {
	LOCK;
	return copy(reinterpret_cast<void*>(dst), src, n, nullptr, true, false);
}
CUEMU_EXPORT CUresult cuMemcpyDtoH_v2(void* dst, uint64_t src, size_t n) {
	LOCK;
	return copy(dst, reinterpret_cast<void*>(src), n, nullptr, false, true);
}
CUEMU_EXPORT CUresult cuMemcpyDtoD_v2(uint64_t dst, uint64_t src, size_t n) {
	LOCK;
	return copy(reinterpret_cast<void*>(dst), reinterpret_cast<void*>(src), n, nullptr, true, true);
}
CUEMU_EXPORT CUresult cuMemcpyHtoDAsync_v2(uint64_t dst, const void* src, size_t n, void* s) {
	LOCK;
	return copy(reinterpret_cast<void*>(dst), src, n, static_cast<Stream*>(s), true, false);
}
CUEMU_EXPORT CUresult cuMemcpyDtoHAsync_v2(void* dst, uint64_t src, size_t n, void* s) {
	LOCK;
	return copy(dst, reinterpret_cast<void*>(src), n, static_cast<Stream*>(s), false, true);
}
CUEMU_EXPORT CUresult cuMemcpyDtoDAsync_v2(uint64_t dst, uint64_t src, size_t n, void* s) {
	LOCK;
	return copy(reinterpret_cast<void*>(dst), reinterpret_cast<void*>(src), n, static_cast<Stream*>(s), true, true);
}
CUEMU_EXPORT CUresult cuMemsetD8_v2(uint64_t dst, unsigned char v, size_t n) {
	LOCK;
	return memset_n(reinterpret_cast<void*>(dst), v, n, 1, nullptr);
}
CUEMU_EXPORT CUresult cuMemsetD32_v2(uint64_t dst, unsigned v, size_t n) {
	LOCK;
	return memset_n(reinterpret_cast<void*>(dst), v, n, 4, nullptr);
}
CUEMU_EXPORT CUresult cuMemsetD8Async(uint64_t dst, unsigned char v, size_t n, void* s) {
	LOCK;
	return memset_n(reinterpret_cast<void*>(dst), v, n, 1, static_cast<Stream*>(s));
}
CUEMU_EXPORT CUresult cuMemsetD32Async(uint64_t dst, unsigned v, size_t n, void* s) {
	LOCK;
	return memset_n(reinterpret_cast<void*>(dst), v, n, 4, static_cast<Stream*>(s));
}

CUEMU_EXPORT CUresult cuStreamCreate(void** s, unsigned flags) {
	LOCK;
	NEED_INIT;
	(void)flags;
	*s = new Stream;
	return CUDA_SUCCESS;
}
CUEMU_EXPORT CUresult cuStreamDestroy_v2(void* s) {
	LOCK;
	delete static_cast<Stream*>(s);
	return CUDA_SUCCESS;
}
CUEMU_EXPORT CUresult cuStreamSynchronize(void* s) {
	(void)s;
	return CUDA_SUCCESS;
}

CUEMU_EXPORT CUresult cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                                     unsigned smem, void* stream, void** params, void** extra) {
	LOCK;
	NEED_INIT;
	g_last_error.clear();
	Function* fn = static_cast<Function*>(f);
	if (!fn) return CUDA_ERROR_INVALID_HANDLE;
	if (extra) return CUDA_ERROR_NOT_SUPPORTED;
	unsigned grid[3] = {gx, gy, gz}, block[3] = {bx, by, bz};
	Stream* s = static_cast<Stream*>(stream);
	if (s && s->capture) {
		Node n;
		n.kind = Node::LAUNCH;
		n.fn = fn;
		std::copy(grid, grid + 3, n.grid);
		std::copy(block, block + 3, n.block);
		n.smem = smem;
		size_t off = 0;
		for (size_t i = 0; i < fn->kernel->sizes.size(); i++) {
			size_t a = fn->kernel->aligns[i];
			off = (off + a - 1) / a * a;
			n.offs.push_back(off);
			off += fn->kernel->sizes[i];
		}
		n.args.resize(off + 16);
		// Keep the blob 16-byte aligned for any parameter type.
		for (size_t i = 0; i < n.offs.size(); i++) memcpy(n.args.data() + n.offs[i], params[i], fn->kernel->sizes[i]);
		s->capture->nodes.push_back(std::move(n));
		return CUDA_SUCCESS;
	}
	return launch(fn, grid, block, smem, params);
}

CUEMU_EXPORT CUresult cuEventCreate(void** e, unsigned flags) {
	(void)flags;
	*e = new Event;
	return CUDA_SUCCESS;
}
CUEMU_EXPORT CUresult cuEventRecord(void* e, void* s) {
	(void)s;
	Event* ev = static_cast<Event*>(e);
	ev->t = std::chrono::steady_clock::now();
	ev->recorded = true;
	return CUDA_SUCCESS;
}
CUEMU_EXPORT CUresult cuEventSynchronize(void* e) {
	(void)e;
	return CUDA_SUCCESS;
}
CUEMU_EXPORT CUresult cuEventElapsedTime(float* ms, void* a, void* b) {
	Event *ea = static_cast<Event*>(a), *eb = static_cast<Event*>(b);
	if (!ea->recorded || !eb->recorded) return CUDA_ERROR_INVALID_HANDLE;
	*ms = std::chrono::duration<float, std::milli>(eb->t - ea->t).count();
	return CUDA_SUCCESS;
}
CUEMU_EXPORT CUresult cuEventDestroy_v2(void* e) {
	delete static_cast<Event*>(e);
	return CUDA_SUCCESS;
}

CUEMU_EXPORT CUresult cuStreamBeginCapture_v2(void* stream, int mode) {
	LOCK;
	(void)mode;
	Stream* s = static_cast<Stream*>(stream);
	if (!s) return CUDA_ERROR_NOT_SUPPORTED;  // the legacy stream cannot be captured
	if (s->capture) return CUDA_ERROR_INVALID_VALUE;
	s->capture = new Graph;
	return CUDA_SUCCESS;
}
CUEMU_EXPORT CUresult cuStreamEndCapture(void* stream, void** graph) {
	LOCK;
	Stream* s = static_cast<Stream*>(stream);
	if (!s || !s->capture) return CUDA_ERROR_INVALID_VALUE;
	*graph = s->capture;
	s->capture = nullptr;
	return CUDA_SUCCESS;
}
CUEMU_EXPORT CUresult cuGraphInstantiateWithFlags(void** exec, void* graph, unsigned long long flags) {
	LOCK;
	(void)flags;
	if (!graph) return CUDA_ERROR_INVALID_VALUE;
	*exec = new Graph(*static_cast<Graph*>(graph));
	return CUDA_SUCCESS;
}
CUEMU_EXPORT CUresult cuGraphLaunch(void* exec, void* stream) {
	LOCK;
	(void)stream;
	if (!exec) return CUDA_ERROR_INVALID_HANDLE;
	return replay(static_cast<Graph*>(exec));
}
CUEMU_EXPORT CUresult cuGraphExecDestroy(void* exec) {
	LOCK;
	delete static_cast<Graph*>(exec);
	return CUDA_SUCCESS;
}
CUEMU_EXPORT CUresult cuGraphDestroy(void* graph) {
	LOCK;
	delete static_cast<Graph*>(graph);
	return CUDA_SUCCESS;
}

CUEMU_EXPORT CUresult cuGetErrorName(CUresult r, const char** s) {
	*s = error_name(r);
	return *s ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
CUEMU_EXPORT CUresult cuGetErrorString(CUresult r, const char** s) {
	*s = error_string(r);
	return *s ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

// ---------------------------------------------------------------- emulator controls

// cuemuControl sets an emulator knob: "schedule" (0 forward, 1 reverse,
// 2 shuffled), "seed" (of the shuffled schedule), "mem_limit" (bytes of
// emulated device memory), "devices" (0 makes cuInit fail with
// CUDA_ERROR_NO_DEVICE, as on a machine without a GPU). Returns 0, or 1 for
// an unknown knob or value.
CUEMU_EXPORT int cuemuControl(const char* key, long long value) {
	LOCK;
	std::string k(key);
	if (k == "schedule" && value >= 0 && value <= 2)
		g_schedule = int(value);
	else if (k == "seed")
		g_seed = uint64_t(value);
	else if (k == "mem_limit" && value > 0)
		g_mem_limit = size_t(value);
	else if (k == "devices" && value >= 0 && value <= 1) {
		g_devices = int(value);
		if (!value) g_inited = false;
	} else
		return 1;
	return 0;
}

// cuemuLastError returns the detail of the last failed launch or lookup
// (the driver API itself only has error codes).
CUEMU_EXPORT const char* cuemuLastError() { return g_last_error.c_str(); }

// cuemuSanitized reports whether this build has AddressSanitizer.
CUEMU_EXPORT int cuemuSanitized() { return CUEMU_ASAN; }
