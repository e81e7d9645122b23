package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/scheduler"
	"github.com/vigil-dev/vigil/tools/fleet"
)

// obsLite is the part of an observation the bench reads.
type obsLite struct {
	SiteID    string         `json:"site_id"`
	Purpose   events.Purpose `json:"purpose"`
	DueAt     time.Time      `json:"due_at"`
	StartedAt time.Time      `json:"started_at"`
	Class     events.Class   `json:"class"`
	Timings   struct {
		TotalMs float64 `json:"total_ms"`
	} `json:"timings"`
}

// eventLite is the part of a site event the bench reads.
type eventLite struct {
	Kind       events.EventKind `json:"kind"`
	SiteID     string           `json:"site_id"`
	At         time.Time        `json:"at"`
	IncidentID string           `json:"incident_id"`
	Reason     events.Reason    `json:"reason"`
}

// readStream calls fn with every message of a stream, in order, with an
// ordered consumer. It stops at the last message present when it started.
func readStream(ctx context.Context, js jetstream.JetStream, stream string, fn func(subject string, data []byte)) (int, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return 0, nil
	}
	oc, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return 0, err
	}
	it, err := oc.Messages(jetstream.PullMaxMessages(4096))
	if err != nil {
		return 0, err
	}
	defer it.Stop()
	n := 0
	for {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		msg, err := it.Next(jetstream.NextContext(rctx))
		cancel()
		if err != nil {
			return n, fmt.Errorf("read %s after %d messages: %w", stream, n, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return n, err
		}
		n++
		fn(msg.Subject(), msg.Data())
		if md.Sequence.Stream >= last || md.NumPending == 0 {
			return n, nil
		}
	}
}

// analysis accumulates what the observations say.
type analysis struct {
	plan     *fleet.Plan
	interval time.Duration
	ws, we   time.Time // the measurement window

	total     int
	undecoded int
	byPurpose map[events.Purpose]int
	byClass   map[events.Class]int
	// inWindow counts real checks (not command_expired) started in the window.
	inWindow  int
	expiredIn int
	okMsSum   float64
	okN       int
	lateness  []float64         // seconds, scheduled checks due in the window
	dues      map[int32][]int64 // site -> scheduled due instants (ms) in the window, real checks
	starts    [][]int64         // site -> start times (ms) of real checks
	newest    []int64           // site -> newest start (ms) at or before we; 0: never
}

func newAnalysis(plan *fleet.Plan, interval time.Duration, ws, we time.Time) *analysis {
	return &analysis{
		plan: plan, interval: interval, ws: ws, we: we,
		byPurpose: map[events.Purpose]int{},
		byClass:   map[events.Class]int{},
		dues:      map[int32][]int64{},
		starts:    make([][]int64, plan.Len()),
		newest:    make([]int64, plan.Len()),
	}
}

func (a *analysis) observation(data []byte) {
	var o obsLite
	if err := json.Unmarshal(data, &o); err != nil {
		a.undecoded++
		return
	}
	a.total++
	a.byPurpose[o.Purpose]++
	a.byClass[o.Class]++
	i, ok := a.plan.Index(o.SiteID)
	if !ok {
		a.undecoded++
		return
	}
	inWin := !o.StartedAt.Before(a.ws) && o.StartedAt.Before(a.we)
	if o.Class == events.ClassCommandExpired {
		if inWin {
			a.expiredIn++
		}
		return
	}
	start := o.StartedAt.UnixMilli()
	a.starts[i] = append(a.starts[i], start)
	if !o.StartedAt.After(a.we) && start > a.newest[i] {
		a.newest[i] = start
	}
	if inWin {
		a.inWindow++
		if o.Class == events.ClassOK {
			a.okMsSum += o.Timings.TotalMs
			a.okN++
		}
	}
	if o.Purpose == events.PurposeScheduled && !o.DueAt.Before(a.ws) && o.DueAt.Before(a.we) {
		a.lateness = append(a.lateness, o.StartedAt.Sub(o.DueAt).Seconds())
		a.dues[int32(i)] = append(a.dues[int32(i)], o.DueAt.UnixMilli())
	}
}

// Coverage says whether every site was checked every interval.
type Coverage struct {
	// ExpectedSlots are the scheduled due instants in the window of the
	// sites that stayed on their normal cadence (no incident, hence no fast
	// retries replacing their slots); CheckedSlots those checked.
	ExpectedSlots int `json:"expected_slots"`
	CheckedSlots  int `json:"checked_slots"`
	MissedSlots   int `json:"missed_slots"`
	// SitesMissingSlots is how many of those sites missed at least one.
	SitesMissingSlots int `json:"sites_missing_slots"`
	// SitesWithGap counts sites of any kind with a gap between checks
	// longer than 1.5 intervals within the window.
	SitesWithGap int `json:"sites_with_gap"`
	// MaxGapSeconds is the longest such gap.
	MaxGapSeconds float64 `json:"max_gap_seconds"`
	// ExampleMissed names a few sites that missed slots.
	ExampleMissed []string `json:"example_missed,omitempty"`
}

func (a *analysis) coverage(incidentSites map[int]bool) Coverage {
	var c Coverage
	ivMs := a.interval.Milliseconds()
	wsMs, weMs := a.ws.UnixMilli(), a.we.UnixMilli()
	for i := range a.plan.Len() {
		if a.plan.KeptHealthy(i) && !incidentSites[i] {
			id := a.plan.ID(i)
			got := a.dues[int32(i)]
			slices.Sort(got)
			got = slices.Compact(got)
			missed := 0
			for due := scheduler.NextDue(id, a.interval, a.ws).UnixMilli(); due < weMs; due += ivMs {
				c.ExpectedSlots++
				if _, ok := slices.BinarySearch(got, due); ok {
					c.CheckedSlots++
				} else {
					missed++
				}
			}
			c.MissedSlots += missed
			if missed > 0 {
				c.SitesMissingSlots++
				if len(c.ExampleMissed) < 5 {
					c.ExampleMissed = append(c.ExampleMissed, id)
				}
			}
		}
		// Gaps: from the last check before the window (or the window's
		// start) through the checks in it to the window's end.
		s := a.starts[i]
		slices.Sort(s)
		prev := wsMs
		if k, _ := slices.BinarySearch(s, wsMs); k > 0 {
			prev = s[k-1]
		}
		maxGap := int64(0)
		for _, t := range s {
			if t < wsMs {
				continue
			}
			if t > weMs {
				break
			}
			maxGap = max(maxGap, t-prev)
			prev = t
		}
		maxGap = max(maxGap, weMs-prev)
		if float64(maxGap) > 1.5*float64(ivMs) {
			c.SitesWithGap++
		}
		c.MaxGapSeconds = max(c.MaxGapSeconds, float64(maxGap)/1000)
	}
	return c
}

// Freshness is the age of each site's newest observation at the end of the
// window.
type Freshness struct {
	P50Seconds   float64 `json:"p50_seconds"`
	P99Seconds   float64 `json:"p99_seconds"`
	MaxSeconds   float64 `json:"max_seconds"`
	NeverChecked int     `json:"never_checked"`
}

func (a *analysis) freshness() Freshness {
	var f Freshness
	ages := make([]float64, 0, len(a.newest))
	weMs := a.we.UnixMilli()
	for _, n := range a.newest {
		if n == 0 {
			f.NeverChecked++
			continue
		}
		ages = append(ages, float64(weMs-n)/1000)
	}
	slices.Sort(ages)
	f.P50Seconds, f.P99Seconds, f.MaxSeconds = pct(ages, 0.5), pct(ages, 0.99), pct(ages, 1)
	return f
}

// Lateness is start − due of scheduled checks due in the window.
type Lateness struct {
	N          int     `json:"n"`
	P50Seconds float64 `json:"p50_seconds"`
	P99Seconds float64 `json:"p99_seconds"`
	MaxSeconds float64 `json:"max_seconds"`
}

func (a *analysis) latenessStats() Lateness {
	s := slices.Clone(a.lateness)
	slices.Sort(s)
	return Lateness{N: len(s), P50Seconds: pct(s, 0.5), P99Seconds: pct(s, 0.99), MaxSeconds: pct(s, 1)}
}

// pct returns the q-quantile of sorted s (nearest rank); 0 for none.
func pct(s []float64, q float64) float64 {
	if len(s) == 0 {
		return 0
	}
	k := int(math.Ceil(q*float64(len(s)))) - 1
	return round3(s[max(0, min(k, len(s)-1))])
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// Events summarises EVENTS.
type Events struct {
	Total  int            `json:"total"`
	ByKind map[string]int `json:"by_kind"`
	// False are events on sites the script kept healthy (and no control
	// incident touched), plus region events: none should exist.
	False         int      `json:"false_events"`
	FalseExamples []string `json:"false_examples,omitempty"`
	Region        int      `json:"region_events"`
	// SitesWithEvents counts sites with any event, by their scripted kind.
	SitesWithEvents map[string]int `json:"sites_with_events_by_kind"`
	// ScenarioSites counts the sites of each scripted kind.
	ScenarioSites map[string]int `json:"scenario_sites_by_kind"`
}

// Detection is how fast control-API incidents were noticed.
type Detection struct {
	Incidents int `json:"incidents"`
	// SeemsDown and Down count incidents with such an event; the latencies
	// run from the outage's start to the event's time (the observation's).
	SeemsDown       int     `json:"seems_down"`
	Down            int     `json:"down"`
	SeemsDownP50Sec float64 `json:"seems_down_p50_seconds"`
	SeemsDownMaxSec float64 `json:"seems_down_max_seconds"`
	DownP50Sec      float64 `json:"down_p50_seconds"`
	DownMaxSec      float64 `json:"down_max_seconds"`
}

func readEvents(ctx context.Context, js jetstream.JetStream, plan *fleet.Plan, incidents map[int]time.Time) (Events, Detection, error) {
	ev := Events{ByKind: map[string]int{}, SitesWithEvents: map[string]int{}, ScenarioSites: map[string]int{}}
	for k, n := range plan.Counts() {
		ev.ScenarioSites[k.String()] = n
	}
	seen := map[int]bool{}
	firstSD, firstDown := map[int]time.Time{}, map[int]time.Time{}
	_, err := readStream(ctx, js, events.StreamEvents, func(subject string, data []byte) {
		ev.Total++
		if strings.HasPrefix(subject, "vigil.events.region.") {
			ev.Region++
			ev.False++
			ev.ByKind["region."+subject[strings.LastIndexByte(subject, '.')+1:]]++
			if len(ev.FalseExamples) < 5 {
				ev.FalseExamples = append(ev.FalseExamples, subject)
			}
			return
		}
		var e eventLite
		if err := json.Unmarshal(data, &e); err != nil {
			ev.ByKind["undecodable"]++
			return
		}
		ev.ByKind[string(e.Kind)]++
		i, ok := plan.Index(e.SiteID)
		if !ok {
			ev.False++
			return
		}
		if !seen[i] {
			seen[i] = true
			ev.SitesWithEvents[plan.Kind(i).String()]++
		}
		start, incident := incidents[i]
		if plan.KeptHealthy(i) && !incident {
			ev.False++
			if len(ev.FalseExamples) < 5 {
				ev.FalseExamples = append(ev.FalseExamples, e.SiteID+" "+string(e.Kind))
			}
			return
		}
		if incident && !e.At.Before(start) {
			switch e.Kind {
			case events.KindSeemsDown:
				if _, ok := firstSD[i]; !ok {
					firstSD[i] = e.At
				}
			case events.KindDown:
				if _, ok := firstDown[i]; !ok {
					firstDown[i] = e.At
				}
			}
		}
	})
	d := Detection{Incidents: len(incidents)}
	var sd, dn []float64
	for i, at := range firstSD {
		sd = append(sd, at.Sub(incidents[i]).Seconds())
	}
	for i, at := range firstDown {
		dn = append(dn, at.Sub(incidents[i]).Seconds())
	}
	slices.Sort(sd)
	slices.Sort(dn)
	d.SeemsDown, d.Down = len(sd), len(dn)
	d.SeemsDownP50Sec, d.SeemsDownMaxSec = pct(sd, 0.5), pct(sd, 1)
	d.DownP50Sec, d.DownMaxSec = pct(dn, 0.5), pct(dn, 1)
	return ev, d, err
}
