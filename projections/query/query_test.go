package query_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/projections/incidents"
	"github.com/vigil-dev/vigil/projections/internal/testenv"
	"github.com/vigil-dev/vigil/projections/projector"
	"github.com/vigil-dev/vigil/projections/query"
	"github.com/vigil-dev/vigil/projections/sitestatus"
	"github.com/vigil-dev/vigil/projections/uptime"
)

var t0 = time.Date(2026, 5, 28, 10, 0, 0, 0, time.UTC)

func ev(kind events.EventKind, site string, started, at time.Time, reason events.Reason) *events.SiteEvent {
	inc := events.DeriveID(started, "incident", site)
	e := &events.SiteEvent{ID: events.DeriveID(at, string(kind), inc), Kind: kind, SiteID: site, Bucket: events.Bucket(site), At: at,
		IncidentID: inc, StartedAt: &started, ObservationIDs: []string{}, Reason: reason}
	switch kind {
	case events.KindSeemsDown:
		e.State, e.Severity = events.StateSeemsDown, events.SeveritySeemsDown
	case events.KindDown:
		e.State, e.Severity = events.StateDown, events.SeverityDown
	default:
		e.State = events.StateUp
	}
	return e
}

func TestQueries(t *testing.T) {
	for _, s := range testenv.Stores(t) {
		t.Run(s.Name, func(t *testing.T) {
			ctx := context.Background()
			n := testenv.StartNATS(t)
			var msgs []events.Message
			// 25 sites: every 5th down, every 5th+1 seems down, the rest
			// recovered; site-00000 has a history of 3 incidents.
			for k := 1; k <= 3; k++ {
				st := t0.Add(-time.Duration(k) * 24 * time.Hour)
				msgs = append(msgs,
					ev(events.KindSeemsDown, "site-00000", st, st, ""),
					ev(events.KindDown, "site-00000", st, st.Add(2*time.Minute), ""),
					ev(events.KindRecovered, "site-00000", st, st.Add(time.Duration(10*k)*time.Minute), events.ReasonRecovered))
			}
			for i := 0; i < 25; i++ {
				site := fmt.Sprintf("site-%05d", i)
				st := t0.Add(time.Duration(i) * time.Minute)
				msgs = append(msgs, ev(events.KindSeemsDown, site, st, st, ""))
				switch i % 5 {
				case 0:
					msgs = append(msgs, ev(events.KindDown, site, st, st.Add(2*time.Minute), ""))
				case 1:
				default:
					msgs = append(msgs, ev(events.KindRecovered, site, st, st.Add(time.Minute), events.ReasonProbeCleared))
				}
			}
			n.Publish(t, msgs...)
			now := t0.Add(2 * time.Hour)
			r, err := projector.New(s.DB, n.JS, []projector.Projection{sitestatus.New(), incidents.New(), uptime.New(uptime.Config{Now: func() time.Time { return now }})},
				projector.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- r.Run(rctx) }()
			for lag, err := r.Lag(ctx); err != nil || lag > 0; lag, err = r.Lag(ctx) {
				time.Sleep(10 * time.Millisecond)
			}
			cancel()
			<-done

			q := query.New(s.DB, query.Options{Now: func() time.Time { return now }})
			// Pagination by site ID visits every site once.
			var seen []string
			cursor := ""
			for pages := 0; ; pages++ {
				p, err := q.ListStatus(ctx, query.StatusFilter{Limit: 7, Cursor: cursor})
				if err != nil {
					t.Fatal(err)
				}
				for _, x := range p.Items {
					seen = append(seen, x.SiteID)
				}
				if p.Next == "" {
					break
				}
				cursor = p.Next
			}
			if len(seen) != 25 || seen[0] != "site-00000" || seen[24] != "site-00024" {
				t.Fatalf("pages: %v", seen)
			}
			// Worst first, filtered.
			var worst []query.SiteStatus
			cursor = ""
			for {
				p, err := q.ListStatus(ctx, query.StatusFilter{MinSeverity: 3, WorstFirst: true, Limit: 3, Cursor: cursor})
				if err != nil {
					t.Fatal(err)
				}
				worst = append(worst, p.Items...)
				if p.Next == "" {
					break
				}
				cursor = p.Next
			}
			if len(worst) != 10 || worst[0].State != "down" || worst[4].State != "down" || worst[5].State != "seems_down" || worst[9].SiteID != "site-00021" {
				t.Fatalf("worst first: %+v", worst)
			}
			p, err := q.ListStatus(ctx, query.StatusFilter{States: []string{"seems_down"}})
			if err != nil || len(p.Items) != 5 {
				t.Fatalf("seems_down filter: %d, %v", len(p.Items), err)
			}
			if _, err := q.ListStatus(ctx, query.StatusFilter{Cursor: "!!"}); !errors.Is(err, query.ErrBadCursor) {
				t.Fatalf("bad cursor: %v", err)
			}
			st, err := q.Status(ctx, "site-00005")
			if err != nil || st.State != "down" || st.Severity != 4 || st.IncidentID == "" || st.Since == nil || !st.Since.Equal(t0.Add(5*time.Minute)) {
				t.Fatalf("status: %+v, %v", st, err)
			}
			if _, err := q.Status(ctx, "nope"); !errors.Is(err, query.ErrNotFound) {
				t.Fatalf("missing site: %v", err)
			}
			// Incidents of a site, newest first, paginated.
			var incs []query.Incident
			cursor = ""
			for {
				p, err := q.Incidents(ctx, "site-00000", query.IncidentFilter{Limit: 2, Cursor: cursor})
				if err != nil {
					t.Fatal(err)
				}
				incs = append(incs, p.Items...)
				if p.Next == "" {
					break
				}
				cursor = p.Next
			}
			if len(incs) != 4 || incs[0].ClosedAt != nil || incs[0].State != "down" || incs[3].Resolution != "recovered" || incs[3].WorstSeverity != 4 {
				t.Fatalf("incidents: %+v", incs)
			}
			if incs[1].Duration(now) != 10*time.Minute || incs[1].RegionVotes != "" {
				t.Fatalf("incident: %+v", incs[1])
			}
			open, err := q.Incidents(ctx, "site-00000", query.IncidentFilter{OpenOnly: true})
			if err != nil || len(open.Items) != 1 {
				t.Fatalf("open incidents: %v %v", open, err)
			}
			// Uptime over 4 days: three closed incidents (10, 20, 30 min of
			// downtime) and the open one (since 10:00, now 12:00).
			rep, err := q.Uptime(ctx, "site-00000", t0.Add(-4*24*time.Hour), t0.Add(24*time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if !rep.To.Equal(now) || rep.Seconds.Down != 60*60+2*3600 || rep.Incidents != 4 || rep.MTTR != 20*time.Minute {
				t.Fatalf("uptime report: %+v", rep)
			}
			total := int64(now.Sub(t0.Add(-4*24*time.Hour)) / time.Second)
			if rep.Seconds.Total() != total || rep.MTBF != time.Duration(rep.Seconds.Up)*time.Second/4 {
				t.Fatalf("uptime totals: %+v", rep)
			}
			rolls, err := q.Rollups(ctx, "site-00000", uptime.Daily, t0.Add(-3*24*time.Hour), t0.Add(-24*time.Hour))
			if err != nil || len(rolls) != 3 || !rolls[0].Accounted || rolls[0].Seconds.Down != 1800 || rolls[1].Seconds.Down != 1200 || rolls[2].Seconds.Down != 600 {
				t.Fatalf("rollups: %+v %v", rolls, err)
			}
		})
	}
}
