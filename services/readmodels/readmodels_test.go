package readmodels_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/projections/outbox"
	"github.com/vigil-dev/vigil/projections/query"
	"github.com/vigil-dev/vigil/projections/store"
	"github.com/vigil-dev/vigil/services/internal/natstest"
	"github.com/vigil-dev/vigil/services/lease"
	"github.com/vigil-dev/vigil/services/readmodels"
	"github.com/vigil-dev/vigil/services/sites"
)

func openStore(t *testing.T) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "vigil.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return db
}

func publish(t *testing.T, s *natstest.Server, m events.Message) {
	t.Helper()
	msg, err := events.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.JS.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
}

func waitState(t *testing.T, r *query.Reader, site, state string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := r.Status(context.Background(), site)
		if err == nil && st.State == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("site %s: state %q (%v) after 20s, want %s", site, st.State, err, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Events on EVENTS reach site_status through the leader; when the leader
// dies, a standby takes over and carries on from the checkpoint.
func TestProjectsEventsAndFailsOver(t *testing.T) {
	s := natstest.Start(t, true)
	db := openStore(t)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := func(id string, opts ...lease.Option) context.CancelFunc {
		svc, err := readmodels.New(s.JS, db, readmodels.Options{PrimaryRegion: "local", LeaseTTL: 2 * time.Second,
			InstanceID: id, Logger: quiet, FreshnessInterval: time.Second, LeaseOptions: opts})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = svc.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		return cancel
	}
	killA := start("a", lease.WithoutRelease())
	r := query.New(db, query.Options{})
	at := time.Now().UTC().Add(-time.Minute)
	open := &events.SiteEvent{ID: events.DeriveID(at, "shop", "o1", "seems_down"), Kind: events.KindSeemsDown, SiteID: "shop",
		Bucket: events.Bucket("shop"), At: at, State: events.StateSeemsDown, Severity: events.SeveritySeemsDown,
		IncidentID: events.DeriveID(at, "shop", "o1", "incident"), StartedAt: &at, FailureClass: events.ClassTimeout, ObservationIDs: []string{"o1"}}
	publish(t, s, open)
	waitState(t, r, "shop", string(events.StateSeemsDown))

	start("b")
	killA() // the leader dies without releasing its lease
	later := at.Add(30 * time.Second)
	closed := *open
	closed.ID, closed.Kind, closed.At, closed.State, closed.Severity, closed.Reason = events.DeriveID(later, "shop", "o2", "recovered"), events.KindRecovered, later, events.StateUp, events.SeverityUp, events.ReasonProbeCleared
	publish(t, s, &closed)
	waitState(t, r, "shop", string(events.StateUp))
	inc, err := r.Incidents(context.Background(), "shop", query.IncidentFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(inc.Items) != 1 || inc.Items[0].Resolution != string(events.ReasonProbeCleared) {
		t.Errorf("incidents: %+v", inc.Items)
	}
}

// A subscription with a label filter is matched against the site's labels on
// SITES: only the labelled site's event reaches the outbox.
func TestOutboxLabelFilterUsesSiteLabels(t *testing.T) {
	s := natstest.Start(t, true)
	db := openStore(t)
	ctx := context.Background()
	reg := sites.NewRegistry(s.JS)
	for id, team := range map[string]string{"web-site": "web", "ops-site": "ops"} {
		if _, err := reg.Create(ctx, events.Site{ID: id, URL: "https://" + id + ".example.com/", Labels: map[string]string{"team": team}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := outbox.Put(ctx, db, outbox.Subscription{ID: "web-team", DestinationKind: outbox.DestWebhook, Destination: "https://hooks.example.com/x",
		Labels: map[string]string{"team": "web"}, MinSeverity: events.SeveritySeemsDown, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	svc, err := readmodels.New(s.JS, db, readmodels.Options{PrimaryRegion: "local", LeaseTTL: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = svc.Run(runCtx) }()
	defer func() { cancel(); <-done }()
	at := time.Now().UTC().Add(-time.Minute)
	for _, site := range []string{"ops-site", "web-site"} {
		publish(t, s, &events.SiteEvent{ID: events.DeriveID(at, site, "seems_down"), Kind: events.KindSeemsDown, SiteID: site,
			Bucket: events.Bucket(site), At: at, State: events.StateSeemsDown, Severity: events.SeveritySeemsDown,
			IncidentID: events.DeriveID(at, site, "incident"), StartedAt: &at, FailureClass: events.ClassTimeout, ObservationIDs: []string{"o"}})
	}
	r := query.New(db, query.Options{})
	waitState(t, r, "web-site", string(events.StateSeemsDown))
	waitState(t, r, "ops-site", string(events.StateSeemsDown))
	rows, err := db.R.QueryContext(ctx, "SELECT COALESCE(site_id, '') FROM notification_outbox")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var site string
		if err := rows.Scan(&site); err != nil {
			t.Fatal(err)
		}
		got = append(got, site)
	}
	if len(got) != 1 || got[0] != "web-site" {
		t.Errorf("outbox rows for sites %v, want only web-site", got)
	}
}
