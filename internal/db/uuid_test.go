package db_test

import (
	"bytes"
	"context"
	"slices"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

func nullableIDs(n int) []*uuid.UUID {
	ids := make([]*uuid.UUID, n)
	for i := range ids {
		if i%7 != 3 { // some NULLs among them
			id := uuid.New()
			ids[i] = &id
		}
	}
	return ids
}

// TestNullableUUIDsEncodeAsPgxWould: RegisterUUID's *uuid.UUID encodes to the very bytes
// pgx's own path (the driver.Valuer's string) gives, NULLs included, without its cost.
func TestNullableUUIDsEncodeAsPgxWould(t *testing.T) {
	plain, registered := pgtype.NewMap(), pgtype.NewMap()
	db.RegisterUUID(registered)
	id := uuid.New()
	for _, tc := range []struct {
		name  string
		oid   uint32
		value any
	}{
		{"array with NULLs", pgtype.UUIDArrayOID, nullableIDs(50)},
		{"one id", pgtype.UUIDOID, &id},
		{"no id", pgtype.UUIDOID, (*uuid.UUID)(nil)},
		{"ids", pgtype.UUIDArrayOID, []uuid.UUID{uuid.New(), uuid.New()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := plain.Encode(tc.oid, pgtype.BinaryFormatCode, tc.value, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := registered.Encode(tc.oid, pgtype.BinaryFormatCode, tc.value, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encoded\n%x\nwant\n%x", got, want)
			}
		})
	}
	// The Valuer's path allocates about 23 times an element (its string, then the parse);
	// this one about twice.
	ids := nullableIDs(200)
	allocs := testing.AllocsPerRun(20, func() {
		if _, err := registered.Encode(pgtype.UUIDArrayOID, pgtype.BinaryFormatCode, ids, nil); err != nil {
			t.Fatal(err)
		}
	})
	if perID := allocs / float64(len(ids)); perID > 4 {
		t.Fatalf("%.1f allocations an id: *uuid.UUID goes through its driver.Valuer again", perID)
	}
}

// TestNullableUUIDsRoundTripThroughPostgres: a pool of Open sends *uuid.UUID and arrays
// of them, NULLs included, and reads them back unchanged.
func TestNullableUUIDsRoundTripThroughPostgres(t *testing.T) {
	pool := testenv.MustDatabase(t).Pool
	ctx := context.Background()
	ids := nullableIDs(20)
	var back []*uuid.UUID
	var nulls int
	if err := pool.QueryRow(ctx, `SELECT $1::uuid[], (SELECT count(*) FROM unnest($1::uuid[]) AS u(id) WHERE id IS NULL)`, ids).
		Scan(&back, &nulls); err != nil {
		t.Fatal(err)
	}
	if len(back) != len(ids) || nulls != 3 {
		t.Fatalf("%d ids back with %d NULLs, want %d with 3", len(back), nulls, len(ids))
	}
	for i := range ids {
		if (ids[i] == nil) != (back[i] == nil) || ids[i] != nil && *ids[i] != *back[i] {
			t.Fatalf("id %d: sent %v, read %v", i, ids[i], back[i])
		}
	}
	one := uuid.New()
	var text string
	var isNull bool
	if err := pool.QueryRow(ctx, `SELECT $1::uuid::text, $2::uuid IS NULL`, &one, (*uuid.UUID)(nil)).Scan(&text, &isNull); err != nil {
		t.Fatal(err)
	}
	if text != one.String() || !isNull {
		t.Fatalf("read %s and NULL %v, want %s and true", text, isNull, one)
	}
}

// TestUUIDArraysEncodeAsPgxWould: RegisterUUID's arrays of ids are the bytes pgx's own
// path gives (without RegisterUUID), empty, NULL and NULL-holding ones included, with no
// allocation an element.
func TestUUIDArraysEncodeAsPgxWould(t *testing.T) {
	plain, registered := pgtype.NewMap(), pgtype.NewMap()
	db.RegisterUUID(registered)
	ids := make([]uuid.UUID, 500)
	for i := range ids {
		ids[i] = uuid.New()
	}
	for _, tc := range []struct {
		name  string
		value any
	}{
		{"ids", ids},
		{"one id", ids[:1]},
		{"no ids", []uuid.UUID{}},
		{"a NULL array of ids", []uuid.UUID(nil)},
		{"nullable ids, some NULL", nullableIDs(500)},
		{"nullable ids, none NULL", []*uuid.UUID{&ids[0], &ids[1]}},
		{"nullable ids, all NULL", []*uuid.UUID{nil, nil}},
		{"no nullable ids", []*uuid.UUID{}},
		{"a NULL array of nullable ids", []*uuid.UUID(nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, format := range []int16{pgtype.BinaryFormatCode, pgtype.TextFormatCode} {
				want, err := plain.Encode(pgtype.UUIDArrayOID, format, tc.value, nil)
				if err != nil {
					t.Fatal(err)
				}
				got, err := registered.Encode(pgtype.UUIDArrayOID, format, tc.value, nil)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) || (got == nil) != (want == nil) {
					t.Fatalf("format %d: encoded\n%x\nwant\n%x", format, got, want)
				}
			}
		})
	}
	buf := make([]byte, 0, 64<<10)
	nullable := nullableIDs(500)
	for _, v := range []any{ids, nullable} {
		if allocs := testing.AllocsPerRun(20, func() {
			if _, err := registered.Encode(pgtype.UUIDArrayOID, pgtype.BinaryFormatCode, v, buf[:0]); err != nil {
				t.Fatal(err)
			}
		}); allocs > 2 {
			t.Fatalf("%T: %.0f allocations for 500 ids: pgx's reflection again", v, allocs)
		}
	}
}

// TestUUIDArraysRoundTripThroughPostgres: a pool of Open sends arrays of ids, empty and
// NULL ones included, and reads them back unchanged.
func TestUUIDArraysRoundTripThroughPostgres(t *testing.T) {
	pool := testenv.MustDatabase(t).Pool
	ctx := context.Background()
	ids := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	var back, empty []uuid.UUID
	var nullIsNull bool
	var n int
	if err := pool.QueryRow(ctx, `SELECT $1::uuid[], $2::uuid[], $3::uuid[] IS NULL, cardinality($2::uuid[])`,
		ids, []uuid.UUID{}, []uuid.UUID(nil)).Scan(&back, &empty, &nullIsNull, &n); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(back, ids) || empty == nil || len(empty) != 0 || !nullIsNull || n != 0 {
		t.Fatalf("read %v, %v (NULL %v, %d), want %v, [], true, 0", back, empty, nullIsNull, n, ids)
	}
}
