package statemachine

import (
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/events"
)

func TestRegionWatchJudge(t *testing.T) {
	start := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	th := DefaultRegionThresholds()
	r := newRegionWatch(nil, nil, th, slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Time { return start })
	obs := func(region, site string, class events.Class, at time.Time) {
		r.observe(events.ObservationSummary{Region: region, SiteID: site, Class: class, StartedAt: at})
	}
	// Window 1: "eu" fails on 60 sites, "us" on 40 of 100 checks.
	for i := range 60 {
		obs("eu", fmt.Sprint("s", i), events.ClassMonitorResolver, start.Add(time.Second))
		obs("eu", fmt.Sprint("s", i), events.ClassConnectTimeout, start.Add(30*time.Second))
	}
	for i := range 100 {
		class := events.ClassOK
		if i < 40 {
			class = events.ClassTimeout
		}
		obs("us", fmt.Sprint("s", i), class, start.Add(2*time.Second))
	}
	// Before the grace period ends nothing is judged.
	if evs := r.judge(start.Add(th.Window + th.Grace/2)); len(evs) != 0 {
		t.Fatalf("judged an open window: %+v", evs)
	}
	evs := r.judge(start.Add(th.Window + th.Grace))
	if len(evs) != 1 || evs[0].Kind != events.KindRegionImpaired || evs[0].Region != "eu" || evs[0].Sites != 60 || !evs[0].At.Equal(start) {
		t.Fatalf("window 1: %+v", evs)
	}
	if again := (&regionWatch{th: th}).idFor(evs[0]); again != evs[0].ID {
		t.Error("a second instance would derive another ID")
	}
	r.record(evs[0])
	if !r.Impaired("eu", start.Add(5*time.Minute)) || r.Impaired("eu", start.Add(-time.Second)) || r.Impaired("us", start) {
		t.Error("Impaired does not follow the recorded event")
	}
	// Window 2: eu healthy again.
	w2 := start.Add(th.Window)
	for i := range 60 {
		obs("eu", fmt.Sprint("s", i), events.ClassOK, w2.Add(time.Second))
	}
	evs = r.judge(w2.Add(th.Window + th.Grace))
	if len(evs) != 1 || evs[0].Kind != events.KindRegionRecovered {
		t.Fatalf("window 2: %+v", evs)
	}
	r.record(evs[0])
	if r.Impaired("eu", w2.Add(time.Minute)) || !r.Impaired("eu", w2.Add(-time.Second)) {
		t.Error("the impaired period does not end at the recovery")
	}
}

// Observations of a window that began before the watch started are not
// judged: the watch did not see the whole window.
func TestRegionWatchSkipsPartialWindows(t *testing.T) {
	start := time.Date(2026, 11, 23, 10, 0, 30, 0, time.UTC)
	th := DefaultRegionThresholds()
	r := newRegionWatch(nil, nil, th, slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Time { return start })
	for i := range 100 {
		r.observe(events.ObservationSummary{Region: "eu", SiteID: fmt.Sprint(i), Class: events.ClassTimeout, StartedAt: start.Add(time.Second)})
	}
	if evs := r.judge(start.Add(time.Hour)); len(evs) != 0 {
		t.Errorf("judged a partial window: %+v", evs)
	}
}
