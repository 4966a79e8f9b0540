// Command cuda-emu builds the CPU emulator of the CUDA driver API with
// fhkit's kernels and prints the library's path, for FH_CUDA_LIB:
//
//	FH_CUDA_LIB=$(go run ./runtime/cuda/emu/cmd/cuda-emu --out out/cuda-emu) fh-run verify --device cuda ...
//
// --asan builds the AddressSanitizer variant (load it with libasan in
// LD_PRELOAD; --print-asan-runtime prints that path).
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/fhkit/fhkit/runtime/cuda"
	"github.com/fhkit/fhkit/runtime/cuda/emu"
)

func main() {
	out := flag.String("out", emu.DefaultDir(), "directory for the library (cached by source hash)")
	asan := flag.Bool("asan", false, "build with AddressSanitizer")
	printASan := flag.Bool("print-asan-runtime", false, "print the libasan path to preload, then exit")
	flag.Parse()
	if *printASan {
		p, err := emu.ASanRuntime("")
		if err != nil {
			fmt.Fprintln(os.Stderr, "cuda-emu:", err)
			os.Exit(1)
		}
		fmt.Println(p)
		return
	}
	p, err := emu.Build(*out, cuda.KernelSources, emu.Options{ASan: *asan})
	if err != nil {
		fmt.Fprintln(os.Stderr, "cuda-emu:", err)
		os.Exit(1)
	}
	fmt.Println(p)
}
