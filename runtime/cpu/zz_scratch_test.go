package cpu_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/fhkit/fhkit/runtime/bench"
	"github.com/fhkit/fhkit/runtime/cpu"
)

func BenchmarkZZColdQ4(b *testing.B) {
	shapes := []mvShape{{"down", 1152, 6912}, {"gate", 6912, 1152}, {"sq", 1152, 1152}, {"mid", 1152, 3456}}
	type setT struct {
		mats []cpu.Mat
		one  int64
		x    []float32
		out  []float32
	}
	var sets []setT
	for _, s := range shapes {
		mats, one := benchMats("q4g128", s.rows, s.cols)
		for _, m := range mats {
			m.PrepareMatVec()
		}
		x := make([]float32, s.cols)
		for i := range x {
			x[i] = float32(i%7) - 3
		}
		sets = append(sets, setT{mats, one, x, make([]float32, s.rows)})
	}
	probe := bench.NewProbe(256 << 20)
	for _, th := range []int{1, 2} {
		p := cpu.NewPool(th)
		b.Run(fmt.Sprintf("t%d", th), func(b *testing.B) {
			sum := make([]float64, len(sets))
			for i := 0; i < b.N; i++ {
				bw := probe.Measure(p, 1)
				for k, s := range sets {
					start := time.Now()
					for _, m := range s.mats {
						cpu.MatVec(p, s.out, m, s.x)
					}
					sum[k] += float64(s.one) * float64(len(s.mats)) / time.Since(start).Seconds() / 1e9 / bw
				}
			}
			for k := range sets {
				b.ReportMetric(sum[k]/float64(b.N), shapes[k].name)
			}
		})
		p.Close()
	}
}
