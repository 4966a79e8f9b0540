// Package safetensors reads safetensors files through a read-only memory map
// (tensor data is never copied) and writes them as a stream, header first,
// so a writer never holds a whole model in memory.
//
// Header parsing and validation are github.com/nlpodyssey/safetensors's;
// this package adds the mmap, fhkit's dtype names, errors that name the file,
// and the streaming writer.
//
// The byte format (from the upstream README):
//
//	[0, 8)       N, uint64 little-endian: length of the JSON header
//	[8, 8+N)     UTF-8 JSON: {"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [b, e]}, ...}
//	[8+N, EOF)   tensor data, little-endian, row-major; offsets relative to 8+N;
//	             the tensors sorted by offset tile the region exactly
package safetensors

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"sort"

	nst "github.com/nlpodyssey/safetensors"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/mmapfile"
)

// MaxHeaderSize is the largest JSON header accepted (the reference limit).
const MaxHeaderSize = 100_000_000

// Tensor is one tensor of a file. Data aliases the memory map.
type Tensor struct {
	Name  string
	DType dtype.DType
	Shape []int64
	// Offset is the position of Data in the file.
	Offset int64
	Data   []byte
}

// NumElements returns the product of the shape (1 for a scalar).
func (t Tensor) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// File is an open safetensors file.
type File struct {
	Path string
	// Tensors in file order (by offset).
	Tensors []Tensor
	// Metadata is the optional "__metadata__" string map.
	Metadata map[string]string
	// HeaderSize is N, the JSON header's length.
	HeaderSize int64
	byName     map[string]int
	mm         *mmapfile.File
}

// Open maps path and validates its header. Every error names the file.
func Open(path string) (*File, error) {
	mm, err := mmapfile.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f, err := parse(path, mm.Data)
	if err != nil {
		mm.Close()
		return nil, err
	}
	f.mm = mm
	return f, nil
}

// Parse validates buf as a whole safetensors file and returns views into it.
// name is used in error messages.
func Parse(name string, buf []byte) (*File, error) { return parse(name, buf) }

func parse(path string, buf []byte) (*File, error) {
	if len(buf) < 8 {
		return nil, fmt.Errorf("%s: truncated safetensors file: %d bytes, need at least 8 for the header length", path, len(buf))
	}
	n := binary.LittleEndian.Uint64(buf)
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("%s: safetensors header length %d exceeds the limit of %d bytes", path, n, MaxHeaderSize)
	}
	if n > uint64(len(buf))-8 {
		return nil, fmt.Errorf("%s: safetensors header length %d runs past the end of the file (%d bytes)", path, n, len(buf))
	}
	if n == 0 || buf[8] != '{' {
		return nil, fmt.Errorf("%s: safetensors header does not start with '{'", path)
	}
	hsize, meta, err := nst.ReadMetadata(buf)
	if err != nil {
		return nil, fmt.Errorf("%s: invalid safetensors header: %w", path, err)
	}
	dataStart := 8 + int64(hsize)
	f := &File{Path: path, Metadata: meta.Metadata(), HeaderSize: int64(hsize), byName: map[string]int{}}
	infos := meta.Tensors()
	for name, info := range infos {
		dt, err := dtype.Parse(info.DType.String())
		if err != nil {
			return nil, fmt.Errorf("%s: tensor %q: %w", path, name, err)
		}
		shape := make([]int64, len(info.Shape))
		for i, d := range info.Shape {
			if d > 1<<53 {
				return nil, fmt.Errorf("%s: tensor %q: dimension %d too large", path, name, d)
			}
			shape[i] = int64(d)
		}
		// nst validated that the offsets tile [0, len-8-N) and match the shape.
		b, e := int64(info.DataOffsets[0]), int64(info.DataOffsets[1])
		f.Tensors = append(f.Tensors, Tensor{Name: name, DType: dt, Shape: shape, Offset: dataStart + b, Data: buf[dataStart+b : dataStart+e : dataStart+e]})
	}
	sort.Slice(f.Tensors, func(i, j int) bool {
		a, b := f.Tensors[i], f.Tensors[j]
		return a.Offset < b.Offset || (a.Offset == b.Offset && a.Name < b.Name)
	})
	for i, t := range f.Tensors {
		f.byName[t.Name] = i
	}
	return f, nil
}

// Tensor returns the tensor called name.
func (f *File) Tensor(name string) (Tensor, bool) {
	i, ok := f.byName[name]
	if !ok {
		return Tensor{}, false
	}
	return f.Tensors[i], true
}

// AdviseSequential hints that the data will be streamed once.
func (f *File) AdviseSequential() {
	if f.mm != nil {
		f.mm.AdviseSequential()
	}
}

// Release drops the pages of t from this process's resident set after it
// has been consumed (keeps peak memory low when streaming a large file).
func (f *File) Release(t Tensor) {
	if f.mm != nil {
		f.mm.DontNeed(int(t.Offset), len(t.Data))
	}
}

// Close unmaps the file; tensor data must not be used afterwards.
func (f *File) Close() error {
	if f.mm == nil {
		return nil
	}
	err := f.mm.Close()
	f.mm = nil
	return err
}

// Header describes one tensor to be written.
type Header struct {
	Name  string
	DType dtype.DType
	Shape []int64
}

// headerEntry has the reference key order: dtype, shape, data_offsets.
type headerEntry struct {
	DType       string   `json:"dtype"`
	Shape       []int64  `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

// Writer streams a safetensors file: the header is written by NewWriter, then
// the tensors' bytes with Write, in the order Order returns.
type Writer struct {
	w       io.Writer
	order   []Header
	sizes   []int64
	cur     int
	written int64
}

// NewWriter writes the header for tensors to w. Tensors are laid out as the
// reference implementation does (dtype size descending, then name), so the
// data must then be written in the order reported by Order.
func NewWriter(w io.Writer, tensors []Header, metadata map[string]string) (*Writer, error) {
	order := append([]Header(nil), tensors...)
	rank := make(map[string]nst.DType, len(order))
	for _, t := range order {
		r, err := nst.ParseDType(t.DType.String())
		if err != nil {
			return nil, fmt.Errorf("tensor %q: dtype %s cannot be stored in safetensors", t.Name, t.DType)
		}
		rank[t.Name] = r
	}
	// The reference order: dtype alignment rank descending, then name.
	sort.SliceStable(order, func(i, j int) bool {
		ri, rj := rank[order[i].Name], rank[order[j].Name]
		return ri > rj || (ri == rj && order[i].Name < order[j].Name)
	})
	hdr := make(map[string]any, len(order)+1)
	if len(metadata) > 0 {
		hdr["__metadata__"] = metadata
	}
	sizes := make([]int64, len(order))
	off := int64(0)
	for i, t := range order {
		if t.DType.Size() == 0 { // invalid, or sub-byte (not a safetensors type)
			return nil, fmt.Errorf("tensor %q: dtype %s cannot be stored in safetensors", t.Name, t.DType)
		}
		if _, dup := hdr[t.Name]; dup || t.Name == "__metadata__" {
			return nil, fmt.Errorf("tensor %q: duplicate or reserved name", t.Name)
		}
		n := int64(t.DType.Size())
		for _, d := range t.Shape {
			if d < 0 {
				return nil, fmt.Errorf("tensor %q: negative dimension %d", t.Name, d)
			}
			n *= d
		}
		if t.Shape == nil {
			t.Shape = []int64{}
		}
		hdr[t.Name] = headerEntry{t.DType.String(), t.Shape, [2]int64{off, off + n}}
		sizes[i] = n
		off += n
	}
	js, err := json.Marshal(hdr) // map keys are sorted: deterministic output
	if err != nil {
		return nil, err
	}
	for len(js)%8 != 0 {
		js = append(js, ' ')
	}
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(js)))
	if _, err := w.Write(lenBuf[:]); err != nil {
		return nil, err
	}
	if _, err := w.Write(js); err != nil {
		return nil, err
	}
	return &Writer{w: w, order: order, sizes: sizes}, nil
}

// Order returns the tensors in the order their data must be written.
func (sw *Writer) Order() []Header { return sw.order }

// Write appends tensor data; it may span tensor boundaries.
func (sw *Writer) Write(p []byte) (int, error) {
	remaining := int64(0)
	for i := sw.cur; i < len(sw.sizes); i++ {
		remaining += sw.sizes[i]
	}
	remaining -= sw.written
	if int64(len(p)) > remaining {
		return 0, fmt.Errorf("safetensors writer: %d bytes written past the declared tensors", int64(len(p))-remaining)
	}
	n, err := sw.w.Write(p)
	sw.written += int64(n)
	for sw.cur < len(sw.sizes) && sw.written >= sw.sizes[sw.cur] {
		sw.written -= sw.sizes[sw.cur]
		sw.cur++
	}
	return n, err
}

// Close checks that every declared byte was written. It does not close the
// underlying writer.
func (sw *Writer) Close() error {
	for sw.cur < len(sw.sizes) && sw.sizes[sw.cur] == 0 {
		sw.cur++
	}
	if sw.cur != len(sw.sizes) {
		return fmt.Errorf("safetensors writer: tensor %q incomplete (%d of %d bytes)", sw.order[sw.cur].Name, sw.written, sw.sizes[sw.cur])
	}
	return nil
}
