// Package inspect describes a model file (.fhm or safetensors) for people
// and scripts: its metadata, its tensors, and whether their checksums hold.
package inspect

import (
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"

	"github.com/fhkit/fhkit/formats/fhm"
	"github.com/fhkit/fhkit/formats/safetensors"
)

// Tensor is one row of the tensor table.
type Tensor struct {
	Name   string  `json:"name"`
	DType  string  `json:"dtype"`
	Shape  []int64 `json:"shape"`
	Offset int64   `json:"offset"`
	Size   int64   `json:"size"`
	CRC32C string  `json:"crc32c"`
	// Status is "ok", "MISMATCH" (.fhm) or "computed" (safetensors has no
	// stored checksum, so the value is computed for reference).
	Status string `json:"status"`
}

// Report describes a file.
type Report struct {
	Path        string `json:"path"`
	Format      string `json:"format"` // "fhm" or "safetensors"
	Version     int    `json:"version,omitempty"`
	FileSize    int64  `json:"file_size"`
	NumTensors  int    `json:"num_tensors"`
	NumElements int64  `json:"num_elements"`
	DataBytes   int64  `json:"data_bytes"`
	// Metadata is the .fhm metadata JSON or the safetensors __metadata__.
	Metadata json.RawMessage `json:"metadata"`
	Tensors  []Tensor        `json:"tensors"`
	// Verified counts tensors whose stored checksum matched; Mismatched
	// those whose did not.
	Verified   int `json:"verified"`
	Mismatched int `json:"mismatched"`
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// File inspects path, recognising the format by its first bytes, and
// verifies every stored checksum.
func File(path string) (*Report, error) {
	magic := make([]byte, 8)
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	n, _ := fh.Read(magic)
	fh.Close()
	if n == 8 && string(magic) == fhm.Magic {
		return inspectFHM(path)
	}
	return inspectSafetensors(path)
}

func inspectFHM(path string) (*Report, error) {
	f, err := fhm.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := &Report{Path: path, Format: "fhm", Version: fhm.Version, FileSize: f.Size, NumTensors: len(f.Tensors), Metadata: append(json.RawMessage(nil), f.MetadataJSON...)}
	for _, t := range f.Tensors {
		status := "ok"
		if f.VerifyTensor(t) != nil {
			status = "MISMATCH"
			r.Mismatched++
		} else {
			r.Verified++
		}
		r.NumElements += t.NumElements()
		r.DataBytes += t.Size
		r.Tensors = append(r.Tensors, Tensor{t.Name, t.DType.String(), t.Shape, t.Offset, t.Size, fmt.Sprintf("%08x", t.CRC32C), status})
	}
	return r, nil
}

func inspectSafetensors(path string) (*Report, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	meta, _ := json.Marshal(f.Metadata)
	r := &Report{Path: path, Format: "safetensors", FileSize: st.Size(), NumTensors: len(f.Tensors), Metadata: meta}
	for _, t := range f.Tensors {
		r.NumElements += t.NumElements()
		r.DataBytes += int64(len(t.Data))
		crc := crc32.Checksum(t.Data, castagnoli)
		r.Tensors = append(r.Tensors, Tensor{t.Name, t.DType.String(), t.Shape, t.Offset, int64(len(t.Data)), fmt.Sprintf("%08x", crc), "computed"})
	}
	return r, nil
}
