package freshness_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/projections/freshness"
	"github.com/vigil-dev/vigil/projections/internal/testenv"
	"github.com/vigil-dev/vigil/projections/store"
)

var t0 = time.Date(2026, 5, 28, 10, 0, 0, 0, time.UTC)

func obs(site string, i int, class events.Class, ms float64) *events.Observation {
	at := t0.Add(time.Duration(i) * 10 * time.Second)
	o := &events.Observation{ID: events.DeriveID(at, "obs", site, fmt.Sprint(i)), SiteID: site, Bucket: events.Bucket(site), Region: "eu",
		CheckerID: "c1", CommandID: "cmd", Purpose: events.PurposeScheduled, DueAt: at, StartedAt: at, Class: class, StatusCode: 200,
		Timings: events.Timings{TotalMs: ms}}
	if i%10 == 0 {
		o.TLS = &events.TLSInfo{NotAfter: t0.Add(40 * 24 * time.Hour)}
	}
	return o
}

func count(t *testing.T, db *store.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.R.QueryRowContext(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Healthy checks cost no SQL until a flush; a flush writes one row per site
// in site_status and one per site-period in the rollups, with the latest
// check, the counts and the percentiles; the next flush adds to them.
func TestCoalescedFlush(t *testing.T) {
	for _, s := range testenv.Stores(t) {
		t.Run(s.Name, func(t *testing.T) {
			ctx := context.Background()
			db := s.DB
			a := freshness.New(db, freshness.Config{RowsPerStatement: 2})
			for i := 0; i < 300; i++ {
				site := fmt.Sprintf("s%d", i%3)
				class := events.ClassOK
				if i%30 == 29 {
					class = events.ClassHTTPStatus
				}
				if i%50 == 49 {
					class = events.ClassMonitorNetwork // not a site failure
				}
				a.Observe(uint64(i+1), obs(site, i, class, float64(100+i%100)).Summary())
			}
			if n := count(t, db, "SELECT COUNT(*) FROM site_status"); n != 0 {
				t.Fatalf("%d rows written before a flush", n)
			}
			if a.Pending() != 300 {
				t.Fatal(a.Pending())
			}
			if err := a.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if n := count(t, db, "SELECT COUNT(*) FROM site_status"); n != 3 {
				t.Fatalf("site_status rows %d", n)
			}
			var last store.Time
			var code, resp int
			var cert store.Time
			if err := db.R.QueryRowContext(ctx, "SELECT last_checked_at, last_status_code, last_response_ms, cert_not_after FROM site_status WHERE site_id = 's2'").Scan(&last, &code, &resp, &cert); err != nil {
				t.Fatal(err)
			}
			if !last.Time.Equal(t0.Add(299*10*time.Second)) || code != 200 || resp != 199 || !cert.Valid {
				t.Fatalf("s2 freshness: %v %d %d %v", last.Time, code, resp, cert)
			}
			// 300 checks at 10 s spacing span 10:00..10:49:50: one hour.
			if n := count(t, db, "SELECT SUM(checks) FROM uptime_hourly"); n != 300 {
				t.Fatalf("checks %d", n)
			}
			// i%30 == 29 gives 10 site failures, but 149 and 299 are also
			// i%50 == 49: monitor-side, never a failure of the site.
			if n := count(t, db, "SELECT SUM(failures) FROM uptime_hourly"); n != 8 {
				t.Fatalf("failures %d", n)
			}
			if n := count(t, db, "SELECT SUM(checks) FROM uptime_daily"); n != 300 {
				t.Fatalf("daily checks %d", n)
			}
			p50 := count(t, db, "SELECT rt_p50_ms FROM uptime_hourly WHERE site_id = 's0'")
			p99 := count(t, db, "SELECT rt_p99_ms FROM uptime_hourly WHERE site_id = 's0'")
			if p50 < 135 || p50 > 165 || p99 < 180 || p99 > 220 {
				t.Fatalf("percentiles p50 %d p99 %d", p50, p99)
			}
			// A second flush adds; an older observation does not move
			// last_checked_at back.
			a.Observe(301, obs("s0", 400, events.ClassOK, 5000).Summary())
			a.Observe(302, obs("s1", 1, events.ClassOK, 100).Summary())
			if err := a.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if n := count(t, db, "SELECT SUM(checks) FROM uptime_hourly"); n != 302 {
				t.Fatalf("checks after second flush %d", n)
			}
			if err := db.R.QueryRowContext(ctx, "SELECT last_checked_at FROM site_status WHERE site_id = 's1'").Scan(&last); err != nil {
				t.Fatal(err)
			}
			if !last.Time.Equal(t0.Add(298 * 10 * time.Second)) {
				t.Fatalf("s1 last_checked_at moved back to %v", last.Time)
			}
			if cp, err := freshness.Checkpoint(ctx, db); err != nil || cp != 302 {
				t.Fatalf("checkpoint %d, %v", cp, err)
			}
			if err := a.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A flush that fails keeps the observations for the next one.
func TestFlushFailureKeepsObservations(t *testing.T) {
	db := testenv.SQLite(t)
	ctx := context.Background()
	a := freshness.New(db, freshness.Config{})
	a.Observe(1, obs("x", 1, events.ClassOK, 10).Summary())
	if _, err := db.W.ExecContext(ctx, "ALTER TABLE site_status RENAME TO site_status_away"); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err == nil {
		t.Fatal("flush into a missing table succeeded")
	}
	a.Observe(2, obs("x", 2, events.ClassOK, 10).Summary())
	if _, err := db.W.ExecContext(ctx, "ALTER TABLE site_status_away RENAME TO site_status"); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, "SELECT SUM(checks) FROM uptime_hourly"); n != 2 {
		t.Fatalf("checks %d", n)
	}
}

// Follow resumes from the flushed checkpoint: stopping and restarting it
// neither loses nor doubles a check.
func TestFollowResumes(t *testing.T) {
	for _, s := range testenv.Stores(t) {
		t.Run(s.Name, func(t *testing.T) {
			ctx := context.Background()
			n := testenv.StartNATS(t)
			db := s.DB
			follow := func(total int) {
				// Rollup flushes every third tick: the checkpoint waited
				// for only moves with them.
				a := freshness.New(db, freshness.Config{Interval: 20 * time.Millisecond, RollupInterval: 60 * time.Millisecond})
				fctx, cancel := context.WithCancel(ctx)
				done := make(chan error, 1)
				go func() { done <- freshness.Follow(fctx, n.JS, a, freshness.FollowOptions{StartBack: 24 * time.Hour}) }()
				deadline := time.Now().Add(20 * time.Second)
				for {
					cp, _ := freshness.Checkpoint(ctx, db)
					if cp == uint64(total) {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("checkpoint %d, want %d", cp, total)
					}
					time.Sleep(10 * time.Millisecond)
				}
				cancel()
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			}
			var batch []events.Message
			for i := 0; i < 50; i++ {
				batch = append(batch, obs(fmt.Sprintf("f%d", i%5), i, events.ClassOK, 20))
			}
			n.Publish(t, batch...)
			follow(50)
			batch = batch[:0]
			for i := 50; i < 70; i++ {
				batch = append(batch, obs(fmt.Sprintf("f%d", i%5), i, events.ClassOK, 20))
			}
			n.Publish(t, batch...)
			follow(70)
			if got := count(t, db, "SELECT SUM(checks) FROM uptime_hourly"); got != 70 {
				t.Fatalf("checks %d, want 70", got)
			}
		})
	}
}

// checkpoint returns the freshness checkpoint.
func checkpoint(t *testing.T, db *store.DB) uint64 {
	t.Helper()
	cp, err := freshness.Checkpoint(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// lastChecked returns site's last_checked_at (zero when it has no row).
func lastChecked(t *testing.T, db *store.DB, site string) time.Time {
	t.Helper()
	var last store.Time
	err := db.R.QueryRowContext(context.Background(), "SELECT last_checked_at FROM site_status WHERE site_id = ?", site).Scan(&last)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		t.Fatal(err)
	}
	return last.Time
}

// tick runs one of Run's ticks and fails the test on an error.
func tick(t *testing.T, a *freshness.Applier) {
	t.Helper()
	if err := a.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// With RollupInterval three Intervals, the ticks between rollup flushes
// write site_status only: the rollup rows and the checkpoint wait, and the
// counts of every tick are kept. The third tick writes their sum and moves
// the checkpoint; the cycle then starts again.
func TestRollupInterval(t *testing.T) {
	for _, s := range testenv.Stores(t) {
		t.Run(s.Name, func(t *testing.T) {
			db := s.DB
			a := freshness.New(db, freshness.Config{Interval: time.Minute, RollupInterval: 3 * time.Minute, RowsPerStatement: 2})
			seq := 0
			// minute observes sites r0..r2 six times each (a minute at 10 s
			// spacing); r1's last check of the minute fails.
			minute := func(m int) {
				for i := 6 * m; i < 6*m+6; i++ {
					for site := 0; site < 3; site++ {
						class := events.ClassOK
						if site == 1 && i%6 == 5 {
							class = events.ClassTimeout
						}
						seq++
						a.Observe(uint64(seq), obs(fmt.Sprintf("r%d", site), i, class, 100).Summary())
					}
				}
			}
			for m := 0; m < 2; m++ {
				minute(m)
				tick(t, a)
				if got, want := lastChecked(t, db, "r1"), t0.Add(time.Duration(6*m+5)*10*time.Second); !got.Equal(want) {
					t.Fatalf("minute %d: r1 last_checked_at %v, want %v", m, got, want)
				}
				if n := count(t, db, "SELECT COUNT(*) FROM uptime_hourly"); n != 0 {
					t.Fatalf("minute %d: %d hourly rows before the rollup flush", m, n)
				}
				if n := count(t, db, "SELECT COUNT(*) FROM uptime_daily"); n != 0 {
					t.Fatalf("minute %d: %d daily rows before the rollup flush", m, n)
				}
				if cp := checkpoint(t, db); cp != 0 {
					t.Fatalf("minute %d: a freshness flush moved the checkpoint to %d", m, cp)
				}
				if a.Pending() != seq {
					t.Fatalf("minute %d: pending %d, want %d", m, a.Pending(), seq)
				}
			}
			minute(2)
			tick(t, a)
			if cp := checkpoint(t, db); cp != uint64(seq) || seq != 54 {
				t.Fatalf("checkpoint %d after the rollup flush, want %d", cp, seq)
			}
			for _, table := range []string{"uptime_hourly", "uptime_daily"} {
				if n := count(t, db, "SELECT checks FROM "+table+" WHERE site_id = 'r1'"); n != 18 {
					t.Fatalf("%s: r1 checks %d, want 18", table, n)
				}
				if n := count(t, db, "SELECT failures FROM "+table+" WHERE site_id = 'r1'"); n != 3 {
					t.Fatalf("%s: r1 failures %d, want 3", table, n)
				}
				if n := count(t, db, "SELECT SUM(checks) FROM "+table); n != 54 {
					t.Fatalf("%s: checks %d, want 54", table, n)
				}
			}
			if got, want := lastChecked(t, db, "r2"), t0.Add(17*10*time.Second); !got.Equal(want) {
				t.Fatalf("r2 last_checked_at %v, want %v", got, want)
			}
			if a.Pending() != 0 {
				t.Fatalf("pending %d after the rollup flush", a.Pending())
			}
			// The next cycle adds to the rows at its own third tick.
			minute(3)
			tick(t, a)
			if n := count(t, db, "SELECT SUM(checks) FROM uptime_hourly"); n != 54 {
				t.Fatalf("checks %d after a freshness tick, want 54", n)
			}
			tick(t, a)
			tick(t, a)
			if n := count(t, db, "SELECT SUM(checks) FROM uptime_hourly"); n != 72 {
				t.Fatalf("checks %d after the second rollup flush, want 72", n)
			}
			if cp := checkpoint(t, db); cp != 72 {
				t.Fatalf("checkpoint %d, want 72", cp)
			}
		})
	}
}

// RollupInterval is counted in whole ticks of Interval: rounded up, at
// least one, five minutes by default.
func TestRollupIntervalRounding(t *testing.T) {
	db := testenv.SQLite(t)
	for _, tc := range []struct {
		rollup time.Duration
		every  int
	}{{0, 5}, {time.Second, 1}, {time.Minute, 1}, {90 * time.Second, 2}, {5 * time.Minute, 5}} {
		a := freshness.New(db, freshness.Config{Interval: time.Minute, RollupInterval: tc.rollup})
		before := count(t, db, "SELECT COALESCE(SUM(checks), 0) FROM uptime_hourly")
		for i := 1; i <= tc.every; i++ {
			a.Observe(0, obs("round", i, events.ClassOK, 10).Summary())
			tick(t, a)
			written := count(t, db, "SELECT COALESCE(SUM(checks), 0) FROM uptime_hourly") - before
			want := 0
			if i == tc.every {
				want = tc.every
			}
			if written != want {
				t.Fatalf("RollupInterval %v, tick %d: %d checks in the rollups, want %d", tc.rollup, i, written, want)
			}
		}
	}
}

// A crash after a freshness-only flush loses nothing and doubles nothing: a
// new applier resumes from the checkpoint (the last rollup flush) and is fed
// again what came after it, as Follow does. The tables end exactly as if one
// applier had seen every observation once and flushed.
func TestRestartAfterFreshnessFlush(t *testing.T) {
	var all []*events.ObservationSummary
	for i := 0; i < 60; i++ {
		class := events.ClassOK
		if i%7 == 3 {
			class = events.ClassHTTPStatus
		}
		all = append(all, obs(fmt.Sprintf("c%d", i%4), i, class, float64(50+i)).Summary())
	}
	for _, s := range testenv.Stores(t) {
		t.Run(s.Name, func(t *testing.T) {
			ctx := context.Background()
			db := s.DB
			cfg := freshness.Config{Interval: time.Minute, RollupInterval: 5 * time.Minute}
			first := freshness.New(db, cfg)
			feed := func(a *freshness.Applier, from, to int) {
				for i := from; i < to; i++ {
					a.Observe(uint64(i+1), all[i])
				}
			}
			feed(first, 0, 20)
			if err := first.Flush(ctx); err != nil { // a rollup flush
				t.Fatal(err)
			}
			feed(first, 20, 40)
			tick(t, first) // a freshness-only flush
			if got, want := lastChecked(t, db, "c3"), all[39].StartedAt; !got.Equal(want) {
				t.Fatalf("freshness flush: c3 last_checked_at %v, want %v", got, want)
			}
			feed(first, 40, 45) // observed, never flushed: the crash
			cp := checkpoint(t, db)
			if cp != 20 {
				t.Fatalf("checkpoint %d after a freshness-only flush, want 20", cp)
			}
			second := freshness.New(db, cfg)
			feed(second, int(cp), len(all))
			tick(t, second)
			if err := second.Flush(ctx); err != nil {
				t.Fatal(err)
			}

			ref := refStore(t, s.Name)
			once := freshness.New(ref, cfg)
			feed(once, 0, len(all))
			if err := once.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			for _, table := range []string{"site_status", "uptime_hourly", "uptime_daily"} {
				if d := testenv.Diff(testenv.Snapshot(t, ref, table), testenv.Snapshot(t, db, table)); d != "" {
					t.Errorf("%s differs from a single pass:\n%s", table, d)
				}
			}
			if n := count(t, db, "SELECT SUM(checks) FROM uptime_hourly"); n != len(all) {
				t.Fatalf("checks %d, want %d", n, len(all))
			}
			if cp := checkpoint(t, db); cp != uint64(len(all)) {
				t.Fatalf("checkpoint %d, want %d", cp, len(all))
			}
		})
	}
}

// refStore returns a second fresh store of the named kind.
func refStore(t *testing.T, name string) *store.DB {
	t.Helper()
	if name == "mysql" {
		return testenv.MySQL(t)
	}
	return testenv.SQLite(t)
}

// A failed rollup flush writes nothing (its freshness columns are in the
// same transaction), keeps its counts and the checkpoint where it was, and
// is retried at the next tick; a failed freshness flush keeps its latest
// observations for the next flush.
func TestFailedFlushesKeepTheirData(t *testing.T) {
	db := testenv.SQLite(t)
	ctx := context.Background()
	exec := func(q string) {
		t.Helper()
		if _, err := db.W.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	a := freshness.New(db, freshness.Config{Interval: time.Minute, RollupInterval: 2 * time.Minute})
	// Tick 1, freshness: fails. Only this observation of k carries a
	// certificate expiry.
	a.Observe(1, obs("k", 10, events.ClassOK, 10).Summary())
	exec("ALTER TABLE site_status RENAME TO site_status_away")
	if err := a.Tick(ctx); err == nil {
		t.Fatal("freshness flush into a missing table succeeded")
	}
	exec("ALTER TABLE site_status_away RENAME TO site_status")
	// Tick 2, rollups: fails on uptime_daily, after site_status and
	// uptime_hourly were written in the same transaction.
	a.Observe(2, obs("k", 11, events.ClassTimeout, 10).Summary())
	a.Observe(3, obs("j", 12, events.ClassOK, 10).Summary())
	exec("ALTER TABLE uptime_daily RENAME TO uptime_daily_away")
	if err := a.Tick(ctx); err == nil {
		t.Fatal("rollup flush into a missing table succeeded")
	}
	if n := count(t, db, "SELECT COUNT(*) FROM site_status") + count(t, db, "SELECT COUNT(*) FROM uptime_hourly"); n != 0 {
		t.Fatalf("a failed rollup flush left %d rows", n)
	}
	if cp := checkpoint(t, db); cp != 0 {
		t.Fatalf("a failed rollup flush moved the checkpoint to %d", cp)
	}
	exec("ALTER TABLE uptime_daily_away RENAME TO uptime_daily")
	// Tick 3 retries the rollups.
	a.Observe(4, obs("k", 13, events.ClassOK, 10).Summary())
	tick(t, a)
	if cp := checkpoint(t, db); cp != 4 {
		t.Fatalf("checkpoint %d after the retried rollup flush, want 4", cp)
	}
	for _, table := range []string{"uptime_hourly", "uptime_daily"} {
		if n := count(t, db, "SELECT checks FROM "+table+" WHERE site_id = 'k'"); n != 3 {
			t.Fatalf("%s: k checks %d, want 3", table, n)
		}
		if n := count(t, db, "SELECT failures FROM "+table+" WHERE site_id = 'k'"); n != 1 {
			t.Fatalf("%s: k failures %d, want 1", table, n)
		}
	}
	if got := lastChecked(t, db, "k"); !got.Equal(t0.Add(130 * time.Second)) {
		t.Fatalf("k last_checked_at %v", got)
	}
	if got := lastChecked(t, db, "j"); !got.Equal(t0.Add(120 * time.Second)) {
		t.Fatalf("j last_checked_at %v", got)
	}
	// k's certificate expiry, from the observation whose freshness flush
	// failed, survived both failures.
	var cert store.Time
	if err := db.R.QueryRowContext(ctx, "SELECT cert_not_after FROM site_status WHERE site_id = 'k'").Scan(&cert); err != nil {
		t.Fatal(err)
	}
	if !cert.Time.Equal(t0.Add(40 * 24 * time.Hour)) {
		t.Fatalf("k cert_not_after %v (%v)", cert.Time, cert.Valid)
	}
}

// Run writes site_status every Interval but the rollups only every
// RollupInterval; stopping it writes everything, so a clean stop leaves
// nothing observed unwritten.
func TestRunFlushesEverythingOnStop(t *testing.T) {
	db := testenv.SQLite(t)
	ctx, cancel := context.WithCancel(context.Background())
	a := freshness.New(db, freshness.Config{Interval: 10 * time.Millisecond, RollupInterval: time.Hour})
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	for i := 0; i < 5; i++ {
		a.Observe(uint64(i+1), obs("run", i, events.ClassOK, 10).Summary())
	}
	deadline := time.Now().Add(10 * time.Second)
	for !lastChecked(t, db, "run").Equal(t0.Add(40 * time.Second)) {
		if time.Now().After(deadline) {
			cancel()
			t.Fatal("site_status not written by Run's freshness flushes")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM uptime_hourly"); n != 0 {
		t.Fatalf("%d rollup rows an hour before the rollup flush", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, "SELECT SUM(checks) FROM uptime_hourly"); n != 5 {
		t.Fatalf("checks %d after Run stopped, want 5", n)
	}
	if cp := checkpoint(t, db); cp != 5 {
		t.Fatalf("checkpoint %d after Run stopped, want 5", cp)
	}
}
