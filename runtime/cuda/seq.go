package cuda

import (
	"errors"
	"fmt"

	"github.com/fhkit/fhkit/runtime/model"
)

// Seq is one sequence on a Runner: its KV cache in device memory, its
// position and context limit. A server keeps a Seq per request and the
// weights once, and runs them together (Runner.NewSeq, ForwardBatch); Use
// makes one the sequence Forward, Greedy and Generate continue.
type Seq struct {
	// Pos is the number of tokens already processed; Limit is the context
	// limit.
	Pos, Limit int
	layers     []seqLayer
	bytes      int64
	r          *Runner
	owned      []Buffer // freed by Close (nil for the runner's own sequence)
}

// seqLayer is one layer's KV cache: rows of KV heads × head_dim in the
// cache dtype; ring > 0 stores position p in row p mod ring.
type seqLayer struct {
	kc, vc Buffer
	ring   int
}

// NewSeq allocates a sequence with context limit limit (the model's
// maximum when limit <= 0). Close frees it.
func (r *Runner) NewSeq(limit int) (*Seq, error) {
	if most := r.M.Config.MaxPositionEmbeddings; limit <= 0 || limit > most {
		limit = most
	}
	var owned []Buffer
	s, err := r.newSeq(limit, func(n int) (Buffer, error) {
		b, err := r.Dev.Alloc(max(n, 4))
		if err != nil {
			return Buffer{}, fmt.Errorf("cuda: the KV cache of a %d-token sequence does not fit on %s: %w", limit, r.Dev.Name, err)
		}
		owned = append(owned, b)
		return b, nil
	})
	if err != nil {
		for _, b := range owned {
			r.Dev.Free(b)
		}
		return nil, err
	}
	s.owned = owned
	return s, nil
}

// newSeq allocates a sequence's caches with alloc. Sliding layers keep a
// ring of window + MaxChunk rows: a chunk's own writes then never
// overwrite a key one of its queries still needs (the CPU gathers the past
// before storing instead).
func (r *Runner) newSeq(limit int, alloc func(int) (Buffer, error)) (*Seq, error) {
	c := &r.M.Config
	kvd := c.NumKVHeads * c.HeadDim
	s := &Seq{Limit: limit, r: r}
	for i := range r.M.Layers {
		var l seqLayer
		rows := limit
		if r.M.Layers[i].Sliding && c.SlidingWindow+MaxChunk < limit {
			l.ring = c.SlidingWindow + MaxChunk
			rows = l.ring
		}
		var err error
		if l.kc, err = alloc(rows * kvd * r.kv.Size()); err != nil {
			return nil, err
		}
		if l.vc, err = alloc(rows * kvd * r.kv.Size()); err != nil {
			return nil, err
		}
		s.layers = append(s.layers, l)
		s.bytes += 2 * int64(rows*kvd*r.kv.Size())
	}
	return s, nil
}

// Rewind keeps the first pos tokens and forgets the rest, so that a new
// sequence sharing them continues from there (a server's prefix cache),
// as model.State.Rewind: false, changing nothing, when a sliding layer's
// ring has overwritten positions within the window before pos.
func (s *Seq) Rewind(pos int) bool {
	if pos < 0 || pos > s.Pos {
		return false
	}
	for _, l := range s.layers {
		if !model.RingRewinds(l.ring, s.r.M.Config.SlidingWindow, s.Pos, pos) {
			return false
		}
	}
	s.Pos = pos
	if s.r.cur == s {
		s.r.Pos = pos
	}
	return true
}

// KVBytes is the device memory of the sequence's KV cache.
func (s *Seq) KVBytes() int64 { return s.bytes }

// Close frees the sequence's device memory. It must not be the runner's
// current sequence.
func (s *Seq) Close() error {
	if s.r.cur == s {
		return errors.New("cuda: closing the runner's current sequence")
	}
	var errs []error
	for _, b := range s.owned {
		errs = append(errs, s.r.Dev.Free(b))
	}
	s.owned = nil
	return errors.Join(errs...)
}

// Use makes s the sequence the runner continues (nil: its own), keeping
// the previous one's position in it. A captured decode graph serves every
// sequence: the cache addresses are inputs of the step (passInputs), not
// baked into its launches.
func (r *Runner) Use(s *Seq) error {
	if s == nil {
		s = r.own
	}
	if s.r != r {
		return errors.New("cuda: the sequence belongs to another runner")
	}
	r.cur.Pos, r.cur.Limit = r.Pos, r.Limit
	r.cur, r.Pos, r.Limit = s, s.Pos, s.Limit
	return nil
}

// ForwardBatch runs several sequences in one pass per MaxChunk rows:
// sequence seqs[i] continues with tokens[i] (a decode step of one token
// next to a prompt chunk), every launch covers the rows of all of them,
// and each row's attention reads its own sequence's cache. out receives
// each sequence's final-normed hidden state of its last token (len(seqs) ×
// hidden). On an error no sequence has advanced unless the device failed
// mid-pass.
func (r *Runner) ForwardBatch(out []float32, seqs []*Seq, tokens [][]int) error {
	H := r.M.Config.HiddenSize
	if len(out) < len(seqs)*H || len(tokens) != len(seqs) {
		return fmt.Errorf("cuda: forward batch: %d sequences, %d token lists, output of %d values", len(seqs), len(tokens), len(out))
	}
	r.cur.Pos, r.cur.Limit = r.Pos, r.Limit // the current sequence may be one of seqs
	for i, s := range seqs {
		if s == nil || s.r != r {
			return fmt.Errorf("cuda: forward batch: sequence %d is not this runner's", i)
		}
		if err := model.CheckTokens(&r.M.Config, s.Pos, s.Limit, tokens[i]); err != nil {
			return fmt.Errorf("cuda: forward batch: sequence %d: %w", i, err)
		}
		for j := range i {
			if seqs[j] == s {
				return fmt.Errorf("cuda: forward batch: sequences %d and %d are the same", j, i)
			}
		}
	}
	rows, ends := r.rows[:0], r.ends[:0]
	flush := func() error {
		if len(rows) == 0 {
			return nil
		}
		if err := r.uploadRows(rows); err != nil {
			return err
		}
		if err := r.body(len(rows), true, true); err != nil {
			return err
		}
		// One copy of the pass's hidden states, then each sequence's row.
		if cap(r.hostOut) < len(rows)*H {
			r.hostOut = make([]float32, len(rows)*H)
		}
		hidden := r.hostOut[:len(rows)*H]
		if err := r.Dev.DownloadF32(hidden, r.hidden, 0); err != nil {
			return err
		}
		for t, i := range ends {
			if i >= 0 {
				copy(out[i*H:(i+1)*H], hidden[t*H:(t+1)*H])
			}
		}
		for _, row := range rows {
			row.seq.Pos = max(row.seq.Pos, row.pos+1)
		}
		rows, ends = rows[:0], ends[:0]
		return nil
	}
	for i, s := range seqs {
		pos0 := s.Pos // flush advances s.Pos when s spans two passes
		for j, tok := range tokens[i] {
			rows = append(rows, passRow{seq: s, token: tok, pos: pos0 + j})
			end := -1
			if j == len(tokens[i])-1 {
				end = i
			}
			ends = append(ends, end)
			if len(rows) == MaxChunk {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	err := flush()
	clear(rows[:cap(rows)]) // the scratch must not keep the sequences
	r.rows, r.ends = rows[:0], ends[:0]
	r.Pos, r.Limit = r.cur.Pos, r.cur.Limit
	return err
}

// Logits applies the dense head (and the final soft-cap) on the device to
// rows of final hidden states (n × hidden) and writes n × vocab logits
// into out.
func (r *Runner) Logits(out, hidden []float32) error {
	c := &r.M.Config
	H, V := c.HiddenSize, c.VocabSize
	n := len(hidden) / H
	if len(out) < n*V {
		return fmt.Errorf("cuda: logits: output holds %d values, %d rows need %d", len(out), n, n*V)
	}
	for start := 0; start < n; start += MaxChunk {
		m := min(MaxChunk, n-start)
		if err := r.Dev.UploadF32(r.hidden, 0, hidden[start*H:(start+m)*H]); err != nil {
			return err
		}
		if err := r.denseLogits(r.hidden.At(0), m); err != nil {
			return err
		}
		if err := r.Dev.DownloadF32(out[start*V:(start+m)*V], r.logits, 0); err != nil {
			return err
		}
	}
	return nil
}
