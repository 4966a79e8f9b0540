package cpu

// MatVecISA exposes matVecISA to the external benchmarks (matvec_bench_test.go),
// which import runtime/bench and so cannot live in package cpu.
var MatVecISA = matVecISA
