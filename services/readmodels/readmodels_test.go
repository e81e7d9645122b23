package readmodels_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/projections/query"
	"github.com/vigil-dev/vigil/projections/store"
	"github.com/vigil-dev/vigil/services/internal/natstest"
	"github.com/vigil-dev/vigil/services/lease"
	"github.com/vigil-dev/vigil/services/readmodels"
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
