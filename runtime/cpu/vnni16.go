package cpu

import (
	"encoding/binary"
	"math"
	"sync"
	"unsafe"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/int4"
	"github.com/fhkit/fhkit/runtime/hugemem"
)

// vnni16 is an int4 weight repacked for the rows-in-lanes AVX512_VNNI
// kernels (q4VNNI16T in internal/asmgen/matvec): blocks of 16 rows, each
// lane of a vector one row, so a group's sums of 16 rows end in one vector
// and the per-group float work is done once per 16 rows. The unit of the
// layout is one block's group ("block-group": 16 rows × G inputs): its
// codes are the stored bytes, reordered,
//
//	codes  [G/128][16 chunks m][16 rows i][4 bytes]
//	       = stored bytes [64B + 4m, 64B + 4m + 4) of row 16b + i
//	         (block b, 128-input block B of the group; byte k holds
//	         inputs 2k, 2k+1)
//	scales [16]   s[16b + i, g], bf16 when the model stores bf16, else
//	              float32
//	zeros  [16]   int32 z[16b + i, g] (nil: symmetric)
//
// and the codes, scales and zeros of the block-groups are each one array
// in the same order. A wide weight is cut into column tiles of tileGroups
// groups (tileOf), and its blocks into superblocks of vnni16Super blocks;
// the block-groups are ordered
//
//	[superblock][tile][block of the superblock][group of the tile]
//
// (a narrow weight, one tile, is simply [block][group]). A kernel call
// covers one tile of consecutive blocks of a superblock, one stream of
// codes, and adds its sums to the outputs; within it the tile's inputs
// (256 bytes per 128 inputs) stay in L1 from block to block. Untiled, a
// 6912-wide input (13.5 KiB laid out) was reloaded from L2 for every block
// of 16 rows: the down product of a gemma-3-1b layer read 0.83 of the
// probe on one thread where 1152-wide ones read 0.97.
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
	// mem holds the memory of codes, scales and zeros (nil: the heap).
	mem *hugemem.Arena
	// scaleBF16: the scales are the model's bf16 bits (the kernel widens
	// them); other scale dtypes are widened to float32 here, exactly.
	scaleBF16 bool
	blocks    int // Rows/16
	groups    int // per row
	// tileGroups is the groups of a column tile (the last one may have
	// fewer); groups when the weight is not tiled.
	tileGroups int
}

// vnni16TileBytes bounds the laid-out inputs of one column tile (256
// bytes per 128 inputs): a quarter of Zen 4's 32 KiB L1, which also holds
// the codes streaming through.
const vnni16TileBytes = 4 << 10

// vnni16Super is the blocks of a superblock: a tile's codes of one
// superblock (4 blocks of 16 rows) are one kernel call, 14 KiB per block
// for the 1792-wide tiles of a 6912-wide weight. Threads take tiled
// weights in whole superblocks (matVecsRun): otherwise a chunk's first
// and last calls read small pieces of each tile (the down product of
// gemma-3-1b, 144-row chunks over superblocks of 8 blocks, read 0.79 of
// the probe in the machines' fast memory mode where gate/up read 0.91).
const vnni16Super = 4

// tiled reports whether the weight is cut into column tiles.
func (r *vnni16) tiled() bool { return r.tileGroups < r.groups }

// unit returns the index of block b's group g in the layout.
func (r *vnni16) unit(b, g int) int {
	s := b / vnni16Super
	b0 := s * vnni16Super
	nbs := min(vnni16Super, r.blocks-b0) // blocks of the superblock
	t := g / r.tileGroups
	tg := min(r.tileGroups, r.groups-t*r.tileGroups) // groups of the tile
	return b0*r.groups + nbs*t*r.tileGroups + (b-b0)*tg + g - t*r.tileGroups
}

// vnni16TileGroups returns the groups of a column tile for a weight of
// groups groups of g inputs: all of them when their laid-out inputs fit
// vnni16TileBytes, else near-equal tiles that do.
func vnni16TileGroups(groups, g int) int {
	xb := groups * g * 2 // 256 bytes per 128 inputs
	if xb <= vnni16TileBytes {
		return groups
	}
	tiles := (xb + vnni16TileBytes - 1) / vnni16TileBytes
	return (groups + tiles - 1) / tiles
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

// rowsInLanes returns w repacked for the rows-in-lanes kernel, building it
// on first use.
func (m Mat) rowsInLanes() *vnni16 {
	q := m.Q4
	q.rowsInLanesOnce.Do(func() { q.rowsInLanes = repackVNNI16(m, nil) })
	return q.rowsInLanes
}

// repackVNNI16 builds the layout of vnni16 from w (Rows a multiple of 16,
// Cols of 128) in memory from a.
func repackVNNI16(w Mat, a *hugemem.Arena) *vnni16 {
	q := w.Q4
	rows, cols, G := w.Rows, w.Cols, q.GroupSize
	ng := cols / G
	stride := cols / 2
	gbytes := 16 * G / 2 // codes of a block-group
	r := &vnni16{codes: a.Bytes(rows * stride), mem: a, scaleBF16: q.ScaleDType == dtype.BF16,
		blocks: rows / vnni16Rows, groups: ng, tileGroups: vnni16TileGroups(ng, G)}
	ssz := 4
	if r.scaleBF16 {
		ssz = 2
	}
	r.scales = a.Bytes(rows * ng * ssz)
	if q.Zeros != nil {
		r.zeros = unsafe.Slice((*int32)(unsafe.Pointer(&a.Bytes(4 * rows * ng)[0])), rows*ng)
	}
	s := make([]float32, ng)
	for b := 0; b < r.blocks; b++ {
		for g := 0; g < ng; g++ {
			u := r.unit(b, g)
			for B := 0; B < G/128; B++ {
				dst := r.codes[u*gbytes+1024*B:]
				for m := 0; m < 16; m++ {
					for i := 0; i < vnni16Rows; i++ {
						src := w.Data[(16*b+i)*stride+g*G/2+64*B+4*m:]
						copy(dst[64*m+4*i:64*m+4*i+4], src[:4])
					}
				}
			}
		}
		for i := 0; i < vnni16Rows; i++ {
			row := 16*b + i
			if !r.scaleBF16 {
				w.rowScales(s, row)
			}
			for g := 0; g < ng; g++ {
				at := 16*r.unit(b, g) + i
				if r.scaleBF16 {
					copy(r.scales[2*at:2*at+2], q.Scales[(row*ng+g)*2:])
				} else {
					binary.LittleEndian.PutUint32(r.scales[4*at:], math.Float32bits(s[g]))
				}
				if r.zeros != nil {
					r.zeros[at] = int32(int4.Nibble(q.Zeros, row*ng+g))
				}
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
