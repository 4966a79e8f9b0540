package flashhead

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/fhm"
)

// WriteOptions control Write.
type WriteOptions struct {
	// Replace allows an input that already holds a FlashHead: its
	// FlashHead tensors and metadata are replaced (--force).
	Replace bool
	// Progress, if set, is called as tensor bytes are written, with the
	// bytes done and the total.
	Progress func(done, total int64)
}

// Write copies every tensor and the metadata of the input file to out and
// adds the FlashHead tensors of head and meta as Metadata.FlashHead. The
// output appears only when complete (an error leaves nothing at out).
// head must cluster the input's LM head (same shape and dtype).
func Write(in *fhm.File, out string, head *Head, meta fhm.FlashHead, opts WriteOptions) error {
	if in.Metadata.FlashHead != nil && !opts.Replace {
		return fmt.Errorf("%s already holds a FlashHead (%d clusters of %d, source %s): use --force to replace it",
			in.Path, in.Metadata.FlashHead.NumClusters, in.Metadata.FlashHead.ClusterSize, in.Metadata.FlashHead.Source)
	}
	if err := head.Validate(); err != nil {
		return err
	}
	rows, name, err := HeadMatrix(in)
	if err != nil {
		return err
	}
	if rows.Rows != head.Vocab || rows.Cols != head.Dim || rows.DType != head.Rows.DType {
		return fmt.Errorf("%s: the FlashHead clusters a [%d, %d] %s head, the file's %s is [%d, %d] %s",
			in.Path, head.Vocab, head.Dim, head.Rows.DType, name, rows.Rows, rows.Cols, rows.DType)
	}
	if meta.NumClusters != head.NumClusters || meta.ClusterSize != head.ClusterSize {
		return fmt.Errorf("FlashHead metadata says %d clusters of %d, the head has %d of %d", meta.NumClusters, meta.ClusterSize, head.NumClusters, head.ClusterSize)
	}
	if meta.Probes < 1 || meta.Probes > head.NumClusters {
		return fmt.Errorf("FlashHead metadata: %d probes, want 1..%d", meta.Probes, head.NumClusters)
	}
	w, err := fhm.Create(out)
	if err != nil {
		return err
	}
	var total, done int64
	for _, t := range in.Tensors {
		total += t.Size
	}
	total += head.TensorBytes()
	report := func(n int64) {
		done += n
		if opts.Progress != nil {
			opts.Progress(done, total)
		}
	}
	for _, ti := range in.Tensors {
		if strings.HasPrefix(ti.Name, "flashhead.") {
			continue // replaced below (only reachable with Replace)
		}
		t, _ := in.Tensor(ti.Name)
		if err := w.WriteTensorBytes(ti.Name, ti.DType, ti.Shape, t.Data); err != nil {
			w.Abort()
			return fmt.Errorf("%s: %w", out, err)
		}
		report(ti.Size)
	}
	if err := head.WriteTensors(w); err != nil {
		w.Abort()
		return fmt.Errorf("%s: %w", out, err)
	}
	report(head.TensorBytes())
	md := in.Metadata
	md.FlashHead = &meta
	if md.FlashHead.SpecialTokenIDs == nil {
		md.FlashHead.SpecialTokenIDs = []int{}
	}
	return w.Commit(&md)
}

// TensorBytes returns the size of the three FlashHead tensors.
func (h *Head) TensorBytes() int64 {
	K, cap_, D := int64(h.NumClusters), int64(h.ClusterSize), int64(h.Dim)
	return K*D*4 + K*cap_*4 + K*cap_*D*int64(h.Rows.DType.Size())
}

// WriteTensors appends the FlashHead tensors (fhm.FlashHeadCentroids,
// fhm.FlashHeadVocabMap, fhm.FlashHeadWeights) to w.
func (h *Head) WriteTensors(w *fhm.Writer) error {
	K, cap_, D := int64(h.NumClusters), int64(h.ClusterSize), int64(h.Dim)
	cb := make([]byte, 4*len(h.Centroids))
	for i, x := range h.Centroids {
		binary.LittleEndian.PutUint32(cb[4*i:], math.Float32bits(x))
	}
	if err := w.WriteTensorBytes(fhm.FlashHeadCentroids, dtype.F32, []int64{K, D}, cb); err != nil {
		return err
	}
	vb := make([]byte, 4*len(h.VocabMap))
	for i, v := range h.VocabMap {
		binary.LittleEndian.PutUint32(vb[4*i:], uint32(v))
	}
	if err := w.WriteTensorBytes(fhm.FlashHeadVocabMap, dtype.I32, []int64{K, cap_}, vb); err != nil {
		return err
	}
	return w.WriteTensor(fhm.FlashHeadWeights, h.Rows.DType, []int64{K * cap_, D}, h.WriteWPerm)
}

// WriteWPerm writes w_perm, the head rows in cluster order (zero rows for
// padding slots), to o.
func (h *Head) WriteWPerm(o io.Writer) error {
	rb := h.Dim * h.Rows.DType.Size()
	buf := make([]byte, 0, max(1<<20/rb, 1)*rb)
	zero := make([]byte, rb)
	for _, v := range h.VocabMap {
		if v < 0 {
			buf = append(buf, zero...)
		} else {
			buf = append(buf, h.Rows.Data[int(v)*rb:(int(v)+1)*rb]...)
		}
		if len(buf)+rb > cap(buf) {
			if _, err := o.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	if len(buf) > 0 {
		_, err := o.Write(buf)
		return err
	}
	return nil
}

// WPerm returns w_perm in memory ([K*cap, D] in the head's dtype).
func (h *Head) WPerm() []byte {
	var b byteSink
	h.WriteWPerm(&b)
	return b.b
}

type byteSink struct{ b []byte }

func (s *byteSink) Write(p []byte) (int, error) { s.b = append(s.b, p...); return len(p), nil }
