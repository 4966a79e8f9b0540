package tokenizer

import (
	"bytes"
	"container/heap"
	"fmt"
	"unicode/utf8"
)

// bpeModel is the BPE model of a tokenizer.json, with the semantics of
// tokenizers' models::bpe (merge_word / merge_all).
type bpeModel struct {
	vocab  map[string]int
	merges map[uint64]bpeMerge
	// unk is the id of unk_token, or -1.
	unk          int
	fuseUnk      bool
	byteFallback bool
	ignoreMerges bool
	contPrefix   string
	eowSuffix    string
	// byteIDs[b] is the id of "<0xXX>", or -1.
	byteIDs [256]int
}

type bpeMerge struct {
	rank  int32
	newID int32
}

func pairKey(a, b int) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// addMerge registers merge rule number rank: a + b. buf is scratch space.
func (m *bpeModel) addMerge(rank int, a, b []byte, buf *[]byte) error {
	ida, ok := m.vocab[string(a)]
	if !ok {
		return fmt.Errorf("%q is not in the vocabulary", a)
	}
	idb, ok := m.vocab[string(b)]
	if !ok {
		return fmt.Errorf("%q is not in the vocabulary", b)
	}
	rest := b
	if m.contPrefix != "" && bytes.HasPrefix(b, []byte(m.contPrefix)) {
		rest = b[len(m.contPrefix):]
	}
	*buf = append(append((*buf)[:0], a...), rest...)
	idn, ok := m.vocab[string(*buf)]
	if !ok {
		return fmt.Errorf("%q is not in the vocabulary", *buf)
	}
	m.merges[pairKey(ida, idb)] = bpeMerge{rank: int32(rank), newID: int32(idn)}
	return nil
}

type bpeSymbol struct {
	id         int
	prev, next int
	size       int // bytes of the word covered; 0 once merged away
}

type bpeCandidate struct {
	pos   int
	rank  int32
	newID int32
}

type bpeQueue []bpeCandidate

func (q bpeQueue) Len() int { return len(q) }
func (q bpeQueue) Less(i, j int) bool {
	if q[i].rank != q[j].rank {
		return q[i].rank < q[j].rank
	}
	return q[i].pos < q[j].pos
}
func (q bpeQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *bpeQueue) Push(x any)   { *q = append(*q, x.(bpeCandidate)) }
func (q *bpeQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// tokenize appends the ids of word to out.
func (m *bpeModel) tokenize(word string, out []int) []int {
	if word == "" {
		return out
	}
	if m.ignoreMerges {
		if id, ok := m.vocab[word]; ok {
			return append(out, id)
		}
	}
	syms := make([]bpeSymbol, 0, len(word))
	add := func(id, size int) {
		syms = append(syms, bpeSymbol{id: id, prev: len(syms) - 1, next: len(syms) + 1, size: size})
	}
	unkID, unkLen := -1, 0
	for i := 0; i < len(word); {
		_, n := utf8.DecodeRuneInString(word[i:])
		s := word[i : i+n]
		if i > 0 && m.contPrefix != "" {
			s = m.contPrefix + s
		}
		if i+n == len(word) && m.eowSuffix != "" {
			s += m.eowSuffix
		}
		if id, ok := m.vocab[s]; ok {
			if unkID >= 0 {
				add(unkID, unkLen)
				unkID = -1
			}
			add(id, n)
			i += n
			continue
		}
		if m.byteFallback {
			all := true
			for j := 0; j < len(s); j++ {
				if m.byteIDs[s[j]] < 0 {
					all = false
					break
				}
			}
			if all {
				for j := 0; j < len(s); j++ {
					add(m.byteIDs[s[j]], 1)
				}
				i += n
				continue
			}
		}
		if m.unk >= 0 {
			switch {
			case unkID >= 0 && m.fuseUnk:
				unkLen += n
			case unkID >= 0:
				add(unkID, unkLen)
				unkID, unkLen = m.unk, n
			default:
				unkID, unkLen = m.unk, n
			}
		}
		i += n
	}
	if unkID >= 0 {
		add(unkID, unkLen)
	}
	if len(syms) == 0 {
		return out
	}
	syms[len(syms)-1].next = -1

	q := make(bpeQueue, 0, len(syms))
	for i := 0; i+1 < len(syms); i++ {
		if mg, ok := m.merges[pairKey(syms[i].id, syms[i+1].id)]; ok {
			q = append(q, bpeCandidate{pos: i, rank: mg.rank, newID: mg.newID})
		}
	}
	heap.Init(&q)
	for q.Len() > 0 {
		top := heap.Pop(&q).(bpeCandidate)
		cur := &syms[top.pos]
		if cur.size == 0 || cur.next < 0 {
			continue
		}
		nextPos := cur.next
		right := syms[nextPos]
		if mg, ok := m.merges[pairKey(cur.id, right.id)]; !ok || mg.newID != top.newID {
			continue
		}
		cur.id = int(top.newID)
		cur.size += right.size
		cur.next = right.next
		syms[nextPos].size = 0
		if right.next >= 0 {
			syms[right.next].prev = top.pos
		}
		if cur.prev >= 0 {
			if mg, ok := m.merges[pairKey(syms[cur.prev].id, cur.id)]; ok {
				heap.Push(&q, bpeCandidate{pos: cur.prev, rank: mg.rank, newID: mg.newID})
			}
		}
		if cur.next >= 0 {
			if mg, ok := m.merges[pairKey(cur.id, syms[cur.next].id)]; ok {
				heap.Push(&q, bpeCandidate{pos: top.pos, rank: mg.rank, newID: mg.newID})
			}
		}
	}
	for i := 0; i >= 0; i = syms[i].next {
		out = append(out, syms[i].id)
	}
	return out
}
