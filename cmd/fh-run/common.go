package main

import (
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/internal/cli"
	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/head"
	"github.com/fhkit/fhkit/runtime/model"
	"github.com/fhkit/fhkit/runtime/sample"
	"github.com/fhkit/fhkit/runtime/tokenizer"
)

// runtimeFlags are the flags of every command that runs a model.
type runtimeFlags struct {
	model   string
	threads int
	kv      string
	ctx     int
	head    string
	probes  int
	stage1  string
}

func (r *runtimeFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&r.model, "model", "", "model file (.fhm) (required)")
	fs.IntVar(&r.threads, "threads", 0, "worker threads (0 = all cores)")
	fs.StringVar(&r.kv, "kv", "f32", "KV cache precision: f32, bf16 or f16")
	fs.IntVar(&r.ctx, "ctx", 0, "context limit in tokens (0 = the model's maximum)")
	fs.StringVar(&r.head, "head", "auto", "LM head: flashhead, dense, or auto (flashhead when the model has one)")
	fs.IntVar(&r.probes, "probes", 0, "FlashHead clusters scored per token (0 = the model's default)")
	fs.StringVar(&r.stage1, "stage1", "bf16", "FlashHead centroid precision: bf16 or int8")
}

// loaded is an open model with its pool and tokenizer.
type loaded struct {
	m    *model.Model
	pool *cpu.Pool
	run  *model.Runner
	tok  *tokenizer.Tokenizer
	kv   dtype.DType
	// flash is the FlashHead to use (nil: the dense head).
	flash *head.FlashHead
}

func (l *loaded) Close() {
	l.pool.Close()
	l.m.Close()
}

func (r *runtimeFlags) load(withTokenizer bool) (*loaded, error) {
	if r.model == "" {
		return nil, cli.Usagef("--model is required")
	}
	if r.threads < 0 {
		return nil, cli.Usagef("--threads %d must be >= 0", r.threads)
	}
	if r.ctx < 0 {
		return nil, cli.Usagef("--ctx %d must be >= 0", r.ctx)
	}
	kv, err := model.ParseKVDType(r.kv)
	if err != nil {
		return nil, cli.Usagef("--kv: %v", err)
	}
	st1, err := head.ParseStage1(r.stage1)
	if err != nil {
		return nil, cli.Usagef("--stage1: %v", err)
	}
	if r.head != "auto" && r.head != "flashhead" && r.head != "dense" {
		return nil, cli.Usagef("--head %q: want flashhead, dense or auto", r.head)
	}
	if r.probes < 0 {
		return nil, cli.Usagef("--probes %d must be >= 0", r.probes)
	}
	m, err := model.Load(r.model)
	if err != nil {
		return nil, err
	}
	l := &loaded{m: m, kv: kv}
	if r.head == "flashhead" || (r.head == "auto" && m.File.Metadata.FlashHead != nil) {
		if l.flash, err = head.Load(m.File, m.Head, r.probes, st1, m.Config.FinalLogitSoftcap); err != nil {
			m.Close()
			return nil, err
		}
	}
	if withTokenizer {
		if l.tok, err = tokenizer.FromFHM(m.File); err != nil {
			m.Close()
			return nil, fmt.Errorf("%s: tokenizer: %w", r.model, err)
		}
	}
	l.pool = cpu.NewPool(r.threads)
	l.run = model.NewRunner(m, l.pool)
	return l, nil
}

// sampleFlags are the sampling flags of generate and chat.
type sampleFlags struct {
	temperature, topP, minP, repetition float64
	topK                                int
	seed                                uint64
}

func (s *sampleFlags) register(fs *pflag.FlagSet) {
	fs.Float64Var(&s.temperature, "temperature", 0, "sampling temperature (0 = greedy)")
	fs.Float64Var(&s.topP, "top-p", 1, "nucleus sampling: keep the most likely tokens up to this probability")
	fs.IntVar(&s.topK, "top-k", 0, "keep the K most likely tokens (0 = all)")
	fs.Float64Var(&s.minP, "min-p", 0, "drop tokens less likely than this fraction of the most likely one")
	fs.Float64Var(&s.repetition, "repetition-penalty", 1, "penalise tokens already in the context (1 = off)")
	fs.Uint64Var(&s.seed, "seed", 0, "random seed (the same seed gives the same text)")
}

func (s *sampleFlags) params() (sample.Params, error) {
	p := sample.Params{Temperature: s.temperature, TopK: s.topK, TopP: s.topP, MinP: s.minP, RepetitionPenalty: s.repetition, Seed: s.seed}
	if err := p.Validate(); err != nil {
		return p, cli.Usagef("%v", err)
	}
	return p, nil
}

// parse parses a subcommand's flags, printing its help on --help.
func parse(fs *pflag.FlagSet, args []string, help string, stdout io.Writer) error {
	fs.Usage = func() { fmt.Fprint(stdout, help+fs.FlagUsages()) }
	err := cli.ParseFlags(fs, args)
	if err == pflag.ErrHelp {
		fs.Usage()
	}
	return err
}
