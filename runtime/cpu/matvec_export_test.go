package cpu

// MatVecISA exposes matVecISA to the external benchmarks (matvec_bench_test.go),
// which import runtime/bench and so cannot live in package cpu.
var MatVecISA = matVecISA

// MatVecQ4F32 runs an int4 product with the float32 AVX-512 kernel, which
// the AVX-512 level replaces by the AVX512_BF16 one where the CPU has it
// (benchmarks compare the two).
func MatVecQ4F32(p *Pool, out []float32, w Mat, x []float32) {
	matVecRun(AVX512, q4AVX512, p, out, w, x)
}

// MatVecQ4VNNI runs an int4 product with the AVX512_VNNI kernel (the CPU
// must have it; benchmarks compare it with the level's default).
func MatVecQ4VNNI(p *Pool, out []float32, w Mat, x []float32) {
	matVecRun(AVX512, q4AVX512VNNI, p, out, w, x)
}

// HasAVX512VNNI reports whether MatVecQ4VNNI runs on this CPU.
var HasAVX512VNNI = cpuHasAVX512VNNI

// MatVecQ4VNNI16 runs an int4 product with the rows-in-lanes AVX512_VNNI
// kernel (rows a multiple of 16; the CPU must have AVX512_VNNI).
func MatVecQ4VNNI16(p *Pool, out []float32, w Mat, x []float32) {
	matVecRun(AVX512, q4AVX512VNNI16, p, out, w, x)
}

// MatVecInt8ISA exposes matVecInt8ISA to the external benchmarks.
var MatVecInt8ISA = matVecInt8ISA
