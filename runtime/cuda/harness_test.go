package cuda

import (
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"github.com/fhkit/fhkit/runtime/cuda/emu"
)

// The tests run against $FH_CUDA_LIB when it is set (a real driver, or a
// prebuilt emulator such as the ASan build), and otherwise build the
// emulator with g++ (skipping, with a message, when g++ is absent).
var testEnv struct {
	once sync.Once
	dev  *Device
	skip string
	err  error
}

func testDevice(t *testing.T) *Device {
	t.Helper()
	testEnv.once.Do(func() {
		lib := os.Getenv(LibEnv)
		if lib == "" {
			p, err := emu.Build(emu.DefaultDir(), KernelSources, emu.Options{})
			if errors.Is(err, emu.ErrNoCompiler) {
				testEnv.skip = "CUDA kernel tests need g++ to build the emulator (or FH_CUDA_LIB): " + err.Error()
				return
			}
			if err != nil {
				testEnv.err = err
				return
			}
			lib = p
		}
		drv, err := Open(lib)
		if err != nil {
			testEnv.err = err
			return
		}
		testEnv.dev, testEnv.err = OpenDevice(drv, 0)
	})
	if testEnv.skip != "" {
		t.Skip(testEnv.skip)
	}
	if testEnv.err != nil {
		t.Fatal(testEnv.err)
	}
	return testEnv.dev
}

// schedules runs fn once per emulator schedule (forward, reverse and
// shuffled thread order between barriers) and requires bit-identical
// results: a kernel whose output depends on the order its threads run in
// has a race. On a real GPU fn runs once.
func schedules(t *testing.T, dv *Device, fn func() []float32) []float32 {
	t.Helper()
	if !dv.Drv.IsEmulator() {
		return fn()
	}
	defer dv.Drv.EmuControl("schedule", 0)
	var first []float32
	for s, name := range []string{"forward", "reverse", "shuffled"} {
		if err := dv.Drv.EmuControl("schedule", int64(s)); err != nil {
			t.Fatal(err)
		}
		if s == 2 {
			if err := dv.Drv.EmuControl("seed", int64(rand.Uint32())); err != nil {
				t.Fatal(err)
			}
		}
		got := fn()
		if t.Failed() {
			return got
		}
		if first == nil {
			first = got
			continue
		}
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(first[i]) {
				t.Fatalf("%s schedule: element %d = %g, forward schedule gave %g (the kernel depends on thread order)", name, i, got[i], first[i])
			}
		}
	}
	return first
}

// u32 is float32's unit roundoff.
const u32 = 1.0 / (1 << 24)

// checkClose compares got with want element by element against bound.
func checkClose(t *testing.T, what string, got, want, bound []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	bad := 0
	worst := 0.0
	for i := range got {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if math.IsNaN(float64(got[i])) || d > float64(bound[i]) {
			if bad < 5 {
				t.Errorf("%s: [%d] = %.9g, want %.9g (|Δ| %.3g > bound %.3g)", what, i, got[i], want[i], d, bound[i])
			}
			bad++
		}
		if bound[i] > 0 {
			worst = max(worst, d/float64(bound[i]))
		}
	}
	if bad > 0 {
		t.Fatalf("%s: %d of %d values outside the bound", what, bad, len(got))
	}
	t.Logf("%s: %d values, largest |Δ|/bound %.3f", what, len(got), worst)
}

func randFloats(r *rand.Rand, n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = (r.Float32()*2 - 1) * scale
	}
	return v
}

// dev allocates and uploads v, freeing it at the end of the test.
func devF32(t *testing.T, dv *Device, v []float32) Buffer {
	t.Helper()
	b, err := dv.AllocF32(len(v), v)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dv.Free(b) })
	return b
}

func devBytes(t *testing.T, dv *Device, v []byte) Buffer {
	t.Helper()
	b, err := dv.Alloc(len(v))
	if err != nil {
		t.Fatal(err)
	}
	if err := dv.Upload(b, 0, v); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dv.Free(b) })
	return b
}

func download(t *testing.T, dv *Device, b Buffer, n int) []float32 {
	t.Helper()
	v := make([]float32, n)
	if err := dv.DownloadF32(v, b, 0); err != nil {
		t.Fatal(err)
	}
	return v
}

func launch(t *testing.T, dv *Device, name string, grid, block Dim3, smem int, args ...any) {
	t.Helper()
	f, err := dv.Function(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := dv.Launch(f, grid, block, smem, 0, args...); err != nil {
		t.Fatal(err)
	}
}
