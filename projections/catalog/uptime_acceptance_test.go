package catalog_test

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/projections/internal/testenv"
	"github.com/vigil-dev/vigil/projections/projector"
	"github.com/vigil-dev/vigil/projections/query"
	"github.com/vigil-dev/vigil/projections/uptime"
)

func siteEvent(kind events.EventKind, site, incident string, started, at time.Time) *events.SiteEvent {
	e := &events.SiteEvent{
		ID: events.DeriveID(at, string(kind), incident), Kind: kind, SiteID: site, Bucket: events.Bucket(site), At: at,
		IncidentID: incident, StartedAt: &started, ObservationIDs: []string{events.DeriveID(at, "obs", site)},
	}
	switch kind {
	case events.KindSeemsDown:
		e.State, e.Severity, e.FailureClass = events.StateSeemsDown, events.SeveritySeemsDown, events.ClassConnectTimeout
	case events.KindDown:
		e.State, e.Severity, e.FailureClass = events.StateDown, events.SeverityDown, events.ClassConnectTimeout
	case events.KindRecovered:
		e.State, e.Severity, e.Reason = events.StateUp, events.SeverityUp, events.ReasonRecovered
	}
	return e
}

func regionEvent(kind events.EventKind, region string, at time.Time) *events.RegionEvent {
	return &events.RegionEvent{ID: events.DeriveID(at, string(kind), region), Kind: kind, Region: region, At: at, Window: events.Duration(time.Minute)}
}

// In one hour: an incident that starts at :10, is confirmed at :12 and
// recovers at :16, and 2 minutes of unknown elsewhere (the primary region
// impaired from :30 to :32) give 52/58 = 89.655 % uptime.
func TestUptimeAcceptance(t *testing.T) {
	for _, s := range testenv.Stores(t) {
		t.Run(s.Name, func(t *testing.T) {
			ctx := context.Background()
			n := testenv.StartNATS(t)
			hour := time.Date(2026, 5, 28, 10, 0, 0, 0, time.UTC)
			at := func(min int) time.Time { return hour.Add(time.Duration(min) * time.Minute) }
			site, inc := "acme", events.DeriveID(at(10), "incident", "acme")
			// A false alarm in the same hour counts as up.
			fa := events.DeriveID(at(40), "incident", "acme")
			faRecovered := siteEvent(events.KindRecovered, site, fa, at(40), at(41))
			faRecovered.Reason = events.ReasonFalseAlarm
			n.Publish(t,
				siteEvent(events.KindSeemsDown, site, inc, at(10), at(10)),
				siteEvent(events.KindDown, site, inc, at(10), at(12)),
				siteEvent(events.KindRecovered, site, inc, at(10), at(16)),
				regionEvent(events.KindRegionImpaired, "eu", at(30)),
				// A region other than the primary impaired: its votes were
				// ignored, but no site time is unknown.
				regionEvent(events.KindRegionImpaired, "us", at(31)),
				regionEvent(events.KindRegionRecovered, "eu", at(32)),
				siteEvent(events.KindSeemsDown, site, fa, at(40), at(40)),
				faRecovered,
				regionEvent(events.KindRegionRecovered, "us", at(50)),
			)
			catchUp(t, s.DB, n, projections(), projector.Options{})

			var up, down, seems, unknown, maint, accounted int
			err := s.DB.R.QueryRowContext(ctx, `SELECT seconds_up, seconds_down, seconds_seems_down, seconds_unknown, seconds_maintenance, accounted
				FROM uptime_hourly WHERE site_id = ? AND period_start = ?`, site, s.DB.D.Time(hour)).Scan(&up, &down, &seems, &unknown, &maint, &accounted)
			if err != nil {
				t.Fatal(err)
			}
			if up != 52*60 || down != 6*60 || seems != 0 || unknown != 2*60 || maint != 0 || accounted != 1 {
				t.Fatalf("hour row: up %d down %d seems %d unknown %d maint %d accounted %d", up, down, seems, unknown, maint, accounted)
			}
			pct := uptime.Seconds{Up: int64(up), Down: int64(down), Unknown: int64(unknown)}.Percent()
			if got := fmt.Sprintf("%.3f", pct); got != "89.655" {
				t.Fatalf("uptime %% = %s, want 89.655", got)
			}
			if math.Abs(pct-100*52.0/58.0) > 1e-9 {
				t.Fatalf("uptime %% = %v, want 52/58", pct)
			}

			// The query layer, from the ledger, agrees.
			q := query.New(s.DB, query.Options{Now: clock})
			rep, err := q.Uptime(ctx, site, hour, hour.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if rep.Percent == nil || fmt.Sprintf("%.3f", *rep.Percent) != "89.655" {
				t.Fatalf("query uptime: %+v", rep)
			}
			if rep.Incidents != 1 || rep.MTTR != 6*time.Minute || rep.MTBF != 52*time.Minute {
				t.Fatalf("incidents %d, MTTR %v, MTBF %v", rep.Incidents, rep.MTTR, rep.MTBF)
			}
			// The day: only 2 minutes of the whole day unknown, 6 down.
			var dup, ddown, dunk int
			if err := s.DB.R.QueryRowContext(ctx, "SELECT seconds_up, seconds_down, seconds_unknown FROM uptime_daily WHERE site_id = ? AND period_start = ?",
				site, s.DB.D.Time(uptime.Daily.Start(hour))).Scan(&dup, &ddown, &dunk); err != nil {
				t.Fatal(err)
			}
			if dup != 86400-480 || ddown != 360 || dunk != 120 {
				t.Fatalf("day row: up %d down %d unknown %d", dup, ddown, dunk)
			}
			// A site with no incident that hour gets the fleet-wide unknown.
			rolls, err := q.Rollups(ctx, "other", uptime.Hourly, hour, hour.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if len(rolls) != 1 || rolls[0].Accounted || rolls[0].Seconds.Unknown != 120 || rolls[0].Seconds.Up != 3480 {
				t.Fatalf("rollups of a quiet site: %+v", rolls)
			}
		})
	}
}
