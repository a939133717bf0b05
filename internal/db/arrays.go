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
				return textArray
			}
		case []int32:
			if c.elem == pgtype.Int4OID {
				return int4Array
			}
		case []int64:
			if c.elem == pgtype.Int8OID {
				return int8Array
			}
		}
	}
	return c.Codec.PlanEncode(m, oid, format, value)
}

// encodeArray writes a []T, none of whose elements is NULL, as a one-dimensional array
// of elem; put appends one element with its length.
type encodeArray[T any] struct {
	elem uint32
	put  func(buf []byte, v T) []byte
}

func (e encodeArray[T]) Encode(value any, buf []byte) ([]byte, error) {
	vs := value.([]T)
	if vs == nil {
		return nil, nil // NULL
	}
	buf = appendArrayHeader(buf, e.elem, len(vs), false)
	for _, v := range vs {
		buf = e.put(buf, v)
	}
	return buf, nil
}

var (
	textArray = encodeArray[string]{pgtype.TextOID, func(buf []byte, s string) []byte {
		return append(binary.BigEndian.AppendUint32(buf, uint32(len(s))), s...)
	}}
	int4Array = encodeArray[int32]{pgtype.Int4OID, func(buf []byte, n int32) []byte {
		return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(buf, 4), uint32(n))
	}}
	int8Array = encodeArray[int64]{pgtype.Int8OID, func(buf []byte, n int64) []byte {
		return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint32(buf, 8), uint64(n))
	}}
)

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
