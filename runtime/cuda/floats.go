package cuda

import (
	"fmt"
	"unsafe"

	"github.com/fhkit/fhkit/formats/int4"
)

// f32Bytes views a float32 slice as its little-endian bytes in place.
func f32Bytes(v []float32) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
}

// i32Bytes views an int32 slice as its little-endian bytes in place.
func i32Bytes(v []int32) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
}

// UploadF32 copies v into b at element offset off.
func (dv *Device) UploadF32(b Buffer, off int, v []float32) error {
	return dv.Upload(b, 4*off, f32Bytes(v))
}

// DownloadF32 fills v from b at element offset off.
func (dv *Device) DownloadF32(v []float32, b Buffer, off int) error {
	return dv.Download(f32Bytes(v), b, 4*off)
}

// UploadI32 copies v into b at element offset off.
func (dv *Device) UploadI32(b Buffer, off int, v []int32) error {
	return dv.Upload(b, 4*off, i32Bytes(v))
}

// DownloadI32 fills v from b at element offset off.
func (dv *Device) DownloadI32(v []int32, b Buffer, off int) error {
	return dv.Download(i32Bytes(v), b, 4*off)
}

// AllocF32 allocates n float32s and, when init is non-nil, uploads it.
func (dv *Device) AllocF32(n int, init []float32) (Buffer, error) {
	b, err := dv.Alloc(4 * n)
	if err != nil {
		return b, err
	}
	if init != nil {
		if err := dv.UploadF32(b, 0, init); err != nil {
			dv.Free(b)
			return Buffer{}, err
		}
	}
	return b, nil
}

// Int4 is a packed int4 weight in device memory, in the layout of the
// fh_w4a16_* kernels: codes as in the file, float32 scales, one byte per
// zero point (no buffer when symmetric).
type Int4 struct {
	Rows, Cols, Group int
	Codes, Scales     Buffer
	Zeros             Buffer // Ptr 0 when symmetric
}

// UploadInt4 converts w to the kernels' layout and uploads it. The kernels
// read 8 codes per 32-bit word within one group, so Cols and GroupSize must
// be multiples of 8.
func (dv *Device) UploadInt4(w int4.Weight) (*Int4, error) {
	if err := w.Check(); err != nil {
		return nil, err
	}
	if w.Cols%8 != 0 || w.GroupSize%8 != 0 {
		return nil, fmt.Errorf("cuda: int4 weight [%d, %d] group %d: the CUDA kernels need the width and group size to be multiples of 8", w.Rows, w.Cols, w.GroupSize)
	}
	d := &Int4{Rows: w.Rows, Cols: w.Cols, Group: w.GroupSize}
	var err error
	free := func() {
		dv.Free(d.Codes)
		dv.Free(d.Scales)
		dv.Free(d.Zeros)
	}
	if d.Codes, err = dv.Alloc(len(w.QWeight)); err != nil {
		return nil, err
	}
	if err = dv.Upload(d.Codes, 0, w.QWeight); err != nil {
		free()
		return nil, err
	}
	if d.Scales, err = dv.AllocF32(w.Rows*w.Groups(), w.ScalesF32()); err != nil {
		free()
		return nil, err
	}
	if w.Zeros != nil {
		n := w.Rows * w.Groups()
		z := make([]byte, n)
		for i := range z {
			z[i] = int4.Nibble(w.Zeros, i)
		}
		if d.Zeros, err = dv.Alloc(n); err != nil {
			free()
			return nil, err
		}
		if err = dv.Upload(d.Zeros, 0, z); err != nil {
			free()
			return nil, err
		}
	}
	return d, nil
}

// FreeInt4 releases the buffers of w.
func (dv *Device) FreeInt4(w *Int4) {
	dv.Free(w.Codes)
	dv.Free(w.Scales)
	dv.Free(w.Zeros)
}

// ceilDiv is ⌈a/b⌉ for positive b (grid sizes).
func ceilDiv(a, b int) int { return (a + b - 1) / b }
