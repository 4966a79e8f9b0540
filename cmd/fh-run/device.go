package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"

	"github.com/fhkit/fhkit/internal/cli"
	"github.com/fhkit/fhkit/runtime/cuda"
	"github.com/fhkit/fhkit/runtime/head"
	"github.com/fhkit/fhkit/runtime/verify"
)

// deviceUsage is the help of --device.
const deviceUsage = "where the model runs: cpu, cuda (NVIDIA GPU through the CUDA driver; " + cuda.LibEnv + " selects another driver library, e.g. the emulator), or auto (CUDA when a device is present, else the CPU)"

// registerDevice adds --device to a command that can run on a GPU.
func registerDevice(fs *pflag.FlagSet) *string {
	return fs.String("device", "cpu", deviceUsage)
}

// checkDevice validates a --device value before anything is loaded.
func checkDevice(device string) error {
	switch device {
	case "cpu", "cuda", "auto":
		return nil
	}
	return cli.Usagef("--device %q: want cpu, cuda or auto", device)
}

// deviceMessages is where the device choice is reported: with the output
// on stdout, or on stderr when stdout carries JSON.
func deviceMessages(asJSON bool, stdout io.Writer) io.Writer {
	if asJSON {
		return os.Stderr
	}
	return stdout
}

// openDevice resolves --device for a loaded model: nil means the CPU;
// otherwise a CUDA runner with the model's weights (and its FlashHead, if
// l has one) uploaded. auto falls back to the CPU, saying why, when there
// is no usable driver or device. The choice is reported on msg.
func openDevice(device string, l *loaded, rf *runtimeFlags, msg io.Writer) (*cuda.Runner, error) {
	if err := checkDevice(device); err != nil || device == "cpu" {
		return nil, err
	}
	r, err := openCUDA(l, rf)
	if err != nil {
		if device == "auto" && (errors.Is(err, cuda.ErrNoDriver) || errors.Is(err, cuda.ErrNoDevice)) {
			fmt.Fprintf(msg, "device: CPU (no CUDA device: %v)\n", err)
			return nil, nil
		}
		return nil, err
	}
	kind := "GPU"
	if r.Dev.Drv.IsEmulator() {
		kind = "CPU emulator of the CUDA driver, " + r.Dev.Drv.Path
	}
	fmt.Fprintf(msg, "device: CUDA %s (%s)\n", r.Dev, kind)
	return r, nil
}

func openCUDA(l *loaded, rf *runtimeFlags) (*cuda.Runner, error) {
	drv, err := cuda.Open("")
	if err != nil {
		return nil, err
	}
	dv, err := cuda.OpenDevice(drv, 0)
	if err != nil {
		return nil, err
	}
	r, err := cuda.NewRunner(dv, l.m, l.kv, rf.ctx)
	if err != nil {
		dv.Close()
		return nil, fmt.Errorf("%s: %w", rf.model, err)
	}
	if l.flash != nil {
		if err := r.LoadFlashHead(l.flash, rf.stage1 == "int8"); err != nil {
			r.Close()
			dv.Close()
			return nil, fmt.Errorf("%s: %w", rf.model, err)
		}
	}
	return r, nil
}

// closeDevice frees a runner from openDevice.
func closeDevice(r *cuda.Runner) {
	if r != nil {
		r.Close()
		r.Dev.Close()
	}
}

// verifyDevice is fh-run verify with the model on the device: its logits
// against the stored baseline, the --baseline-model on the CPU, or, with
// neither, the same model on the CPU; and with a FlashHead, the device's
// FlashHead choice against the CPU's at every position.
func verifyDevice(r *cuda.Runner, l, base *loaded, seqs []verify.Sequence, stored bool, asJSON bool, minTop1, maxKL float64, stdout io.Writer) error {
	against := "stored baseline logits"
	cpuBase := l.run
	if stored {
		cpuBase = nil
	} else if base != nil {
		cpuBase = base.run
		against = "the baseline model on the CPU"
	} else {
		against = "the same model on the CPU"
	}
	rep, err := cuda.VerifyRun(r, cpuBase, seqs, l.kv)
	if err != nil {
		return err
	}
	out := struct {
		Device  string          `json:"device"`
		Against string          `json:"against"`
		Report  *verify.Report  `json:"report"`
		Flash   *flashAgreement `json:"flashhead,omitempty"`
	}{Device: r.Dev.String(), Against: against, Report: rep}
	if l.flash != nil {
		agree, total, err := cuda.FlashAgreement(r, l.run, l.flash, seqs, l.kv)
		if err != nil {
			return err
		}
		out.Flash = &flashAgreement{Probes: l.flash.Probes, Positions: total, Agreement: float64(agree) / float64(max(1, total))}
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		s := rep.Stats
		fmt.Fprintf(stdout, "device %s vs %s:\n", out.Device, against)
		fmt.Fprintf(stdout, "  %d positions: top-1 agreement %.4f, top-5 overlap %.4f, mean KL %.3g, max KL %.3g, max |Δlogit| %.3g, mean |Δlogit| %.3g\n",
			s.Positions, s.Top1Agreement, s.Top5Overlap, s.MeanKL, s.MaxKL, s.MaxAbsDiff, s.MeanAbsDiff)
		if out.Flash != nil {
			fmt.Fprintf(stdout, "  FlashHead (%d probes) argmax, device vs CPU: agreement %.4f over %d positions\n", out.Flash.Probes, out.Flash.Agreement, out.Flash.Positions)
		}
	}
	if minTop1 >= 0 && rep.Top1Agreement < minTop1 {
		return fmt.Errorf("top-1 agreement %.4f is below --min-top1 %g", rep.Top1Agreement, minTop1)
	}
	if minTop1 >= 0 && out.Flash != nil && out.Flash.Agreement < minTop1 {
		return fmt.Errorf("FlashHead agreement %.4f is below --min-top1 %g", out.Flash.Agreement, minTop1)
	}
	if maxKL >= 0 && rep.MeanKL > maxKL {
		return fmt.Errorf("mean KL %.3g is above --max-kl %g", rep.MeanKL, maxKL)
	}
	return nil
}

type flashAgreement struct {
	Probes    int     `json:"probes"`
	Positions int     `json:"positions"`
	Agreement float64 `json:"agreement"`
}

// benchDevice is fh-run bench on the device.
func benchDevice(r *cuda.Runner, fh *head.FlashHead, model string, prompt, gen int, seed uint64, asJSON bool, stdout io.Writer) error {
	res, err := cuda.Bench(r, fh, prompt, gen, seed)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(stdout, "%s on %s: device copy bandwidth %.1f GB/s, decode step as a CUDA graph: %v\n", model, res.Device, res.BandwidthGBs, res.Graphs)
	if res.Emulated {
		fmt.Fprintln(stdout, "(emulator: these figures time the CPU emulation, not a GPU)")
	}
	fmt.Fprintf(stdout, "prefill: %d tokens at %.1f tok/s\n", res.PromptTokens, res.PrefillTokS)
	fmt.Fprintf(stdout, "%-10s %10s %12s %14s %12s\n", "head", "decode", "ms/token", "bytes/token", "of bound")
	for _, h := range res.Heads {
		fmt.Fprintf(stdout, "%-10s %6.1f t/s %12.3f %14s %11.0f%%\n", h.Head, h.DecodeTokS, h.MsPerToken, cli.HumanBytes(h.BytesPerToken), 100*h.BoundRatio)
	}
	return nil
}
