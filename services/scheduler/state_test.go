package scheduler

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/events"
)

func TestNextDueStableAndAligned(t *testing.T) {
	base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	for _, iv := range []time.Duration{10 * time.Second, time.Minute, 5 * time.Minute, 24 * time.Hour} {
		for i := range 200 {
			id := fmt.Sprintf("site-%d", i)
			now := base.Add(time.Duration(i) * 7919 * time.Millisecond)
			due := NextDue(id, iv, now)
			if due.Before(now) || !due.Before(now.Add(iv)) {
				t.Fatalf("%s every %s: NextDue(%v) = %v, want within [now, now+interval)", id, iv, now, due)
			}
			if again := NextDue(id, iv, now); !again.Equal(due) {
				t.Fatalf("NextDue not stable: %v then %v", due, again)
			}
			// Aligned: (t − phase) mod interval == 0, from the epoch.
			if r := (due.UnixMilli() - Phase(id, iv).Milliseconds()) % iv.Milliseconds(); r != 0 {
				t.Fatalf("%s: due %v is %dms off its phase", id, due, r)
			}
			// A due instant is its own next due; the following one is one
			// interval later; any instant in between maps to the latter.
			if got := NextDue(id, iv, due); !got.Equal(due) {
				t.Fatalf("NextDue(due) = %v, want %v", got, due)
			}
			if got := NextDue(id, iv, due.Add(time.Millisecond)); !got.Equal(due.Add(iv)) {
				t.Fatalf("next = %v, want previous + interval %v", got, due.Add(iv))
			}
			// The phase does not depend on when it is computed (restarts).
			if got := NextDue(id, iv, due.Add(-iv+time.Millisecond)); !got.Equal(due) {
				t.Fatalf("from an earlier start: %v, want %v", got, due)
			}
		}
	}
}

// TestPhaseSpreadUniform checks that many sites' due instants spread evenly
// over the interval, so the check rate is flat.
func TestPhaseSpreadUniform(t *testing.T) {
	const sites, bins = 20000, 20
	iv := 10 * time.Second
	var hist [bins]int
	for i := range sites {
		p := Phase(fmt.Sprintf("site-%06d", i), iv)
		hist[int(p*bins/iv)]++
	}
	expected := float64(sites) / bins
	chi2 := 0.0
	for b, n := range hist {
		chi2 += (float64(n) - expected) * (float64(n) - expected) / expected
		if math.Abs(float64(n)-expected) > 0.1*expected {
			t.Errorf("bin %d holds %d phases, want %.0f ±10%%", b, n, expected)
		}
	}
	// 19 degrees of freedom: p = 0.001 at 43.8.
	if chi2 > 43.8 {
		t.Errorf("phase histogram chi² = %.1f over %d bins, not uniform: %v", chi2, bins, hist)
	}
	t.Logf("phase histogram of %d sites over %d bins: %v (chi² %.1f)", sites, bins, hist, chi2)
}

func TestDeadlineWindow(t *testing.T) {
	for _, c := range []struct{ iv, want time.Duration }{
		{2 * time.Second, 5 * time.Second},
		{10 * time.Second, 5 * time.Second},
		{30 * time.Second, 15 * time.Second},
		{5 * time.Minute, 60 * time.Second},
		{24 * time.Hour, 60 * time.Second},
	} {
		if got := DeadlineWindow(c.iv); got != c.want {
			t.Errorf("DeadlineWindow(%s) = %s, want %s", c.iv, got, c.want)
		}
	}
}

// testState returns a state owning every bucket.
func testState() *state {
	s := newState("local")
	for b := range events.Buckets {
		s.acquire(b)
	}
	return s
}

func addSite(s *state, id string, iv time.Duration, seq uint64, nowMs int64) {
	s.applySite(siteUpdate{id: id, seq: seq, site: events.Site{ID: id, URL: "https://" + id, Interval: events.Duration(iv)}, fromMs: nowMs}, nowMs)
}

func TestPopDueNoDrift(t *testing.T) {
	s := testState()
	start := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC).UnixMilli()
	iv := 10 * time.Second
	addSite(s, "a", iv, 1, start)
	first := NextDue("a", iv, time.UnixMilli(start)).UnixMilli()
	var dues []int64
	// Ticks every 100ms with jitter; never late enough to miss.
	for now := start; now < start+10*iv.Milliseconds(); now += 100 + (now/7)%37 {
		cmds, missed := s.popDue(now, 100)
		if missed != 0 {
			t.Fatalf("missed %d", missed)
		}
		for _, c := range cmds {
			dues = append(dues, c.DueAt.UnixMilli())
			if lag := now - c.DueAt.UnixMilli(); lag < 0 || lag > 200 {
				t.Fatalf("command due %v popped at %d: lag %dms", c.DueAt, now, lag)
			}
			if want := c.DueAt.Add(DeadlineWindow(iv)); !c.Deadline.Equal(want) {
				t.Fatalf("deadline %v, want %v", c.Deadline, want)
			}
			if c.ID != events.CommandID("a", "local", events.PurposeScheduled, c.DueAt) {
				t.Fatalf("command ID %s is not the deterministic one", c.ID)
			}
		}
	}
	if len(dues) < 9 {
		t.Fatalf("got %d commands over 10 intervals", len(dues))
	}
	for i, d := range dues {
		if want := first + int64(i)*iv.Milliseconds(); d != want {
			t.Fatalf("command %d due at %d, want %d (previous + interval)", i, d, want)
		}
	}
}

func TestPopDueStallSkipsAndCounts(t *testing.T) {
	s := testState()
	start := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC).UnixMilli()
	iv := 10 * time.Second
	for i := range 100 {
		addSite(s, fmt.Sprintf("s%d", i), iv, 1, start)
	}
	// Stalled for one minute: every slot but the ones still within their
	// 5s deadline is skipped and counted; nothing is sent late.
	now := start + 60_000
	cmds, missed := s.popDue(now, 10_000)
	for _, c := range cmds {
		if !c.Deadline.After(time.UnixMilli(now)) {
			t.Fatalf("command past its deadline sent: due %v deadline %v now %v", c.DueAt, c.Deadline, time.UnixMilli(now))
		}
	}
	// 100 sites × 6 slots in the minute; those in the last 5s are sent.
	if total := len(cmds) + missed; total < 590 || total > 610 {
		t.Fatalf("sent %d + missed %d = %d, want about 600 slots", len(cmds), missed, total)
	}
	if len(cmds) < 30 || len(cmds) > 70 {
		t.Fatalf("sent %d commands still within deadline, want about 50", len(cmds))
	}
	t.Logf("after a 60s stall: %d sent within deadline, %d skipped and counted", len(cmds), missed)
	// Back on schedule: the next tick sends nothing stale.
	if _, missed = s.popDue(now+100, 10_000); missed != 0 {
		t.Fatalf("missed %d after catching up", missed)
	}
}

func TestPopDueLimitCarriesOver(t *testing.T) {
	s := testState()
	start := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC).UnixMilli()
	iv := 2 * time.Minute // deadline window 60s
	now := start + 30_000
	want := 0
	for i := range 1000 {
		id := fmt.Sprintf("s%d", i)
		addSite(s, id, iv, 1, start)
		if NextDue(id, iv, time.UnixMilli(start)).UnixMilli() <= now+1900 {
			want++
		}
	}
	// About 250 slots are due at once; 100 go out per tick, the rest on
	// the following ticks, none past its deadline.
	total := 0
	for tick := range 20 {
		cmds, missed := s.popDue(now+int64(tick)*100, 100)
		if missed != 0 {
			t.Fatalf("missed %d", missed)
		}
		if len(cmds) > 100 {
			t.Fatalf("tick returned %d commands over the limit", len(cmds))
		}
		total += len(cmds)
	}
	if total != want {
		t.Fatalf("published %d of %d due commands over 20 limited ticks", total, want)
	}
}

func TestRescheduleAndStop(t *testing.T) {
	s := testState()
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC).UnixMilli()
	addSite(s, "a", 10*time.Second, 5, now)
	tg := s.lookup("a")
	if tg.next != NextDue("a", 10*time.Second, time.UnixMilli(now)).UnixMilli() {
		t.Fatal("first slot is not the first aligned instant ≥ now")
	}
	// An older configuration is ignored.
	addSite(s, "a", 20*time.Second, 4, now)
	if tg.interval != 10_000 {
		t.Fatal("older configuration applied")
	}
	// A new interval moves the site to its new phase slot.
	addSite(s, "a", 20*time.Second, 6, now)
	if want := NextDue("a", 20*time.Second, time.UnixMilli(now)).UnixMilli(); tg.next != want {
		t.Fatalf("after interval change next = %d, want %d", tg.next, want)
	}
	// Deleted: no more commands; an older create delivered late does not
	// resurrect it.
	s.applySite(siteUpdate{id: "a", seq: 7, stop: true}, now)
	addSite(s, "a", 20*time.Second, 6, now)
	if cmds, _ := s.popDue(now+time.Hour.Milliseconds(), 1000); len(cmds) != 0 || s.active != 0 {
		t.Fatalf("deleted site still scheduled: %d commands, %d active", len(cmds), s.active)
	}
	// Losing the bucket forgets everything.
	addSite(s, "b", 10*time.Second, 1, now)
	s.lose(events.Bucket("b"))
	if s.active != 0 || s.lookup("b") != nil {
		t.Fatal("lost bucket's site kept")
	}
	if cmds, _ := s.popDue(now+time.Hour.Milliseconds(), 1000); len(cmds) != 0 {
		t.Fatal("lost bucket's site still scheduled")
	}
}

func TestCadenceOverrideSlots(t *testing.T) {
	s := testState()
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC).UnixMilli()
	addSite(s, "a", 5*time.Minute, 1, now)
	until := time.UnixMilli(now + 60_000)
	s.setCadence("a", &events.Cadence{SiteID: "a", Interval: events.Duration(10 * time.Second), IncidentID: "inc1", Until: until}, now)
	var retries, normal []*events.CheckCommand
	for t0 := now; t0 < now+10*60_000; t0 += 100 {
		cmds, missed := s.popDue(t0, 100)
		if missed != 0 {
			t.Fatalf("missed %d", missed)
		}
		for _, c := range cmds {
			if c.Purpose == events.PurposeRetry {
				retries = append(retries, c)
			} else {
				normal = append(normal, c)
			}
		}
	}
	if len(retries) < 5 || len(retries) > 7 {
		t.Fatalf("%d retry commands in a 60s override at 10s, want 6", len(retries))
	}
	for i, c := range retries {
		if c.IncidentID != "inc1" || !c.DueAt.Before(until) {
			t.Fatalf("retry %d: %+v", i, c)
		}
		if i > 0 && c.DueAt.Sub(retries[i-1].DueAt) != 10*time.Second {
			t.Fatalf("retry gap %s", c.DueAt.Sub(retries[i-1].DueAt))
		}
		if c.ID != events.CommandID("a", "local", events.PurposeRetry, c.DueAt) {
			t.Fatal("retry command ID not deterministic")
		}
	}
	// After Until the site is back on its own 5-minute slots.
	if len(normal) < 1 {
		t.Fatal("no scheduled commands after the override expired")
	}
	for _, c := range normal {
		if c.DueAt.Before(until) {
			t.Fatalf("scheduled command at %v during the override", c.DueAt)
		}
		if !c.DueAt.Equal(NextDue("a", 5*time.Minute, c.DueAt)) {
			t.Fatal("scheduled command off its phase")
		}
	}
}
