package cuda

import (
	"embed"
	"fmt"
	"io/fs"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"unsafe"
)

// ptxFiles is the PTX `make kernels` generates from kernels/*.cu (nvcc 11.8,
// compute_80), one module per source file.
//
//go:embed ptx/*.ptx
var ptxFiles embed.FS

// KernelSources holds the kernel sources (kernels/*.cu, kernels/*.cuh): the
// emulator compiles the same files the PTX was generated from.
//
//go:embed kernels/*.cu kernels/*.cuh
var KernelSources embed.FS

// paramType is the class of a kernel parameter as PTX declares it.
type paramType int

const (
	paramPtr   paramType = iota // .u64 / .b64 / .s64: pointers (fhkit kernels take no 64-bit integers)
	paramInt                    // .u32 / .s32 / .b32
	paramFloat                  // .f32
)

func (p paramType) String() string {
	return [...]string{"a pointer (.u64)", "a 32-bit integer", "a float32"}[p]
}

var (
	entryRE = regexp.MustCompile(`\.entry\s+([A-Za-z_][A-Za-z0-9_$]*)\s*\(([^)]*)\)`)
	paramRE = regexp.MustCompile(`\.param\s+\.([a-z0-9]+)\s`)
)

// parseEntries returns the parameter list of every .entry in a PTX text.
func parseEntries(ptx string) (map[string][]paramType, error) {
	out := map[string][]paramType{}
	for _, m := range entryRE.FindAllStringSubmatch(ptx, -1) {
		var ps []paramType
		for _, decl := range strings.Split(m[2], ",") {
			decl = strings.TrimSpace(decl)
			if decl == "" {
				continue
			}
			pm := paramRE.FindStringSubmatch(decl + " ")
			if pm == nil {
				return nil, fmt.Errorf("kernel %s: unsupported parameter declaration %q", m[1], decl)
			}
			switch pm[1] {
			case "u64", "b64", "s64":
				ps = append(ps, paramPtr)
			case "u32", "s32", "b32":
				ps = append(ps, paramInt)
			case "f32":
				ps = append(ps, paramFloat)
			default:
				return nil, fmt.Errorf("kernel %s: unsupported parameter type .%s", m[1], pm[1])
			}
		}
		out[m[1]] = ps
	}
	return out, nil
}

// PTXModules returns the embedded PTX files by name (for tests and tools).
func PTXModules() (map[string]string, error) {
	names, err := fs.Glob(ptxFiles, "ptx/*.ptx")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, n := range names {
		b, err := ptxFiles.ReadFile(n)
		if err != nil {
			return nil, err
		}
		out[n] = string(b)
	}
	return out, nil
}

// loadKernels loads every embedded PTX module and looks up its kernels.
func (dv *Device) loadKernels() error {
	mods, err := PTXModules()
	if err != nil {
		return fmt.Errorf("cuda: embedded PTX: %w", err)
	}
	names := make([]string, 0, len(mods))
	for n := range mods {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := dv.LoadPTX(n, mods[n]); err != nil {
			return err
		}
	}
	return nil
}

// LoadPTX JIT-compiles one PTX module (name is for messages) and registers
// its kernels. A JIT failure returns the driver's error log.
func (dv *Device) LoadPTX(name, ptx string) error {
	entries, err := parseEntries(ptx)
	if err != nil {
		return fmt.Errorf("cuda: %s: %w", name, err)
	}
	unbind, err := dv.bind()
	if err != nil {
		return err
	}
	defer unbind()
	const (
		jitInfoLogBuffer  = 3
		jitInfoLogSize    = 4
		jitErrorLogBuffer = 5
		jitErrorLogSize   = 6
		logSize           = 16 << 10
	)
	var pin runtime.Pinner
	defer pin.Unpin()
	image := cstring(ptx)
	pin.Pin(&image[0])
	infoLog, errLog := make([]byte, logSize), make([]byte, logSize)
	pin.Pin(&infoLog[0])
	pin.Pin(&errLog[0])
	opts := []int32{jitInfoLogBuffer, jitInfoLogSize, jitErrorLogBuffer, jitErrorLogSize}
	pin.Pin(&opts[0])
	// Option values are pointer-sized: buffer addresses, and sizes passed
	// by value in the pointer slot (the driver writes back the used size).
	vals := []uintptr{uintptr(unsafe.Pointer(&infoLog[0])), logSize, uintptr(unsafe.Pointer(&errLog[0])), logSize}
	pin.Pin(&vals[0])
	mod := pinned[uintptr](&pin)
	err = dv.Drv.call("cuModuleLoadDataEx", dv.Drv.sym.cuModuleLoadDataEx, ptr(mod), uintptr(unsafe.Pointer(&image[0])),
		uintptr(len(opts)), uintptr(unsafe.Pointer(&opts[0])), uintptr(unsafe.Pointer(&vals[0])))
	if err != nil {
		if e, ok := err.(*Error); ok {
			e.Detail = strings.TrimSpace(strings.TrimRight(string(errLog), "\x00"))
			if e.Detail == "" {
				e.Detail = "the driver gave no JIT log"
			}
			e.Detail = "JIT log: " + e.Detail
		}
		return fmt.Errorf("cuda: loading kernels %s on %s (driver too old for PTX ISA 7.8? needs driver >= 520): %w", name, dv.Name, err)
	}
	dv.modules = append(dv.modules, *mod)
	for k, params := range entries {
		h := pinned[uintptr](&pin)
		cname := cstring(k)
		pin.Pin(&cname[0])
		if err := dv.Drv.call("cuModuleGetFunction", dv.Drv.sym.cuModuleGetFunction, ptr(h), *mod, uintptr(unsafe.Pointer(&cname[0]))); err != nil {
			return fmt.Errorf("cuda: %s: kernel %s: %w", name, k, err)
		}
		if _, dup := dv.funcs[k]; dup {
			return fmt.Errorf("cuda: kernel %s is defined in two PTX modules", k)
		}
		dv.funcs[k] = &Function{Name: k, h: *h, params: params}
	}
	return nil
}
