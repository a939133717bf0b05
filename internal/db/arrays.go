package db

import (
	"encoding/binary"

	"github.com/jackc/pgx/v5/pgtype"
)

// RegisterArrays makes m write []string, []int32 and []int64 as text[], int4[] and int8[]
// itself, in PostgreSQL's binary form; every other value, and every scan, stays with pgx's
// codecs.
//
// Why: pgx's generic path takes each element of such a slice through an interface value
// and a plan of its own (an allocation a string), and every append, relay read, audit
// and projector batch passes arrays of them (event types, data, names, versions,
// positions). The figures: BENCHMARKS.md, twenty-ninth pass. TestArraysEncodeAsPgxWould
// holds the bytes to pgx's.
func RegisterArrays(m *pgtype.Map) {
	for _, a := range []struct{ oid, elem uint32 }{
		{pgtype.TextArrayOID, pgtype.TextOID},
		{pgtype.Int4ArrayOID, pgtype.Int4OID},
		{pgtype.Int8ArrayOID, pgtype.Int8OID},
	} {
		if t, ok := m.TypeForOID(a.oid); ok {
			m.RegisterType(&pgtype.Type{Name: t.Name, OID: t.OID, Codec: arrays{Codec: t.Codec, elem: a.elem}})
		}
	}
}

// arrays is the codec of an array type whose elements (elem) it writes itself for the
// one Go slice type that matches them, and leaves everything else to pgx's (Codec).
type arrays struct {
	pgtype.Codec
	elem uint32
}

func (c arrays) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if format == pgtype.BinaryFormatCode {
		switch value.(type) {
		case []string:
			if c.elem == pgtype.TextOID {
				return encodeTextArray{}
			}
		case []int32:
			if c.elem == pgtype.Int4OID {
				return encodeInt4Array{}
			}
		case []int64:
			if c.elem == pgtype.Int8OID {
				return encodeInt8Array{}
			}
		}
	}
	return c.Codec.PlanEncode(m, oid, format, value)
}

type encodeTextArray struct{}

func (encodeTextArray) Encode(value any, buf []byte) ([]byte, error) {
	ss := value.([]string)
	if ss == nil {
		return nil, nil // NULL
	}
	buf = appendArrayHeader(buf, pgtype.TextOID, len(ss), false)
	for _, s := range ss {
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(s)))
		buf = append(buf, s...)
	}
	return buf, nil
}

type encodeInt4Array struct{}

func (encodeInt4Array) Encode(value any, buf []byte) ([]byte, error) {
	ns := value.([]int32)
	if ns == nil {
		return nil, nil // NULL
	}
	buf = appendArrayHeader(buf, pgtype.Int4OID, len(ns), false)
	for _, n := range ns {
		buf = binary.BigEndian.AppendUint32(buf, 4)
		buf = binary.BigEndian.AppendUint32(buf, uint32(n))
	}
	return buf, nil
}

type encodeInt8Array struct{}

func (encodeInt8Array) Encode(value any, buf []byte) ([]byte, error) {
	ns := value.([]int64)
	if ns == nil {
		return nil, nil // NULL
	}
	buf = appendArrayHeader(buf, pgtype.Int8OID, len(ns), false)
	for _, n := range ns {
		buf = binary.BigEndian.AppendUint32(buf, 8)
		buf = binary.BigEndian.AppendUint64(buf, uint64(n))
	}
	return buf, nil
}

// appendArrayHeader appends the binary header of a one-dimensional array of n elements
// of type elem, numbered from 1, as pgx writes it (an empty one too: one dimension of
// length 0).
func appendArrayHeader(buf []byte, elem uint32, n int, nulls bool) []byte {
	hasNull := uint32(0)
	if nulls {
		hasNull = 1
	}
	buf = binary.BigEndian.AppendUint32(buf, 1) // dimensions
	buf = binary.BigEndian.AppendUint32(buf, hasNull)
	buf = binary.BigEndian.AppendUint32(buf, elem)
	buf = binary.BigEndian.AppendUint32(buf, uint32(n))
	return binary.BigEndian.AppendUint32(buf, 1) // the lower bound
}
