package cuda

import (
	"fmt"
	"math"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/runtime/head"
)

// devFlash is a FlashHead in device memory: the normalized centroids for
// stage 1 (bf16, or int8 with a scale per centroid), the permuted head rows
// and vocab map for stage 2, and the special tokens' rows in float32.
type devFlash struct {
	K, Cap, D, P int
	int8         bool
	centroids    Buffer // [K, D] bf16, or int8
	q8scale      Buffer // [K] float32 (int8 only)
	wperm        devMat // [K·Cap, D]
	vmap         Buffer // [K·Cap] int32, −1 = padding
	special      Buffer // [nspecial, D] float32
	specialIDs   Buffer // [nspecial] int32
	nspecial     int
	scores       Buffer // [K] stage-1 scores
	clusters     Buffer // [P] probed clusters
	partLogit    Buffer // per stage-2 block
	partID       Buffer
}

// LoadFlashHead uploads the FlashHead fh (loaded and validated by
// runtime/head from r.M's file) so that Argmax uses it: stage 1 and top-P
// selection, fused stage 2 and the final argmax all run on the device.
// int8Stage1 selects int8 centroids (as head.Stage1Int8), else bf16.
func (r *Runner) LoadFlashHead(fh *head.FlashHead, int8Stage1 bool) error {
	f := r.M.File
	K, cp, D := fh.K, fh.Cap, fh.D
	cent, ok1 := f.Tensor(fhm.FlashHeadCentroids)
	vm, ok2 := f.Tensor(fhm.FlashHeadVocabMap)
	wp, ok3 := f.Tensor(fhm.FlashHeadWeights)
	if !ok1 || !ok2 || !ok3 {
		return fmt.Errorf("cuda: %s: FlashHead tensors missing", f.Path)
	}
	d := &devFlash{K: K, Cap: cp, D: D, P: fh.Probes, int8: int8Stage1}
	// Stage-1 centroids normalized exactly as runtime/head builds them
	// (float64 norm, float32 scaling, bf16 round to nearest even; int8 with
	// amax/127 scales, round half to even).
	raw := make([]float32, K*D)
	if err := dtype.DecodeFloats(raw, cent.Data, cent.Info.DType); err != nil {
		return fmt.Errorf("cuda: %s: %s: %w", f.Path, fhm.FlashHeadCentroids, err)
	}
	norm := make([]float32, K*D)
	for k := 0; k < K; k++ {
		c := raw[k*D : (k+1)*D]
		var ss float64
		for _, v := range c {
			ss += float64(v) * float64(v)
		}
		inv := float32(0)
		if ss > 0 {
			inv = float32(1 / math.Sqrt(ss))
		}
		for i, v := range c {
			norm[k*D+i] = v * inv
		}
	}
	var err error
	if int8Stage1 {
		q := make([]byte, K*D)
		scales := make([]float32, K)
		for k := 0; k < K; k++ {
			row := norm[k*D : (k+1)*D]
			var amax float32
			for _, v := range row {
				amax = max(amax, float32(math.Abs(float64(v))))
			}
			if amax > 0 {
				scales[k] = amax / 127
				for i, v := range row {
					q[k*D+i] = byte(int8(math.RoundToEven(float64(v / scales[k]))))
				}
			}
		}
		if d.centroids, err = r.alloc(len(q)); err != nil {
			return err
		}
		if err = r.Dev.Upload(d.centroids, 0, q); err != nil {
			return err
		}
		if d.q8scale, err = r.vec(scales); err != nil {
			return err
		}
	} else {
		bf := make([]byte, 2*K*D)
		if err := dtype.EncodeFloats(bf, norm, dtype.BF16); err != nil {
			return err
		}
		if d.centroids, err = r.alloc(len(bf)); err != nil {
			return err
		}
		if err = r.Dev.Upload(d.centroids, 0, bf); err != nil {
			return err
		}
	}
	if d.vmap, err = r.alloc(len(vm.Data)); err != nil {
		return err
	}
	if err = r.Dev.Upload(d.vmap, 0, vm.Data); err != nil {
		return err
	}
	wm := devMat{rows: K * cp, cols: D, dt: wp.Info.DType}
	if wm.dt != dtype.BF16 && wm.dt != dtype.F16 && wm.dt != dtype.F32 {
		return fmt.Errorf("cuda: %s: FlashHead weights are %s (want bf16, f16 or f32)", f.Path, wm.dt)
	}
	if wm.data, err = r.alloc(len(wp.Data)); err != nil {
		return err
	}
	if err = r.Dev.Upload(wm.data, 0, wp.Data); err != nil {
		return err
	}
	d.wperm = wm
	// The special tokens' dense rows, widened to float32 (exact for every
	// dtype, int4 included: RowF32 dequantizes exactly).
	d.nspecial = len(fh.Special)
	rows := make([]float32, max(1, d.nspecial)*D)
	ids := make([]int32, max(1, d.nspecial))
	for i, id := range fh.Special {
		r.M.Head.RowF32(rows[i*D:(i+1)*D], id)
		ids[i] = int32(id)
	}
	if d.special, err = r.vec(rows); err != nil {
		return err
	}
	if d.specialIDs, err = r.alloc(4 * len(ids)); err != nil {
		return err
	}
	if err = r.Dev.UploadI32(d.specialIDs, 0, ids); err != nil {
		return err
	}
	nblocks := d.P + ceilDiv(d.nspecial, 8)
	for _, b := range []struct {
		dst *Buffer
		n   int
	}{{&d.scores, K}, {&d.clusters, d.P}, {&d.partLogit, nblocks}, {&d.partID, nblocks}} {
		if *b.dst, err = r.alloc(4 * b.n); err != nil {
			return err
		}
	}
	for _, name := range []string{"fh_gemv_i8", "fh_topk", "fh_flashhead_stage2_" + dtName(wm.dt), "fh_argmax_parts"} {
		if r.fn[name], err = r.Dev.Function(name); err != nil {
			return err
		}
	}
	r.flash = d
	return nil
}

// flashArgmax runs the FlashHead on the hidden state at h and leaves the
// chosen token id at r.ids[slot].
func (r *Runner) flashArgmax(h DevPtr, slot int) error {
	d := r.flash
	if d.int8 {
		if err := r.launch("fh_gemv_i8", D1(ceilDiv(d.K, 8)), D1(256), d.scores, d.centroids, d.q8scale, h, d.K, d.D); err != nil {
			return err
		}
	} else if err := r.launch("fh_gemm_bf16", Dim3{ceilDiv(d.K, 8), 1, 1}, D1(256), d.scores, d.centroids, h, d.K, d.D, 1); err != nil {
		return err
	}
	if err := r.launch("fh_topk", D1(1), D1(1024), d.clusters, d.scores, d.K, d.P); err != nil {
		return err
	}
	nblocks := d.P + ceilDiv(d.nspecial, 8)
	if err := r.launch("fh_flashhead_stage2_"+dtName(d.wperm.dt), D1(nblocks), D1(256), d.partLogit, d.partID,
		d.wperm.data, d.vmap, d.clusters, d.P, d.special, d.specialIDs, d.nspecial, h, d.Cap, d.D); err != nil {
		return err
	}
	return r.launch("fh_argmax_parts", D1(1), D1(256), r.ids.At(4*slot), d.partLogit, d.partID, nblocks)
}

// HasFlashHead reports whether LoadFlashHead was called.
func (r *Runner) HasFlashHead() bool { return r.flash != nil }

// Greedy runs tokens (continuing the sequence) and returns the greedy next
// token of the last one: the FlashHead's argmax when one is loaded, the
// dense head's otherwise (smallest id on ties, as on the CPU). A
// single-token step replays a CUDA graph of the whole step (captured on
// first use) when UseGraphs is set.
func (r *Runner) Greedy(tokens []int) (int, error) {
	if err := r.check(tokens); err != nil {
		return 0, err
	}
	var err error
	if len(tokens) == 1 && r.UseGraphs {
		err = r.graphStep(tokens[0])
	} else {
		err = r.chunks(tokens, false, func(int, int) error { return r.greedyHead() })
	}
	if err != nil {
		return 0, err
	}
	id := make([]int32, 1)
	if err := r.Dev.DownloadI32(id, r.ids, 0); err != nil {
		return 0, err
	}
	return int(id[0]), nil
}

// greedyHead queues the head's argmax of the hidden state at r.hidden row
// 0 into r.ids[0].
func (r *Runner) greedyHead() error {
	if r.flash != nil {
		return r.flashArgmax(r.hidden.At(0), 0)
	}
	if err := r.denseLogits(r.hidden.At(0), 1); err != nil {
		return err
	}
	return r.launch("fh_argmax_rows", D1(1), D1(1024), r.ids, r.logits, r.M.Config.VocabSize)
}

// graphStep runs one decode step through the captured graph of the
// current head, capturing it first if needed.
func (r *Runner) graphStep(token int) error {
	if err := r.upload([]int{token}); err != nil {
		return err
	}
	flash := r.flash != nil
	g := r.graphs[flash]
	if g == nil {
		if err := r.Dev.BeginCapture(r.stream); err != nil {
			return err
		}
		err := r.body(1, false, true)
		if err == nil {
			err = r.greedyHead()
		}
		g2, err2 := r.Dev.EndCapture(r.stream)
		if err != nil {
			return fmt.Errorf("cuda: capturing the decode step: %w", err)
		}
		if err2 != nil {
			return fmt.Errorf("cuda: capturing the decode step: %w", err2)
		}
		g = g2
		r.graphs[flash] = g
	}
	if err := r.Dev.LaunchGraph(g, r.stream); err != nil {
		return err
	}
	r.Pos++
	return nil
}

// FlashArgmaxAll runs tokens with teacher forcing and returns the
// FlashHead's argmax at every position (computed on the device).
func (r *Runner) FlashArgmaxAll(tokens []int) ([]int, error) {
	if r.flash == nil {
		return nil, fmt.Errorf("cuda: no FlashHead loaded")
	}
	if err := r.check(tokens); err != nil {
		return nil, err
	}
	H := r.M.Config.HiddenSize
	out := make([]int, len(tokens))
	err := r.chunks(tokens, true, func(start, n int) error {
		for i := 0; i < n; i++ {
			if err := r.flashArgmax(r.hidden.At(4*i*H), i); err != nil {
				return err
			}
		}
		ids := make([]int32, n)
		if err := r.Dev.DownloadI32(ids, r.ids, 0); err != nil {
			return err
		}
		for i, id := range ids {
			out[start+i] = int(id)
		}
		return nil
	})
	return out, err
}
