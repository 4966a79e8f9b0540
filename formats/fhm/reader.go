package fhm

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"unicode/utf8"
	"unsafe"

	"github.com/fhkit/fhkit/formats/dtype"
	"github.com/fhkit/fhkit/formats/mmapfile"
)

// File is an open .fhm file. Tensor data is read in place from a read-only
// memory map.
type File struct {
	Path     string
	Metadata Metadata
	// MetadataJSON is the metadata block as stored.
	MetadataJSON []byte
	// Tensors is the tensor table in file order.
	Tensors []TensorInfo
	// Size is the file size in bytes.
	Size   int64
	data   []byte // the data section
	byName map[string]int
	mm     *mmapfile.File
}

// Open maps path and validates its header, metadata and tensor table (see
// SPEC.md for each rule). Tensor checksums are checked by Verify.
func Open(path string) (*File, error) {
	mm, err := mmapfile.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f, err := Parse(path, mm.Data)
	if err != nil {
		mm.Close()
		return nil, err
	}
	f.mm = mm
	return f, nil
}

// Parse validates buf as a whole .fhm file and returns views into it; name
// is used in error messages.
func Parse(name string, buf []byte) (*File, error) {
	f, err := parse(buf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	f.Path = name
	return f, nil
}

func parse(buf []byte) (*File, error) {
	size := uint64(len(buf))
	if size < HeaderSize {
		return nil, fmt.Errorf("truncated: %d bytes, a .fhm header alone is %d", size, HeaderSize)
	}
	if string(buf[:8]) != Magic {
		return nil, fmt.Errorf("not a .fhm file (bad magic %q)", buf[:8])
	}
	le := binary.LittleEndian
	if v := le.Uint32(buf[8:]); v != Version {
		return nil, fmt.Errorf("unsupported .fhm version %d (this build reads version %d)", v, Version)
	}
	if got, want := le.Uint32(buf[124:]), checksum(buf[:124]); got != want {
		return nil, fmt.Errorf("header checksum mismatch (stored %08x, computed %08x): file corrupt", got, want)
	}
	if hs := le.Uint32(buf[12:]); hs != HeaderSize {
		return nil, fmt.Errorf("header size %d, want %d", hs, HeaderSize)
	}
	h := header{
		dataOffset: le.Uint64(buf[16:]), dataSize: le.Uint64(buf[24:]),
		metaOffset: le.Uint64(buf[32:]), metaSize: le.Uint64(buf[40:]),
		tableOffset: le.Uint64(buf[48:]), tableSize: le.Uint64(buf[56:]),
		fileSize: le.Uint64(buf[64:]), tensorCount: le.Uint32(buf[72:]),
		metaCRC: le.Uint32(buf[76:]), tableCRC: le.Uint32(buf[80:]),
	}
	for _, b := range buf[84:124] {
		if b != 0 {
			return nil, fmt.Errorf("reserved header bytes are not zero")
		}
	}
	if h.fileSize != size {
		return nil, fmt.Errorf("file is %d bytes but its header says %d (truncated or appended to)", size, h.fileSize)
	}
	if h.dataOffset < HeaderSize || h.dataOffset%PageAlign != 0 || h.dataOffset > size {
		return nil, fmt.Errorf("data offset %d invalid (must be a multiple of %d within the file)", h.dataOffset, PageAlign)
	}
	if h.dataSize > size-h.dataOffset || h.metaOffset != h.dataOffset+h.dataSize {
		return nil, fmt.Errorf("data section [%d, +%d) and metadata offset %d inconsistent with file size %d", h.dataOffset, h.dataSize, h.metaOffset, size)
	}
	if h.metaSize == 0 || h.metaSize > MaxMetadataSize || h.metaSize > size-h.metaOffset {
		return nil, fmt.Errorf("metadata size %d invalid (1..%d bytes within the file)", h.metaSize, MaxMetadataSize)
	}
	metaEnd := h.metaOffset + h.metaSize
	if h.tableOffset%8 != 0 || h.tableOffset < metaEnd || h.tableOffset-metaEnd >= 8 || h.tableOffset > size {
		return nil, fmt.Errorf("table offset %d invalid (metadata ends at %d)", h.tableOffset, metaEnd)
	}
	if h.tableSize != size-h.tableOffset {
		return nil, fmt.Errorf("table [%d, +%d) does not end at the end of the file (%d bytes)", h.tableOffset, h.tableSize, size)
	}
	if h.tensorCount > MaxTensors {
		return nil, fmt.Errorf("tensor count %d exceeds the limit %d", h.tensorCount, MaxTensors)
	}
	if !allZero(buf[HeaderSize:h.dataOffset]) || !allZero(buf[metaEnd:h.tableOffset]) {
		return nil, fmt.Errorf("padding bytes are not zero")
	}
	metaJSON := buf[h.metaOffset:metaEnd]
	if checksum(metaJSON) != h.metaCRC {
		return nil, fmt.Errorf("metadata checksum mismatch: file corrupt")
	}
	table := buf[h.tableOffset:]
	if checksum(table) != h.tableCRC {
		return nil, fmt.Errorf("tensor table checksum mismatch: file corrupt")
	}
	tensors, err := decodeTable(table, int(h.tensorCount), int64(h.dataSize))
	if err != nil {
		return nil, fmt.Errorf("tensor table: %w", err)
	}
	f := &File{MetadataJSON: metaJSON, Tensors: tensors, Size: int64(size), data: buf[h.dataOffset:h.metaOffset], byName: make(map[string]int, len(tensors))}
	for i, t := range tensors {
		f.byName[t.Name] = i
	}
	if err := json.Unmarshal(metaJSON, &f.Metadata); err != nil {
		return nil, fmt.Errorf("metadata JSON: %w", err)
	}
	if f.Metadata.Format != "fhm" {
		return nil, fmt.Errorf("metadata: format %q, want \"fhm\"", f.Metadata.Format)
	}
	if err := f.Metadata.Model.Validate(); err != nil {
		return nil, fmt.Errorf("metadata: model: %w", err)
	}
	for file, tn := range f.Metadata.Tokenizer.Files {
		t, ok := f.Tensor(tn)
		if !ok || t.Info.DType != dtype.U8 {
			return nil, fmt.Errorf("metadata: tokenizer file %q refers to tensor %q, which is not a U8 tensor of the file", file, tn)
		}
	}
	return f, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func checkName(name string) error {
	if len(name) == 0 || len(name) > MaxNameLen || !utf8.ValidString(name) {
		return fmt.Errorf("tensor name %q: must be 1..%d bytes of UTF-8", name, MaxNameLen)
	}
	return nil
}

// checkShape validates dimensions and returns the element count.
func checkShape(shape []int64) (int64, error) {
	if len(shape) > MaxDims {
		return 0, fmt.Errorf("%d dimensions, limit %d", len(shape), MaxDims)
	}
	n := int64(1)
	for _, d := range shape {
		if d < 0 || d > maxDim {
			return 0, fmt.Errorf("dimension %d out of range [0, 2^40]", d)
		}
		if d != 0 && n > maxElements/d {
			return 0, fmt.Errorf("shape %v has more than 2^50 elements", shape)
		}
		n *= d
	}
	return n, nil
}

func decodeTable(b []byte, count int, dataSize int64) ([]TensorInfo, error) {
	le := binary.LittleEndian
	ts := make([]TensorInfo, 0, min(count, len(b)/32))
	names := make(map[string]bool, min(count, len(b)/32))
	for i := 0; i < count; i++ {
		if len(b) < 2 {
			return nil, fmt.Errorf("entry %d: truncated", i)
		}
		l := int(le.Uint16(b))
		if len(b) < 2+l+2 {
			return nil, fmt.Errorf("entry %d: truncated name", i)
		}
		name := string(b[2 : 2+l])
		if err := checkName(name); err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		if names[name] {
			return nil, fmt.Errorf("tensor %q appears twice", name)
		}
		names[name] = true
		b = b[2+l:]
		dt, nd := dtype.DType(b[0]), int(b[1])
		if !dt.Valid() {
			return nil, fmt.Errorf("tensor %q: unknown dtype code %d", name, b[0])
		}
		if nd > MaxDims {
			return nil, fmt.Errorf("tensor %q: %d dimensions, limit %d", name, nd, MaxDims)
		}
		b = b[2:]
		if len(b) < 8*nd+20 {
			return nil, fmt.Errorf("tensor %q: truncated entry", name)
		}
		shape := make([]int64, nd)
		for j := range shape {
			d := le.Uint64(b[8*j:])
			if d > maxDim {
				return nil, fmt.Errorf("tensor %q: dimension %d out of range", name, d)
			}
			shape[j] = int64(d)
		}
		b = b[8*nd:]
		n, err := checkShape(shape)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		off, sz, crc := le.Uint64(b), le.Uint64(b[8:]), le.Uint32(b[16:])
		b = b[20:]
		if want := dt.ByteSize(n); want < 0 || uint64(want) != sz {
			return nil, fmt.Errorf("tensor %q: size %d bytes does not match %s%v (%d bytes)", name, sz, dt, shape, want)
		}
		if off%TensorAlign != 0 {
			return nil, fmt.Errorf("tensor %q: offset %d not aligned to %d", name, off, TensorAlign)
		}
		if off > uint64(dataSize) || sz > uint64(dataSize)-off {
			return nil, fmt.Errorf("tensor %q: [%d, +%d) beyond the data section (%d bytes)", name, off, sz, dataSize)
		}
		ts = append(ts, TensorInfo{Name: name, DType: dt, Shape: shape, Offset: int64(off), Size: int64(sz), CRC32C: crc})
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%d bytes after the last of %d entries", len(b), count)
	}
	byOff := append([]TensorInfo(nil), ts...)
	sort.Slice(byOff, func(i, j int) bool { return byOff[i].Offset < byOff[j].Offset })
	for i := 1; i < len(byOff); i++ {
		p, c := byOff[i-1], byOff[i]
		if p.Offset+p.Size > c.Offset && p.Size > 0 && c.Size > 0 {
			return nil, fmt.Errorf("tensors %q and %q overlap", p.Name, c.Name)
		}
	}
	return ts, nil
}

// Tensor is a table entry with its data, which aliases the memory map.
type Tensor struct {
	Info TensorInfo
	Data []byte
}

// Tensor returns the tensor called name.
func (f *File) Tensor(name string) (Tensor, bool) {
	i, ok := f.byName[name]
	if !ok {
		return Tensor{}, false
	}
	t := f.Tensors[i]
	return Tensor{Info: t, Data: f.data[t.Offset : t.Offset+t.Size : t.Offset+t.Size]}, true
}

// TokenizerFile returns the bytes of an embedded tokenizer file
// ("tokenizer.model", "tokenizer.json", ...).
func (f *File) TokenizerFile(file string) ([]byte, bool) {
	tn, ok := f.Metadata.Tokenizer.Files[file]
	if !ok {
		return nil, false
	}
	t, ok := f.Tensor(tn)
	return t.Data, ok
}

// VerifyTensor checks one tensor's CRC-32C.
func (f *File) VerifyTensor(t TensorInfo) error {
	tt, ok := f.Tensor(t.Name)
	if !ok {
		return fmt.Errorf("%s: no tensor %q", f.Path, t.Name)
	}
	if got := checksum(tt.Data); got != t.CRC32C {
		return fmt.Errorf("%s: tensor %q: checksum mismatch (stored %08x, computed %08x): data corrupt", f.Path, t.Name, t.CRC32C, got)
	}
	return nil
}

// Verify checks every tensor's CRC-32C and returns the first mismatch.
func (f *File) Verify() error {
	for _, t := range f.Tensors {
		if err := f.VerifyTensor(t); err != nil {
			return err
		}
	}
	return nil
}

// PrettyMetadata returns the metadata JSON indented for display.
func (f *File) PrettyMetadata() []byte {
	var b bytes.Buffer
	if json.Indent(&b, f.MetadataJSON, "", "  ") != nil {
		return f.MetadataJSON
	}
	return b.Bytes()
}

// Release tells the kernel that b, a tensor's bytes (or part of them) in
// this file, will not be read for a while, so its pages can leave the
// process's resident set; reading b later brings them back from the page
// cache or the disk. A b outside the file is ignored.
func (f *File) Release(b []byte) {
	if off, ok := f.offsetOf(b); ok {
		f.mm.DontNeed(off, len(b))
	}
}

// CopyOut copies b, tensor data of f, into dst (as long) with read calls
// on the file rather than through the mapping: a copy made at load then
// costs no page fault per 4 KiB of the source (a 2 GB model's copy took
// ~4 s through the mapping on the build VMs). Other slices are copied as
// they are.
func (f *File) CopyOut(dst, b []byte) error {
	off, ok := f.offsetOf(b)
	if !ok {
		copy(dst, b)
		return nil
	}
	file, err := os.Open(f.Path)
	if err != nil {
		return err
	}
	defer file.Close()
	if _, err := file.ReadAt(dst[:len(b)], int64(off)); err != nil {
		return fmt.Errorf("%s: %w", f.Path, err)
	}
	return nil
}

// offsetOf returns the offset of b in f's mapping, and false when b is not
// in it.
func (f *File) offsetOf(b []byte) (int, bool) {
	if len(b) == 0 || f.mm == nil || len(f.mm.Data) == 0 {
		return 0, false
	}
	base := uintptr(unsafe.Pointer(&f.mm.Data[0]))
	p := uintptr(unsafe.Pointer(&b[0]))
	if p < base || p+uintptr(len(b)) > base+uintptr(len(f.mm.Data)) {
		return 0, false
	}
	return int(p - base), true
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
