package cuda

import (
	"fmt"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/runtime/head"
	"github.com/fhkit/fhkit/runtime/model"
	"github.com/fhkit/fhkit/runtime/verify"
)

// VerifyRun is runtime/verify.Run with the model under test on the device:
// it teacher-forces every sequence through r and compares the logits with
// the sequence's stored logits, or, when base is not nil, with base's
// (a CPU runner) for the same tokens, with a KV cache of kv on both sides.
func VerifyRun(r *Runner, base *model.Runner, seqs []verify.Sequence, kv dtype.DType) (*verify.Report, error) {
	vocab := r.M.Config.VocabSize
	rep := &verify.Report{}
	for i, s := range seqs {
		r.Reset()
		logits, err := r.Forward(s.Tokens, true)
		if err != nil {
			return nil, fmt.Errorf("sequence %d (device): %w", i, err)
		}
		ref := s.Logits
		if base != nil {
			st, err := base.M.NewState(0, kv)
			if err != nil {
				return nil, err
			}
			if ref, err = base.Forward(st, s.Tokens, true); err != nil {
				return nil, fmt.Errorf("sequence %d (CPU baseline): %w", i, err)
			}
		}
		if len(ref) != len(logits) {
			return nil, fmt.Errorf("sequence %d: no baseline logits", i)
		}
		var st verify.Stats
		st.Add(s.Tokens, logits, ref, vocab)
		rep.Sequences = append(rep.Sequences, st)
		rep.Stats.Merge(&st)
	}
	return rep, nil
}

// FlashAgreement teacher-forces every sequence through the device runner
// (with its FlashHead loaded) and through the CPU runner with fh, and
// counts the positions where both FlashHeads choose the same token.
func FlashAgreement(r *Runner, cpuRun *model.Runner, fh *head.FlashHead, seqs []verify.Sequence, kv dtype.DType) (agree, total int, err error) {
	H := r.M.Config.HiddenSize
	for i, s := range seqs {
		r.Reset()
		got, err := r.FlashArgmaxAll(s.Tokens)
		if err != nil {
			return 0, 0, fmt.Errorf("sequence %d (device): %w", i, err)
		}
		st, err := cpuRun.M.NewState(0, kv)
		if err != nil {
			return 0, 0, err
		}
		hidden, err := cpuRun.ForwardHidden(st, s.Tokens, true)
		if err != nil {
			return 0, 0, fmt.Errorf("sequence %d (CPU): %w", i, err)
		}
		for t := range s.Tokens {
			if fh.Argmax(cpuRun.Pool, hidden[t*H:(t+1)*H]) == got[t] {
				agree++
			}
			total++
		}
	}
	return agree, total, nil
}
