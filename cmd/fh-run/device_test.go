package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fhkit/fhkit/runtime/cuda"
	"github.com/fhkit/fhkit/runtime/cuda/emu"
)

func TestDeviceFlagErrors(t *testing.T) {
	path := convertFixture(t, "gemma3-tiny")
	if code, _, errOut := runArgs("verify", "--model", path, "--device", "tpu"); code != 2 || !strings.Contains(errOut, "--device") {
		t.Fatalf("--device tpu: exit %d, %q; want a usage error", code, errOut)
	}
	t.Setenv(cuda.LibEnv, filepath.Join(t.TempDir(), "libcuda.so.1"))
	code, _, errOut := runArgs("verify", "--model", path, "--device", "cuda")
	if code != 1 || !strings.Contains(errOut, "CUDA driver library not found") {
		t.Fatalf("--device cuda without a driver: exit %d, %q", code, errOut)
	}
	code, out, errOut := runArgs("verify", "--model", path, "--device", "auto", "--baseline-model", path)
	if code != 0 || !strings.Contains(out, "device: CPU (no CUDA device") || !strings.Contains(out, "all") {
		t.Fatalf("--device auto without a driver: exit %d, stdout %q, stderr %q; want the CPU with a message", code, out, errOut)
	}
}

// TestDeviceCUDAEmulated runs verify and bench on the emulated device.
func TestDeviceCUDAEmulated(t *testing.T) {
	useEmulator(t)
	path := convertFixture(t, "gemma3-tiny")
	code, out, errOut := runArgs("verify", "--model", path, "--device", "cuda", "--min-top1", "1", "--sequences", "2", "--json")
	if code != 0 {
		t.Fatalf("verify --device cuda: exit %d: %s", code, errOut)
	}
	var v struct {
		Device string `json:"device"`
		Report struct {
			Top1       float64 `json:"top1_agreement"`
			MaxAbsDiff float64 `json:"max_abs_diff"`
		} `json:"report"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("verify --json: %q: %v", out, err)
	}
	if !strings.Contains(v.Device, "emulator") || v.Report.Top1 != 1 || v.Report.MaxAbsDiff > 1e-3 {
		t.Fatalf("device verify: %+v, stderr %q", v, errOut)
	}
	code, out, errOut = runArgs("verify", "--model", path, "--device", "cuda", "--sequences", "1", "--seq-len", "8")
	if code != 0 || !strings.Contains(out, "device: CUDA") || !strings.Contains(out, "top-1 agreement 1.0000") {
		t.Fatalf("verify --device cuda: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// Greedy generation on the device gives the CPU's tokens.
	gen := []string{"generate", "--model", path, "--prompt", "hello there", "--max-tokens", "10", "--ignore-eos", "--json"}
	_, cpuOut, _ := runArgs(gen...)
	code, devOut, errOut := runArgs(append(gen, "--device", "cuda")...)
	var c, d struct {
		Tokens []int `json:"tokens"`
	}
	if code != 0 || json.Unmarshal([]byte(cpuOut), &c) != nil || json.Unmarshal([]byte(devOut), &d) != nil || len(d.Tokens) != 10 || fmt.Sprint(c.Tokens) != fmt.Sprint(d.Tokens) {
		t.Fatalf("generate --device cuda: exit %d, tokens %v, CPU tokens %v (%s)", code, d.Tokens, c.Tokens, errOut)
	}
	code, out, errOut = runArgs("bench", "--model", path, "--device", "cuda", "--prompt-tokens", "8", "--gen-tokens", "3", "--json")
	if code != 0 {
		t.Fatalf("bench --device cuda: exit %d: %s", code, errOut)
	}
	var b struct {
		Emulated bool `json:"emulated"`
		Heads    []struct {
			DecodeTokS float64 `json:"decode_tok_s"`
		} `json:"heads"`
	}
	if err := json.Unmarshal([]byte(out), &b); err != nil || !b.Emulated || len(b.Heads) != 1 || !(b.Heads[0].DecodeTokS > 0) {
		t.Fatalf("bench --device cuda --json: %q (%v)", out, err)
	}
}

// fh-run serve --device cuda on the emulated device: requests sent
// together (each sequence with its own KV cache on the device, run in turn
// within a step) get the greedy text of the same server on the CPU, with
// the FlashHead and with the dense head.
func TestServeCUDAEmulated(t *testing.T) {
	useEmulator(t)
	path := convertFixture(t, "gemma3-tiny")
	fh := filepath.Join(t.TempDir(), "model-fh.fhm")
	buildFlashHead(t, path, fh)
	prompts := []string{"hello there", "once upon a time", "a"}
	for _, head := range []string{"flashhead", "dense"} {
		cpuURL, _ := startServe(t, "--model", fh, "--head", head, "--device", "cpu")
		devURL, devLog := startServe(t, "--model", fh, "--head", head, "--device", "cuda", "--max-batch", "2")
		if !strings.Contains(devLog.String(), "device cuda") {
			t.Fatalf("serve log does not name the device: %s", devLog)
		}
		texts := make([]string, len(prompts))
		errs := make(chan error, len(prompts))
		for i, p := range prompts {
			go func() {
				// No t.Fatal off the test goroutine: errors go back on errs.
				raw, _ := json.Marshal(map[string]any{"prompt": p, "max_tokens": 12, "temperature": 0, "ignore_eos": true})
				resp, err := http.Post(devURL+"/v1/completions", "application/json", bytes.NewReader(raw))
				if err != nil {
					errs <- err
					return
				}
				defer resp.Body.Close()
				var r struct {
					Choices []struct {
						Text string `json:"text"`
					} `json:"choices"`
				}
				if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != 200 || len(r.Choices) != 1 {
					errs <- fmt.Errorf("%q: status %d, %v", p, resp.StatusCode, err)
					return
				}
				texts[i] = r.Choices[0].Text
				errs <- nil
			}()
		}
		for range prompts {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		for i, p := range prompts {
			status, r := postJSON(t, cpuURL+"/v1/completions", map[string]any{"prompt": p, "max_tokens": 12, "temperature": 0, "ignore_eos": true})
			if status != 200 {
				t.Fatalf("CPU server: %d %v", status, r)
			}
			if want := r["choices"].([]any)[0].(map[string]any)["text"].(string); texts[i] != want || want == "" {
				t.Errorf("head %s prompt %q: device server %q, CPU server %q", head, p, texts[i], want)
			}
		}
	}
	// The load generator's in-process server on the device.
	code, out, errOut := runArgs("loadgen", "--model", fh, "--device", "cuda", "--clients", "3", "--requests", "1", "--max-tokens", "4", "--baseline=false")
	if code != 0 || !strings.Contains(out, "3 ok, 0 errors") || !strings.Contains(errOut, "device: CUDA") {
		t.Fatalf("loadgen --device cuda: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// useEmulator builds the CUDA driver emulator and points the commands at it
// for the rest of the test (skipping without a C++ compiler).
func useEmulator(t *testing.T) {
	t.Helper()
	lib, err := emu.Build(emu.DefaultDir(), cuda.KernelSources, emu.Options{})
	if errors.Is(err, emu.ErrNoCompiler) {
		t.Skip("needs g++ to build the CUDA emulator:", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(cuda.LibEnv, lib)
}

// fh-run chat --device cuda on the emulated device: a three-turn greedy
// conversation (the device sequence's cache reused between turns, then a
// /reset) prints the CPU chat's replies.
func TestChatCUDAEmulated(t *testing.T) {
	useEmulator(t)
	path := convertFixture(t, "gemma3-tiny")
	in := "hello\ntell me more\n/reset\nhow are you\n"
	replies := map[string]string{}
	for _, device := range []string{"cpu", "cuda"} {
		var so, se strings.Builder
		args := []string{"--model", path, "--max-tokens", "8", "--temperature", "0", "--device", device}
		if err := runChat(args, strings.NewReader(in), &so, &se); err != nil {
			t.Fatalf("chat --device %s: %v (%s)", device, err, se.String())
		}
		if strings.Count(se.String(), "tok/s") != 3 {
			t.Fatalf("chat --device %s: stderr %q", device, se.String())
		}
		replies[device] = so.String()
	}
	if replies["cuda"] != replies["cpu"] || replies["cpu"] == "" {
		t.Errorf("device chat %q, CPU chat %q", replies["cuda"], replies["cpu"])
	}
}
