package projections

import (
	"context"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// TableComparison is one table of a projection compared with its rebuild: rows (as
// whole rows, duplicates counted) found only in the live table or only in the rebuilt one.
type TableComparison struct {
	Table       string `json:"table"`
	Rows        int64  `json:"rows"`
	OnlyLive    int64  `json:"only_live"`
	OnlyRebuilt int64  `json:"only_rebuilt"`
}

// Comparison is a projection compared with a replay of the whole log.
type Comparison struct {
	Projection string            `json:"projection"`
	Equal      bool              `json:"equal"`
	Tables     []TableComparison `json:"tables"`
}

// Verify replays the log into fresh copies of the projection's tables, as a rebuild does,
// and compares them with the live tables, row by row, and the stream versions the
// projector has recorded; then it drops the copies. The live tables are not changed, but
// the live projector waits while a comparison runs (it scans every table once). A
// live projector that is still catching up differs by what it has not applied yet, so a
// difference is compared again, once a second, for up to wait.
func (r *Rebuild) Verify(ctx context.Context, wait time.Duration) (Comparison, error) {
	sh, err := r.replay(ctx, "verify_")
	if err != nil {
		return Comparison{}, err
	}
	defer sh.close(ctx)
	defer func() { _, _ = sh.conn.Exec(context.WithoutCancel(ctx), `DROP SCHEMA IF EXISTS `+sh.quoted+` CASCADE`) }()
	sh.report("compare")
	deadline := time.Now().Add(wait)
	for {
		c, err := r.compare(ctx, sh)
		if err != nil || c.Equal || time.Now().After(deadline) {
			return c, err
		}
		select {
		case <-ctx.Done():
			return c, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (r *Rebuild) compare(ctx context.Context, sh *shadow) (Comparison, error) {
	p := r.Projector
	tx, err := r.holdLive(ctx, sh, false)
	if err != nil {
		return Comparison{}, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	c := Comparison{Projection: p.Name(), Equal: true}
	diff := func(table, live, rebuilt string) error {
		tc := TableComparison{Table: table}
		// Rows compared as their text: every column type has one, not every type has "=".
		err := tx.QueryRow(ctx, `WITH l AS (SELECT r::text AS t FROM `+live+` r), b AS (SELECT r::text AS t FROM `+rebuilt+` r)
			SELECT (SELECT count(*) FROM l), (SELECT count(*) FROM (SELECT t FROM l EXCEPT ALL SELECT t FROM b) x),
				(SELECT count(*) FROM (SELECT t FROM b EXCEPT ALL SELECT t FROM l) y)`).Scan(&tc.Rows, &tc.OnlyLive, &tc.OnlyRebuilt)
		if err != nil {
			return err
		}
		if tc.OnlyLive > 0 || tc.OnlyRebuilt > 0 {
			c.Equal = false
		}
		c.Tables = append(c.Tables, tc)
		return nil
	}
	for _, t := range p.Tables() {
		if err := diff(t, pgx.Identifier{"public", t}.Sanitize(), sh.quoted+"."+pgx.Identifier{t}.Sanitize()); err != nil {
			return Comparison{}, err
		}
	}
	streams := func(schema string) string {
		return `(SELECT stream_id, version FROM ` + schema + `.projection_streams WHERE projection = ` + quoteLiteral(p.Name()) + `)`
	}
	if err := diff("projection_streams", streams("public"), streams(sh.quoted)); err != nil {
		return Comparison{}, err
	}
	// The copies keep what holdLive caught up with; the live projector is let go.
	return c, tx.Commit(ctx)
}

// quoteLiteral quotes s as an SQL string literal (projection names are constants, but a
// literal is quoted all the same).
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
