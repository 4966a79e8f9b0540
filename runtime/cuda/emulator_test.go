package cuda

import (
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpenMissingLibrary(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "libcuda.so.1"))
	if !errors.Is(err, ErrNoDriver) {
		t.Fatalf("Open of a missing library: %v, want ErrNoDriver", err)
	}
	if !strings.Contains(err.Error(), "libcuda.so.1") || !strings.Contains(err.Error(), LibEnv) {
		t.Fatalf("error does not name the library and %s: %v", LibEnv, err)
	}
}

func TestOpenLibraryWithoutDriverAPI(t *testing.T) {
	// A shared library that is not a CUDA driver: the error names the
	// first missing entry point.
	libc := "/lib/x86_64-linux-gnu/libc.so.6"
	if _, err := os.Stat(libc); err != nil {
		t.Skip("no", libc)
	}
	_, err := Open(libc)
	if err == nil || !strings.Contains(err.Error(), "has no cuInit") {
		t.Fatalf("Open(libc) = %v, want an error naming cuInit", err)
	}
}

// emulator returns the test device, skipping when it is a real GPU (these
// tests use the emulator's controls).
func emulator(t *testing.T) *Device {
	dv := testDevice(t)
	if !dv.Drv.IsEmulator() {
		t.Skip("needs the emulator (FH_CUDA_LIB is a real driver)")
	}
	return dv
}

func TestNoDevice(t *testing.T) {
	dv := emulator(t)
	if err := dv.Drv.EmuControl("devices", 0); err != nil {
		t.Fatal(err)
	}
	defer dv.Drv.EmuControl("devices", 1)
	_, err := OpenDevice(dv.Drv, 0)
	if !errors.Is(err, ErrNoDevice) || !strings.Contains(err.Error(), "CUDA_ERROR_NO_DEVICE") {
		t.Fatalf("OpenDevice with no device: %v, want ErrNoDevice naming CUDA_ERROR_NO_DEVICE", err)
	}
	// The driver works again once the device is back.
	if err := dv.Drv.EmuControl("devices", 1); err != nil {
		t.Fatal(err)
	}
	d2, err := OpenDevice(dv.Drv, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenDevice(dv.Drv, 3); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("OpenDevice(3): %v, want ErrNoDevice", err)
	}
	d2.Close()
}

func TestOutOfMemory(t *testing.T) {
	dv := emulator(t)
	if err := dv.Drv.EmuControl("mem_limit", 64<<20); err != nil {
		t.Fatal(err)
	}
	defer dv.Drv.EmuControl("mem_limit", 8<<30)
	_, err := dv.Alloc(128 << 20)
	if !OutOfMemory(err) || !strings.Contains(err.Error(), "cuMemAlloc_v2") || !strings.Contains(err.Error(), "free") {
		t.Fatalf("Alloc beyond the memory: %v, want an out-of-memory error naming cuMemAlloc_v2 and the free memory", err)
	}
}

func TestBadPTX(t *testing.T) {
	dv := testDevice(t)
	err := dv.LoadPTX("broken.ptx", ".this is not ptx\n")
	if err == nil || !strings.Contains(err.Error(), "cuModuleLoadDataEx") || !strings.Contains(err.Error(), "JIT log") || !strings.Contains(err.Error(), "broken.ptx") {
		t.Fatalf("LoadPTX of garbage: %v, want an error with the call, the module and the JIT log", err)
	}
}

func TestLaunchChecksParameters(t *testing.T) {
	dv := testDevice(t)
	f, err := dv.Function("fh_rmsnorm")
	if err != nil {
		t.Fatal(err)
	}
	out := devF32(t, dv, make([]float32, 32))
	if err := dv.Launch(f, D1(1), D1(32), 0, 0, out, out, out, 32, float32(1e-6)); err == nil || !strings.Contains(err.Error(), "takes 6 parameters") {
		t.Fatalf("too few parameters: %v", err)
	}
	if err := dv.Launch(f, D1(1), D1(32), 0, 0, out, out, out, float32(32), float32(1e-6), 0); err == nil || !strings.Contains(err.Error(), "parameter 3") {
		t.Fatalf("float for an int parameter: %v", err)
	}
	if _, err := dv.Function("fh_no_such_kernel"); err == nil {
		t.Fatal("Function found a kernel that does not exist")
	}
}

func TestEmulatorLimits(t *testing.T) {
	dv := emulator(t)
	out := devF32(t, dv, make([]float32, 30000))
	f, err := dv.Function("fh_selftest_dyn_smem")
	if err != nil {
		t.Fatal(err)
	}
	if err := dv.Launch(f, D1(1), D1(1025), 0, 0, out, 1); err == nil || !strings.Contains(err.Error(), "1024 threads") {
		t.Fatalf("1025 threads per block: %v", err)
	}
	if err := dv.Launch(f, Dim3{1, 65536, 1}, D1(32), 0, 0, out, 1); err == nil || !strings.Contains(err.Error(), "grid") {
		t.Fatalf("grid y 65536: %v", err)
	}
	n := 20000 // 80000 bytes: over 48 KiB, under the opt-in maximum
	if err := dv.Launch(f, D1(1), D1(256), 4*n, 0, out, n); err == nil || !strings.Contains(err.Error(), "dynamic shared memory") {
		t.Fatalf("80 KB of shared memory without opting in: %v", err)
	}
	if err := dv.SetMaxDynamicSmem(f, 4*n); err != nil {
		t.Fatal(err)
	}
	if err := dv.Launch(f, D1(1), D1(256), 4*n, 0, out, n); err != nil {
		t.Fatalf("after opting in: %v", err)
	}
	got := download(t, dv, out, n)
	for i, v := range got {
		if v != float32(n-1-i) {
			t.Fatalf("dynamic shared memory round trip: [%d] = %g, want %d", i, v, n-1-i)
		}
	}
	if err := dv.SetMaxDynamicSmem(f, 1<<20); err == nil {
		t.Fatal("opting in to 1 MiB of shared memory succeeded")
	}
}

func TestEmulatorReportsKernelBugs(t *testing.T) {
	dv := emulator(t)
	out := devF32(t, dv, make([]float32, 64))
	f, err := dv.Function("fh_selftest_divergent_barrier")
	if err != nil {
		t.Fatal(err)
	}
	if err := dv.Launch(f, D1(1), D1(64), 0, 0, out); err == nil || !strings.Contains(err.Error(), "__syncthreads") {
		t.Fatalf("divergent barrier: %v, want a launch error about __syncthreads", err)
	}
	f, err = dv.Function("fh_selftest_shuffle_exited")
	if err != nil {
		t.Fatal(err)
	}
	if err := dv.Launch(f, D1(1), D1(32), 0, 0, out); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("shuffle naming exited lanes: %v", err)
	}
	// The device keeps working after a failed launch.
	launch(t, dv, "fh_selftest_dyn_smem", D1(1), D1(32), 16, out, 4)
}

func TestEmulatorSchedulesExposeRaces(t *testing.T) {
	dv := emulator(t)
	out := devF32(t, dv, make([]float32, 64))
	defer dv.Drv.EmuControl("schedule", 0)
	var results [2][]float32
	for s := range results {
		if err := dv.Drv.EmuControl("schedule", int64(s)); err != nil {
			t.Fatal(err)
		}
		launch(t, dv, "fh_selftest_race", D1(1), D1(64), 0, out)
		results[s] = download(t, dv, out, 64)
	}
	same := true
	for i := range results[0] {
		same = same && math.Float32bits(results[0][i]) == math.Float32bits(results[1][i])
	}
	if same {
		t.Fatal("a kernel reading shared memory without a barrier gave the same result in forward and reverse order")
	}
}

func TestGraphCaptureReplays(t *testing.T) {
	dv := testDevice(t)
	s, err := dv.NewStream()
	if err != nil {
		t.Fatal(err)
	}
	defer dv.DestroyStream(s)
	x := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}
	dx := devF32(t, dv, x)
	w := make([]float32, 32)
	for i := range w {
		w[i] = 1
	}
	dw := devF32(t, dv, w)
	out := devF32(t, dv, make([]float32, 32))
	f, err := dv.Function("fh_rmsnorm")
	if err != nil {
		t.Fatal(err)
	}
	if err := dv.BeginCapture(s); err != nil {
		t.Fatal(err)
	}
	n := 32
	if err := dv.Launch(f, D1(1), D1(32), 0, s, out, dx, dw, n, float32(1e-6), 0); err != nil {
		t.Fatal(err)
	}
	n = 1 // captured values are copied: changing the Go variable must not matter
	g, err := dv.EndCapture(s)
	if err != nil {
		t.Fatal(err)
	}
	defer dv.DestroyGraph(g)
	if err := dv.Memset(out, 0); err != nil {
		t.Fatal(err)
	}
	if err := dv.LaunchGraph(g, s); err != nil {
		t.Fatal(err)
	}
	if err := dv.SyncStream(s); err != nil {
		t.Fatal(err)
	}
	got := download(t, dv, out, 32)
	var ss float64
	for _, v := range x {
		ss += float64(v) * float64(v)
	}
	inv := 1 / math.Sqrt(ss/32+1e-6)
	for i := range got {
		if math.Abs(float64(got[i])-float64(x[i])*inv) > 1e-5 {
			t.Fatalf("graph replay: [%d] = %g, want %g", i, got[i], float64(x[i])*inv)
		}
	}
	_ = n
}

// TestASanCatchesOutOfBounds runs, in a child process, a kernel that
// writes one element past the end of its output buffer, and requires the
// AddressSanitizer build of the emulator to abort it with a report. It
// only runs against the ASan build (make cuda-test-asan).
func TestASanCatchesOutOfBounds(t *testing.T) {
	if os.Getenv("FH_CUDA_OOB_CHILD") == "1" {
		dv := testDevice(t)
		out := devF32(t, dv, make([]float32, 63))
		x := devF32(t, dv, make([]float32, 64))
		w := devF32(t, dv, make([]float32, 64))
		// 64 rows of 1 element into a 63-element buffer.
		launch(t, dv, "fh_rmsnorm", D1(64), D1(32), 0, out, x, w, 1, float32(1), 0)
		return
	}
	dv := emulator(t)
	if !dv.Drv.EmuSanitized() {
		t.Skip("needs the AddressSanitizer build of the emulator (make cuda-test-asan)")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestASanCatchesOutOfBounds$", "-test.count=1")
	cmd.Env = append(os.Environ(), "FH_CUDA_OOB_CHILD=1")
	msg, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(msg), "AddressSanitizer") || !strings.Contains(string(msg), "fh_rmsnorm") {
		t.Fatalf("out-of-bounds kernel write: err %v, output:\n%s\nwant an AddressSanitizer report naming fh_rmsnorm", err, msg)
	}
}
