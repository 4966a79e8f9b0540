// Package cuda runs fhkit's kernels on an NVIDIA GPU through the CUDA
// driver API, loaded at run time with dlopen (github.com/ebitengine/purego):
// no cgo, no CUDA headers or libraries at build time, and a binary that
// starts on machines without a GPU. Kernels are PTX for compute_80,
// generated from kernels/*.cu by `make kernels`, committed and embedded;
// the driver JIT-compiles them for the GPU at hand.
//
// The same backend runs against the CPU emulator of runtime/cuda/emu (a
// shared library exporting the driver API subset used here) when FH_CUDA_LIB
// names it: that is how every kernel is tested without a GPU. See README.md
// for what emulation verifies and what needs real hardware.
package cuda

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"github.com/ebitengine/purego"
)

// LibEnv is the environment variable that names the driver library to load
// instead of libcuda.so.1 (for example the emulator built by `make cuda-emu`).
const LibEnv = "FH_CUDA_LIB"

// DefaultLib is the driver library the NVIDIA driver installs.
const DefaultLib = "libcuda.so.1"

// ErrNoDriver is wrapped by Open's error when the driver library cannot be
// loaded (no NVIDIA driver installed).
var ErrNoDriver = errors.New("CUDA driver library not found")

// ErrNoDevice is wrapped by errors that mean the driver works but there is
// no usable GPU.
var ErrNoDevice = errors.New("no CUDA device")

// CUresult codes the backend tells apart.
const (
	resSuccess     = 0
	resOutOfMemory = 2
	resNoDevice    = 100
	resInvalidPTX  = 218
	resNotFound    = 500
)

// Error is a failed driver call.
type Error struct {
	Call string // the driver function, e.g. "cuMemAlloc_v2"
	Code int    // its CUresult
	Name string // e.g. "CUDA_ERROR_OUT_OF_MEMORY"
	Desc string // the driver's description
	// Detail is extra context: the JIT log, or the emulator's message.
	Detail string
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s failed: %s (%s, code %d)", e.Call, e.Desc, e.Name, e.Code)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Is makes errors.Is(err, ErrNoDevice) true for CUDA_ERROR_NO_DEVICE.
func (e *Error) Is(target error) bool { return target == ErrNoDevice && e.Code == resNoDevice }

// OutOfMemory reports whether err is a device out-of-memory error.
func OutOfMemory(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == resOutOfMemory
}

// Driver is a loaded CUDA driver library (or the emulator).
type Driver struct {
	Path string
	lib  uintptr
	sym  symbols
	// emulator knobs, resolved only when the library is the emulator.
	emuControl, emuLastError, emuSanitized uintptr
}

// symbols are the driver entry points fhkit uses. The versioned names
// matter: dlsym("cuMemAlloc") resolves to the legacy 32-bit ABI.
type symbols struct {
	cuInit, cuDriverGetVersion, cuDeviceGetCount, cuDeviceGet, cuDeviceGetName,
	cuDeviceGetAttribute, cuDeviceTotalMem, cuDevicePrimaryCtxRetain,
	cuDevicePrimaryCtxRelease, cuCtxSetCurrent, cuCtxSynchronize,
	cuModuleLoadDataEx, cuModuleUnload, cuModuleGetFunction, cuFuncSetAttribute,
	cuMemAlloc, cuMemFree, cuMemGetInfo, cuMemcpyHtoD, cuMemcpyDtoH, cuMemcpyDtoD,
	cuMemcpyHtoDAsync, cuMemcpyDtoHAsync, cuMemsetD8,
	cuStreamCreate, cuStreamDestroy, cuStreamSynchronize, cuLaunchKernel,
	cuEventCreate, cuEventRecord, cuEventSynchronize, cuEventElapsedTime, cuEventDestroy,
	cuStreamBeginCapture, cuStreamEndCapture, cuGraphInstantiateWithFlags,
	cuGraphLaunch, cuGraphExecDestroy, cuGraphDestroy,
	cuGetErrorName, cuGetErrorString uintptr
}

// Open loads the driver library: path, or $FH_CUDA_LIB, or libcuda.so.1.
// It resolves every entry point; a missing one is an error naming it.
func Open(path string) (*Driver, error) {
	if path == "" {
		path = os.Getenv(LibEnv)
	}
	if path == "" {
		path = DefaultLib
	}
	lib, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		return nil, fmt.Errorf("cuda: load %s: %w (%v; is the NVIDIA driver installed? %s selects another library)", path, ErrNoDriver, err, LibEnv)
	}
	d := &Driver{Path: path, lib: lib}
	s := &d.sym
	for _, e := range []struct {
		p    *uintptr
		name string
	}{
		{&s.cuInit, "cuInit"}, {&s.cuDriverGetVersion, "cuDriverGetVersion"},
		{&s.cuDeviceGetCount, "cuDeviceGetCount"}, {&s.cuDeviceGet, "cuDeviceGet"},
		{&s.cuDeviceGetName, "cuDeviceGetName"}, {&s.cuDeviceGetAttribute, "cuDeviceGetAttribute"},
		{&s.cuDeviceTotalMem, "cuDeviceTotalMem_v2"},
		{&s.cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"},
		{&s.cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2"},
		{&s.cuCtxSetCurrent, "cuCtxSetCurrent"}, {&s.cuCtxSynchronize, "cuCtxSynchronize"},
		{&s.cuModuleLoadDataEx, "cuModuleLoadDataEx"}, {&s.cuModuleUnload, "cuModuleUnload"},
		{&s.cuModuleGetFunction, "cuModuleGetFunction"}, {&s.cuFuncSetAttribute, "cuFuncSetAttribute"},
		{&s.cuMemAlloc, "cuMemAlloc_v2"}, {&s.cuMemFree, "cuMemFree_v2"}, {&s.cuMemGetInfo, "cuMemGetInfo_v2"},
		{&s.cuMemcpyHtoD, "cuMemcpyHtoD_v2"}, {&s.cuMemcpyDtoH, "cuMemcpyDtoH_v2"},
		{&s.cuMemcpyDtoD, "cuMemcpyDtoD_v2"}, {&s.cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2"},
		{&s.cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2"}, {&s.cuMemsetD8, "cuMemsetD8_v2"},
		{&s.cuStreamCreate, "cuStreamCreate"}, {&s.cuStreamDestroy, "cuStreamDestroy_v2"},
		{&s.cuStreamSynchronize, "cuStreamSynchronize"}, {&s.cuLaunchKernel, "cuLaunchKernel"},
		{&s.cuEventCreate, "cuEventCreate"}, {&s.cuEventRecord, "cuEventRecord"},
		{&s.cuEventSynchronize, "cuEventSynchronize"}, {&s.cuEventElapsedTime, "cuEventElapsedTime"},
		{&s.cuEventDestroy, "cuEventDestroy_v2"},
		{&s.cuStreamBeginCapture, "cuStreamBeginCapture_v2"}, {&s.cuStreamEndCapture, "cuStreamEndCapture"},
		{&s.cuGraphInstantiateWithFlags, "cuGraphInstantiateWithFlags"},
		{&s.cuGraphLaunch, "cuGraphLaunch"}, {&s.cuGraphExecDestroy, "cuGraphExecDestroy"},
		{&s.cuGraphDestroy, "cuGraphDestroy"},
		{&s.cuGetErrorName, "cuGetErrorName"}, {&s.cuGetErrorString, "cuGetErrorString"},
	} {
		p, err := purego.Dlsym(lib, e.name)
		if err != nil {
			purego.Dlclose(lib)
			return nil, fmt.Errorf("cuda: %s has no %s (driver too old? CUDA 11.8 / driver 520 or newer is needed): %w", path, e.name, err)
		}
		*e.p = p
	}
	// The emulator's extra entry points; absent from a real driver.
	d.emuControl, _ = purego.Dlsym(lib, "cuemuControl")
	d.emuLastError, _ = purego.Dlsym(lib, "cuemuLastError")
	d.emuSanitized, _ = purego.Dlsym(lib, "cuemuSanitized")
	return d, nil
}

// IsEmulator reports whether the library is fhkit's CPU emulator.
func (d *Driver) IsEmulator() bool { return d.emuControl != 0 }

// EmuSanitized reports whether the library is an AddressSanitizer build
// of the emulator.
func (d *Driver) EmuSanitized() bool {
	if d.emuSanitized == 0 {
		return false
	}
	r, _, _ := purego.SyscallN(d.emuSanitized)
	return int32(r) != 0
}

// EmuControl sets an emulator knob (see emu/emu.cpp cuemuControl:
// "schedule" 0/1/2 = forward/reverse/shuffled, "seed", "mem_limit",
// "devices"). It fails on a real driver.
func (d *Driver) EmuControl(key string, value int64) error {
	if d.emuControl == 0 {
		return fmt.Errorf("cuda: %s is not the emulator (no cuemuControl)", d.Path)
	}
	k := cstring(key)
	r, _, _ := purego.SyscallN(d.emuControl, uintptr(unsafe.Pointer(&k[0])), uintptr(value))
	runtime.KeepAlive(k)
	if int32(r) != 0 {
		return fmt.Errorf("cuda emulator: bad control %s=%d", key, value)
	}
	return nil
}

// call invokes a driver function and turns a non-zero CUresult into an
// *Error naming the call.
func (d *Driver) call(name string, fn uintptr, args ...uintptr) error {
	r, _, _ := purego.SyscallN(fn, args...)
	if code := int(int32(r)); code != resSuccess {
		return d.errorFor(name, code)
	}
	return nil
}

func (d *Driver) errorFor(name string, code int) *Error {
	e := &Error{Call: name, Code: code, Name: fmt.Sprintf("CUresult %d", code), Desc: "unknown error"}
	var s *byte
	if r, _, _ := purego.SyscallN(d.sym.cuGetErrorName, uintptr(code), uintptr(unsafe.Pointer(&s))); r == 0 && s != nil {
		e.Name = gostring(s)
	}
	s = nil
	if r, _, _ := purego.SyscallN(d.sym.cuGetErrorString, uintptr(code), uintptr(unsafe.Pointer(&s))); r == 0 && s != nil {
		e.Desc = gostring(s)
	}
	if d.emuLastError != 0 && (code == 719 || code == 1 || code == resNotFound) {
		var p *byte
		// cuemuLastError returns a const char*; read it through a pointer
		// variable so no uintptr→pointer conversion is needed.
		r, _, _ := purego.SyscallN(d.emuLastError)
		*(*uintptr)(unsafe.Pointer(&p)) = r
		if p != nil {
			e.Detail = gostring(p)
		}
	}
	return e
}

// cstring returns s as a NUL-terminated byte slice.
func cstring(s string) []byte { return append([]byte(s), 0) }

// gostring copies the NUL-terminated C string at p (C memory).
func gostring(p *byte) string {
	n := 0
	for *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(p, n))
}
