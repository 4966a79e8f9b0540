package cuda

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"unsafe"
)

// Device attribute numbers (CUdevice_attribute).
const (
	attrMaxThreadsPerBlock = 1
	attrMaxSmemPerBlock    = 8
	attrSMCount            = 16
	attrCCMajor            = 75
	attrCCMinor            = 76
	attrMaxSmemOptin       = 97
)

// Device is the primary context of one GPU with fhkit's kernels loaded.
// Its methods may be called from any goroutine, one at a time (a Device is
// not safe for concurrent use): each makes the context current on the OS
// thread it runs on, since the current context is per-thread driver state.
type Device struct {
	Drv *Driver
	// Name, compute capability, SM count, memory and shared memory limits
	// as the driver reports them.
	Name         string
	CCMajor      int
	CCMinor      int
	SMs          int
	TotalMem     uint64
	SmemPerBlock int
	SmemOptin    int
	ordinal      int32
	ctx          uintptr
	modules      []uintptr
	funcs        map[string]*Function
}

// Buffer is a device allocation.
type Buffer struct {
	Ptr  uint64
	Size int
}

// At returns a pointer off bytes into b (a kernel argument).
func (b Buffer) At(off int) DevPtr { return DevPtr(b.Ptr + uint64(off)) }

// DevPtr is a device address passed to a kernel.
type DevPtr uint64

// Stream is a CUDA stream (0 is the legacy default stream).
type Stream uintptr

// Dim3 is a grid or block shape.
type Dim3 struct{ X, Y, Z int }

// D1 returns a one-dimensional Dim3.
func D1(x int) Dim3 { return Dim3{x, 1, 1} }

// pinned allocates a T the driver may write to: pinned, so it cannot move
// while the driver holds its address.
func pinned[T any](p *runtime.Pinner) *T {
	v := new(T)
	p.Pin(v)
	return v
}

func ptr[T any](v *T) uintptr { return uintptr(unsafe.Pointer(v)) }

// OpenDevice initializes the driver, retains the primary context of GPU
// ordinal and loads the embedded kernels (the driver JIT-compiles the PTX;
// a failure returns the JIT log).
func OpenDevice(drv *Driver, ordinal int) (*Device, error) {
	s := &drv.sym
	if err := drv.call("cuInit", s.cuInit, 0); err != nil {
		// errors.Is(err, ErrNoDevice) holds for CUDA_ERROR_NO_DEVICE.
		return nil, fmt.Errorf("cuda: %s: %w", drv.Path, err)
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	n := pinned[int32](&pin)
	if err := drv.call("cuDeviceGetCount", s.cuDeviceGetCount, ptr(n)); err != nil {
		return nil, err
	}
	if *n == 0 {
		return nil, fmt.Errorf("cuda: %s: %w (the driver reports 0 devices)", drv.Path, ErrNoDevice)
	}
	if ordinal < 0 || ordinal >= int(*n) {
		return nil, fmt.Errorf("cuda: device %d does not exist (%d devices): %w", ordinal, *n, ErrNoDevice)
	}
	dev := pinned[int32](&pin)
	if err := drv.call("cuDeviceGet", s.cuDeviceGet, ptr(dev), uintptr(ordinal)); err != nil {
		return nil, err
	}
	dv := &Device{Drv: drv, ordinal: *dev, funcs: map[string]*Function{}}
	name := make([]byte, 256)
	pin.Pin(&name[0])
	if err := drv.call("cuDeviceGetName", s.cuDeviceGetName, uintptr(unsafe.Pointer(&name[0])), uintptr(len(name)), uintptr(*dev)); err != nil {
		return nil, err
	}
	dv.Name = strings.TrimRight(string(name), "\x00")
	if i := strings.IndexByte(dv.Name, 0); i >= 0 {
		dv.Name = dv.Name[:i]
	}
	for _, a := range []struct {
		attr int
		dst  *int
	}{{attrCCMajor, &dv.CCMajor}, {attrCCMinor, &dv.CCMinor}, {attrSMCount, &dv.SMs},
		{attrMaxSmemPerBlock, &dv.SmemPerBlock}, {attrMaxSmemOptin, &dv.SmemOptin}} {
		v := pinned[int32](&pin)
		if err := drv.call("cuDeviceGetAttribute", s.cuDeviceGetAttribute, ptr(v), uintptr(a.attr), uintptr(*dev)); err != nil {
			return nil, err
		}
		*a.dst = int(*v)
	}
	if dv.CCMajor < 8 {
		return nil, fmt.Errorf("cuda: %s has compute capability %d.%d; fhkit's kernels need 8.0 (Ampere) or newer: %w", dv.Name, dv.CCMajor, dv.CCMinor, ErrNoDevice)
	}
	total := pinned[uint64](&pin)
	if err := drv.call("cuDeviceTotalMem_v2", s.cuDeviceTotalMem, ptr(total), uintptr(*dev)); err != nil {
		return nil, err
	}
	dv.TotalMem = *total
	ctx := pinned[uintptr](&pin)
	if err := drv.call("cuDevicePrimaryCtxRetain", s.cuDevicePrimaryCtxRetain, ptr(ctx), uintptr(*dev)); err != nil {
		return nil, err
	}
	dv.ctx = *ctx
	if err := dv.loadKernels(); err != nil {
		dv.Close()
		return nil, err
	}
	return dv, nil
}

// String describes the device for messages.
func (dv *Device) String() string {
	return fmt.Sprintf("%s (sm_%d%d, %d SMs, %.1f GiB)", dv.Name, dv.CCMajor, dv.CCMinor, dv.SMs, float64(dv.TotalMem)/(1<<30))
}

// bind makes the context current on this goroutine's OS thread until the
// returned function runs.
func (dv *Device) bind() (func(), error) {
	runtime.LockOSThread()
	if err := dv.Drv.call("cuCtxSetCurrent", dv.Drv.sym.cuCtxSetCurrent, dv.ctx); err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	return runtime.UnlockOSThread, nil
}

// do runs a driver call with the context bound.
func (dv *Device) do(name string, fn uintptr, args ...uintptr) error {
	unbind, err := dv.bind()
	if err != nil {
		return err
	}
	defer unbind()
	return dv.Drv.call(name, fn, args...)
}

// Close unloads the kernels and releases the primary context. Buffers
// must be freed before.
func (dv *Device) Close() error {
	var errs []error
	for _, m := range dv.modules {
		errs = append(errs, dv.do("cuModuleUnload", dv.Drv.sym.cuModuleUnload, m))
	}
	dv.modules = nil
	if dv.ctx != 0 {
		errs = append(errs, dv.Drv.call("cuDevicePrimaryCtxRelease_v2", dv.Drv.sym.cuDevicePrimaryCtxRelease, uintptr(dv.ordinal)))
		dv.ctx = 0
	}
	return errors.Join(errs...)
}

// Synchronize waits for all work on the device.
func (dv *Device) Synchronize() error {
	return dv.do("cuCtxSynchronize", dv.Drv.sym.cuCtxSynchronize)
}

// MemInfo returns the free and total device memory.
func (dv *Device) MemInfo() (free, total uint64, err error) {
	var pin runtime.Pinner
	defer pin.Unpin()
	f, t := pinned[uint64](&pin), pinned[uint64](&pin)
	err = dv.do("cuMemGetInfo_v2", dv.Drv.sym.cuMemGetInfo, ptr(f), ptr(t))
	return *f, *t, err
}

// Alloc allocates n bytes of device memory (not initialized).
func (dv *Device) Alloc(n int) (Buffer, error) {
	if n <= 0 {
		return Buffer{}, fmt.Errorf("cuda: allocation of %d bytes", n)
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	p := pinned[uint64](&pin)
	if err := dv.do("cuMemAlloc_v2", dv.Drv.sym.cuMemAlloc, ptr(p), uintptr(n)); err != nil {
		if OutOfMemory(err) {
			free, total, _ := dv.MemInfo()
			return Buffer{}, fmt.Errorf("cuda: allocating %d bytes on %s (%d of %d bytes free): %w", n, dv.Name, free, total, err)
		}
		return Buffer{}, fmt.Errorf("cuda: allocating %d bytes: %w", n, err)
	}
	return Buffer{Ptr: *p, Size: n}, nil
}

// Free releases b (a zero Buffer is ignored).
func (dv *Device) Free(b Buffer) error {
	if b.Ptr == 0 {
		return nil
	}
	return dv.do("cuMemFree_v2", dv.Drv.sym.cuMemFree, uintptr(b.Ptr))
}

// Upload copies src to b at byte offset off.
func (dv *Device) Upload(b Buffer, off int, src []byte) error {
	if len(src) == 0 {
		return nil
	}
	if off < 0 || off+len(src) > b.Size {
		return fmt.Errorf("cuda: upload of %d bytes at %d into a %d-byte buffer", len(src), off, b.Size)
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	pin.Pin(&src[0])
	return dv.do("cuMemcpyHtoD_v2", dv.Drv.sym.cuMemcpyHtoD, uintptr(b.Ptr)+uintptr(off), uintptr(unsafe.Pointer(&src[0])), uintptr(len(src)))
}

// Download copies len(dst) bytes of b from byte offset off into dst.
func (dv *Device) Download(dst []byte, b Buffer, off int) error {
	if len(dst) == 0 {
		return nil
	}
	if off < 0 || off+len(dst) > b.Size {
		return fmt.Errorf("cuda: download of %d bytes at %d from a %d-byte buffer", len(dst), off, b.Size)
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	pin.Pin(&dst[0])
	return dv.do("cuMemcpyDtoH_v2", dv.Drv.sym.cuMemcpyDtoH, uintptr(unsafe.Pointer(&dst[0])), uintptr(b.Ptr)+uintptr(off), uintptr(len(dst)))
}

// CopyDtoD copies n bytes between device buffers.
func (dv *Device) CopyDtoD(dst Buffer, dstOff int, src Buffer, srcOff, n int) error {
	if n == 0 {
		return nil
	}
	if dstOff < 0 || srcOff < 0 || dstOff+n > dst.Size || srcOff+n > src.Size {
		return fmt.Errorf("cuda: device copy of %d bytes out of range", n)
	}
	return dv.do("cuMemcpyDtoD_v2", dv.Drv.sym.cuMemcpyDtoD, uintptr(dst.Ptr)+uintptr(dstOff), uintptr(src.Ptr)+uintptr(srcOff), uintptr(n))
}

// Memset sets every byte of b to v.
func (dv *Device) Memset(b Buffer, v byte) error {
	return dv.do("cuMemsetD8_v2", dv.Drv.sym.cuMemsetD8, uintptr(b.Ptr), uintptr(v), uintptr(b.Size))
}

// NewStream creates a stream that synchronizes with the legacy default
// stream (CU_STREAM_DEFAULT), so the synchronous copies (Upload,
// Download) are ordered with the work queued on it.
func (dv *Device) NewStream() (Stream, error) {
	var pin runtime.Pinner
	defer pin.Unpin()
	s := pinned[uintptr](&pin)
	const blocking = 0
	if err := dv.do("cuStreamCreate", dv.Drv.sym.cuStreamCreate, ptr(s), blocking); err != nil {
		return 0, err
	}
	return Stream(*s), nil
}

// DestroyStream destroys s.
func (dv *Device) DestroyStream(s Stream) error {
	return dv.do("cuStreamDestroy_v2", dv.Drv.sym.cuStreamDestroy, uintptr(s))
}

// SyncStream waits for the work queued on s.
func (dv *Device) SyncStream(s Stream) error {
	return dv.do("cuStreamSynchronize", dv.Drv.sym.cuStreamSynchronize, uintptr(s))
}

// Graph is an instantiated CUDA graph (a captured launch sequence).
type Graph struct {
	exec uintptr
}

// BeginCapture starts recording the work queued on s into a graph.
func (dv *Device) BeginCapture(s Stream) error {
	const relaxed = 2 // other threads may keep calling the driver meanwhile
	return dv.do("cuStreamBeginCapture_v2", dv.Drv.sym.cuStreamBeginCapture, uintptr(s), relaxed)
}

// EndCapture stops recording on s and instantiates the graph.
func (dv *Device) EndCapture(s Stream) (*Graph, error) {
	var pin runtime.Pinner
	defer pin.Unpin()
	g := pinned[uintptr](&pin)
	if err := dv.do("cuStreamEndCapture", dv.Drv.sym.cuStreamEndCapture, uintptr(s), ptr(g)); err != nil {
		return nil, err
	}
	defer dv.do("cuGraphDestroy", dv.Drv.sym.cuGraphDestroy, *g)
	e := pinned[uintptr](&pin)
	if err := dv.do("cuGraphInstantiateWithFlags", dv.Drv.sym.cuGraphInstantiateWithFlags, ptr(e), *g, 0); err != nil {
		return nil, err
	}
	return &Graph{exec: *e}, nil
}

// LaunchGraph queues g on s.
func (dv *Device) LaunchGraph(g *Graph, s Stream) error {
	return dv.do("cuGraphLaunch", dv.Drv.sym.cuGraphLaunch, g.exec, uintptr(s))
}

// DestroyGraph frees g.
func (dv *Device) DestroyGraph(g *Graph) error {
	return dv.do("cuGraphExecDestroy", dv.Drv.sym.cuGraphExecDestroy, g.exec)
}

// Function is a kernel of the loaded modules.
type Function struct {
	Name   string
	h      uintptr
	params []paramType // from the PTX .entry declaration
}

// Function returns the kernel name.
func (dv *Device) Function(name string) (*Function, error) {
	f, ok := dv.funcs[name]
	if !ok {
		return nil, fmt.Errorf("cuda: kernel %q is not in the embedded PTX", name)
	}
	return f, nil
}

// SetMaxDynamicSmem allows launches of f with up to n bytes of dynamic
// shared memory (needed above 48 KiB).
func (dv *Device) SetMaxDynamicSmem(f *Function, n int) error {
	if n > dv.SmemOptin {
		return fmt.Errorf("cuda: kernel %s wants %d bytes of shared memory, %s allows %d", f.Name, n, dv.Name, dv.SmemOptin)
	}
	const maxDynamicSharedSizeBytes = 8
	return dv.do("cuFuncSetAttribute", dv.Drv.sym.cuFuncSetAttribute, f.h, maxDynamicSharedSizeBytes, uintptr(n))
}

// Launch runs f on a grid of blocks with smem bytes of dynamic shared
// memory, queued on stream s. args are the kernel's parameters in order:
// Buffer or DevPtr for pointers, int32, uint32 or int (checked to fit) for
// integers, float32 for floats; they are checked against the kernel's PTX
// signature, so a wrong count or kind is an error rather than garbage on
// the device.
func (dv *Device) Launch(f *Function, grid, block Dim3, smem int, s Stream, args ...any) error {
	if len(args) != len(f.params) {
		return fmt.Errorf("cuda: kernel %s takes %d parameters, got %d", f.Name, len(f.params), len(args))
	}
	// The parameter values and the array of pointers to them live in Go
	// memory that the driver reads during the call: pin both, since
	// purego (unlike cgo) does not check or protect Go pointers.
	vals := make([]uint64, len(args)+1)
	ptrs := make([]unsafe.Pointer, len(args)+1)
	var pin runtime.Pinner
	defer pin.Unpin()
	pin.Pin(&vals[0])
	for i, a := range args {
		want := f.params[i]
		var got paramType
		switch v := a.(type) {
		case Buffer:
			vals[i], got = v.Ptr, paramPtr
		case DevPtr:
			vals[i], got = uint64(v), paramPtr
		case int32:
			vals[i], got = uint64(uint32(v)), paramInt
		case uint32:
			vals[i], got = uint64(v), paramInt
		case int:
			if v < math.MinInt32 || v > math.MaxInt32 {
				return fmt.Errorf("cuda: kernel %s parameter %d: %d does not fit in 32 bits", f.Name, i, v)
			}
			vals[i], got = uint64(uint32(int32(v))), paramInt
		case float32:
			vals[i], got = uint64(math.Float32bits(v)), paramFloat
		default:
			return fmt.Errorf("cuda: kernel %s parameter %d: unsupported Go type %T", f.Name, i, a)
		}
		if got != want {
			return fmt.Errorf("cuda: kernel %s parameter %d is %s in the PTX, got a %s (%T)", f.Name, i, want, got, a)
		}
		ptrs[i] = unsafe.Pointer(&vals[i])
	}
	pin.Pin(&ptrs[0])
	for _, d := range []Dim3{grid, block} {
		if d.X <= 0 || d.Y <= 0 || d.Z <= 0 || d.X > math.MaxInt32 || d.Y > math.MaxInt32 || d.Z > math.MaxInt32 {
			return fmt.Errorf("cuda: kernel %s: bad launch shape grid %v block %v", f.Name, grid, block)
		}
	}
	err := dv.do("cuLaunchKernel", dv.Drv.sym.cuLaunchKernel, f.h,
		uintptr(grid.X), uintptr(grid.Y), uintptr(grid.Z), uintptr(block.X), uintptr(block.Y), uintptr(block.Z),
		uintptr(smem), uintptr(s), uintptr(unsafe.Pointer(&ptrs[0])), 0)
	if err != nil {
		return fmt.Errorf("cuda: kernel %s grid %v block %v smem %d: %w", f.Name, grid, block, smem, err)
	}
	return nil
}
