// Package emu builds the CPU emulator of the CUDA driver API (emu.cpp,
// emu.h) together with fhkit's kernels into a shared library that the
// runtime/cuda backend loads in place of libcuda.so.1 (FH_CUDA_LIB). The
// build needs only g++ (C++17); its output is cached by the hash of the
// sources, the flags and the compiler version.
package emu

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

//go:embed csrc/emu.cpp csrc/emu.h
var sources embed.FS

// ErrNoCompiler is wrapped by Build's error when g++ is not installed.
var ErrNoCompiler = errors.New("C++ compiler not found")

// Options select the build variant.
type Options struct {
	// ASan builds with AddressSanitizer, so an out-of-bounds access to
	// device memory (host memory in the emulator) aborts with a report. The
	// process loading the library must have libasan preloaded (LD_PRELOAD).
	ASan bool
	// CXX is the compiler; "" means $CXX or g++.
	CXX string
}

// DefaultDir is where Build caches libraries when the caller has no
// directory of its own: the user cache directory, or the temp directory.
func DefaultDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "fhkit", "cuda-emu")
	}
	return filepath.Join(os.TempDir(), "fhkit-cuda-emu")
}

// Build compiles the emulator with every kernels/*.cu of kernels into dir
// and returns the library's path. An up-to-date library is reused.
func Build(dir string, kernels fs.FS, opt Options) (string, error) {
	cxx := opt.CXX
	if cxx == "" {
		cxx = os.Getenv("CXX")
	}
	if cxx == "" {
		cxx = "g++"
	}
	cxxPath, err := exec.LookPath(cxx)
	if err != nil {
		return "", fmt.Errorf("cuda emulator: %w: %s (install g++)", ErrNoCompiler, cxx)
	}
	version, err := exec.Command(cxxPath, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("cuda emulator: %s --version: %w", cxxPath, err)
	}
	files := map[string][]byte{}
	for _, n := range []string{"emu.cpp", "emu.h"} {
		b, err := sources.ReadFile("csrc/" + n)
		if err != nil {
			return "", err
		}
		files["emu/"+n] = b
	}
	var cus []string
	for _, pat := range []string{"kernels/*.cu", "kernels/*.cuh"} {
		names, err := fs.Glob(kernels, pat)
		if err != nil {
			return "", err
		}
		for _, n := range names {
			b, err := fs.ReadFile(kernels, n)
			if err != nil {
				return "", fmt.Errorf("cuda emulator: %s: %w", n, err)
			}
			files[n] = b
			if strings.HasSuffix(n, ".cu") {
				cus = append(cus, n)
			}
		}
	}
	if len(cus) == 0 {
		return "", fmt.Errorf("cuda emulator: no kernels/*.cu in the kernel sources")
	}
	sort.Strings(cus)
	flags := []string{"-std=c++17", "-g", "-fPIC", "-shared", "-fvisibility=hidden", "-Wall", "-Wextra",
		"-Wno-unknown-pragmas", "-Wno-unused-parameter", "-Werror", "-Iemu", "-Ikernels"}
	variant := ""
	if opt.ASan {
		flags = append(flags, "-O1", "-fsanitize=address", "-fno-omit-frame-pointer")
		variant = "-asan"
	} else {
		flags = append(flags, "-O2")
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%q\n", version, flags)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(h, "%s %d\n", n, len(files[n]))
		h.Write(files[n])
	}
	sum := hex.EncodeToString(h.Sum(nil))[:16]
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("cuda emulator: %w", err)
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "libcuemu-"+sum+variant+".so")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	src, err := os.MkdirTemp(dir, "src-")
	if err != nil {
		return "", fmt.Errorf("cuda emulator: %w", err)
	}
	defer os.RemoveAll(src)
	for n, b := range files {
		p := filepath.Join(src, filepath.FromSlash(n))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return "", err
		}
	}
	tmp := filepath.Join(src, "libcuemu.so")
	args := append(append([]string{}, flags...), "-o", tmp, "emu/emu.cpp", "-x", "c++", "-include", "emu.h")
	args = append(args, cus...)
	cmd := exec.Command(cxxPath, args...)
	cmd.Dir = src
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("cuda emulator: %s %s: %w\n%s", cxx, strings.Join(args, " "), err, msg)
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", fmt.Errorf("cuda emulator: %w", err)
	}
	return out, nil
}

// ASanRuntime returns the path of the compiler's AddressSanitizer runtime,
// which a process loading an ASan build of the emulator must preload.
func ASanRuntime(cxx string) (string, error) {
	if cxx == "" {
		cxx = "g++"
	}
	out, err := exec.Command(cxx, "-print-file-name=libasan.so").Output()
	if err != nil {
		return "", fmt.Errorf("%s -print-file-name=libasan.so: %w", cxx, err)
	}
	p := strings.TrimSpace(string(out))
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%s has no AddressSanitizer runtime (libasan)", cxx)
	}
	return p, nil
}
