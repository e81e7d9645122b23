package projector_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/projections/internal/testenv"
	"github.com/vigil-dev/vigil/projections/projector"
	"github.com/vigil-dev/vigil/projections/sitestatus"
)

var t0 = time.Date(2026, 5, 28, 10, 0, 0, 0, time.UTC)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func seemsDown(site string, min int) *events.SiteEvent {
	at := t0.Add(time.Duration(min) * time.Minute)
	inc := events.DeriveID(at, "incident", site)
	return &events.SiteEvent{ID: events.DeriveID(at, "sd", site), Kind: events.KindSeemsDown, SiteID: site, Bucket: events.Bucket(site),
		At: at, State: events.StateSeemsDown, Severity: events.SeveritySeemsDown, IncidentID: inc, StartedAt: &at, ObservationIDs: []string{}}
}

func raw(subject string, hdr map[string]string, data string) *nats.Msg {
	m := nats.NewMsg(subject)
	for k, v := range hdr {
		m.Header.Set(k, v)
	}
	m.Data = []byte(data)
	return m
}

func run(t *testing.T, r *projector.Runner) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		lag, err := r.Lag(context.Background())
		if err == nil && lag == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lag %d, %v", lag, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Undecodable messages, unknown types and messages whose headers and data
// disagree are quarantined with a reason; the events around them apply.
func TestPoisonIsQuarantined(t *testing.T) {
	for _, s := range testenv.Stores(t) {
		t.Run(s.Name, func(t *testing.T) {
			ctx := context.Background()
			n := testenv.StartNATS(t)
			ce := func(id, typ string) map[string]string {
				return map[string]string{"ce-specversion": "1.0", "ce-id": id, "ce-type": typ, "ce-source": "/x", "content-type": "application/json"}
			}
			n.Publish(t, seemsDown("a", 0))
			n.PublishRaw(t, raw("vigil.events.1.b.down", nil, "not a cloudevent"))
			n.PublishRaw(t, raw("vigil.events.1.b.down", ce("u1", "dev.vigil.site.exploded.v9"), "{}"))
			good := seemsDown("c", 1)
			n.PublishRaw(t, raw("vigil.events.1.c.seems_down", ce("other-id", events.TypeSeemsDown), mustJSON(t, good)))
			n.PublishRaw(t, raw("vigil.events.1.d.seems_down", ce("x", events.TypeSeemsDown), `{"id":"x","kind":"seems_down","site_id":"d.d","at":"2026-05-28T10:00:00Z","incident_id":"i"}`))
			n.Publish(t, seemsDown("e", 2))
			r, err := projector.New(s.DB, n.JS, []projector.Projection{sitestatus.New()}, projector.Options{Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			run(t, r)
			q, err := projector.ListQuarantine(ctx, s.DB, sitestatus.Name, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(q) != 4 {
				t.Fatalf("quarantined %d: %+v", len(q), q)
			}
			for i, want := range []string{"read cloudevent", "unknown event type", "do not match", "site id"} {
				if !strings.Contains(q[i].Reason, want) || q[i].Seq != uint64(i+2) {
					t.Errorf("quarantine %d: %+v, want reason with %q", i, q[i], want)
				}
			}
			var sites int
			if err := s.DB.R.QueryRowContext(ctx, "SELECT COUNT(*) FROM site_status WHERE site_id IN ('a', 'e')").Scan(&sites); err != nil || sites != 2 {
				t.Fatalf("sites around the poison: %d, %v", sites, err)
			}
			if st := r.Stats(); st.Quarantined != 4 || st.Applied != 2 || st.LastSeq != 6 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// A paused runner applies nothing until resumed, then reloads its checkpoint
// and catches up.
func TestPauseResume(t *testing.T) {
	ctx := context.Background()
	n := testenv.StartNATS(t)
	db := testenv.SQLite(t)
	r, err := projector.New(db, n.JS, []projector.Projection{sitestatus.New()}, projector.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	n.Publish(t, seemsDown("a", 0))
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	waitLag := func(want uint64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			lag, err := r.Lag(ctx)
			if err == nil && lag == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("lag %d, want %d (%v)", lag, want, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitLag(0)
	resume, err := r.Pause(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n.Publish(t, seemsDown("b", 1), seemsDown("c", 2))
	time.Sleep(200 * time.Millisecond)
	waitLag(2)
	resume()
	resume() // idempotent
	waitLag(0)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestNewRejectsDuplicateNames(t *testing.T) {
	if _, err := projector.New(nil, nil, []projector.Projection{sitestatus.New(), sitestatus.New()}, projector.Options{}); err == nil {
		t.Fatal("two projections with one name accepted")
	}
	if _, err := projector.New(nil, nil, nil, projector.Options{}); err == nil {
		t.Fatal("no projections accepted")
	}
}

func mustJSON(t *testing.T, m events.Message) string {
	msg, err := events.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(msg.Data)
}
