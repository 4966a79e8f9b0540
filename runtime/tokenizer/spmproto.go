package tokenizer

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// SentencePiece piece types (sentencepiece_model.proto, ModelProto.SentencePiece.Type).
const (
	spmNormal      = 1
	spmUnknown     = 2
	spmControl     = 3
	spmUserDefined = 4
	spmUnused      = 5
	spmByte        = 6
)

// SentencePiece model types (TrainerSpec.ModelType).
const (
	spmUnigram = 1
	spmBPE     = 2
)

// spmPiece is one vocabulary entry of a SentencePiece model.
type spmPiece struct {
	piece string
	score float32
	typ   int32
}

// spmProto is the part of a SentencePiece ModelProto the tokenizer uses.
type spmProto struct {
	pieces         []spmPiece
	modelType      int32
	byteFallback   bool
	unkID          int32
	bosID          int32
	eosID          int32
	padID          int32
	normName       string
	addDummyPrefix bool
	removeExtraWS  bool
	escapeWS       bool
	wsAsSuffix     bool
	// raw is the ModelProto with its normalizer_spec replaced by an identity
	// spec (no dummy prefix, no whitespace folding): the form
	// go-sentencepiece accepts. This package applies those options itself.
	raw []byte
}

// maxProtoPieces bounds the vocabulary of a SentencePiece model.
const maxProtoPieces = 1 << 24

// parseSPMProto decodes a serialized SentencePiece ModelProto.
func parseSPMProto(b []byte) (*spmProto, error) {
	p := &spmProto{
		modelType:      spmUnigram,
		unkID:          0,
		bosID:          1,
		eosID:          2,
		padID:          -1,
		addDummyPrefix: true,
		removeExtraWS:  true,
		escapeWS:       true,
	}
	var rewritten []byte
	err := forEachField(b, func(num protowire.Number, typ protowire.Type, val []byte, v uint64, field []byte) error {
		switch num {
		case 1: // pieces
			if typ != protowire.BytesType {
				return fmt.Errorf("field pieces: wire type %d", typ)
			}
			if len(p.pieces) >= maxProtoPieces {
				return fmt.Errorf("more than %d pieces", maxProtoPieces)
			}
			pc, err := parseSPMPiece(val)
			if err != nil {
				return fmt.Errorf("piece %d: %w", len(p.pieces), err)
			}
			p.pieces = append(p.pieces, pc)
		case 2: // trainer_spec
			if typ != protowire.BytesType {
				return fmt.Errorf("field trainer_spec: wire type %d", typ)
			}
			if err := p.parseTrainerSpec(val); err != nil {
				return fmt.Errorf("trainer_spec: %w", err)
			}
		case 3: // normalizer_spec: parsed, then replaced below
			if typ != protowire.BytesType {
				return fmt.Errorf("field normalizer_spec: wire type %d", typ)
			}
			if err := p.parseNormalizerSpec(val); err != nil {
				return fmt.Errorf("normalizer_spec: %w", err)
			}
			return nil
		}
		rewritten = append(rewritten, field...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	// An identity normalizer spec for go-sentencepiece: name "identity",
	// add_dummy_prefix=false, remove_extra_whitespaces=false,
	// escape_whitespaces=true.
	var ns []byte
	ns = protowire.AppendTag(ns, 1, protowire.BytesType)
	ns = protowire.AppendString(ns, "identity")
	ns = protowire.AppendTag(ns, 3, protowire.VarintType)
	ns = protowire.AppendVarint(ns, 0)
	ns = protowire.AppendTag(ns, 4, protowire.VarintType)
	ns = protowire.AppendVarint(ns, 0)
	ns = protowire.AppendTag(ns, 5, protowire.VarintType)
	ns = protowire.AppendVarint(ns, 1)
	rewritten = protowire.AppendTag(rewritten, 3, protowire.BytesType)
	rewritten = protowire.AppendBytes(rewritten, ns)
	// go-sentencepiece v0.6.0 joins two adjacent symbols in a buffer as
	// long as its longest normal piece and panics when they are longer
	// (any two long words next to each other). An extra piece longer than
	// any two symbols together sizes that buffer; it cannot be produced (no
	// piece is a part of it) and its id is past the vocabulary.
	maxLen := 4
	for _, pc := range p.pieces {
		maxLen = max(maxLen, len(pc.piece))
	}
	var pad []byte
	pad = protowire.AppendTag(pad, 1, protowire.BytesType)
	pad = protowire.AppendString(pad, strings.Repeat("\uFFFF", (2*maxLen+15)/3))
	pad = protowire.AppendTag(pad, 2, protowire.Fixed32Type)
	pad = protowire.AppendFixed32(pad, math.Float32bits(-1e30))
	rewritten = protowire.AppendTag(rewritten, 1, protowire.BytesType)
	rewritten = protowire.AppendBytes(rewritten, pad)
	p.raw = rewritten
	return p, nil
}

// forEachField calls fn for every field of the protobuf message b. val is
// the payload of a length-delimited field, v the value of a varint or fixed
// field, and field the whole encoded field (tag included).
func forEachField(b []byte, fn func(num protowire.Number, typ protowire.Type, val []byte, v uint64, field []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("bad field tag: %w", protowire.ParseError(n))
		}
		var (
			val []byte
			v   uint64
			m   int
		)
		switch typ {
		case protowire.VarintType:
			v, m = protowire.ConsumeVarint(b[n:])
		case protowire.Fixed32Type:
			var x uint32
			x, m = protowire.ConsumeFixed32(b[n:])
			v = uint64(x)
		case protowire.Fixed64Type:
			v, m = protowire.ConsumeFixed64(b[n:])
		case protowire.BytesType:
			val, m = protowire.ConsumeBytes(b[n:])
		default:
			m = protowire.ConsumeFieldValue(num, typ, b[n:])
		}
		if m < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(m))
		}
		if err := fn(num, typ, val, v, b[:n+m]); err != nil {
			return err
		}
		b = b[n+m:]
	}
	return nil
}

func parseSPMPiece(b []byte) (spmPiece, error) {
	pc := spmPiece{typ: spmNormal}
	err := forEachField(b, func(num protowire.Number, typ protowire.Type, val []byte, v uint64, _ []byte) error {
		switch num {
		case 1:
			if typ != protowire.BytesType {
				return errors.New("piece: bad wire type")
			}
			pc.piece = string(val)
		case 2:
			if typ != protowire.Fixed32Type {
				return errors.New("score: bad wire type")
			}
			pc.score = math.Float32frombits(uint32(v))
		case 3:
			if typ != protowire.VarintType {
				return errors.New("type: bad wire type")
			}
			if v < spmNormal || v > spmByte {
				return fmt.Errorf("unknown piece type %d", v)
			}
			pc.typ = int32(v)
		}
		return nil
	})
	if err != nil {
		return pc, err
	}
	if pc.piece == "" {
		return pc, errors.New("empty piece")
	}
	return pc, nil
}

func (p *spmProto) parseTrainerSpec(b []byte) error {
	return forEachField(b, func(num protowire.Number, typ protowire.Type, _ []byte, v uint64, _ []byte) error {
		if typ != protowire.VarintType {
			return nil
		}
		switch num {
		case 3:
			p.modelType = int32(v)
		case 24:
			p.wsAsSuffix = v != 0
		case 35:
			p.byteFallback = v != 0
		case 40:
			p.unkID = int32(v)
		case 41:
			p.bosID = int32(v)
		case 42:
			p.eosID = int32(v)
		case 43:
			p.padID = int32(v)
		}
		return nil
	})
}

func (p *spmProto) parseNormalizerSpec(b []byte) error {
	return forEachField(b, func(num protowire.Number, typ protowire.Type, val []byte, v uint64, _ []byte) error {
		switch {
		case num == 1 && typ == protowire.BytesType:
			p.normName = string(val)
		case num == 3 && typ == protowire.VarintType:
			p.addDummyPrefix = v != 0
		case num == 4 && typ == protowire.VarintType:
			p.removeExtraWS = v != 0
		case num == 5 && typ == protowire.VarintType:
			p.escapeWS = v != 0
		}
		return nil
	})
}

// pieceID returns the id of piece type typ named by id, or -1 when id is
// out of range or of another type.
func (p *spmProto) pieceOfType(id int32, typ int32) int {
	if id < 0 || int(id) >= len(p.pieces) || p.pieces[id].typ != typ {
		return -1
	}
	return int(id)
}
