package head

import (
	"cmp"
	"encoding/binary"
	"github.com/fhkit/fhkit/internal/race"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fhkit/fhkit/formats/arch"
	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/runtime/cpu"
	"github.com/fhkit/fhkit/runtime/sample"
)

// testHead writes a .fhm holding a random bf16 head of vocab x D and a
// FlashHead that puts tokens into clusters in a shuffled order (cap slots
// each, padding at the end when vocab % cap != 0), and loads it.
func testHead(t *testing.T, vocab, D, cp int, special []int, probes int, stage1 Stage1) (*FlashHead, cpu.Mat) {
	t.Helper()
	r := rand.New(rand.NewPCG(uint64(vocab), uint64(cp)))
	w := make([]float32, vocab*D)
	for i := range w {
		w[i] = float32(r.NormFloat64())
	}
	headBytes := make([]byte, vocab*D*2)
	dtype.EncodeFloats(headBytes, w, dtype.BF16)
	dense, _ := cpu.NewMat(vocab, D, dtype.BF16, headBytes)
	K := (vocab + cp - 1) / cp
	perm := r.Perm(vocab)
	vmap := make([]int32, K*cp)
	for i := range vmap {
		vmap[i] = -1
	}
	// Fill clusters round robin so padding spreads one slot per cluster.
	for i, id := range perm {
		vmap[(i%K)*cp+i/K] = int32(id)
	}
	for k := 0; k < K; k++ {
		members := vmap[k*cp : (k+1)*cp]
		n := 0
		for _, id := range members {
			if id >= 0 {
				n++
			}
		}
		slices.Sort(members[:n])
	}
	cent := make([]float32, K*D)
	wperm := make([]byte, K*cp*D*2)
	row := make([]float32, D)
	for k := 0; k < K; k++ {
		n := 0
		for s := 0; s < cp; s++ {
			id := vmap[k*cp+s]
			if id < 0 {
				continue
			}
			n++
			dense.RowF32(row, int(id))
			for i, v := range row {
				cent[k*D+i] += v
			}
			copy(wperm[(k*cp+s)*D*2:], headBytes[int(id)*D*2:(int(id)+1)*D*2])
		}
		for i := range row {
			cent[k*D+i] /= float32(n)
		}
	}
	centBytes := make([]byte, K*D*4)
	dtype.EncodeFloats(centBytes, cent, dtype.F32)
	vmapBytes := make([]byte, 0, K*cp*4)
	for _, id := range vmap {
		vmapBytes = binary.LittleEndian.AppendUint32(vmapBytes, uint32(id))
	}
	path := filepath.Join(t.TempDir(), "fh.fhm")
	fw, err := fhm.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	fw.WriteTensorBytes(fhm.FlashHeadCentroids, dtype.F32, []int64{int64(K), int64(D)}, centBytes)
	fw.WriteTensorBytes(fhm.FlashHeadVocabMap, dtype.I32, []int64{int64(K), int64(cp)}, vmapBytes)
	fw.WriteTensorBytes(fhm.FlashHeadWeights, dtype.BF16, []int64{int64(K * cp), int64(D)}, wperm)
	cfg := arch.Config{Architecture: arch.Llama, VocabSize: vocab, HiddenSize: D, IntermediateSize: 8, NumLayers: 1, NumHeads: 1, NumKVHeads: 1,
		HeadDim: D, HiddenAct: "silu", RMSNormEps: 1e-5, MaxPositionEmbeddings: 8, RopeTheta: 1e4, RopeLocalTheta: 1e4,
		LayerTypes: []string{arch.FullAttention}, AttentionScale: 1, EOSTokenIDs: []int{1}}
	meta := &fhm.Metadata{Model: cfg, FlashHead: &fhm.FlashHead{ClusterSize: cp, NumClusters: K, Probes: probes, SpecialTokenIDs: special, Source: "test"}}
	if err := fw.Commit(meta); err != nil {
		t.Fatal(err)
	}
	f, err := fhm.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	h, err := Load(f, dense, probes, stage1, 0)
	if err != nil {
		t.Fatal(err)
	}
	return h, dense
}

func denseArgmax(dense cpu.Mat, h []float32) (int, []float32) {
	logits := make([]float32, dense.Rows)
	dense.DotRows(logits, h)
	return sample.Argmax(logits), logits
}

func randHidden(r *rand.Rand, D int) []float32 {
	h := make([]float32, D)
	for i := range h {
		h[i] = float32(r.NormFloat64())
	}
	return h
}

// Probing every cluster must reproduce the dense argmax exactly, for a
// vocabulary that is not a multiple of the cluster size (padding slots).
func TestAllProbesEqualsDense(t *testing.T) {
	pool := cpu.NewPool(2)
	defer pool.Close()
	for _, st := range []Stage1{Stage1BF16, Stage1Int8} {
		h, dense := testHead(t, 1000, 32, 16, nil, 1000, st)
		if h.K != 63 || h.Probes != 63 {
			t.Fatalf("K %d probes %d, want 63, 63", h.K, h.Probes)
		}
		r := rand.New(rand.NewPCG(1, 1))
		for i := 0; i < 200; i++ {
			x := randHidden(r, 32)
			want, _ := denseArgmax(dense, x)
			if got := h.Argmax(pool, x); got != want {
				t.Fatalf("stage1 %v: FlashHead argmax %d, dense %d", st, got, want)
			}
		}
	}
}

// Padding slots never win, even when every real logit is negative.
func TestPaddingNeverWins(t *testing.T) {
	pool := cpu.NewPool(1)
	defer pool.Close()
	h, dense := testHead(t, 1000, 16, 16, nil, 63, Stage1BF16)
	r := rand.New(rand.NewPCG(2, 2))
	for i := 0; i < 50; i++ {
		// A hidden state anti-aligned with the mean row makes most logits
		// negative, below the zero a padding row would score.
		x := randHidden(r, 16)
		id := h.Argmax(pool, x)
		ids, logits := h.Candidates(pool, x, TopClusters(make([]float32, h.K), h.K))
		if len(ids) != 1000 || id < 0 || id >= 1000 {
			t.Fatalf("%d candidates, argmax %d", len(ids), id)
		}
		for j := range ids {
			if j > 0 && ids[j] <= ids[j-1] {
				t.Fatal("candidates not unique and ascending")
			}
		}
		want, dl := denseArgmax(dense, x)
		if id != want || logits[want] != dl[want] {
			t.Fatalf("argmax %d, dense %d", id, want)
		}
	}
}

func TestTiesGoToSmallestID(t *testing.T) {
	scores := []float32{1, 3, 3, 2, 3}
	if got := TopClusters(scores, 2); !slices.Equal(got, []int{1, 2}) {
		t.Errorf("TopClusters = %v, want [1 2]", got)
	}
	if got := TopClusters(scores, 5); !slices.Equal(got, []int{1, 2, 4, 3, 0}) {
		t.Errorf("TopClusters = %v", got)
	}
}

// Special tokens are scored even when their cluster is not probed.
func TestSpecialTokensAlwaysScored(t *testing.T) {
	pool := cpu.NewPool(1)
	defer pool.Close()
	h, dense := testHead(t, 512, 16, 16, []int{7, 300}, 1, Stage1BF16)
	x := randHidden(rand.New(rand.NewPCG(3, 3)), 16)
	ids, logits := h.Candidates(pool, x, []int{0})
	for _, sp := range []int{7, 300} {
		i := slices.Index(ids, sp)
		if i < 0 {
			t.Fatalf("special token %d not among %v", sp, ids)
		}
		_, dl := denseArgmax(dense, x)
		if logits[i] != dl[sp] {
			t.Errorf("special token %d logit %g, dense %g", sp, logits[i], dl[sp])
		}
	}
}

// With every cluster drawn, two-stage sampling is exact sampling from the
// dense distribution: compare frequencies.
func TestSampleAllProbesMatchesDense(t *testing.T) {
	pool := cpu.NewPool(1)
	defer pool.Close()
	h, dense := testHead(t, 64, 8, 16, nil, 4, Stage1BF16)
	x := randHidden(rand.New(rand.NewPCG(4, 4)), 8)
	for i := range x {
		x[i] *= 0.3
	}
	_, dl := denseArgmax(dense, x)
	const T = 0.8
	want := make([]float64, len(dl))
	var sum float64
	for i, l := range dl {
		want[i] = math.Exp(float64(l) / T)
		sum += want[i]
	}
	s := sample.New(sample.Params{Temperature: T, Seed: 9})
	counts := make([]float64, len(dl))
	const n = 100000
	for i := 0; i < n; i++ {
		counts[h.Sample(pool, s, x, nil)]++
	}
	for i := range counts {
		if d := math.Abs(counts[i]/n - want[i]/sum); d > 0.01 {
			t.Errorf("token %d: frequency %.4f, dense probability %.4f", i, counts[i]/n, want[i]/sum)
		}
	}
}

// A batch of hidden states gives the tokens Argmax gives one at a time:
// batches of one row, of a few (blocks probed by one row or by several),
// and of many more rows than clusters (every block multiplied by a
// gathered matrix), with 8 of 63 clusters probed (products per block) and
// 40 (one product over all blocks), on one and two threads. Stage 2 multiplies a block
// probed by several rows with the matrix-matrix kernels, which round
// differently from Argmax's matrix-vector ones, so a different token is
// accepted only when its dense logit ties Argmax's within float32
// rounding (1e-5 relative on logits of size ~5 over 24 products).
func TestArgmaxBatch(t *testing.T) {
	for _, threads := range []int{1, 2} {
		pool := cpu.NewPool(threads)
		for _, c := range []struct {
			st     Stage1
			probes int
		}{{Stage1BF16, 8}, {Stage1Int8, 8}, {Stage1BF16, 40}} {
			st := c.st
			h, dense := testHead(t, 1000, 24, 16, []int{3}, c.probes, st)
			r := rand.New(rand.NewPCG(5, 5))
			logits := make([]float32, 1000)
			for _, n := range []int{1, 7, 200} {
				batch := make([]float32, 0, n*24)
				var want []int
				for i := 0; i < n; i++ {
					x := randHidden(r, 24)
					batch = append(batch, x...)
					want = append(want, h.Argmax(pool, x))
				}
				got := h.ArgmaxBatch(pool, batch)
				shared := 0
				for i := range got {
					if got[i] == want[i] {
						continue
					}
					cpu.MatVec(pool, logits, dense, batch[i*24:(i+1)*24])
					a, b := float64(logits[got[i]]), float64(logits[want[i]])
					if math.Abs(a-b) > 1e-5*max(math.Abs(a), math.Abs(b)) {
						t.Errorf("threads %d stage1 %v probes %d n %d row %d: batch %d (logit %g), one by one %d (logit %g)", threads, st, c.probes, n, i, got[i], a, want[i], b)
					}
					shared++
				}
				if shared > n/20 {
					t.Errorf("threads %d stage1 %v probes %d n %d: %d rows differ by a tie", threads, st, c.probes, n, shared)
				}
			}
		}
		pool.Close()
	}
}

// TopClusters equals a full sort (score descending, index ascending on
// ties) on random scores with many ties, for every P (none for P = 0).
func TestTopClustersMatchesSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for trial := 0; trial < 50; trial++ {
		K := 1 + rng.IntN(300)
		scores := make([]float32, K)
		for i := range scores {
			scores[i] = float32(rng.IntN(20)) - 10 // few distinct values: ties
		}
		order := make([]int, K)
		for i := range order {
			order[i] = i
		}
		slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(scores[b], scores[a]) })
		for _, P := range []int{0, 1, 2, 7, K / 2, K, K + 3} {
			got := TopClusters(scores, P)
			if want := order[:min(P, K)]; !slices.Equal(got, want) {
				t.Fatalf("K=%d P=%d: got %v, want %v", K, P, got, want)
			}
		}
	}
}

// With many clusters the heap is seeded from a sampled threshold
// (sampledThreshold); the result must not depend on how well the sample
// guessed: ties, sorted scores, and scores whose best lie all on the
// sampled positions or all off them (the threshold then lets through too
// few clusters or nearly all of them).
func TestTopClustersSampledMatchesSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	shapes := []struct {
		name  string
		score func(k int) float32
	}{
		{"normal", func(int) float32 { return float32(rng.NormFloat64()) }},
		{"ties", func(int) float32 { return float32(rng.IntN(5)) }},
		{"ascending", func(k int) float32 { return float32(k) }},
		{"descending", func(k int) float32 { return -float32(k) }},
		{"on-sample", func(k int) float32 { return float32(min(1, k%sampleStride)) * float32(rng.NormFloat64()-10) }},
		{"off-sample", func(k int) float32 { return float32(1-min(1, k%sampleStride)) * float32(rng.NormFloat64()-10) }},
		{"signed-zero", func(k int) float32 { return float32(math.Copysign(0, float64(k%3-1))) }},
	}
	for _, sh := range shapes {
		name, score := sh.name, sh.score
		for _, K := range []int{256, 1000, 4096, 16384} {
			scores := make([]float32, K)
			for k := range scores {
				scores[k] = score(k)
			}
			order := make([]int, K)
			for i := range order {
				order[i] = i
			}
			slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(scores[b], scores[a]) })
			for _, P := range []int{1, 2, 7, 16, 64, 256, K / 16} {
				got := TopClusters(scores, P)
				if want := order[:min(P, K)]; !slices.Equal(got, want) {
					t.Fatalf("%s K=%d P=%d: got %v, want %v", name, K, P, got, want)
				}
			}
		}
	}
	// A NaN makes the heap start over without the threshold: P distinct
	// clusters still come back.
	scores := make([]float32, 4096)
	for k := range scores {
		scores[k] = float32(rng.NormFloat64())
	}
	scores[3] = float32(math.NaN())
	got := TopClusters(scores, 64)
	slices.Sort(got)
	if len(slices.Compact(got)) != 64 {
		t.Fatalf("with a NaN: %d distinct clusters, want 64", len(slices.Compact(got)))
	}
}

// A greedy FlashHead step allocates nothing once warmed up (stage 1 on the
// matrix-vector kernels, stage 2 on pooled scratch), on one and on two
// threads.
func TestArgmaxAllocs(t *testing.T) {
	if race.Enabled {
		t.Skip("-race makes sync.Pool drop items at random: allocation counts mean nothing")
	}
	h, _ := testHead(t, 1000, 64, 16, []int{3}, 8, Stage1BF16)
	x := randHidden(rand.New(rand.NewPCG(1, 2)), 64)
	for _, threads := range []int{1, 2} {
		pool := cpu.NewPool(threads)
		h.Argmax(pool, x)
		if n := testing.AllocsPerRun(20, func() { h.Argmax(pool, x) }); n > 0 {
			t.Errorf("%d threads: Argmax allocates %.1f times per call", threads, n)
		}
		pool.Close()
	}
}

// Stage 1 scores from the int8 centroids (the dense int8 kernel, then each
// centroid's scale) equal the float64 sums of the same int8 values, for a
// width with a kernel tail (D 40) and one of whole vectors (D 64).
func TestInt8ClusterScores(t *testing.T) {
	pool := cpu.NewPool(2)
	defer pool.Close()
	for _, D := range []int{40, 64} {
		h, _ := testHead(t, 3000, D, 16, nil, 8, Stage1Int8)
		r := rand.New(rand.NewPCG(2, uint64(D)))
		x := randHidden(r, D)
		got := make([]float32, h.K)
		h.ClusterScores(pool, got, x)
		for k := range h.K {
			var want, mag float64
			for i, v := range h.q8[k*D : (k+1)*D] {
				want += float64(v) * float64(x[i])
				mag += math.Abs(float64(v) * float64(x[i]))
			}
			want *= float64(h.q8scale[k])
			mag *= math.Abs(float64(h.q8scale[k]))
			if d := math.Abs(float64(got[k]) - want); d > 1e-5*mag+1e-6 {
				t.Fatalf("D %d cluster %d: score %g, want %g", D, k, got[k], want)
			}
		}
	}
}

// BenchmarkTopClusters measures the top-P selection of a decode step at
// gemma-3-1b's FlashHead shape (16384 clusters, 256 probed) on random
// scores: it runs on the calling thread between stage 1 and stage 2.
func BenchmarkTopClusters(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	const K, P = 16384, 256
	sets := make([][]float32, 16)
	for i := range sets {
		sets[i] = make([]float32, K)
		for k := range sets[i] {
			sets[i][k] = float32(rng.NormFloat64())
		}
	}
	dst := make([]int, 0, P)
	for i := 0; i < b.N; i++ {
		dst = topClustersInto(dst, sets[i%len(sets)], P)
	}
}

// probedBest16 picks what blockBest and offer pick block by block, on rows
// with ties (between blocks and within one), signed zeros, infinities and
// NaNs, over heads with padding slots.
func TestProbedBest16MatchesBlockScan(t *testing.T) {
	h, _ := testHead(t, 500, 8, 16, nil, 8, Stage1BF16) // 32 blocks, 12 padding slots
	if h.valid16 == nil {
		t.Fatal("a head of 16-slot blocks has no valid16 masks")
	}
	rng := rand.New(rand.NewPCG(31, 32))
	// Slots in no order within their block (testHead sorts them; a file
	// need not), so a block's first tied slot is not its smallest id.
	for k := range h.K {
		block := h.vmap[k*16 : (k+1)*16]
		rng.Shuffle(16, func(i, j int) { block[i], block[j] = block[j], block[i] })
	}
	h.setValid16()
	vals := []float32{0, float32(math.Copysign(0, -1)), 2.5, float32(math.Inf(-1)), float32(math.Inf(1)), float32(math.NaN())}
	row := make([]float32, h.K*16)
	hits := make([]uint16, h.K)
	for trial := range 2000 {
		for i := range row {
			if rng.IntN(3) == 0 {
				row[i] = vals[rng.IntN(len(vals)-1+trial%2)] // NaNs in every other trial
			} else {
				row[i] = float32(rng.IntN(9) - 4) // few values: ties
			}
		}
		pr := rng.Perm(h.K)[:1+rng.IntN(h.K)]
		want := best{id: -1}
		for _, k := range pr {
			if c := h.blockBest(k, row[k*16:(k+1)*16]); c.id >= 0 {
				want.offer(c.id, c.logit)
			}
		}
		got := h.probedBest16(row, pr, hits[:len(pr)])
		if got.id != want.id || math.Float32bits(got.logit) != math.Float32bits(want.logit) && got.logit == got.logit {
			t.Fatalf("trial %d: %+v, want %+v", trial, got, want)
		}
	}
}
