package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Dialect holds every difference between the two SQL stores Vigil supports:
// MySQL 8 / MariaDB 10.11 and SQLite. Nothing outside this file switches on
// the store kind; projections build their statements from these helpers.
type Dialect struct {
	kind Kind
}

// Kind names a store.
type Kind string

// Store kinds.
const (
	MySQL  Kind = "mysql"
	SQLite Kind = "sqlite"
)

// Kind returns which store the dialect is for.
func (d Dialect) Kind() Kind { return d.kind }

// InsertIgnore is the statement head of an insert that skips rows whose key
// already exists.
func (d Dialect) InsertIgnore() string {
	if d.kind == MySQL {
		return "INSERT IGNORE"
	}
	return "INSERT OR IGNORE"
}

// OnConflict starts the update part of an upsert on the given key columns. The
// assignments follow it; in them a bare column is the stored row's value and
// Excluded(col) is the value the insert proposed.
//
// On MySQL the assignments are evaluated left to right, each seeing the ones
// before it, so an assignment to a guard column (last_event_seq) must come
// last.
func (d Dialect) OnConflict(key ...string) string {
	if d.kind == MySQL {
		return "ON DUPLICATE KEY UPDATE"
	}
	return "ON CONFLICT (" + strings.Join(key, ", ") + ") DO UPDATE SET"
}

// Excluded names the proposed value of col in an upsert's update part.
// VALUES() is deprecated on MySQL 8.0.20+ but still works, and it is the only
// form MariaDB knows.
func (d Dialect) Excluded(col string) string {
	if d.kind == MySQL {
		return "VALUES(" + col + ")"
	}
	return "excluded." + col
}

// SelectUpsertWhere is what an INSERT ... SELECT that ends in an upsert clause
// needs after its FROM: SQLite cannot otherwise tell the ON CONFLICT apart from
// a join constraint.
func (d Dialect) SelectUpsertWhere() string {
	if d.kind == SQLite {
		return "WHERE true"
	}
	return ""
}

// Greatest is the larger of two scalar expressions.
func (d Dialect) Greatest(a, b string) string {
	if d.kind == MySQL {
		return "GREATEST(" + a + ", " + b + ")"
	}
	return "MAX(" + a + ", " + b + ")"
}

// TimeLayout is how SQLite stores times: fixed width, UTC, milliseconds, so
// that text order is time order.
const TimeLayout = "2006-01-02 15:04:05.000"

// Time returns t as a statement argument for a DATETIME(3) column: a UTC
// time.Time truncated to milliseconds on MySQL (MariaDB truncates extra
// digits, MySQL rounds them; truncating first makes both agree), fixed-width
// text on SQLite. A zero time is NULL.
func (d Dialect) Time(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	t = t.UTC().Truncate(time.Millisecond)
	if d.kind == MySQL {
		return t
	}
	return t.Format(TimeLayout)
}

// TimePtr is Time for an optional time.
func (d Dialect) TimePtr(t *time.Time) any {
	if t == nil {
		return nil
	}
	return d.Time(*t)
}

// tableOptions ends every CREATE TABLE of the migrations: InnoDB, utf8mb4 and
// a binary collation on MySQL, so site IDs ("Abc" and "abc" are two sites)
// compare byte for byte.
func (d Dialect) tableOptions() string {
	if d.kind == MySQL {
		return "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
	}
	return ""
}

// renderMigration adapts a migration's portable SQL to the dialect.
func (d Dialect) renderMigration(stmt string) string {
	stmt = strings.ReplaceAll(stmt, "{{table_options}}", d.tableOptions())
	if d.kind == MySQL {
		// MySQL 8 has no CREATE INDEX IF NOT EXISTS (MariaDB does);
		// a repeated index is recognised by its error instead (isDupIndex).
		stmt = strings.ReplaceAll(stmt, "CREATE INDEX IF NOT EXISTS", "CREATE INDEX")
	}
	return stmt
}

// isDupIndex reports an error from creating an index that already exists.
func (d Dialect) isDupIndex(err error) bool {
	var me *mysql.MySQLError
	return d.kind == MySQL && errors.As(err, &me) && me.Number == 1061
}

// TableExists reports whether a table exists in the current database.
func (d Dialect) TableExists(ctx context.Context, q Querier, table string) (bool, error) {
	var n int
	var err error
	if d.kind == MySQL {
		err = q.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?`, table).Scan(&n)
	} else {
		err = q.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, table).Scan(&n)
	}
	return n > 0, err
}

// CreateShadow (re)creates dst as an empty copy of src with the same columns,
// keys and indexes: CREATE TABLE ... LIKE on MySQL; on SQLite src's DDL is
// copied from sqlite_master, its indexes renamed with dst's suffix (SQLite
// index names are global to the database).
func (d Dialect) CreateShadow(ctx context.Context, q Querier, src, dst string) error {
	if _, err := q.ExecContext(ctx, "DROP TABLE IF EXISTS "+dst); err != nil {
		return fmt.Errorf("drop %s: %w", dst, err)
	}
	if d.kind == MySQL {
		if _, err := q.ExecContext(ctx, "CREATE TABLE "+dst+" LIKE "+src); err != nil {
			return fmt.Errorf("create %s like %s: %w", dst, src, err)
		}
		return nil
	}
	tableSQL, indexes, err := sqliteDDL(ctx, q, src)
	if err != nil {
		return err
	}
	if _, err := q.ExecContext(ctx, renameDDL(tableSQL, src, dst)); err != nil {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	for _, ix := range indexes {
		if _, err := q.ExecContext(ctx, renameDDL(renameDDL(ix.sql, ix.name, shadowIndex(ix.name, dst)), src, dst)); err != nil {
			return fmt.Errorf("create index on %s: %w", dst, err)
		}
	}
	return nil
}

// Swap replaces each live table by its shadow atomically: readers see either
// all old tables or all new ones. On MySQL one RENAME TABLE moves every live
// table aside and every shadow in, then the old tables are dropped; RENAME
// commits implicitly, so it cannot share a transaction with other writes
// (before and after run separately). On SQLite everything, before and after
// included, runs in one transaction, which also recreates the indexes under
// their live names.
func (d Dialect) Swap(ctx context.Context, db *sql.DB, pairs [][2]string, before, after func(*sql.Tx) error) error {
	if d.kind == MySQL {
		if before != nil {
			if err := inTx(ctx, db, before); err != nil {
				return err
			}
		}
		parts := make([]string, 0, 2*len(pairs))
		for _, p := range pairs {
			live, shadow := p[0], p[1]
			parts = append(parts, live+" TO "+live+"__old", shadow+" TO "+live)
		}
		for _, p := range pairs {
			if _, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS "+p[0]+"__old"); err != nil {
				return err
			}
		}
		if _, err := db.ExecContext(ctx, "RENAME TABLE "+strings.Join(parts, ", ")); err != nil {
			return fmt.Errorf("rename tables: %w", err)
		}
		if after != nil {
			if err := inTx(ctx, db, after); err != nil {
				return err
			}
		}
		for _, p := range pairs {
			if _, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS "+p[0]+"__old"); err != nil {
				return fmt.Errorf("drop old %s: %w", p[0], err)
			}
		}
		return nil
	}
	return inTx(ctx, db, func(tx *sql.Tx) error {
		if before != nil {
			if err := before(tx); err != nil {
				return err
			}
		}
		for _, p := range pairs {
			live, shadow := p[0], p[1]
			_, indexes, err := sqliteDDL(ctx, tx, live)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, "DROP TABLE "+live); err != nil {
				return fmt.Errorf("drop %s: %w", live, err)
			}
			if _, err := tx.ExecContext(ctx, "ALTER TABLE "+shadow+" RENAME TO "+live); err != nil {
				return fmt.Errorf("rename %s: %w", shadow, err)
			}
			for _, ix := range indexes {
				if _, err := tx.ExecContext(ctx, "DROP INDEX IF EXISTS "+shadowIndex(ix.name, shadow)); err != nil {
					return err
				}
				if _, err := tx.ExecContext(ctx, ix.sql); err != nil {
					return fmt.Errorf("recreate index %s: %w", ix.name, err)
				}
			}
		}
		if after != nil {
			return after(tx)
		}
		return nil
	})
}

// DropTable drops a table if it exists.
func (d Dialect) DropTable(ctx context.Context, q Querier, table string) error {
	_, err := q.ExecContext(ctx, "DROP TABLE IF EXISTS "+table)
	return err
}

type sqliteIndex struct{ name, sql string }

func sqliteDDL(ctx context.Context, q Querier, table string) (string, []sqliteIndex, error) {
	var tableSQL string
	if err := q.QueryRowContext(ctx, `SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?`, table).Scan(&tableSQL); err != nil {
		return "", nil, fmt.Errorf("read ddl of %s: %w", table, err)
	}
	rows, err := q.QueryContext(ctx, `SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL ORDER BY name`, table)
	if err != nil {
		return "", nil, err
	}
	defer rows.Close()
	var ixs []sqliteIndex
	for rows.Next() {
		var ix sqliteIndex
		if err := rows.Scan(&ix.name, &ix.sql); err != nil {
			return "", nil, err
		}
		ixs = append(ixs, ix)
	}
	return tableSQL, ixs, rows.Err()
}

func shadowIndex(index, shadowTable string) string { return index + "__" + shadowTable }

// renameDDL replaces the first whole-word occurrence of from: the name after
// CREATE TABLE or CREATE INDEX, or, once the index is renamed, the table
// after ON.
func renameDDL(ddl, from, to string) string {
	i := indexWord(ddl, from)
	if i < 0 {
		return ddl
	}
	return ddl[:i] + to + ddl[i+len(from):]
}

func indexWord(s, w string) int {
	for off := 0; ; {
		i := strings.Index(s[off:], w)
		if i < 0 {
			return -1
		}
		i += off
		before := i == 0 || !isIdent(s[i-1])
		after := i+len(w) == len(s) || !isIdent(s[i+len(w)])
		if before && after {
			return i
		}
		off = i + len(w)
	}
}

func isIdent(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// DeleteBatch is a DELETE of at most n rows of table matching where (no
// ORDER BY): DELETE ... LIMIT on MySQL, a rowid sub-select on SQLite, whose
// DELETE has no LIMIT unless compiled with it. Retention deletes in such
// batches so that no transaction grows with the table.
func (d Dialect) DeleteBatch(table, where string, n int) string {
	if d.kind == MySQL {
		return fmt.Sprintf("DELETE FROM %s WHERE %s LIMIT %d", table, where, n)
	}
	return fmt.Sprintf("DELETE FROM %s WHERE rowid IN (SELECT rowid FROM %s WHERE %s LIMIT %d)", table, table, where, n)
}

// ReusePrepared reports whether statements are worth preparing once and
// reusing: on SQLite parsing is a large part of a small statement's cost; the
// MySQL connections interpolate arguments client-side (one round trip, no
// server-side statement), so preparing would only add round trips.
func (d Dialect) ReusePrepared() bool { return d.kind == SQLite }
