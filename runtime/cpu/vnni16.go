package cpu

import (
	"encoding/binary"
	"math"
	"sync"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/int4"
)

// vnni16 is an int4 weight repacked for the rows-in-lanes AVX512_VNNI
// kernels (q4VNNI16T in internal/asmgen/matvec): blocks of 16 rows, each
// lane of a vector one row, so a group's sums of 16 rows end in one vector
// and the per-group float work is done once per 16 rows. The codes are the
// stored bytes, reordered:
//
//	codes  [Rows/16][Cols/128][16 chunks m][16 rows i][4 bytes]
//	       = stored bytes [64B + 4m, 64B + 4m + 4) of row 16b + i
//	         (block b, 128-input block B; byte k holds inputs 2k, 2k+1)
//	scales [Rows/16][groups][16]          s[16b + i, g], bf16 when the
//	                                      model stores bf16, else float32
//	zeros  int32   [Rows/16][groups][16]  z[16b + i, g] (nil: symmetric)
//
// It is a copy of the weight, as large as the codes plus the scales (and
// zeros); it serves matrix-vector and matrix-matrix products alike, so the
// stored codes are then read only by the CUDA upload (model.Load releases
// their pages). The kernels are tested against MatMulRef like every int4
// family.
type vnni16 struct {
	codes  []byte
	scales []byte // bf16 or float32 (scaleBF16), little-endian
	zeros  []int32
	// scaleBF16: the scales are the model's bf16 bits (the kernel widens
	// them); other scale dtypes are widened to float32 here, exactly.
	scaleBF16 bool
}

// vnni16Rows is the row block of the rows-in-lanes kernel.
const vnni16Rows = 16

// vnni16MaxT is the most inputs one call of the multi-input rows-in-lanes
// kernels takes.
const vnni16MaxT = 4

// vnni16Suits reports whether the rows-in-lanes kernel takes w at the
// level on this CPU: the row-wise VNNI kernel's groups, whole blocks of
// 16 rows.
func vnni16Suits(level ISA, w Mat) bool {
	return vnniSuits(level, w) && w.Rows%vnni16Rows == 0
}

// PrepareMatVec builds what the kernels chosen for m on this CPU need
// besides m's own data (the rows-in-lanes VNNI kernels' repacked copy), so
// the first product does not pay for it (products build it on first use
// otherwise). It reports whether m.Data is then no longer read by the CPU
// kernels: the repacked copy serves matrix-vector and matrix-matrix
// products alike.
func (m Mat) PrepareMatVec() (dataUnused bool) {
	if m.DType == dtype.U4 && mvSupported(isa, m) && q4ImplFor(isa, m) == q4AVX512VNNI16 {
		m.rowsInLanes()
		return true
	}
	return false
}

// rowsInLanes returns w repacked for the rows-in-lanes kernel, building it
// on first use.
func (m Mat) rowsInLanes() *vnni16 {
	q := m.Q4
	q.rowsInLanesOnce.Do(func() { q.rowsInLanes = repackVNNI16(m) })
	return q.rowsInLanes
}

// repackVNNI16 builds the layout of vnni16 from w (Rows a multiple of 16,
// Cols of 128).
func repackVNNI16(w Mat) *vnni16 {
	q := w.Q4
	rows, cols := w.Rows, w.Cols
	ng := cols / q.GroupSize
	stride := cols / 2
	nb := cols / 128
	r := &vnni16{codes: make([]byte, rows*stride), scaleBF16: q.ScaleDType == dtype.BF16}
	for b := 0; b < rows/vnni16Rows; b++ {
		for B := 0; B < nb; B++ {
			dst := r.codes[(b*nb+B)*1024:]
			for m := 0; m < 16; m++ {
				for i := 0; i < vnni16Rows; i++ {
					src := w.Data[(16*b+i)*stride+64*B+4*m:]
					copy(dst[64*m+4*i:64*m+4*i+4], src[:4])
				}
			}
		}
	}
	ssz := 4
	if r.scaleBF16 {
		ssz = 2
	}
	r.scales = make([]byte, rows*ng*ssz)
	s := make([]float32, ng)
	for row := 0; row < rows; row++ {
		b, i := row/vnni16Rows, row%vnni16Rows
		if r.scaleBF16 {
			src := q.Scales[row*ng*2:]
			for g := 0; g < ng; g++ {
				copy(r.scales[((b*ng+g)*vnni16Rows+i)*2:][:2], src[2*g:2*g+2])
			}
			continue
		}
		w.rowScales(s, row)
		for g, v := range s {
			binary.LittleEndian.PutUint32(r.scales[((b*ng+g)*vnni16Rows+i)*4:], math.Float32bits(v))
		}
	}
	if q.Zeros != nil {
		r.zeros = make([]int32, rows*ng)
		for row := 0; row < rows; row++ {
			b, i := row/vnni16Rows, row%vnni16Rows
			for g := 0; g < ng; g++ {
				r.zeros[(b*ng+g)*vnni16Rows+i] = int32(int4.Nibble(q.Zeros, row*ng+g))
			}
		}
	}
	return r
}

// vnni16TileRows is the rows a thread claims at a time in vnni16MatMul:
// 128 rows of a 1152-wide weight are 72 KiB of codes, which stay in L2
// while every input runs over them.
const vnni16TileRows = 128

// vnni16MatMul is MatMul for T > 1 inputs with the rows-in-lanes
// AVX512_VNNI kernels (w must suit them: vnni16Suits): each input is laid
// out as for the matrix-vector kernel, and threads claim tiles of rows,
// running up to four inputs per kernel call over a tile, so the tile's
// codes come from memory once and from cache for the other inputs. The
// inputs are quantized to two int8 levels per group as in decode (within
// 2^-15 of a group's largest |x|, see prepVNNIGo), so prefill and decode
// compute the same sums.
func vnni16MatMul(p *Pool, out []float32, w Mat, x []float32, T int) {
	w.rowsInLanes()
	region := q4PrepLen(q4AVX512VNNI16, w)
	s := gemmScratches.Get().(*gemmScratch)
	s.x = grow(s.x, T*region)
	for t := 0; t < T; t++ {
		prepareQ4Into(s.x[t*region:(t+1)*region], q4AVX512VNNI16, w, x[t*w.Cols:(t+1)*w.Cols])
	}
	task := vnni16Tasks.Get().(*vnni16Task)
	*task = vnni16Task{w: w, out: out, prep: s.x, region: region, T: T, shares: task.shares}
	tiles := (w.Rows + vnni16TileRows - 1) / vnni16TileRows
	parts := min(p.Threads(), tiles)
	task.shares.reset(tiles, parts)
	p.Run(parts, 1, task)
	*task = vnni16Task{shares: task.shares}
	vnni16Tasks.Put(task)
	gemmScratches.Put(s)
}

// vnni16Tasks recycles vnni16Task values (see gemmTasks).
var vnni16Tasks = sync.Pool{New: func() any { return new(vnni16Task) }}

// vnni16Task is one vnni16MatMul; each Run computes tiles, its home
// share's first (shares), until none is left.
type vnni16Task struct {
	w      Mat
	out    []float32
	prep   []float32 // T inputs laid out, region floats each
	region int
	T      int
	shares shares // the tiles, one home share per thread
}

// Run implements Task.
func (t *vnni16Task) Run(me, _ int) {
	k := 0
	for {
		i, ok := t.shares.next(me, &k)
		if !ok {
			return
		}
		lo := i * vnni16TileRows
		hi := min(lo+vnni16TileRows, t.w.Rows)
		for t0 := 0; t0 < t.T; t0 += vnni16MaxT {
			n := min(vnni16MaxT, t.T-t0)
			in := t.prep[t0*t.region:]
			vnni16CallT(t.out[t0*t.w.Rows:], t.w, in, in[t.w.Cols/2:], t.region, n, lo, hi)
		}
	}
}
