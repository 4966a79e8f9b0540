package fhm

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/fhkit/fhkit/formats/atomicfile"
	"github.com/fhkit/fhkit/formats/dtype"
)

// Writer streams a .fhm file: tensors one after another with WriteTensor,
// then Commit writes the metadata, table and header and moves the file into
// place. Nothing appears at the destination path until Commit succeeds.
type Writer struct {
	out     *atomicfile.File
	buf     *bufio.Writer
	pos     int64 // bytes written to the data section
	tensors []TensorInfo
	names   map[string]bool
	err     error
}

// Create starts a .fhm file at path.
func Create(path string) (*Writer, error) {
	f, err := atomicfile.Create(path)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(PageAlign, io.SeekStart); err != nil {
		f.Abort()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &Writer{out: f, buf: bufio.NewWriterSize(f, 1<<20), names: map[string]bool{}}, nil
}

// TempName returns the temporary file being written (to remove it from a
// signal handler).
func (w *Writer) TempName() string { return w.out.TempName() }

type tensorWriter struct {
	w       *Writer
	want    int64
	written int64
	crc     uint32
}

func (t *tensorWriter) Write(p []byte) (int, error) {
	if t.written+int64(len(p)) > t.want {
		return 0, fmt.Errorf("tensor data longer than its declared size %d", t.want)
	}
	if len(p) < parallelCRC {
		n, err := t.w.buf.Write(p)
		t.crc = crc32.Update(t.crc, castagnoli, p[:n])
		t.written += int64(n)
		return n, err
	}
	// Checksum on another core while this one copies p into the file.
	crc := make(chan uint32, 1)
	go func() { crc <- crc32.Update(t.crc, castagnoli, p) }()
	n, err := t.w.buf.Write(p)
	c := <-crc
	if err != nil {
		return n, err
	}
	t.crc = c
	t.written += int64(n)
	return n, nil
}

// parallelCRC is the write size from which the checksum is computed
// concurrently with the write.
const parallelCRC = 256 << 10

// WriteTensor appends a tensor. fill must write exactly the tensor's storage
// size (dt.ByteSize of the element count) to the writer it is given.
func (w *Writer) WriteTensor(name string, dt dtype.DType, shape []int64, fill func(io.Writer) error) error {
	if w.err != nil {
		return w.err
	}
	if err := checkName(name); err != nil {
		return err
	}
	if w.names[name] {
		return fmt.Errorf("tensor %q written twice", name)
	}
	n, err := checkShape(shape)
	if err != nil {
		return fmt.Errorf("tensor %q: %w", name, err)
	}
	size := dt.ByteSize(n)
	if size < 0 {
		return fmt.Errorf("tensor %q: invalid dtype %s", name, dt)
	}
	start := alignUp(w.pos, alignFor(size))
	if err := w.pad(start - w.pos); err != nil {
		return w.fail(err)
	}
	tw := &tensorWriter{w: w, want: size}
	if err := fill(tw); err != nil {
		return w.fail(fmt.Errorf("tensor %q: %w", name, err))
	}
	if tw.written != size {
		return w.fail(fmt.Errorf("tensor %q: wrote %d bytes, want %d", name, tw.written, size))
	}
	w.pos = start + size
	w.names[name] = true
	w.tensors = append(w.tensors, TensorInfo{Name: name, DType: dt, Shape: append([]int64{}, shape...), Offset: start, Size: size, CRC32C: tw.crc})
	return nil
}

// WriteTensorBytes appends a tensor whose bytes are in memory.
func (w *Writer) WriteTensorBytes(name string, dt dtype.DType, shape []int64, data []byte) error {
	return w.WriteTensor(name, dt, shape, func(o io.Writer) error {
		_, err := o.Write(data)
		return err
	})
}

func (w *Writer) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	return err
}

var zeros [PageAlign]byte

func (w *Writer) pad(n int64) error {
	for n > 0 {
		k := min(n, int64(len(zeros)))
		if _, err := w.buf.Write(zeros[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// Commit writes the metadata, the tensor table and the header, syncs the file
// and renames it to its destination.
func (w *Writer) Commit(meta *Metadata) error {
	if w.err != nil {
		w.Abort()
		return w.err
	}
	err := w.finish(meta)
	if err != nil {
		w.Abort()
		return err
	}
	return w.out.Commit()
}

func (w *Writer) finish(meta *Metadata) error {
	meta.Format = "fhm"
	metaJSON, err := json.Marshal(meta)
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	if len(metaJSON) > MaxMetadataSize {
		return fmt.Errorf("metadata is %d bytes, limit %d", len(metaJSON), MaxMetadataSize)
	}
	dataSize := w.pos
	metaOff := PageAlign + dataSize
	if _, err := w.buf.Write(metaJSON); err != nil {
		return err
	}
	tableOff := alignUp(metaOff+int64(len(metaJSON)), 8)
	if err := w.pad(tableOff - metaOff - int64(len(metaJSON))); err != nil {
		return err
	}
	table := encodeTable(w.tensors)
	if _, err := w.buf.Write(table); err != nil {
		return err
	}
	if err := w.buf.Flush(); err != nil {
		return err
	}
	h := header{
		dataOffset: PageAlign, dataSize: uint64(dataSize),
		metaOffset: uint64(metaOff), metaSize: uint64(len(metaJSON)),
		tableOffset: uint64(tableOff), tableSize: uint64(len(table)),
		fileSize: uint64(tableOff) + uint64(len(table)), tensorCount: uint32(len(w.tensors)),
		metaCRC: checksum(metaJSON), tableCRC: checksum(table),
	}
	if _, err := w.out.WriteAt(h.encode(), 0); err != nil {
		return err
	}
	return nil
}

// Abort discards the partial file.
func (w *Writer) Abort() { w.out.Abort() }

func encodeTable(ts []TensorInfo) []byte {
	var b []byte
	for _, t := range ts {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(t.Name)))
		b = append(b, t.Name...)
		b = append(b, byte(t.DType), byte(len(t.Shape)))
		for _, d := range t.Shape {
			b = binary.LittleEndian.AppendUint64(b, uint64(d))
		}
		b = binary.LittleEndian.AppendUint64(b, uint64(t.Offset))
		b = binary.LittleEndian.AppendUint64(b, uint64(t.Size))
		b = binary.LittleEndian.AppendUint32(b, t.CRC32C)
	}
	return b
}

type header struct {
	dataOffset, dataSize, metaOffset, metaSize, tableOffset, tableSize, fileSize uint64
	tensorCount, metaCRC, tableCRC                                               uint32
}

func (h header) encode() []byte {
	b := make([]byte, HeaderSize)
	copy(b, Magic)
	le := binary.LittleEndian
	le.PutUint32(b[8:], Version)
	le.PutUint32(b[12:], HeaderSize)
	le.PutUint64(b[16:], h.dataOffset)
	le.PutUint64(b[24:], h.dataSize)
	le.PutUint64(b[32:], h.metaOffset)
	le.PutUint64(b[40:], h.metaSize)
	le.PutUint64(b[48:], h.tableOffset)
	le.PutUint64(b[56:], h.tableSize)
	le.PutUint64(b[64:], h.fileSize)
	le.PutUint32(b[72:], h.tensorCount)
	le.PutUint32(b[76:], h.metaCRC)
	le.PutUint32(b[80:], h.tableCRC)
	le.PutUint32(b[124:], checksum(b[:124]))
	return b
}
