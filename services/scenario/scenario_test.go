// Package scenario tests Vigil end to end: the real scheduler, checkers in
// three regions and the state machine, on an embedded NATS server, checking
// local target servers whose behaviour each test scripts. Each scenario
// asserts the exact sequence of events.
//
// Time is compressed: sites are checked every 10 s and retried every 5 s (the
// fastest cadences the registry allows), so "a sustained outage" lasts tens of
// seconds rather than ten minutes; the transitions are the same.
package scenario

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/statemachine"
)

func TestIncidentScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole pipeline for about a minute")
	}
	p := startPipeline(t, pipelineOptions{})

	// A sustained outage seen from every region: Seems Down, Down (verified
	// by both other regions), then Recovered after recover_after successes.
	var outage atomic.Bool
	p.site("outage", failing(&outage))

	// A 20-second blip: one failed check, then the first retry succeeds.
	var blipArmed atomic.Bool
	p.site("blip", func(region string) int {
		if region == "local" && blipArmed.CompareAndSwap(true, false) {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})

	// Fails only from the primary region, for its first three checks: the
	// other regions disagree, so the incident closes as a false alarm.
	var localOnly atomic.Int32
	p.site("local-only", func(region string) int {
		if region == "local" && localOnly.Add(-1) >= 0 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})

	// 200 and 503 alternately on every check, from every region.
	var flips atomic.Int64
	p.site("flapping", func(string) int {
		if flips.Add(1)%2 == 0 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})

	// Let every site be checked healthy once, then start the trouble.
	time.Sleep(11 * time.Second)
	outage.Store(true)
	blipArmed.Store(true)
	localOnly.Store(3)

	p.waitFor(60*time.Second, "the outage to be confirmed Down", func() bool {
		return slices.ContainsFunc(p.siteEvents("outage"), func(e events.SiteEvent) bool { return e.Kind == events.KindDown })
	})
	time.Sleep(10 * time.Second) // the outage goes on
	outage.Store(false)
	p.waitFor(60*time.Second, "the outage to recover", func() bool { return len(p.siteEvents("outage")) >= 3 })
	p.waitFor(30*time.Second, "the false alarm", func() bool { return len(p.siteEvents("local-only")) >= 2 })
	time.Sleep(6 * time.Second) // room for any event that should not come

	evs := p.siteEvents("outage")
	if got := kinds(evs); got != "seems_down down recovered:recovered" {
		t.Errorf("outage: events %q", got)
	} else {
		down := evs[1]
		if !down.StartedAt.Equal(*evs[0].StartedAt) || down.IncidentID != evs[0].IncidentID || evs[2].IncidentID != down.IncidentID {
			t.Errorf("outage: one incident expected, started at the first failure: %+v", evs)
		}
		votes := map[string]events.Vote{}
		for _, v := range down.Votes {
			votes[v.Region] = v.Vote
		}
		if votes["eu"] != events.VoteDown || votes["us"] != events.VoteDown || down.SingleRegion {
			t.Errorf("outage: Down votes %+v", down.Votes)
		}
	}
	if got := kinds(p.siteEvents("blip")); got != "seems_down recovered:probe_cleared" {
		t.Errorf("blip: events %q", got)
	}
	evs = p.siteEvents("local-only")
	if got := kinds(evs); got != "seems_down recovered:false_alarm" {
		t.Errorf("primary-only failure: events %q", got)
	} else {
		// The first "up" makes quorum impossible (2 of 2 verifiers), so the
		// incident closes at once; a region yet to answer is "none".
		ups := 0
		for _, v := range evs[1].Votes {
			switch v.Vote {
			case events.VoteUp:
				ups++
			case events.VoteDown:
				t.Errorf("false alarm: a region voted down: %+v", v)
			}
		}
		if ups == 0 {
			t.Errorf("false alarm without an up vote: %+v", evs[1].Votes)
		}
	}
	// Flapping: incidents open and close, but never two at once.
	evs = p.siteEvents("flapping")
	open := ""
	opened := 0
	for _, e := range evs {
		switch e.Kind {
		case events.KindSeemsDown:
			if open != "" {
				t.Errorf("flapping: incident %s opened while %s was open: %s", e.IncidentID, open, kinds(evs))
			}
			open = e.IncidentID
			opened++
		case events.KindRecovered:
			if e.IncidentID != open {
				t.Errorf("flapping: closed %s while %s was open", e.IncidentID, open)
			}
			open = ""
		}
	}
	if opened < 2 {
		t.Errorf("flapping: only %d incidents in %s", opened, kinds(evs))
	}
}

// The primary region's resolver fails for every site: no site gets an
// incident (a resolver failure is the monitor's), and the region is marked
// impaired with an event; once the resolver works again it recovers.
func TestPrimaryResolverFailure(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole pipeline for about a minute")
	}
	th := statemachine.RegionThresholds{Window: 10 * time.Second, MinSites: 8, FailureRatio: 0.5, RecoverRatio: 0.25, Grace: 2 * time.Second}
	p := startPipeline(t, pipelineOptions{sm: []statemachine.Option{statemachine.WithRegionThresholds(th)}})
	p.resolver["local"].failing.Store(true)
	var ids []string
	for i := range 12 {
		id := "dns-" + string(rune('a'+i))
		p.site(id, nil)
		ids = append(ids, id)
	}
	p.waitFor(60*time.Second, "the region to be marked impaired", func() bool { return len(p.regionEvents()) >= 1 })
	p.resolver["local"].failing.Store(false)
	p.waitFor(60*time.Second, "the region to recover", func() bool { return len(p.regionEvents()) >= 2 })
	rev := p.regionEvents()
	if rev[0].Kind != events.KindRegionImpaired || rev[0].Region != "local" || rev[1].Kind != events.KindRegionRecovered {
		t.Errorf("region events %+v", rev)
	}
	for _, id := range ids {
		if evs := p.siteEvents(id); len(evs) != 0 {
			t.Errorf("site %s has events %q: a resolver failure is not downtime", id, kinds(evs))
		}
	}
}

// 1,000 sites at a 10 s interval for 60 s: every site is checked 6 times
// (±1) and lateness (start − due) p99 stays under a second. A drift and
// fairness check of scheduler and checkers together, not a speed target.
func TestFleetCheckedEveryInterval(t *testing.T) {
	if testing.Short() {
		t.Skip("checks 1,000 sites for over a minute")
	}
	p := startPipeline(t, pipelineOptions{regions: []string{"local"}})
	const n = 1000
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			p.site(fmt.Sprintf("fleet-%04d", i), nil)
		}()
	}
	wg.Wait()
	// Measure 60 s of due times, starting once every site is scheduled.
	from := time.Now().Add(12 * time.Second).Truncate(10 * time.Second)
	to := from.Add(60 * time.Second)
	time.Sleep(time.Until(to) + 8*time.Second)

	perSite := map[string]int{}
	var lateness []time.Duration
	oc, err := p.srv.JS.OrderedConsumer(context.Background(), events.StreamObservations, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.ObservationsAll}})
	if err != nil {
		t.Fatal(err)
	}
	for {
		batch, err := oc.FetchNoWait(1000)
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			var obs events.Observation
			if _, err := events.Decode(m.Headers(), m.Data(), &obs); err != nil {
				t.Fatal(err)
			}
			if obs.DueAt.Before(from) || !obs.DueAt.Before(to) {
				continue
			}
			perSite[obs.SiteID]++
			lateness = append(lateness, obs.StartedAt.Sub(obs.DueAt))
			if obs.Class != events.ClassOK {
				t.Errorf("site %s: %s %s", obs.SiteID, obs.Class, obs.Error)
			}
		}
		if got == 0 {
			break
		}
	}
	if len(perSite) != n {
		t.Errorf("%d of %d sites were checked", len(perSite), n)
	}
	for site, c := range perSite {
		if c < 5 || c > 7 {
			t.Errorf("site %s checked %d times in 60 s, want 6 ± 1", site, c)
		}
	}
	sort.Slice(lateness, func(i, j int) bool { return lateness[i] < lateness[j] })
	p99 := lateness[len(lateness)*99/100]
	t.Logf("%d checks; lateness p50 %s, p99 %s, max %s", len(lateness), lateness[len(lateness)/2], p99, lateness[len(lateness)-1])
	if p99 >= time.Second {
		t.Errorf("lateness p99 %s, want under 1s", p99)
	}
}
