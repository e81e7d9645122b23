package projector

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vigil-dev/vigil/projections/store"
)

// errCheckpointMoved means a checkpoint was not where this runner left it:
// another writer (a second instance, a rebuild's hand-over) moved it. The
// batch is rolled back and the runner restarts from the stored position.
var errCheckpointMoved = errors.New("checkpoint moved by another writer")

// ensureCheckpoints creates missing checkpoint rows at 0.
func ensureCheckpoints(ctx context.Context, db *store.DB, names []string) error {
	for _, n := range names {
		if _, err := db.W.ExecContext(ctx, db.D.InsertIgnore()+" INTO projection_checkpoints (name, last_seq) VALUES (?, 0)", n); err != nil {
			return fmt.Errorf("create checkpoint %s: %w", n, err)
		}
	}
	return nil
}

// Checkpoints returns the stored position of each named checkpoint (0 for one
// that does not exist yet).
func Checkpoints(ctx context.Context, q store.Querier, names ...string) (map[string]uint64, error) {
	out := make(map[string]uint64, len(names))
	if len(names) == 0 {
		return out, nil
	}
	args := make([]any, len(names))
	for i, n := range names {
		args[i] = n
		out[n] = 0
	}
	rows, err := q.QueryContext(ctx, "SELECT name, last_seq FROM projection_checkpoints WHERE name IN (?"+strings.Repeat(", ?", len(names)-1)+")", args...)
	if err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var n string
		var s int64
		if err := rows.Scan(&n, &s); err != nil {
			return nil, err
		}
		out[n] = uint64(s)
	}
	return out, rows.Err()
}

// advance moves a checkpoint from one position to the next, failing with
// errCheckpointMoved if it is no longer at from.
func advance(ctx context.Context, tx *sql.Tx, d store.Dialect, name string, from, to uint64, now time.Time) error {
	res, err := tx.ExecContext(ctx, "UPDATE projection_checkpoints SET last_seq = ?, updated_at = ? WHERE name = ? AND last_seq = ?",
		int64(to), d.Time(now), name, int64(from))
	if err != nil {
		return fmt.Errorf("advance checkpoint %s: %w", name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("%w: %s expected at %d", errCheckpointMoved, name, from)
	}
	return nil
}

// quarantine records a message a projection could not use.
func quarantine(ctx context.Context, tx *sql.Tx, d store.Dialect, projection string, seq uint64, subject, id, typ, reason string, data []byte, now time.Time) error {
	const maxData = 4096
	if len(data) > maxData {
		data = data[:maxData]
	}
	if len(reason) > 1000 {
		reason = reason[:1000]
	}
	_, err := tx.ExecContext(ctx, d.InsertIgnore()+` INTO projection_quarantine
		(projection, stream_seq, subject, event_id, event_type, reason, data, quarantined_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		projection, int64(seq), truncate(subject, 255), nullString(truncate(id, 64)), nullString(truncate(typ, 128)),
		strings.ToValidUTF8(reason, "?"), strings.ToValidUTF8(string(data), "?"), d.Time(now))
	if err != nil {
		return fmt.Errorf("quarantine %s seq %d: %w", projection, seq, err)
	}
	return nil
}

// Quarantined is one quarantined message.
type Quarantined struct {
	Projection    string
	Seq           uint64
	Subject       string
	EventID       string
	EventType     string
	Reason        string
	QuarantinedAt time.Time
}

// ListQuarantine returns the quarantined messages of a projection ("" for
// all), oldest first.
func ListQuarantine(ctx context.Context, db *store.DB, projection string, limit int) ([]Quarantined, error) {
	if limit <= 0 {
		limit = 100
	}
	q := "SELECT projection, stream_seq, subject, event_id, event_type, reason, quarantined_at FROM projection_quarantine"
	var args []any
	if projection != "" {
		q += " WHERE projection = ?"
		args = append(args, projection)
	}
	q += " ORDER BY stream_seq, projection LIMIT ?"
	args = append(args, limit)
	rows, err := db.R.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Quarantined
	for rows.Next() {
		var x Quarantined
		var seq int64
		var id, typ sql.NullString
		var at store.Time
		if err := rows.Scan(&x.Projection, &seq, &x.Subject, &id, &typ, &x.Reason, &at); err != nil {
			return nil, err
		}
		x.Seq, x.EventID, x.EventType, x.QuarantinedAt = uint64(seq), id.String, typ.String, at.Time
		out = append(out, x)
	}
	return out, rows.Err()
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}
