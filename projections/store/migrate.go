package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migration is one schema version: migrations/NNNN_name.sql.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations returns the embedded migrations in version order.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, e := range entries {
		name := e.Name()
		num, rest, ok := strings.Cut(strings.TrimSuffix(name, ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration file %s: want NNNN_name.sql", name)
		}
		b, err := migrationFS.ReadFile(path.Join("migrations", name))
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: rest, SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i := 1; i < len(ms); i++ {
		if ms[i].Version == ms[i-1].Version {
			return nil, fmt.Errorf("two migrations with version %d", ms[i].Version)
		}
	}
	return ms, nil
}

// Statements splits a migration into statements: they end with ';' at the end
// of a line, and lines starting with "--" are comments.
func (m Migration) Statements() []string {
	var out []string
	var cur strings.Builder
	for line := range strings.Lines(m.SQL) {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		cur.WriteString(line)
		if strings.HasSuffix(t, ";") {
			s := strings.TrimSuffix(strings.TrimSpace(cur.String()), ";")
			out = append(out, s)
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}

// Migrate brings the schema up to the newest embedded version. It is
// idempotent: applied versions are recorded in schema_migrations and skipped.
// On SQLite each version runs in one transaction. On MySQL DDL commits
// implicitly, so a version is made of statements that can be re-run (CREATE
// TABLE IF NOT EXISTS; an index that exists already is accepted), and a
// named lock keeps two processes from migrating at once.
func (db *DB) Migrate(ctx context.Context) error {
	ms, err := Migrations()
	if err != nil {
		return err
	}
	conn, err := db.W.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if db.D.kind == MySQL {
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK('vigil_projections_migrate', 60)").Scan(&got); err != nil {
			return fmt.Errorf("migration lock: %w", err)
		}
		if got.Int64 != 1 {
			return fmt.Errorf("migration lock: another process holds it")
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT RELEASE_LOCK('vigil_projections_migrate')")
	}
	create := db.D.renderMigration(`CREATE TABLE IF NOT EXISTS schema_migrations (
  version    INT          NOT NULL,
  name       VARCHAR(255) NOT NULL,
  applied_at DATETIME(3)  NOT NULL,
  PRIMARY KEY (version)
) {{table_options}}`)
	if _, err := conn.ExecContext(ctx, create); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	applied := map[int]bool{}
	rows, err := conn.QueryContext(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return err
	}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return err
		}
		applied[v] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, m := range ms {
		if applied[m.Version] {
			continue
		}
		if err := db.apply(ctx, conn, m); err != nil {
			return fmt.Errorf("migration %04d_%s: %w", m.Version, m.Name, err)
		}
	}
	return nil
}

func (db *DB) apply(ctx context.Context, conn *sql.Conn, m Migration) error {
	record := func(q Querier) error {
		_, err := q.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
			m.Version, m.Name, db.D.Time(time.Now()))
		return err
	}
	if db.D.kind == SQLite {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		for _, s := range m.Statements() {
			if _, err := tx.ExecContext(ctx, db.D.renderMigration(s)); err != nil {
				tx.Rollback()
				return fmt.Errorf("%w\n%s", err, s)
			}
		}
		if err := record(tx); err != nil {
			tx.Rollback()
			return err
		}
		return tx.Commit()
	}
	for _, s := range m.Statements() {
		if _, err := conn.ExecContext(ctx, db.D.renderMigration(s)); err != nil && !db.D.isDupIndex(err) {
			return fmt.Errorf("%w\n%s", err, s)
		}
	}
	return record(conn)
}

// Version returns the newest applied schema version (0 before Migrate).
func (db *DB) Version(ctx context.Context) (int, error) {
	ok, err := db.D.TableExists(ctx, db.W, "schema_migrations")
	if err != nil || !ok {
		return 0, err
	}
	var v sql.NullInt64
	err = db.W.QueryRowContext(ctx, "SELECT MAX(version) FROM schema_migrations").Scan(&v)
	return int(v.Int64), err
}
