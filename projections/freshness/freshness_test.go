package freshness_test

import (
	"context"
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
				a := freshness.New(db, freshness.Config{Interval: 20 * time.Millisecond})
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
