package db_test

import (
	"bytes"
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

func someStrings(n int) []string {
	ss := make([]string, n)
	for i := range ss {
		ss[i] = strings.Repeat("é\"{},\\ x", i%5) // empty ones, quotes, braces, separators
	}
	return ss
}

// TestArraysEncodeAsPgxWould: RegisterArrays' text[], int4[] and int8[] are the bytes
// pgx's own codecs give, in both formats, empty and NULL arrays included; values of other
// types go to pgx's codecs; and a 500-element array costs no allocation an element.
func TestArraysEncodeAsPgxWould(t *testing.T) {
	plain, registered := pgtype.NewMap(), pgtype.NewMap()
	db.RegisterArrays(registered)
	text := "text"
	for _, tc := range []struct {
		name  string
		oid   uint32
		value any
	}{
		{"strings", pgtype.TextArrayOID, someStrings(500)},
		{"one empty string", pgtype.TextArrayOID, []string{""}},
		{"no strings", pgtype.TextArrayOID, []string{}},
		{"a NULL array of strings", pgtype.TextArrayOID, []string(nil)},
		{"invalid UTF-8 and a NUL, left to PostgreSQL", pgtype.TextArrayOID, []string{"\xff", "a\x00b"}},
		{"nullable strings (pgx's)", pgtype.TextArrayOID, []*string{&text, nil}},
		{"int32s", pgtype.Int4ArrayOID, []int32{0, 1, -1, math.MaxInt32, math.MinInt32}},
		{"no int32s", pgtype.Int4ArrayOID, []int32{}},
		{"a NULL array of int32s", pgtype.Int4ArrayOID, []int32(nil)},
		{"ints into int4[] (pgx's)", pgtype.Int4ArrayOID, []int{1, 2}},
		{"int64s", pgtype.Int8ArrayOID, []int64{0, 1, -1, math.MaxInt64, math.MinInt64}},
		{"no int64s", pgtype.Int8ArrayOID, []int64{}},
		{"a NULL array of int64s", pgtype.Int8ArrayOID, []int64(nil)},
		{"int32s into int8[] (pgx's)", pgtype.Int8ArrayOID, []int32{7}},
		{"int64s into int4[] (pgx's)", pgtype.Int4ArrayOID, []int64{7}},
		{"strings of digits into int4[] (pgx's)", pgtype.Int4ArrayOID, []string{"7"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, format := range []int16{pgtype.BinaryFormatCode, pgtype.TextFormatCode} {
				want, wantErr := plain.Encode(tc.oid, format, tc.value, nil)
				got, err := registered.Encode(tc.oid, format, tc.value, nil)
				if (err == nil) != (wantErr == nil) {
					t.Fatalf("format %d: error %v, pgx's %v", format, err, wantErr)
				}
				if !bytes.Equal(got, want) || (got == nil) != (want == nil) {
					t.Fatalf("format %d: encoded\n%x\nwant\n%x", format, got, want)
				}
			}
		})
	}
	buf := make([]byte, 0, 64<<10)
	ints := make([]int64, 500)
	for _, tc := range []struct {
		oid   uint32
		value any
	}{
		{pgtype.TextArrayOID, someStrings(500)},
		{pgtype.Int4ArrayOID, make([]int32, 500)},
		{pgtype.Int8ArrayOID, ints},
	} {
		if allocs := testing.AllocsPerRun(20, func() {
			if _, err := registered.Encode(tc.oid, pgtype.BinaryFormatCode, tc.value, buf[:0]); err != nil {
				t.Fatal(err)
			}
		}); allocs > 2 {
			t.Fatalf("%T: %.0f allocations for 500 elements: pgx's generic path again", tc.value, allocs)
		}
	}
}

// TestArraysRoundTripThroughPostgres: a pool of Open writes arrays of strings with
// RegisterArrays' codec, sends arrays of strings and integers, empty and NULL ones
// included, and reads them back unchanged.
func TestArraysRoundTripThroughPostgres(t *testing.T) {
	pool := testenv.MustDatabase(t).Pool
	ctx := context.Background()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	long := someStrings(500)
	allocs := testing.AllocsPerRun(20, func() {
		if _, err := conn.Conn().TypeMap().Encode(pgtype.TextArrayOID, pgtype.BinaryFormatCode, long, nil); err != nil {
			t.Fatal(err)
		}
	})
	conn.Release()
	if allocs > 20 {
		t.Fatalf("%.0f allocations for 500 strings: Open's connections do not register the arrays' codec", allocs)
	}
	ss := append(someStrings(20), "日本語", "NULL", "")
	i4 := []int32{math.MinInt32, -1, 0, 1, math.MaxInt32}
	i8 := []int64{math.MinInt64, -1, 0, 1, math.MaxInt64}
	var backS, emptyS []string
	var back4 []int32
	var back8 []int64
	var nulls [3]bool
	if err := pool.QueryRow(ctx, `SELECT $1::text[], $2::text[], $3::int4[], $4::int8[],
			$5::text[] IS NULL, $6::int4[] IS NULL, $7::int8[] IS NULL`,
		ss, []string{}, i4, i8, []string(nil), []int32(nil), []int64(nil)).
		Scan(&backS, &emptyS, &back4, &back8, &nulls[0], &nulls[1], &nulls[2]); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(backS, ss) || emptyS == nil || len(emptyS) != 0 || !slices.Equal(back4, i4) || !slices.Equal(back8, i8) ||
		nulls != [3]bool{true, true, true} {
		t.Fatalf("read %q, %q, %v, %v, NULLs %v", backS, emptyS, back4, back8, nulls)
	}
	// PostgreSQL still refuses what text cannot hold, as it did pgx's bytes.
	if _, err := pool.Exec(ctx, `SELECT $1::text[]`, []string{"a\x00b"}); err == nil {
		t.Fatal("a NUL in a text element was accepted")
	}
}

// BenchmarkTextArray encodes a batch's 200 strings as text[] with pgx's codec and with
// RegisterArrays'.
func BenchmarkTextArray(b *testing.B) {
	ss := someStrings(200)
	plain, registered := pgtype.NewMap(), pgtype.NewMap()
	db.RegisterArrays(registered)
	for _, m := range []struct {
		name string
		m    *pgtype.Map
	}{{"pgx", plain}, {"registered", registered}} {
		b.Run(m.name, func(b *testing.B) {
			buf := make([]byte, 0, 64<<10)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.m.Encode(pgtype.TextArrayOID, pgtype.BinaryFormatCode, ss, buf[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
