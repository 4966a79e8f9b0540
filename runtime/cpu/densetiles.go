package cpu

import (
	"sync"
	"sync/atomic"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/runtime/hugemem"
)

// denseTiles is a wide float weight's copy for the matrix-vector kernels,
// in column tiles narrow enough that the kernel reading one row per pass
// keeps its slice of x in L1 (denseRows1Cols). Without it a row of 6912
// inputs is read four rows per pass with x (27 KiB of float32) streaming
// through L1 beside them: the bf16 down product of gemma-3-1b read
// 0.86–0.89 of the probe where 1152-wide ones read 0.96–1.0. The elements
// keep the weight's dtype and are reordered
//
//	[row block of denseTileRows rows][tile t][row of the block][tile's columns]
//
// so the rows of a block are one stream of tile after tile (the last block
// may have fewer rows, the last tile fewer columns). The weight's own Data
// stays row-major for everything else (matrix-matrix products, DotRows,
// the CUDA upload).
type denseTiles struct {
	data     []byte
	tileCols int            // columns of every tile but the last
	mem      *hugemem.Arena // holds data
}

// denseRows1Cols is the widest x (in inputs: 8 KiB of float32) the dense
// kernels read once per row rather than once per four rows.
const denseRows1Cols = 2048

// denseTileRows is the rows of a block: the threads take tiled weights in
// whole blocks (matVecsRun), 64 rows of 1728-column bf16 tiles being 216
// KiB per tile.
const denseTileRows = 64

// tileHolder is a Mat's tiled copy, made once by PrepareMatVec (nil
// until then); NewMat sets it, so the copies of a Mat share it.
type tileHolder struct {
	once  sync.Once
	tiles atomic.Pointer[denseTiles] // read by products without the once
}

// denseTiles returns m's tiled copy, nil when there is none.
func (m Mat) denseTiles() *denseTiles {
	if m.tiles == nil {
		return nil
	}
	return m.tiles.tiles.Load()
}

// denseTilesSuit reports whether a float weight of cols columns is cut
// into tiles: wider than one pass of the one-row kernels takes, in whole
// vectors of either level.
func denseTilesSuit(dt dtype.DType, cols int) bool {
	return dt != dtype.U4 && cols > denseRows1Cols && cols%16 == 0
}

// buildDenseTiles makes w's tiled copy in memory from a.
func buildDenseTiles(w Mat, a *hugemem.Arena) *denseTiles {
	tiles := (w.Cols + denseRows1Cols - 1) / denseRows1Cols
	tc := ((w.Cols+tiles-1)/tiles + 15) &^ 15
	t := &denseTiles{data: a.Bytes(len(w.Data)), tileCols: tc, mem: a}
	esz := w.DType.Size()
	for r := 0; r < w.Rows; r++ {
		for c0 := 0; c0 < w.Cols; c0 += tc {
			n := min(tc, w.Cols-c0)
			copy(t.data[t.offset(w, r, c0)*esz:][:n*esz], w.Data[(r*w.Cols+c0)*esz:][:n*esz])
		}
	}
	return t
}

// offset returns the element index in t.data of w's row r, column c0 (a
// tile's first).
func (t *denseTiles) offset(w Mat, r, c0 int) int {
	b0 := r / denseTileRows * denseTileRows
	rows := min(denseTileRows, w.Rows-b0)
	return b0*w.Cols + rows*c0 + (r-b0)*min(t.tileCols, w.Cols-c0)
}
