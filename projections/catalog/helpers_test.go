package catalog_test

import (
	"context"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/projections/catalog"
	"github.com/vigil-dev/vigil/projections/freshness"
	"github.com/vigil-dev/vigil/projections/internal/testenv"
	"github.com/vigil-dev/vigil/projections/outbox"
	"github.com/vigil-dev/vigil/projections/projector"
	"github.com/vigil-dev/vigil/projections/store"
	"github.com/vigil-dev/vigil/projections/uptime"
)

// now is the tests' clock: after every scenario event, within retention.
var now = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

func clock() time.Time { return now }

func projections() []projector.Projection {
	return catalog.All(catalog.Config{
		Uptime: uptime.Config{PrimaryRegion: "eu", Now: clock},
		Outbox: outbox.Config{Now: clock},
	})
}

func fresh(t *testing.T, kind string) *store.DB {
	t.Helper()
	if kind == "mysql" {
		return testenv.MySQL(t)
	}
	return testenv.SQLite(t)
}

func subscribe(t *testing.T, db *store.DB) {
	t.Helper()
	ctx := context.Background()
	for _, s := range []outbox.Subscription{
		{ID: "ops", DestinationKind: outbox.DestWebhook, Destination: "https://ops.example/hook", MinSeverity: events.SeverityDown, SuppressInMaintenance: true, Enabled: true},
		{ID: "noisy", DestinationKind: outbox.DestSlack, Destination: "https://hooks.slack.example/x", MinSeverity: events.SeveritySeemsDown,
			Kinds: []string{"seems_down", "down", "recovered", "tls_expiring", outbox.KindRegionImpaired}, Enabled: true},
		{ID: "one-site", DestinationKind: outbox.DestEmail, Destination: "owner@example.org", Sites: []string{"site-00003"}, MinSeverity: events.SeverityDown, Enabled: true},
		{ID: "off", DestinationKind: outbox.DestEmail, Destination: "nobody@example.org", Enabled: false},
	} {
		if err := outbox.Put(ctx, db, s); err != nil {
			t.Fatal(err)
		}
	}
}

// observe feeds a fixed set of observations to a freshness applier and
// flushes it.
func observe(t *testing.T, db *store.DB, sites int) {
	t.Helper()
	a := freshness.New(db, freshness.Config{})
	base := time.Date(2026, 5, 20, 10, 0, 0, 0, time.UTC)
	for i := 0; i < sites*6; i++ {
		site := "site-" + pad(i%sites)
		if i%7 == 0 {
			site = "quiet-" + pad(i%sites) // sites with checks but no events
		}
		class := events.ClassOK
		if i%5 == 0 {
			class = events.ClassTimeout
		}
		a.Observe(uint64(i+1), &events.ObservationSummary{
			ID: events.DeriveID(base, "obs", site, pad(i)), SiteID: site, Region: "eu", Class: class, StatusCode: 200,
			StartedAt: base.Add(time.Duration(i) * 37 * time.Second), Timings: events.Timings{TotalMs: float64(50 + i%40)},
		})
	}
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func pad(i int) string {
	s := "00000" + itoa(i)
	return s[len(s)-5:]
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

// catchUp runs a live runner until every projection has applied the stream's
// last message, then stops it.
func catchUp(t *testing.T, db *store.DB, n *testenv.NATS, projs []projector.Projection, opts projector.Options) {
	t.Helper()
	r, err := projector.New(db, n.JS, projs, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	waitLag(t, r)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func waitLag(t *testing.T, r *projector.Runner) {
	t.Helper()
	deadline := time.Now().Add(120 * time.Second)
	for {
		lag, err := r.Lag(context.Background())
		if err == nil && lag == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("runner did not catch up: lag %d, err %v", lag, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rebuildable lists the tables a rebuild replaces.
func rebuildable(projs []projector.Projection) []string {
	var out []string
	for _, p := range projs {
		if _, never := p.(projector.NeverRebuilt); !never {
			out = append(out, p.Tables()...)
		}
	}
	return out
}

func snapshots(t *testing.T, db *store.DB, tables []string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, tb := range tables {
		out[tb] = testenv.Snapshot(t, db, tb)
	}
	return out
}

func compare(t *testing.T, what string, want, got map[string][]string) {
	t.Helper()
	for tb, w := range want {
		if d := testenv.Diff(w, got[tb]); d != "" {
			t.Errorf("%s: table %s differs (%d vs %d rows):\n%s", what, tb, len(w), len(got[tb]), d)
		}
	}
}
