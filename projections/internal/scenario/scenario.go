// Package scenario generates deterministic streams of Vigil events for the
// projections' tests and benchmarks: sites going through every kind of
// incident (cleared by a probe, false alarms, confirmed outages, outages in
// maintenance windows, manual closes, long outages across hours), TLS
// advisories, and region impairments.
package scenario

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/vigil-dev/vigil/events"
)

// Options shape a scenario.
type Options struct {
	// Sites and IncidentsPerSite size it.
	Sites            int
	IncidentsPerSite int
	// Start is when the first incidents open.
	Start time.Time
	Seed  uint64
	// Regions are the checker regions; the first is the primary.
	Regions []string
	// Impairments is how many region impairments to add.
	Impairments int
	// TLS adds TLS advisories.
	TLS bool
}

// Generated is a scenario's events, in the order they are published.
type Generated struct {
	Messages []events.Message
	// End is the time of the last event.
	End time.Time
}

type timed struct {
	at  time.Time
	msg events.Message
	ord int
}

// Generate builds the scenario.
func Generate(o Options) Generated {
	if len(o.Regions) == 0 {
		o.Regions = []string{"eu", "us", "ap"}
	}
	if o.Start.IsZero() {
		o.Start = time.Date(2026, 5, 20, 0, 0, 0, 0, time.UTC)
	}
	rng := rand.New(rand.NewPCG(o.Seed, o.Seed^0x5eed))
	var out []timed
	add := func(m events.Message, at time.Time) { out = append(out, timed{at, m, len(out)}) }
	for s := 0; s < o.Sites; s++ {
		site := fmt.Sprintf("site-%05d", s)
		t := o.Start.Add(time.Duration(rng.IntN(3600)) * time.Second)
		for i := 0; i < o.IncidentsPerSite; i++ {
			kind := (s + i) % 7
			started := t
			incident := events.DeriveID(started, "incident", site, started.Format(time.RFC3339Nano))
			maint := kind == 3
			sd := &events.SiteEvent{
				ID: events.DeriveID(started, "seems_down", incident), Kind: events.KindSeemsDown, SiteID: site,
				Bucket: events.Bucket(site), At: started, State: events.StateSeemsDown, Severity: events.SeveritySeemsDown,
				IncidentID: incident, StartedAt: &started, FailureClass: events.ClassConnectRefused,
				ObservationIDs: []string{events.DeriveID(started, "obs", site)}, Maintenance: maint,
			}
			if kind == 2 {
				sd.FailureClass, sd.FailureStatus = events.ClassHTTPStatus, 503
			}
			add(sd, started)
			var end time.Time
			var reason events.Reason
			confirmed := false
			switch kind {
			case 0: // cleared by a local success
				end, reason = started.Add(30*time.Second+time.Duration(rng.IntN(60))*time.Second), events.ReasonProbeCleared
			case 1: // verifiers disagreed
				end, reason = started.Add(90*time.Second+time.Duration(rng.IntN(60))*time.Second), events.ReasonFalseAlarm
			case 4: // closed by hand before confirmation
				end, reason = started.Add(5*time.Minute), events.ReasonManual
			default: // confirmed outages; kind 5 lasts hours
				confirmed = true
				dur := 4*time.Minute + time.Duration(rng.IntN(40))*time.Minute
				if kind == 5 {
					dur = 2*time.Hour + time.Duration(rng.IntN(180))*time.Minute
				}
				end, reason = started.Add(dur), events.ReasonRecovered
			}
			if confirmed {
				at := started.Add(2 * time.Minute)
				votes := []events.RegionVote{
					{Region: o.Regions[0], Vote: events.VoteDown, Class: sd.FailureClass},
					{Region: o.Regions[1%len(o.Regions)], Vote: events.VoteDown, Class: sd.FailureClass},
					{Region: o.Regions[2%len(o.Regions)], Vote: events.VoteNone},
				}
				add(&events.SiteEvent{
					ID: events.DeriveID(at, "down", incident), Kind: events.KindDown, SiteID: site, Bucket: events.Bucket(site),
					At: at, State: events.StateDown, Severity: events.SeverityDown, IncidentID: incident, StartedAt: &started,
					FailureClass: sd.FailureClass, FailureStatus: sd.FailureStatus, Votes: votes,
					ObservationIDs: []string{events.DeriveID(at, "obs", site)}, Maintenance: maint,
				}, at)
			}
			add(&events.SiteEvent{
				ID: events.DeriveID(end, "recovered", incident), Kind: events.KindRecovered, SiteID: site, Bucket: events.Bucket(site),
				At: end, State: events.StateUp, Severity: events.SeverityUp, IncidentID: incident, StartedAt: &started,
				Reason: reason, ObservationIDs: []string{events.DeriveID(end, "obs", site)}, Maintenance: maint,
			}, end)
			if o.TLS && kind == 6 {
				na := end.Add(10 * 24 * time.Hour)
				days := 10
				at := end.Add(time.Minute)
				add(&events.SiteEvent{
					ID: events.DeriveID(at, "tls", site), Kind: events.KindTLSExpiring, SiteID: site, Bucket: events.Bucket(site),
					At: at, State: events.StateUp, Severity: events.SeverityWarning, CertNotAfter: &na, CertDaysLeft: &days,
					ObservationIDs: []string{events.DeriveID(at, "obs", site)},
				}, at)
			}
			t = end.Add(10*time.Minute + time.Duration(rng.IntN(180))*time.Minute)
		}
	}
	span := time.Duration(max(o.IncidentsPerSite, 1)) * 2 * time.Hour
	for i := 0; i < o.Impairments; i++ {
		region := o.Regions[i%len(o.Regions)]
		at := o.Start.Add(time.Duration(rng.Int64N(int64(span)))).Truncate(time.Second)
		end := at.Add(time.Duration(2+rng.IntN(30)) * time.Minute)
		add(&events.RegionEvent{ID: events.DeriveID(at, "impaired", region), Kind: events.KindRegionImpaired, Region: region, At: at,
			Window: events.Duration(time.Minute), Checks: 1000, Failures: 900, Sites: 800}, at)
		add(&events.RegionEvent{ID: events.DeriveID(end, "region-recovered", region), Kind: events.KindRegionRecovered, Region: region, At: end,
			Window: events.Duration(time.Minute), Checks: 1000, Failures: 10, Sites: 8}, end)
	}
	slices.SortStableFunc(out, func(a, b timed) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.ord - b.ord
	})
	g := Generated{Messages: make([]events.Message, len(out))}
	for i, x := range out {
		g.Messages[i] = x.msg
		g.End = x.at
	}
	return g
}

// ForEvents sizes a scenario to about n events.
func ForEvents(n int, seed uint64, start time.Time) Generated {
	perSite := 20
	sites := max(1, n/(perSite*5/2))
	// One region impairment per 100,000 events: an impairment of the primary
	// region re-accounts every site-period it covers, which is rare in
	// production and would dominate the figure if it were frequent.
	g := Generate(Options{Sites: sites, IncidentsPerSite: perSite, Seed: seed, Start: start, Impairments: max(2, n/100000), TLS: true})
	if len(g.Messages) > n {
		g.Messages = g.Messages[:n]
	}
	return g
}
