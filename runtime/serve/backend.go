package serve

import (
	"fmt"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/cuda"
	"github.com/fhkit/fhkit/runtime/model"
)

// Backend runs the model for the server's scheduler, whose goroutine
// becomes its only user: on the CPU (NewCPUBackend) or on a CUDA device
// (NewCUDABackend). The FlashHead, when the server has one, runs on the
// CPU over the hidden states the backend returns.
type Backend interface {
	// Model is the loaded model (configuration, tokens, weights).
	Model() *model.Model
	// Pool is the CPU threads: the FlashHead's, and the CPU backend's
	// forward pass.
	Pool() *cpu.Pool
	// Device names where the forward pass runs, for the log.
	Device() string
	// NewSequence returns an empty sequence whose context holds limit
	// tokens (the model's maximum when limit is 0 or above it).
	NewSequence(limit int) (Sequence, error)
	// Forward runs one scheduler step: sequence seqs[i] (from this
	// backend) continues with tokens[i]. out receives each sequence's
	// final-normed hidden state of its last token (len(seqs) x hidden).
	Forward(out []float32, seqs []Sequence, tokens [][]int) error
	// DenseLogits writes the dense head's logits (and the final soft-cap)
	// of n hidden rows (n x hidden) into out (n x vocab).
	DenseLogits(out, hidden []float32) error
}

// Sequence is one request's decoding state on a Backend: its position,
// context limit and KV cache.
type Sequence interface {
	// Pos is the number of tokens in the cache.
	Pos() int
	// Limit is the context limit in tokens.
	Limit() int
	// KVBytes is the memory of the KV cache.
	KVBytes() int64
	// Reset empties the sequence, keeping its memory for a new request.
	Reset()
	// Rewind keeps the first pos tokens for a new request that starts
	// with them; false (nothing changed) when the cache cannot.
	Rewind(pos int) bool
	// Close frees the sequence's memory.
	Close() error
}

// NewCPUBackend runs the model on the CPU through run (on run's pool),
// with a KV cache of precision kv (f32, bf16 or f16): one batched forward
// pass per step for all sequences (model.Runner.ForwardBatch).
func NewCPUBackend(run *model.Runner, kv dtype.DType) Backend {
	return &cpuBackend{run: run, kv: kv}
}

type cpuBackend struct {
	run  *model.Runner
	kv   dtype.DType
	seqs []model.Seq // Forward's scratch
}

type cpuSequence struct{ st *model.State }

func (s cpuSequence) Pos() int            { return s.st.Pos }
func (s cpuSequence) Limit() int          { return s.st.Limit }
func (s cpuSequence) KVBytes() int64      { return s.st.KVBytes() }
func (s cpuSequence) Rewind(pos int) bool { return s.st.Rewind(pos) }
func (s cpuSequence) Reset()              { s.st.Reset() }
func (s cpuSequence) Close() error        { return nil } // the garbage collector frees it

func (b *cpuBackend) Model() *model.Model { return b.run.M }
func (b *cpuBackend) Pool() *cpu.Pool     { return b.run.Pool }
func (b *cpuBackend) Device() string      { return fmt.Sprintf("cpu, %d threads", b.run.Pool.Threads()) }

func (b *cpuBackend) NewSequence(limit int) (Sequence, error) {
	st, err := b.run.M.NewState(limit, b.kv)
	if err != nil {
		return nil, err
	}
	return cpuSequence{st}, nil
}

func (b *cpuBackend) Forward(out []float32, seqs []Sequence, tokens [][]int) error {
	ms := b.seqs[:0]
	for i, s := range seqs {
		cs, ok := s.(cpuSequence)
		if !ok {
			return fmt.Errorf("forward: sequence %d is not a CPU sequence", i)
		}
		ms = append(ms, model.Seq{State: cs.st, Tokens: tokens[i]})
	}
	err := b.run.ForwardBatch(out, ms)
	clear(ms) // the scratch must not keep finished requests' states
	b.seqs = ms[:0]
	return err
}

func (b *cpuBackend) DenseLogits(out, hidden []float32) error {
	b.run.DenseLogitsInto(out, hidden)
	return nil
}

// NewCUDABackend runs the model on a CUDA device through r: each request
// has its own KV cache in device memory next to one copy of the weights,
// and a step is one batched pass over all sequences' rows
// (cuda.Runner.ForwardBatch). pool runs the FlashHead on the CPU.
func NewCUDABackend(r *cuda.Runner, pool *cpu.Pool) Backend {
	return &cudaBackend{r: r, pool: pool}
}

type cudaBackend struct {
	r    *cuda.Runner
	pool *cpu.Pool
	seqs []*cuda.Seq // Forward's scratch
}

type cudaSequence struct{ s *cuda.Seq }

func (s cudaSequence) Pos() int            { return s.s.Pos }
func (s cudaSequence) Limit() int          { return s.s.Limit }
func (s cudaSequence) KVBytes() int64      { return s.s.KVBytes() }
func (s cudaSequence) Reset()              { s.s.Pos = 0 }
func (s cudaSequence) Rewind(pos int) bool { return s.s.Rewind(pos) }
func (s cudaSequence) Close() error        { return s.s.Close() }

func (b *cudaBackend) Model() *model.Model { return b.r.M }
func (b *cudaBackend) Pool() *cpu.Pool     { return b.pool }
func (b *cudaBackend) Device() string      { return "cuda " + b.r.Dev.String() }

func (b *cudaBackend) NewSequence(limit int) (Sequence, error) {
	s, err := b.r.NewSeq(limit)
	if err != nil {
		return nil, err
	}
	return cudaSequence{s}, nil
}

func (b *cudaBackend) Forward(out []float32, seqs []Sequence, tokens [][]int) error {
	cs := b.seqs[:0]
	for i, s := range seqs {
		c, ok := s.(cudaSequence)
		if !ok {
			return fmt.Errorf("forward: sequence %d is not a CUDA sequence", i)
		}
		cs = append(cs, c.s)
	}
	err := b.r.ForwardBatch(out, cs, tokens)
	clear(cs) // the scratch must not keep finished requests' sequences
	b.seqs = cs[:0]
	return err
}

func (b *cudaBackend) DenseLogits(out, hidden []float32) error {
	return b.r.Logits(out, hidden)
}
