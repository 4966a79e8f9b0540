package cpu

import (
	"fmt"
	"os"

	"github.com/klauspost/cpuid/v2"
)

// ISA is a level of x86 vector instructions the kernels are written for.
type ISA int

// The kernel levels, from the plain-Go reference up.
const (
	Generic ISA = iota // plain Go, every CPU
	AVX2               // AVX2 + FMA + F16C
	AVX512             // AVX-512 F/BW/VL (+ VNNI, BF16 where a kernel uses them)
)

func (i ISA) String() string {
	switch i {
	case AVX2:
		return "avx2"
	case AVX512:
		return "avx512"
	}
	return "generic"
}

// ParseISA reads an ISA name as printed by String.
func ParseISA(s string) (ISA, error) {
	for _, i := range []ISA{Generic, AVX2, AVX512} {
		if s == i.String() {
			return i, nil
		}
	}
	return Generic, fmt.Errorf("unknown instruction set %q (want generic, avx2 or avx512)", s)
}

// DetectISA returns the best level this CPU runs.
func DetectISA() ISA {
	switch {
	case cpuid.CPU.Supports(cpuid.AVX512F, cpuid.AVX512BW, cpuid.AVX512VL, cpuid.AVX2, cpuid.FMA3, cpuid.F16C):
		return AVX512
	case cpuid.CPU.Supports(cpuid.AVX2, cpuid.FMA3, cpuid.F16C):
		return AVX2
	}
	return Generic
}

// L2Bytes is the L2 cache of one core as the CPU reports it, 256 KiB (the
// least of any x86 core with AVX2) when it does not.
func L2Bytes() int {
	if n := cpuid.CPU.Cache.L2; n > 0 {
		return n
	}
	return 256 << 10
}

// isa is the level the kernels dispatch on, fixed at start-up: the best
// the CPU runs, lowered by FHKIT_ISA=generic|avx2 (to compare kernels or
// work around a suspected kernel bug). It is never written afterwards.
var isa = selectISA(os.Getenv("FHKIT_ISA"))

func selectISA(env string) ISA {
	best := DetectISA()
	if env == "" {
		return best
	}
	want, err := ParseISA(env)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fhkit: FHKIT_ISA: %v; using %s\n", err, best)
		return best
	}
	return min(want, best)
}

// CurrentISA returns the level the kernels use in this process.
func CurrentISA() ISA { return isa }
