package db_test

import (
	"bytes"
	"context"
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
