package cpu_test

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/int4"
	"github.com/fhkit/fhkit/runtime/bench"
	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/hugemem"
)

// mvShape is one gemma-3-1b decode product.
type mvShape struct {
	name       string
	rows, cols int
}

var gemma1bShapes = []mvShape{
	{"gate_up_6912x1152", 6912, 1152},
	{"down_1152x6912", 1152, 6912},
	{"q_1024x1152", 1024, 1152},
	{"kv_256x1152", 256, 1152},
	{"o_1152x1024", 1152, 1024},
}

// outOfCache is how many bytes of distinct weights a benchmark cycles
// through: the host's shared L3 is 105 MiB, and decode reads every weight
// once per token, so the figures must come from DRAM as in decode.
const outOfCache = 256 << 20

// benchMats returns enough distinct copies of a random weight of the given
// kind to exceed outOfCache together, and the bytes one product reads. As
// model.Load does, it puts the weights the kernels read in huge pages
// from mem, which the caller keeps alive while it uses them.
func benchMats(mem *hugemem.Arena, kind string, rows, cols int) ([]cpu.Mat, int64) {
	r := rand.New(rand.NewPCG(uint64(rows), uint64(cols)))
	var one int64
	if kind == "q4g128" {
		one = int64(rows*cols/2 + rows*(cols/128)*2)
	} else {
		one = int64(rows * cols * 2)
		if kind == "f32" {
			one *= 2
		}
	}
	n := int(max(1, (outOfCache+one-1)/one))
	mats := make([]cpu.Mat, n)
	for i := range mats {
		switch kind {
		case "q4g128":
			codes := make([]uint8, rows*cols)
			for j := range codes {
				codes[j] = uint8(r.IntN(16))
			}
			sc := make([]float32, rows*cols/128)
			for j := range sc {
				sc[j] = 0.01 + 0.01*r.Float32()
			}
			w := int4.Weight{Rows: rows, Cols: cols, GroupSize: 128, QWeight: int4.Pack(codes),
				ScaleDType: dtype.BF16, Scales: make([]byte, len(sc)*2)}
			dtype.EncodeFloats(w.Scales, sc, dtype.BF16)
			m, err := cpu.NewInt4Mat(w)
			if err != nil {
				panic(err)
			}
			m.PrepareMatVec(mem)
			mats[i] = m
		default:
			dt := dtype.BF16
			if kind == "f32" {
				dt = dtype.F32
			}
			data := mem.Bytes(rows * cols * dt.Size())
			for j := 0; j+1 < len(data); j += 2 {
				// Random bf16 halves with a sane exponent (never NaN).
				data[j], data[j+1] = byte(r.Uint32()), 0x3c+byte(r.IntN(2))
			}
			m, err := cpu.NewMat(rows, cols, dt, data)
			if err != nil {
				panic(err)
			}
			m.PrepareMatVec(mem)
			mats[i] = m
		}
	}
	return mats, one
}

// BenchmarkMatVec measures the decode products at gemma-3-1b shapes for
// each kernel level the CPU runs, with 1 and 2 threads: MB/s is weight
// bytes read (int4 codes + bf16 scales), GFLOP/s counts 2 per weight.
// Compare with the probe sub-benchmarks (bench.Probe, the bound
// fh-run bench divides by) in the same run.
func BenchmarkMatVec(b *testing.B) {
	type job struct {
		kind string
		s    mvShape
	}
	var jobs []job
	for _, kind := range []string{"q4g128", "bf16"} {
		for _, s := range gemma1bShapes {
			jobs = append(jobs, job{kind, s})
		}
	}
	jobs = append(jobs, job{"bf16", mvShape{"head_262144x1152", 262144, 1152}},
		job{"f32", mvShape{"read_65536x1024", 65536, 1024}})
	probe := bench.NewProbe(512 << 20)
	for _, threads := range []int{1, 2} {
		p := cpu.NewPool(threads)
		b.Run(fmt.Sprintf("probe/t%d", threads), func(b *testing.B) {
			var gbs float64
			for i := 0; i < b.N; i++ {
				gbs = probe.Measure(p, 5)
			}
			b.ReportMetric(gbs, "GB/s")
		})
		for _, j := range jobs {
			mem := hugemem.New()
			mats, bytes := benchMats(mem, j.kind, j.s.rows, j.s.cols)
			x := make([]float32, j.s.cols)
			for i := range x {
				x[i] = float32(i%7) - 3
			}
			out := make([]float32, j.s.rows)
			run := func(name string, mv func(out []float32, w cpu.Mat)) {
				b.Run(fmt.Sprintf("%s/%s/%s/t%d", name, j.kind, j.s.name, threads), func(b *testing.B) {
					b.SetBytes(bytes)
					for i := 0; i < b.N; i++ {
						mv(out, mats[i%len(mats)])
					}
					b.ReportMetric(2*float64(j.s.rows)*float64(j.s.cols)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
					b.ReportMetric(float64(bytes)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
				})
			}
			for level := cpu.Generic; level <= cpu.DetectISA(); level++ {
				run(level.String(), func(out []float32, w cpu.Mat) { cpu.MatVecISA(level, p, out, w, x) })
			}
			if j.kind == "q4g128" && cpu.DetectISA() == cpu.AVX512 {
				// The AVX-512 level uses the AVX512_BF16 kernel where the CPU
				// has one; this is the float32 kernel it replaces.
				run("avx512f32", func(out []float32, w cpu.Mat) { cpu.MatVecQ4F32(p, out, w, x) })
				if cpu.HasAVX512VNNI() {
					run("avx512vnni", func(out []float32, w cpu.Mat) { cpu.MatVecQ4VNNI(p, out, w, x) })
					run("avx512vnni16", func(out []float32, w cpu.Mat) { cpu.MatVecQ4VNNI16(p, out, w, x) })
				}
			}
			runtime.KeepAlive(mem)
		}
		p.Close()
	}
}

// BenchmarkMatVecInt8 measures the int8 matrix-vector kernels
// (cpu.MatVecInt8) on the FlashHead's stage-1 centroids of gemma-3-1b
// (16384 x 1152), out of cache, at each level with 1 and 2 threads:
// GB/s of weight bytes and GFLOP/s (2 per weight).
func BenchmarkMatVecInt8(b *testing.B) {
	const rows, cols = 16384, 1152
	r := rand.New(rand.NewPCG(1, 2))
	mem := hugemem.New()
	mats := make([][]int8, outOfCache/(rows*cols))
	for i := range mats {
		bb := mem.Bytes(rows * cols)
		mats[i] = unsafe.Slice((*int8)(unsafe.Pointer(&bb[0])), rows*cols)
		for j := range mats[i] {
			mats[i][j] = int8(r.IntN(256) - 128)
		}
	}
	x := make([]float32, cols)
	for i := range x {
		x[i] = float32(i%7) - 3
	}
	out := make([]float32, rows)
	for _, threads := range []int{1, 2} {
		p := cpu.NewPool(threads)
		for level := cpu.Generic; level <= cpu.DetectISA(); level++ {
			b.Run(fmt.Sprintf("%s/centroids_%dx%d/t%d", level, rows, cols, threads), func(b *testing.B) {
				b.SetBytes(rows * cols)
				for i := 0; i < b.N; i++ {
					cpu.MatVecInt8ISA(level, p, out, mats[i%len(mats)], cols, x)
				}
				b.ReportMetric(2*float64(rows*cols)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				b.ReportMetric(float64(rows*cols)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
			})
		}
		p.Close()
	}
	runtime.KeepAlive(mem)
}

// BenchmarkDot measures Dot and Axpy at attention head sizes (in cache).
func BenchmarkDot(b *testing.B) {
	for _, n := range []int{64, 128, 256} {
		a, c := make([]float32, n), make([]float32, n)
		for i := range a {
			a[i], c[i] = float32(i%5)-2, float32(i%3)-1
		}
		b.Run(fmt.Sprintf("dot/%d", n), func(b *testing.B) {
			var s float32
			for i := 0; i < b.N; i++ {
				s += cpu.Dot(a, c)
			}
			b.ReportMetric(2*float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			_ = s
		})
		b.Run(fmt.Sprintf("axpy/%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				cpu.Axpy(a, 1e-9, c)
			}
			b.ReportMetric(2*float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkMatVecVsProbe alternates one pass of the bandwidth probe with
// one pass over out-of-cache copies of a decode product, on 2 threads,
// and reports the product's read rate over the probe's (ratio) along with
// both rates. The build VMs' memory changes speed from moment to moment
// (see README, CPU speed), so a product and the probe measured minutes
// apart do not compare; measured pass by pass they do. Run with
// -benchtime 40x or more to see both of the VMs' modes.
func BenchmarkMatVecVsProbe(b *testing.B) {
	p := cpu.NewPool(2)
	defer p.Close()
	probe := bench.NewProbe(256 << 20)
	for _, c := range []struct {
		kind string
		s    mvShape
	}{
		{"q4g128", mvShape{"gate_up_6912x1152", 6912, 1152}},
		{"q4g128", mvShape{"down_1152x6912", 1152, 6912}},
		{"q4g128", mvShape{"q_1024x1152", 1024, 1152}},
		{"bf16", mvShape{"head_262144x1152", 262144, 1152}},
		{"bf16", mvShape{"gate_up_6912x1152", 6912, 1152}},
		{"bf16", mvShape{"down_1152x6912", 1152, 6912}},
		{"bf16", mvShape{"q_1024x1152", 1024, 1152}},
	} {
		mem := hugemem.New()
		mats, one := benchMats(mem, c.kind, c.s.rows, c.s.cols)
		x := make([]float32, c.s.cols)
		for i := range x {
			x[i] = float32(i%7) - 3
		}
		out := make([]float32, c.s.rows)
		b.Run(c.kind+"/"+c.s.name, func(b *testing.B) {
			var ratio, probeGBs, productGBs float64
			for i := 0; i < b.N; i++ {
				bw := probe.Measure(p, 1)
				start := time.Now()
				for _, m := range mats {
					cpu.MatVec(p, out, m, x)
				}
				gbs := float64(one) * float64(len(mats)) / time.Since(start).Seconds() / 1e9
				ratio += gbs / bw
				probeGBs += bw
				productGBs += gbs
			}
			n := float64(b.N)
			b.ReportMetric(ratio/n, "ratio")
			b.ReportMetric(probeGBs/n, "probe_GB/s")
			b.ReportMetric(productGBs/n, "product_GB/s")
		})
		runtime.KeepAlive(mem)
	}
}
