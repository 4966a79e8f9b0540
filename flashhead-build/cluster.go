package flashhead

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/fhkit/fhkit/runtime/cpu"
)

// clusterer runs spherical balanced k-means on L2-normalised rows. See the
// package documentation (and README.md) for the method.
type clusterer struct {
	pool    *cpu.Pool
	X       []float32 // V x D, rows normalised
	V, D, K int
	caps    []int     // capacity of each cluster (sum = V)
	C       []float32 // K x D, normalised centroids
	assign  []int32   // cluster of each row
	seed    uint64
	m       int // candidate clusters scored per token
	exact   bool
	prog    *progress
	order   string // greedy placement order (see Options.order)

	// The coarse quantiser of the graph search: K1 normalised centroids.
	coarse []float32
	K1     int

	lloydDone, balancedDone int
	changed                 []int // rows that moved, per balanced iteration
}

// Tuning constants (see README.md for the measurements behind them).
const (
	// coarseSample is the number of sampled rows per coarse centroid used
	// to fit the coarse quantiser.
	coarseSample = 256
	coarseIters  = 8
	// cellIters is the number of Lloyd iterations inside each coarse cell
	// when the fine centroids are initialised.
	cellIters = 4
	// graphCells is the number of coarse cells searched for the neighbours
	// of a centroid.
	graphCells = 4
	// exactBudget is the largest V*K*D (multiply-adds of one exhaustive
	// assignment pass) for which Search "auto" scores every cluster.
	exactBudget = 4e9
	// blockRows is the number of rows per work item of exhaustive scoring.
	blockRows = 32
)

func (c *clusterer) rng(stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(c.seed, 0x9e3779b97f4a7c15^stream))
}

// run clusters: initialisation, lloyd unconstrained iterations, then
// balanced iterations.
func (c *clusterer) run(lloyd, balanced int) {
	if c.exact {
		c.C = kmeansPP(c.pool, c.X, c.D, iota32(c.V), c.K, c.rng(1))
		c.prog.step("init", c.estInit())
	} else {
		c.hierInit()
	}
	// The initialisation ends with an assignment in the hierarchical case;
	// in the exact case the first Lloyd pass makes it.
	for it := 0; it < lloyd; it++ {
		// Graph search alternates inverted-file passes (wide, per row) with
		// graph passes (cheap, around the current cluster); see README.md.
		var tl *topList
		ivf := !c.exact && it%2 == 0
		if ivf {
			tl = c.candidatesIVF(1)
		} else {
			tl = c.candidates(1)
		}
		for v := range c.assign {
			c.assign[v] = tl.Idx[v]
		}
		c.reseedEmpty(tl)
		c.C = centroids(c.pool, c.X, c.D, c.K, c.assign)
		c.lloydDone++
		if ivf {
			c.prog.step("lloyd", c.estLloyd())
		} else {
			c.prog.step("lloyd", c.estIter())
		}
	}
	if lloyd == 0 && c.exact {
		tl := c.candidates(1)
		copy(c.assign, tl.Idx)
	}
	for it := 0; it < balanced; it++ {
		tl := c.candidates(c.m)
		prev := slices.Clone(c.assign)
		c.balancedAssign(tl)
		c.C = centroids(c.pool, c.X, c.D, c.K, c.assign)
		c.balancedDone++
		moved := 0
		for v := range prev {
			if prev[v] != c.assign[v] {
				moved++
			}
		}
		c.changed = append(c.changed, moved)
		c.prog.step("balance", c.estIter())
		if moved == 0 {
			break
		}
	}
	if balanced == 0 {
		// Capacities must hold whatever the options: one balanced pass.
		c.balancedAssign(c.candidates(c.m))
		c.balancedDone++
	}
	c.prog.finish()
}

// candidates returns every row's best m clusters: over all clusters in the
// exact search, over the centroid-graph neighbours of the row's current
// cluster otherwise.
func (c *clusterer) candidates(m int) *topList {
	m = min(m, c.K)
	tl := newTopList(c.V, m)
	var groups []group
	if c.exact {
		groups = rowBlocks(iota32(c.V), blockRows, iota32(c.K))
	} else {
		nbr := c.graph(max(c.m, m))
		members := membersOf(c.assign, c.K)
		for k := 0; k < c.K; k++ {
			if len(members[k]) > 0 {
				groups = append(groups, group{rows: members[k], cols: nbr[k]})
			}
		}
	}
	scoreGroups(c.pool, c.X, c.C, c.D, groups, tl)
	return tl
}

// candidatesIVF returns every row's best m clusters among the centroids
// of the graphCells coarse cells nearest to the row, and its current
// cluster (an inverted-file search: each centroid belongs to the cell of
// its nearest coarse centroid). The work is batched by cell, so each
// cell's centroids are scored against all the rows that probe it with the
// blocked kernel; each row's per-cell lists are merged at the end.
func (c *clusterer) candidatesIVF(m int) *topList {
	m = min(m, c.K)
	t := min(graphCells, c.K1)
	cellOf := newTopList(c.K, 1)
	scoreGroups(c.pool, c.C, c.coarse, c.D, rowBlocks(iota32(c.K), blockRows, iota32(c.K1)), cellOf)
	cells := membersOf(cellOf.Idx, c.K1)
	near := newTopList(c.V, t)
	scoreGroups(c.pool, c.X, c.coarse, c.D, rowBlocks(iota32(c.V), blockRows, iota32(c.K1)), near)
	// A row probes its nearest cells in order until it has about
	// graphCells cells' worth of centroids: the cost per row is bounded
	// even when the centroids crowd into a few cells.
	budget := graphCells * c.K / c.K1
	seen := make([]int, c.V)
	slots := make([]*topList, t)
	for s := 0; s < t; s++ {
		var groups []group
		byCell := make([][]int32, c.K1)
		for v := range seen {
			if seen[v] < budget {
				j := near.Idx[v*t+s]
				byCell[j] = append(byCell[j], int32(v))
				seen[v] += len(cells[j])
			}
		}
		for j, rows := range byCell {
			if len(rows) > 0 && len(cells[j]) > 0 {
				groups = append(groups, group{rows: rows, cols: cells[j]})
			}
		}
		slots[s] = newTopList(c.V, m)
		for i := range slots[s].Idx {
			slots[s].Idx[i] = -1
		}
		scoreGroups(c.pool, c.X, c.C, c.D, groups, slots[s])
	}
	tl := newTopList(c.V, m)
	c.pool.For(c.V, 1024, func(lo, hi int) {
		idx := make([]int32, 0, t*m+1)
		score := make([]float32, 0, t*m+1)
		for v := lo; v < hi; v++ {
			idx, score = idx[:0], score[:0]
			for _, sl := range slots {
				for q := v * m; q < v*m+m && sl.Idx[q] >= 0; q++ {
					idx = append(idx, sl.Idx[q])
					score = append(score, sl.Score[q])
				}
			}
			if cur := c.assign[v]; !slices.Contains(idx, cur) {
				idx = append(idx, cur)
				score = append(score, dot(c.X[v*c.D:(v+1)*c.D], c.C[int(cur)*c.D:int(cur)*c.D+c.D]))
			}
			selectTop(tl.Idx[v*m:v*m+m], tl.Score[v*m:v*m+m], score, idx)
		}
	})
	return tl
}

// graph returns, for every centroid, its n most similar centroids (itself
// included, normally first), searched among the centroids of the
// graphCells coarse cells nearest to it (an inverted-file search: each
// centroid belongs to the cell of its nearest coarse centroid).
func (c *clusterer) graph(n int) [][]int32 {
	t := min(graphCells, c.K1)
	near := newTopList(c.K, t)
	scoreGroups(c.pool, c.C, c.coarse, c.D, rowBlocks(iota32(c.K), blockRows, iota32(c.K1)), near)
	prim := make([]int32, c.K)
	for k := range prim {
		prim[k] = near.Idx[k*t]
	}
	cells := membersOf(prim, c.K1)
	groups := make([]group, c.K)
	for k := range groups {
		var cols []int32
		for _, q := range near.Idx[k*t : k*t+t] {
			cols = append(cols, cells[q]...)
		}
		groups[k] = group{rows: []int32{int32(k)}, cols: cols}
	}
	n = min(n, c.K)
	tl := newTopList(c.K, n)
	scoreGroups(c.pool, c.C, c.C, c.D, groups, tl)
	out := make([][]int32, c.K)
	for k := range out {
		row := tl.Idx[k*n : k*n+n]
		l := 0
		for l < n && row[l] >= 0 {
			l++
		}
		out[k] = row[:l]
		if !slices.Contains(out[k], int32(k)) {
			// A centroid always lists itself, so a row can stay put.
			out[k] = append([]int32{int32(k)}, out[k][:max(l-1, 0)]...)
		}
	}
	return out
}

// hierInit fits the coarse quantiser on a sample, assigns every row to a
// coarse cell, splits the K clusters among the cells in proportion to their
// sizes, and runs k-means inside each cell.
func (c *clusterer) hierInit() {
	c.K1 = max(2, min(int(math.Sqrt(float64(c.K))+0.5), 512))
	sample := iota32(c.V)
	if s := coarseSample * c.K1; s < c.V {
		r := c.rng(2)
		r.Shuffle(len(sample), func(i, j int) { sample[i], sample[j] = sample[j], sample[i] })
		sample = sample[:s]
		slices.Sort(sample)
	}
	c.coarse = kmeansPP(c.pool, c.X, c.D, sample, c.K1, c.rng(3))
	sub := make([]int32, len(sample))
	for it := 0; it < coarseIters; it++ {
		tl := newTopList(c.V, 1)
		scoreGroups(c.pool, c.X, c.coarse, c.D, rowBlocks(sample, blockRows, iota32(c.K1)), tl)
		for i, v := range sample {
			sub[i] = tl.Idx[v]
		}
		c.coarse = centroidsOf(c.pool, c.X, c.D, c.K1, sample, sub, c.coarse)
	}
	c.prog.step("coarse", float64(c.K1)*float64(len(sample))*float64(c.D)*(coarseIters+1))
	tl := newTopList(c.V, 1)
	scoreGroups(c.pool, c.X, c.coarse, c.D, rowBlocks(iota32(c.V), blockRows, iota32(c.K1)), tl)
	cell := tl.Idx
	cells := membersOf(cell, c.K1)
	c.prog.step("coarse", float64(c.V)*float64(c.K1)*float64(c.D))

	// Split K among the cells by largest remainder (each non-empty cell
	// gets at least one cluster and at most one per row).
	sizes := make([]int, c.K1)
	for j := range sizes {
		sizes[j] = len(cells[j])
	}
	ks := apportion(sizes, c.K)
	first := make([]int, c.K1+1)
	for j := range ks {
		first[j+1] = first[j] + ks[j]
	}
	c.C = make([]float32, c.K*c.D)
	dynamicFor(c.pool, c.K1, func(j int) {
		if ks[j] == 0 {
			return
		}
		rows := cells[j]
		local := kmeansLocal(c.X, c.D, rows, ks[j], c.rng(16+uint64(j)))
		copy(c.C[first[j]*c.D:], local.C)
		for i, r := range rows {
			c.assign[r] = int32(first[j]) + local.assign[i]
		}
	})
	c.prog.step("init", c.estInit())
}

// apportion splits total among items in proportion to sizes (largest
// remainder; ties to the lower index), with 1 <= share <= size for every
// non-empty item. It requires total <= sum(sizes) and total >= the number
// of non-empty items.
func apportion(sizes []int, total int) []int {
	sum := 0
	nonEmpty := 0
	for _, s := range sizes {
		sum += s
		if s > 0 {
			nonEmpty++
		}
	}
	out := make([]int, len(sizes))
	if sum == 0 {
		return out
	}
	type rem struct {
		j int
		r float64
	}
	var rems []rem
	given := 0
	for j, s := range sizes {
		if s == 0 {
			continue
		}
		exact := float64(s) * float64(total) / float64(sum)
		out[j] = max(1, min(s, int(exact)))
		given += out[j]
		rems = append(rems, rem{j, exact - float64(out[j])})
	}
	slices.SortStableFunc(rems, func(a, b rem) int { return cmp.Compare(b.r, a.r) })
	for given < total {
		progressed := false
		for _, r := range rems {
			if given == total {
				break
			}
			if out[r.j] < sizes[r.j] {
				out[r.j]++
				given++
				progressed = true
			}
		}
		if !progressed {
			break
		}
	}
	for given > total {
		progressed := false
		for i := len(rems) - 1; i >= 0 && given > total; i-- {
			if out[rems[i].j] > 1 {
				out[rems[i].j]--
				given--
				progressed = true
			}
		}
		if !progressed {
			break
		}
	}
	return out
}

// localResult is a k-means of one coarse cell.
type localResult struct {
	C      []float32
	assign []int32 // local cluster of each row, in the order of rows
}

// kmeansLocal runs spherical k-means on the given rows, single-threaded:
// k distinct random rows as the start (as good as k-means++ here, measured
// on the planted test, and a third cheaper), then cellIters Lloyd
// iterations with exhaustive scoring.
func kmeansLocal(X []float32, D int, rows []int32, k int, r *rand.Rand) localResult {
	C := make([]float32, k*D)
	perm := r.Perm(len(rows))
	for i := 0; i < k; i++ {
		v := rows[perm[i]]
		copy(C[i*D:(i+1)*D], X[int(v)*D:int(v)*D+D])
	}
	return lloydLocal(X, D, rows, C, k, cellIters)
}

// lloydLocal runs iters Lloyd iterations from the centroids C on the given
// rows (exhaustive scoring, single-threaded) and returns the centroids and
// the final assignment.
func lloydLocal(X []float32, D int, rows []int32, C []float32, k, iters int) localResult {
	cols := iota32(k)
	assign := make([]int32, len(rows))
	scores := make([]float32, blockRows*k)
	for it := 0; it <= iters; it++ {
		for i := 0; i < len(rows); i += blockRows {
			blk := rows[i:min(i+blockRows, len(rows))]
			s := scores[:len(blk)*k]
			scoreBlock(s, X, blk, C, cols, D)
			for b := range blk {
				best := int32(0)
				for q := 1; q < k; q++ {
					if better(s[b*k+q], int32(q), s[b*k+int(best)], best) {
						best = int32(q)
					}
				}
				assign[i+b] = best
			}
		}
		if it == iters {
			break
		}
		C = centroidsSerial(X, D, k, rows, assign, C)
	}
	return localResult{C: C, assign: assign}
}

// kmeansPP picks k initial centroids among rows by spherical k-means++
// (each next centroid drawn with probability proportional to 1 - cosine to
// the nearest chosen one). The distance updates run on the pool; the draws
// are serial, so the result depends only on the rng.
func kmeansPP(p *cpu.Pool, X []float32, D int, rows []int32, k int, r *rand.Rand) []float32 {
	if len(rows) < 4096 {
		return kmeansPPSerial(X, D, rows, k, r)
	}
	C := make([]float32, k*D)
	w := make([]float32, len(rows))
	for i := range w {
		w[i] = float32(math.Inf(1))
	}
	pick := rows[r.IntN(len(rows))]
	for j := 0; j < k; j++ {
		copy(C[j*D:(j+1)*D], X[int(pick)*D:int(pick)*D+D])
		cj := C[j*D : (j+1)*D]
		p.For(len(rows), 256, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				v := rows[i]
				d := 1 - dot(X[int(v)*D:int(v)*D+D], cj)
				if d < 0 {
					d = 0
				}
				if d < w[i] {
					w[i] = d
				}
			}
		})
		if j+1 < k {
			pick = rows[drawWeighted(w, r)]
		}
	}
	return C
}

// kmeansPPSerial is kmeansPP on the calling goroutine.
func kmeansPPSerial(X []float32, D int, rows []int32, k int, r *rand.Rand) []float32 {
	C := make([]float32, k*D)
	w := make([]float32, len(rows))
	for i := range w {
		w[i] = float32(math.Inf(1))
	}
	pick := rows[r.IntN(len(rows))]
	for j := 0; j < k; j++ {
		copy(C[j*D:(j+1)*D], X[int(pick)*D:int(pick)*D+D])
		cj := C[j*D : (j+1)*D]
		for i, v := range rows {
			d := 1 - dot(X[int(v)*D:int(v)*D+D], cj)
			if d < 0 {
				d = 0
			}
			if d < w[i] {
				w[i] = d
			}
		}
		if j+1 < k {
			pick = rows[drawWeighted(w, r)]
		}
	}
	return C
}

// drawWeighted draws an index with probability proportional to w (sums in
// float64, in index order). When every weight is zero (all rows already
// chosen or duplicates) it draws uniformly.
func drawWeighted(w []float32, r *rand.Rand) int {
	var sum float64
	for _, x := range w {
		sum += float64(x)
	}
	if !(sum > 0) {
		return r.IntN(len(w))
	}
	t := r.Float64() * sum
	var acc float64
	for i, x := range w {
		acc += float64(x)
		if acc > t && x > 0 {
			return i
		}
	}
	for i := len(w) - 1; i >= 0; i-- {
		if w[i] > 0 {
			return i
		}
	}
	return len(w) - 1
}

// membersOf lists the rows of each cluster in ascending order.
func membersOf(assign []int32, K int) [][]int32 {
	count := make([]int, K)
	for _, a := range assign {
		count[a]++
	}
	flat := make([]int32, len(assign))
	out := make([][]int32, K)
	off := 0
	for k := range out {
		out[k] = flat[off : off : off+count[k]]
		off += count[k]
	}
	for v, a := range assign {
		out[a] = append(out[a], int32(v))
	}
	return out
}

// centroids returns the normalised mean of each cluster's rows (a cluster
// without rows gets a zero centroid; callers reseed first). Each cluster
// is summed in ascending row order on one thread: deterministic.
func centroids(p *cpu.Pool, X []float32, D, K int, assign []int32) []float32 {
	return centroidsOf(p, X, D, K, iota32(len(assign)), assign, nil)
}

// centroidsOf is centroids over a subset of rows with their assignments;
// an empty cluster keeps its centroid from prev (when given).
func centroidsOf(p *cpu.Pool, X []float32, D, K int, rows, assign []int32, prev []float32) []float32 {
	count := make([]int, K)
	for _, a := range assign {
		count[a]++
	}
	members := make([][]int32, K)
	flat := make([]int32, len(rows))
	off := 0
	for k := range members {
		members[k] = flat[off : off : off+count[k]]
		off += count[k]
	}
	for i, a := range assign {
		members[a] = append(members[a], rows[i])
	}
	C := make([]float32, K*D)
	p.For(K, 64, func(lo, hi int) {
		acc := make([]float64, D)
		for k := lo; k < hi; k++ {
			if len(members[k]) == 0 {
				if prev != nil {
					copy(C[k*D:(k+1)*D], prev[k*D:(k+1)*D])
				}
				continue
			}
			meanInto(C[k*D:(k+1)*D], acc, X, D, members[k])
		}
	})
	return C
}

// centroidsSerial is centroidsOf on the calling goroutine.
func centroidsSerial(X []float32, D, K int, rows, assign []int32, prev []float32) []float32 {
	members := make([][]int32, K)
	for i, a := range assign {
		members[a] = append(members[a], rows[i])
	}
	C := make([]float32, K*D)
	acc := make([]float64, D)
	for k := range members {
		if len(members[k]) == 0 {
			copy(C[k*D:(k+1)*D], prev[k*D:(k+1)*D])
			continue
		}
		meanInto(C[k*D:(k+1)*D], acc, X, D, members[k])
	}
	return C
}

// meanInto writes the normalised sum of the rows into dst.
func meanInto(dst []float32, acc []float64, X []float32, D int, rows []int32) {
	clear(acc)
	for _, v := range rows {
		for d, x := range X[int(v)*D : int(v)*D+D] {
			acc[d] += float64(x)
		}
	}
	var n float64
	for _, a := range acc {
		n += a * a
	}
	if n > 0 {
		n = 1 / math.Sqrt(n)
	}
	for d, a := range acc {
		dst[d] = float32(a * n)
	}
}

// reseedEmpty gives every empty cluster the worst-fitting row (lowest best
// score) of a cluster that has more than one row, and moves that row.
func (c *clusterer) reseedEmpty(tl *topList) {
	size := make([]int, c.K)
	for _, a := range c.assign {
		size[a]++
	}
	var empty []int
	for k, s := range size {
		if s == 0 {
			empty = append(empty, k)
		}
	}
	if len(empty) == 0 {
		return
	}
	order := iota32(c.V)
	m := tl.M
	slices.SortFunc(order, func(a, b int32) int {
		if x := cmp.Compare(tl.Score[int(a)*m], tl.Score[int(b)*m]); x != 0 {
			return x
		}
		return cmp.Compare(a, b)
	})
	i := 0
	for _, k := range empty {
		for i < len(order) && size[c.assign[order[i]]] <= 1 {
			i++
		}
		if i == len(order) {
			return
		}
		v := order[i]
		i++
		size[c.assign[v]]--
		c.assign[v] = int32(k)
		size[k]++
	}
}

// balancedAssign assigns every row to a cluster with exactly caps[k] rows
// in cluster k: rows are taken in descending order of their score margin
// (best minus second-best candidate) and each goes to its best candidate
// that still has room; rows whose candidates are all full are then scored
// against every cluster with room and placed the same way, until none is
// left.
func (c *clusterer) balancedAssign(tl *topList) {
	room := slices.Clone(c.caps)
	rows := iota32(c.V)
	left := greedyPlace(rows, tl, room, c.assign, c.order)
	for len(left) > 0 {
		var open []int32
		for k, r := range room {
			if r > 0 {
				open = append(open, int32(k))
			}
		}
		m := min(c.m, len(open))
		sub := newTopList(c.V, m)
		scoreGroups(c.pool, c.X, c.C, c.D, rowBlocks(left, blockRows, open), sub)
		left = greedyPlace(left, sub, room, c.assign, c.order)
	}
}

// greedyPlace places rows (each with its candidate list in tl) in
// descending margin order into clusters with room, and returns the rows it
// could not place, in ascending order.
func greedyPlace(rows []int32, tl *topList, room []int, assign []int32, orderBy string) []int32 {
	m := tl.M
	margin := func(v int32) float32 {
		s := tl.Score[int(v)*m : int(v)*m+m]
		switch orderBy {
		case "score":
			return s[0]
		case "index":
			return 0
		}
		if m == 1 || tl.Idx[int(v)*m+1] < 0 {
			return float32(math.Inf(1))
		}
		return s[0] - s[1]
	}
	order := slices.Clone(rows)
	marg := make([]float32, len(tl.Idx)/max(m, 1))
	for _, v := range order {
		marg[v] = margin(v)
	}
	slices.SortFunc(order, func(a, b int32) int {
		if x := cmp.Compare(marg[b], marg[a]); x != 0 {
			return x
		}
		return cmp.Compare(a, b)
	})
	var left []int32
	for _, v := range order {
		placed := false
		for _, k := range tl.Idx[int(v)*m : int(v)*m+m] {
			if k < 0 {
				break
			}
			if room[k] > 0 {
				room[k]--
				assign[v] = k
				placed = true
				break
			}
		}
		if !placed {
			left = append(left, v)
		}
	}
	slices.Sort(left)
	return left
}

// Work estimates for the progress bar, in multiply-adds.
func (c *clusterer) estInit() float64 {
	if c.exact {
		return float64(c.K) * float64(c.V) * float64(c.D)
	}
	per := float64(c.K) / float64(c.K1)
	return float64(c.V) * per * float64(c.D) * (cellIters + 2)
}

func (c *clusterer) estLloyd() float64 {
	if c.exact {
		return c.estIter()
	}
	per := float64(c.K) / float64(c.K1)
	return float64(c.K+c.V)*float64(c.K1)*float64(c.D) + float64(c.V)*graphCells*per*float64(c.D)
}

func (c *clusterer) estIter() float64 {
	if c.exact {
		return float64(c.V) * float64(c.K) * float64(c.D)
	}
	per := float64(c.K) / float64(c.K1)
	return float64(c.K)*float64(c.D)*(float64(c.K1)+graphCells*per) + float64(c.V)*float64(c.m)*float64(c.D)
}

func (c *clusterer) estTotal(lloyd, balanced int) float64 {
	t := 0.0
	if c.exact {
		t += c.estInit()
		if lloyd == 0 {
			t += c.estIter()
		}
	} else {
		k1 := max(2, min(int(math.Sqrt(float64(c.K))+0.5), 512))
		s := min(coarseSample*k1, c.V)
		t += float64(k1)*float64(s)*float64(c.D)*(coarseIters+1) + float64(c.V)*float64(k1)*float64(c.D)
		c.K1 = k1
		t += c.estInit()
	}
	ivf := 0
	if !c.exact {
		ivf = (lloyd + 1) / 2
	}
	return t + float64(ivf)*c.estLloyd() + float64(lloyd-ivf+max(balanced, 1))*c.estIter()
}
