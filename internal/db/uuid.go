package db

import (
	"encoding/binary"
	"math"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
	pgxuuid "github.com/vgarvardt/pgx-google-uuid/v5"
)

// RegisterUUID makes uuid.UUID pgx's own 16 bytes in m, and *uuid.UUID (a nullable id:
// an event's organization or actor) too.
//
// Without pgxuuid every uuid argument went through its driver.Valuer (a string, parsed
// again). pgxuuid covers uuid.UUID but not a pointer to one: pgx never dereferences a
// pointer whose type has a Valuer, so each *uuid.UUID still became a string, about
// 2.5 µs and 23 allocations an element. Every append (its actors and organizations),
// every audit batch and every accounts batch passes arrays of them: 0.5 ms of Go per
// 200. The wrapper hands pgxuuid a uuid.NullUUID instead, which encodes the same bytes
// (TestNullableUUIDsEncodeAsPgxWould).
//
// Arrays of them ([]uuid.UUID, []*uuid.UUID) are written by uuidArrays, in PostgreSQL's
// binary form, where pgx took each element through reflection and an interface value.
func RegisterUUID(m *pgtype.Map) {
	pgxuuid.Register(m)
	m.TryWrapEncodePlanFuncs = append([]pgtype.TryWrapEncodePlanFunc{tryWrapUUIDPointer}, m.TryWrapEncodePlanFuncs...)
	if t, ok := m.TypeForOID(pgtype.UUIDArrayOID); ok {
		m.RegisterType(&pgtype.Type{Name: t.Name, OID: t.OID, Codec: uuidArrays{Codec: t.Codec}})
	}
}

// uuidArrays is the uuid[] codec that writes []uuid.UUID and []*uuid.UUID itself in
// binary, and leaves everything else to pgx's (Codec). Every append, relay read, audit and
// projector batch passes arrays of ids, and pgx's generic path for a slice of a type it
// does not know takes each element through reflection and an interface value (the
// figures: BENCHMARKS.md, twenty-eighth pass). TestUUIDArraysEncodeAsPgxWould holds the
// bytes to pgx's.
type uuidArrays struct{ pgtype.Codec }

func (c uuidArrays) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if format == pgtype.BinaryFormatCode {
		switch value.(type) {
		case []uuid.UUID:
			return uuidArray
		case []*uuid.UUID:
			return encodeNullableUUIDArray{}
		}
	}
	return c.Codec.PlanEncode(m, oid, format, value)
}

// uuidArray writes []uuid.UUID (encodeArray, arrays.go).
var uuidArray = encodeArray[uuid.UUID]{pgtype.UUIDOID, func(buf []byte, id uuid.UUID) []byte {
	return append(binary.BigEndian.AppendUint32(buf, 16), id[:]...)
}}

type encodeNullableUUIDArray struct{}

func (encodeNullableUUIDArray) Encode(value any, buf []byte) ([]byte, error) {
	ids := value.([]*uuid.UUID)
	if ids == nil {
		return nil, nil // NULL
	}
	buf = appendArrayHeader(buf, pgtype.UUIDOID, len(ids), slices.Contains(ids, nil))
	for _, id := range ids {
		if id == nil {
			buf = binary.BigEndian.AppendUint32(buf, math.MaxUint32) // -1: NULL
			continue
		}
		buf = uuidArray.put(buf, *id)
	}
	return buf, nil
}

func tryWrapUUIDPointer(value any) (pgtype.WrappedEncodePlanNextSetter, any, bool) {
	if _, ok := value.(*uuid.UUID); ok {
		return &uuidPointerPlan{}, uuid.NullUUID{}, true
	}
	return nil, nil, false
}

type uuidPointerPlan struct{ next pgtype.EncodePlan }

func (p *uuidPointerPlan) SetNext(next pgtype.EncodePlan) { p.next = next }

func (p *uuidPointerPlan) Encode(value any, buf []byte) ([]byte, error) {
	if id := value.(*uuid.UUID); id != nil {
		return p.next.Encode(uuid.NullUUID{UUID: *id, Valid: true}, buf)
	}
	return p.next.Encode(uuid.NullUUID{}, buf)
}
