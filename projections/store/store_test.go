package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/projections/internal/testenv"
	"github.com/vigil-dev/vigil/projections/store"
)

func TestOpenRejectsUnknownDSN(t *testing.T) {
	for _, dsn := range []string{"", "postgres://x", "sqlite::memory:", "sqlite:"} {
		if _, err := store.Open(context.Background(), dsn); err == nil {
			t.Errorf("Open(%q) = nil error", dsn)
		}
	}
	_, err := store.Open(context.Background(), "nope://user:secret@host")
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("error should not leak the password: %v", err)
	}
}

func TestMigrateIdempotent(t *testing.T) {
	for _, s := range testenv.Stores(t) {
		t.Run(s.Name, func(t *testing.T) {
			ctx := context.Background()
			ms, err := store.Migrations()
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 2; i++ {
				if err := s.DB.Migrate(ctx); err != nil {
					t.Fatalf("migrate #%d: %v", i+1, err)
				}
			}
			v, err := s.DB.Version(ctx)
			if err != nil || v != ms[len(ms)-1].Version {
				t.Fatalf("version = %d, %v; want %d", v, err, ms[len(ms)-1].Version)
			}
			for _, table := range []string{"projection_checkpoints", "site_status", "incidents", "uptime_hourly", "notification_outbox", "subscriptions"} {
				ok, err := s.DB.D.TableExists(ctx, s.DB.W, table)
				if err != nil || !ok {
					t.Errorf("table %s: exists=%v err=%v", table, ok, err)
				}
			}
		})
	}
}

// A MySQL migration interrupted after some DDL can be re-run: the tables use
// IF NOT EXISTS and an existing index is accepted.
func TestMigrateMySQLRerunAfterPartial(t *testing.T) {
	db, _ := testenv.MySQLRaw(t)
	ctx := context.Background()
	if _, err := db.W.ExecContext(ctx, "CREATE TABLE site_status (site_id VARCHAR(64) NOT NULL PRIMARY KEY, state VARCHAR(16) NOT NULL DEFAULT 'up', severity SMALLINT NOT NULL DEFAULT 0)"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.W.ExecContext(ctx, "CREATE INDEX site_status_by_state ON site_status (state, site_id)"); err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestTimeRoundTrip(t *testing.T) {
	for _, s := range testenv.Stores(t) {
		t.Run(s.Name, func(t *testing.T) {
			ctx := context.Background()
			want := time.Date(2026, 3, 4, 5, 6, 7, 891_234_567, time.FixedZone("x", 3600))
			if _, err := s.DB.W.ExecContext(ctx, "INSERT INTO projection_checkpoints (name, last_seq, updated_at) VALUES (?, ?, ?)", "t", 1, s.DB.D.Time(want)); err != nil {
				t.Fatal(err)
			}
			var got store.Time
			if err := s.DB.R.QueryRowContext(ctx, "SELECT updated_at FROM projection_checkpoints WHERE name = 't'").Scan(&got); err != nil {
				t.Fatal(err)
			}
			if !got.Valid || !got.Time.Equal(want.Truncate(time.Millisecond)) || got.Time.Location() != time.UTC {
				t.Fatalf("got %v (%v), want %v", got.Time, got.Valid, want.UTC().Truncate(time.Millisecond))
			}
			// Text order is time order on SQLite.
			var n int
			if err := s.DB.R.QueryRowContext(ctx, "SELECT COUNT(*) FROM projection_checkpoints WHERE updated_at > ? AND updated_at < ?",
				s.DB.D.Time(want.Add(-time.Millisecond)), s.DB.D.Time(want.Add(time.Millisecond))).Scan(&n); err != nil || n != 1 {
				t.Fatalf("range count = %d, %v", n, err)
			}
		})
	}
}

func TestShadowAndSwap(t *testing.T) {
	for _, s := range testenv.Stores(t) {
		t.Run(s.Name, func(t *testing.T) {
			ctx := context.Background()
			d := s.DB.D
			if _, err := s.DB.W.ExecContext(ctx, "INSERT INTO site_status (site_id, state) VALUES ('old', 'down')"); err != nil {
				t.Fatal(err)
			}
			if err := d.CreateShadow(ctx, s.DB.W, "site_status", "site_status__rebuild"); err != nil {
				t.Fatal(err)
			}
			// Twice: a leftover shadow is replaced.
			if err := d.CreateShadow(ctx, s.DB.W, "site_status", "site_status__rebuild"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.DB.W.ExecContext(ctx, "INSERT INTO site_status__rebuild (site_id, state) VALUES ('new', 'up')"); err != nil {
				t.Fatal(err)
			}
			if err := d.Swap(ctx, s.DB.W, [][2]string{{"site_status", "site_status__rebuild"}}, nil, nil); err != nil {
				t.Fatal(err)
			}
			var id string
			if err := s.DB.W.QueryRowContext(ctx, "SELECT site_id FROM site_status").Scan(&id); err != nil || id != "new" {
				t.Fatalf("after swap: %q, %v", id, err)
			}
			for _, tb := range []string{"site_status__rebuild", "site_status__old"} {
				if ok, _ := d.TableExists(ctx, s.DB.W, tb); ok {
					t.Errorf("%s still exists", tb)
				}
			}
			// A second round works too (index names came back).
			if err := d.CreateShadow(ctx, s.DB.W, "site_status", "site_status__rebuild"); err != nil {
				t.Fatal(err)
			}
			if err := d.Swap(ctx, s.DB.W, [][2]string{{"site_status", "site_status__rebuild"}}, nil, nil); err != nil {
				t.Fatal(err)
			}
			if d.Kind() == store.SQLite {
				var n int
				s.DB.W.QueryRowContext(ctx, "SELECT COUNT(*) FROM sqlite_master WHERE type='index' AND tbl_name='site_status' AND name IN ('site_status_by_state','site_status_by_severity')").Scan(&n)
				if n != 2 {
					t.Fatalf("indexes after swap: %d", n)
				}
			}
		})
	}
}
