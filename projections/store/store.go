// Package store opens the SQL database that holds Vigil's projections, MySQL
// (8.0 or MariaDB 10.11) or an embedded SQLite file, and migrates its schema.
//
// A DSN names the store:
//
//	mysql://user:pw@tcp(host:3306)/vigil?tls=preferred   MySQL or MariaDB
//	user:pw@tcp(host:3306)/vigil                        the same, driver form
//	sqlite:./data/vigil.db                              an SQLite file
//
// Whatever the DSN says, MySQL connections use parseTime, loc=UTC,
// clientFoundRows (an UPDATE reports the rows it matched) and no
// multiStatements; SQLite runs in WAL mode with a busy timeout and foreign keys
// on, a 64 MiB page cache, writes through a single connection and reads
// through a small pool.
//
// Every difference between the two is in Dialect (dialect.go).
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// DB is an open projection store.
type DB struct {
	// W is for writes: projectors, the freshness applier, migrations. On
	// SQLite it is a single connection, so writers queue in Go rather than
	// on the file lock.
	W *sql.DB
	// R is for reads (the query layer). On MySQL it is W.
	R *sql.DB
	// D is the store's dialect.
	D Dialect
}

// Querier is what both *sql.DB and *sql.Tx offer.
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Open connects to the store a DSN names (see the package comment). It does
// not migrate; call Migrate.
func Open(ctx context.Context, dsn string) (*DB, error) {
	switch {
	case strings.HasPrefix(dsn, "mysql://"):
		return OpenMySQL(ctx, strings.TrimPrefix(dsn, "mysql://"))
	case strings.HasPrefix(dsn, "sqlite://"):
		return OpenSQLite(ctx, strings.TrimPrefix(dsn, "sqlite://"))
	case strings.HasPrefix(dsn, "sqlite:"):
		return OpenSQLite(ctx, strings.TrimPrefix(dsn, "sqlite:"))
	case strings.Contains(dsn, "@tcp(") || strings.Contains(dsn, "@unix("):
		return OpenMySQL(ctx, dsn)
	}
	return nil, fmt.Errorf("store dsn %q: want mysql://user:pw@tcp(host:3306)/db or sqlite:path/to/file.db", redact(dsn))
}

// OpenMySQL connects to MySQL or MariaDB with a go-sql-driver DSN
// (user:pw@tcp(host:3306)/db?...), forcing the options Vigil relies on.
func OpenMySQL(ctx context.Context, dsn string) (*DB, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse mysql dsn: %w", err)
	}
	if cfg.DBName == "" {
		return nil, errors.New("mysql dsn names no database")
	}
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	cfg.ClientFoundRows = true
	cfg.MultiStatements = false
	// One round trip per statement instead of prepare/execute/close. Safe
	// with the utf8mb4 connection charset the driver uses by default.
	cfg.InterpolateParams = true
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	// Sessions run in UTC, so NOW() and the stored DATETIMEs agree.
	cfg.Params["time_zone"] = "'+00:00'"
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("mysql connector: %w", err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16)
	db.SetConnMaxLifetime(time.Hour)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to mysql %s/%s: %w", cfg.Addr, cfg.DBName, err)
	}
	return &DB{W: db, R: db, D: Dialect{kind: MySQL}}, nil
}

// OpenSQLite opens (creating it if needed) an SQLite file.
func OpenSQLite(ctx context.Context, path string) (*DB, error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file::memory:") {
		return nil, errors.New("sqlite store needs a file: readers and the writer use separate connections")
	}
	path = strings.TrimPrefix(path, "file:")
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create sqlite directory: %w", err)
		}
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	// A 64 MiB page cache: the default 2 MiB turns every page of a large
	// rebuild into a read system call.
	q.Add("_pragma", "cache_size(-65536)")
	w, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode()+"&_txlock=immediate")
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	rq := url.Values{}
	rq.Add("_pragma", "busy_timeout(10000)")
	rq.Add("_pragma", "query_only(1)")
	rq.Add("_pragma", "cache_size(-16384)")
	r, err := sql.Open("sqlite", "file:"+path+"?"+rq.Encode())
	if err != nil {
		w.Close()
		return nil, err
	}
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)
	return &DB{W: w, R: r, D: Dialect{kind: SQLite}}, nil
}

// Close closes the store's connections.
func (db *DB) Close() error {
	err := db.W.Close()
	if db.R != db.W {
		err = errors.Join(err, db.R.Close())
	}
	return err
}

// InTx runs fn in a write transaction, committing if it returns nil.
func (db *DB) InTx(ctx context.Context, fn func(*sql.Tx) error) error {
	return inTx(ctx, db.W, fn)
}

func inTx(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// redact hides a password in a DSN for error messages.
func redact(dsn string) string {
	at := strings.LastIndexByte(dsn, '@')
	if at < 0 {
		return dsn
	}
	start := 0
	if i := strings.Index(dsn[:at], "://"); i >= 0 {
		start = i + 3
	}
	if c := strings.IndexByte(dsn[start:at], ':'); c >= 0 {
		return dsn[:start+c] + ":***" + dsn[at:]
	}
	return dsn
}

// Time scans a DATETIME(3) column of either store into a time: MySQL returns
// time.Time, SQLite returns the text Dialect.Time wrote (or, for computed
// columns, a string or bytes in one of a few layouts). A NULL leaves Valid
// false.
type Time struct {
	Time  time.Time
	Valid bool
}

// Scan implements sql.Scanner.
func (t *Time) Scan(v any) error {
	t.Valid = false
	t.Time = time.Time{}
	switch x := v.(type) {
	case nil:
		return nil
	case time.Time:
		t.Time, t.Valid = x.UTC(), true
		return nil
	case string:
		return t.parse(x)
	case []byte:
		return t.parse(string(x))
	case int64:
		t.Time, t.Valid = time.UnixMilli(x).UTC(), true
		return nil
	}
	return fmt.Errorf("store.Time: cannot scan %T", v)
}

var timeLayouts = []string{
	TimeLayout,
	"2006-01-02 15:04:05.999999999",
	"2006-01-02 15:04:05.999999999-07:00",
	time.RFC3339Nano,
	"2006-01-02 15:04:05",
}

func (t *Time) parse(s string) error {
	for _, l := range timeLayouts {
		if p, err := time.Parse(l, s); err == nil {
			t.Time, t.Valid = p.UTC(), true
			return nil
		}
	}
	return fmt.Errorf("store.Time: cannot parse %q", s)
}

// Ptr returns the time or nil.
func (t Time) Ptr() *time.Time {
	if !t.Valid {
		return nil
	}
	v := t.Time
	return &v
}
