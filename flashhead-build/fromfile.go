package flashhead

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/fhm"
)

// FromFile reads back the Head a .fhm file holds (its three FlashHead
// tensors and metadata, over the file's LM head rows), for exporting it
// again (fh-quantize --export-hf). It checks the same invariants as Build's
// output (Validate). The centroids and vocab map are copies; Rows aliases
// the file.
func FromFile(f *fhm.File) (*Head, error) {
	meta := f.Metadata.FlashHead
	if meta == nil {
		return nil, fmt.Errorf("%s: the model has no FlashHead", f.Path)
	}
	rows, _, err := HeadMatrix(f)
	if err != nil {
		return nil, err
	}
	K, cp, D := meta.NumClusters, meta.ClusterSize, rows.Cols
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%s: flashhead: %s", f.Path, fmt.Sprintf(format, a...))
	}
	if K < 1 || cp < 1 || int64(K)*int64(cp) > int64(rows.Rows)+int64(K) {
		return nil, bad("metadata says %d clusters of %d slots for a vocabulary of %d", K, cp, rows.Rows)
	}
	cent, ok := f.Tensor(fhm.FlashHeadCentroids)
	if !ok || cent.Info.DType != dtype.F32 || !slices.Equal(cent.Info.Shape, []int64{int64(K), int64(D)}) {
		return nil, bad("tensor %s missing or not F32 [%d %d]", fhm.FlashHeadCentroids, K, D)
	}
	vm, ok := f.Tensor(fhm.FlashHeadVocabMap)
	if !ok || vm.Info.DType != dtype.I32 || !slices.Equal(vm.Info.Shape, []int64{int64(K), int64(cp)}) {
		return nil, bad("tensor %s missing or not I32 [%d %d]", fhm.FlashHeadVocabMap, K, cp)
	}
	h := &Head{
		Vocab: rows.Rows, Dim: D, NumClusters: K, ClusterSize: cp, Rows: rows,
		Centroids: make([]float32, K*D), VocabMap: make([]int32, K*cp),
		Probes: meta.Probes, SpecialTokenIDs: slices.Clone(meta.SpecialTokenIDs),
		MeanCosine: meta.MeanCosine, Source: meta.Source, Seed: meta.Seed, Iterations: meta.Iterations,
	}
	for i := range h.Centroids {
		h.Centroids[i] = math.Float32frombits(binary.LittleEndian.Uint32(cent.Data[4*i:]))
	}
	for i := range h.VocabMap {
		h.VocabMap[i] = int32(binary.LittleEndian.Uint32(vm.Data[4*i:]))
	}
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", f.Path, err)
	}
	return h, nil
}
