package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/projections/internal/testenv"
	"github.com/vigil-dev/vigil/projections/outbox"
	"github.com/vigil-dev/vigil/projections/projector"
)

var t0 = time.Date(2026, 5, 28, 10, 0, 0, 0, time.UTC)

func ev(kind events.EventKind, site, incident string, min int, maint bool) *events.SiteEvent {
	at := t0.Add(time.Duration(min) * time.Minute)
	e := &events.SiteEvent{ID: events.DeriveID(at, string(kind), incident, site), Kind: kind, SiteID: site, Bucket: events.Bucket(site),
		At: at, IncidentID: incident, ObservationIDs: []string{}, Maintenance: maint}
	switch kind {
	case events.KindSeemsDown:
		e.Severity = events.SeveritySeemsDown
	case events.KindDown:
		e.Severity = events.SeverityDown
	case events.KindRecovered:
		e.Reason = events.ReasonRecovered
	case events.KindTLSExpiring:
		e.Severity, e.IncidentID = events.SeverityWarning, ""
	}
	return e
}

func TestMatching(t *testing.T) {
	for _, s := range testenv.Stores(t) {
		t.Run(s.Name, func(t *testing.T) {
			ctx := context.Background()
			n := testenv.StartNATS(t)
			db := s.DB
			subs := []outbox.Subscription{
				{ID: "down-only", DestinationKind: outbox.DestWebhook, Destination: "https://a.example", MinSeverity: 4, SuppressInMaintenance: true, Enabled: true},
				{ID: "everything", DestinationKind: outbox.DestSlack, Destination: "https://b.example", MinSeverity: 1,
					Kinds: []string{"seems_down", "down", "recovered", "tls_expiring", "region.impaired"}, Enabled: true},
				{ID: "site-b", DestinationKind: outbox.DestEmail, Destination: "b@example.org", Sites: []string{"b"}, MinSeverity: 3, Enabled: true},
				{ID: "labelled", DestinationKind: outbox.DestPagerDuty, Destination: "routing-key", Labels: map[string]string{"team": "web"}, MinSeverity: 3, Enabled: true},
				{ID: "disabled", DestinationKind: outbox.DestEmail, Destination: "x@example.org", MinSeverity: 0, Enabled: false},
			}
			for _, sub := range subs {
				if err := outbox.Put(ctx, db, sub); err != nil {
					t.Fatal(err)
				}
			}
			if err := outbox.Put(ctx, db, outbox.Subscription{ID: "bad", DestinationKind: "carrier-pigeon", Destination: "x"}); err == nil {
				t.Fatal("invalid subscription accepted")
			}
			got, err := outbox.List(ctx, db)
			if err != nil || len(got) != len(subs) || !slices.Equal(got[2].Kinds, subs[1].Kinds) || got[3].Labels["team"] != "web" {
				t.Fatalf("list: %+v, %v", got, err)
			}
			n.Publish(t,
				ev(events.KindSeemsDown, "a", "i1", 0, false), // everything, labelled(a is web)
				ev(events.KindRecovered, "a", "i1", 1, false), // probe cleared: everything (notified of i1)
				ev(events.KindSeemsDown, "b", "i2", 2, false), // everything, site-b
				ev(events.KindDown, "b", "i2", 4, false),      // down-only, everything, site-b
				ev(events.KindRecovered, "b", "i2", 9, false), // down-only, everything, site-b
				ev(events.KindSeemsDown, "c", "i3", 10, true), // everything
				ev(events.KindDown, "c", "i3", 12, true),      // everything (down-only suppresses maintenance)
				ev(events.KindRecovered, "c", "i3", 20, true), // everything
				ev(events.KindTLSExpiring, "a", "", 30, false),
				&events.RegionEvent{ID: events.DeriveID(t0, "imp"), Kind: events.KindRegionImpaired, Region: "eu", At: t0},
				&events.RegionEvent{ID: events.DeriveID(t0, "rec"), Kind: events.KindRegionRecovered, Region: "eu", At: t0.Add(time.Minute)},
			)
			labels := func(_ context.Context, site string) (map[string]string, error) {
				if site == "a" {
					return map[string]string{"team": "web"}, nil
				}
				return nil, nil
			}
			p := outbox.New(outbox.Config{Labels: labels, Now: func() time.Time { return t0 }})
			r, err := projector.New(db, n.JS, []projector.Projection{p}, projector.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan error)
			go func() { done <- r.Run(rctx) }()
			for {
				lag, err := r.Lag(ctx)
				if err == nil && lag == 0 {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			cancel()
			<-done
			rows, err := db.R.QueryContext(ctx, "SELECT subscription_id, event_kind, COALESCE(site_id, ''), status, attempts, payload FROM notification_outbox ORDER BY event_seq, subscription_id")
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var have []string
			for rows.Next() {
				var sub, kind, site, status, payload string
				var attempts int
				if err := rows.Scan(&sub, &kind, &site, &status, &attempts, &payload); err != nil {
					t.Fatal(err)
				}
				if status != outbox.StatusPending || attempts != 0 {
					t.Fatalf("row %s %s: status %s attempts %d", sub, kind, status, attempts)
				}
				var ce map[string]any
				if err := json.Unmarshal([]byte(payload), &ce); err != nil || ce["specversion"] != "1.0" || ce["id"] == "" || ce["data"] == nil {
					t.Fatalf("payload is not a structured CloudEvent: %s", payload)
				}
				have = append(have, site+"/"+kind+"/"+sub)
			}
			want := []string{
				"a/seems_down/everything", "a/seems_down/labelled",
				"a/recovered/everything", "a/recovered/labelled",
				"b/seems_down/everything", "b/seems_down/site-b",
				"b/down/down-only", "b/down/everything", "b/down/site-b",
				"b/recovered/down-only", "b/recovered/everything", "b/recovered/site-b",
				"c/seems_down/everything", "c/down/everything", "c/recovered/everything",
				"a/tls_expiring/everything",
				"/region.impaired/everything",
			}
			if !slices.Equal(have, want) {
				t.Fatalf("outbox rows:\n got %v\nwant %v", have, want)
			}
		})
	}
}

func TestNeverRebuilt(t *testing.T) {
	var p projector.Projection = outbox.New(outbox.Config{})
	if _, ok := p.(projector.NeverRebuilt); !ok {
		t.Fatal("the outbox must be NeverRebuilt")
	}
	if _, err := projector.Selected([]projector.Projection{p}, outbox.Name); !errors.Is(err, projector.ErrNotRebuildable) {
		t.Fatal(err)
	}
}
