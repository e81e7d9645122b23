package scheduler_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/internal/natstest"
	"github.com/vigil-dev/vigil/services/lease"
	"github.com/vigil-dev/vigil/services/scheduler"
	"github.com/vigil-dev/vigil/services/topology"
)

// commandsAfter returns the commands of site due after t.
func commandsAfter(c *collector, site string, t time.Time) []received {
	var out []received
	for _, r := range c.all(site) {
		if r.cmd.DueAt.After(t) {
			out = append(out, r)
		}
	}
	return out
}

// checkCadence asserts that rs are consecutive slots of site at interval iv:
// aligned to its phase and exactly one interval apart.
func checkCadence(t *testing.T, rs []received, site string, iv time.Duration) {
	t.Helper()
	for i, r := range rs {
		if want := scheduler.NextDue(site, iv, r.cmd.DueAt); !want.Equal(r.cmd.DueAt) {
			t.Errorf("command due %v is off the %s phase of %s", r.cmd.DueAt, iv, site)
		}
		if i > 0 {
			if gap := r.cmd.DueAt.Sub(rs[i-1].cmd.DueAt); gap != iv {
				t.Errorf("gap between commands %s, want %s", gap, iv)
			}
		}
	}
}

func TestSiteLifecycle(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, true)
	checks := collect(t, srv.JS)
	reg := prometheus.NewRegistry()
	r := startScheduler(t, srv.JS, scheduler.WithRegisterer(reg))
	waitFor(t, 5*time.Second, "scheduler owns every bucket", func() bool { return len(r.s.Owned()) == events.Buckets })

	const id = "life-1"
	site := events.Site{ID: id, URL: "https://life.example/health", Interval: events.Duration(2 * time.Second),
		Headers: map[string]string{"X-Test": "1"}, Keywords: []string{"ok"}}

	// Created: the first command arrives within about a second of its due
	// instant, the first aligned slot after the change.
	created := time.Now()
	seq := publishSite(t, srv.JS, site, events.ChangeCreated, false)
	waitFor(t, 5*time.Second, "first command", func() bool { return len(checks.all(id)) > 0 })
	first := checks.all(id)[0]
	if first.cmd.DueAt.Before(created.Add(-time.Millisecond)) || first.cmd.DueAt.After(created.Add(2*time.Second+time.Second)) {
		t.Errorf("first command due %v, created at %v", first.cmd.DueAt, created)
	}
	if lag := first.arrived.Sub(first.cmd.DueAt); lag > time.Second {
		t.Errorf("first command arrived %s after its due instant", lag)
	}
	c := first.cmd
	if c.Region != "local" || c.Purpose != events.PurposeScheduled || c.ConfigSeq != seq || c.Bucket != events.Bucket(id) ||
		c.ID != events.CommandID(id, "local", events.PurposeScheduled, c.DueAt) || !c.Deadline.Equal(c.DueAt.Add(5*time.Second)) {
		t.Errorf("command fields: %+v (config seq want %d)", c, seq)
	}
	if s := c.Check; s.URL != site.URL || s.Method != "GET" || !s.TLSVerify || s.Redirects != events.RedirectFollow ||
		s.Timeout.Std() != 10*time.Second || s.Headers["X-Test"] != "1" || !slices.Equal(s.Keywords, []string{"ok"}) {
		t.Errorf("check spec defaults: %+v", s)
	}
	waitFor(t, 10*time.Second, "three commands", func() bool { return len(checks.all(id)) >= 3 })
	checkCadence(t, checks.all(id), id, 2*time.Second)

	// Interval changed: the site moves to its 3s phase slots within a second.
	site.Interval = events.Duration(3 * time.Second)
	changed := time.Now()
	publishSite(t, srv.JS, site, events.ChangeUpdated, false)
	waitFor(t, 15*time.Second, "three commands at the new interval", func() bool {
		return len(commandsAfter(checks, id, changed.Add(time.Second))) >= 3
	})
	checkCadence(t, commandsAfter(checks, id, changed.Add(time.Second)), id, 3*time.Second)

	// Paused: no more commands (after the second it takes to apply).
	paused := time.Now()
	publishSite(t, srv.JS, site, events.ChangePaused, true)
	time.Sleep(7 * time.Second)
	if late := commandsAfter(checks, id, paused.Add(time.Second)); len(late) > 0 {
		t.Errorf("%d commands for a paused site, first due %v (paused at %v)", len(late), late[0].cmd.DueAt, paused)
	}

	// Resumed: commands again.
	resumed := time.Now()
	publishSite(t, srv.JS, site, events.ChangeResumed, false)
	waitFor(t, 8*time.Second, "a command after resume", func() bool { return len(commandsAfter(checks, id, resumed)) > 0 })

	// Deleted: none.
	deleted := time.Now()
	publishSite(t, srv.JS, site, events.ChangeDeleted, false)
	time.Sleep(7 * time.Second)
	if late := commandsAfter(checks, id, deleted.Add(time.Second)); len(late) > 0 {
		t.Errorf("%d commands for a deleted site", len(late))
	}

	if n := testutil.ToFloat64(mustCounter(t, reg, "vigil_scheduler_commands_published_total")); n < 6 {
		t.Errorf("vigil_scheduler_commands_published_total = %v", n)
	}
	r.stop(t)
}

// mustCounter returns a collector holding the summed value of a metric family.
func mustCounter(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		sum := 0.0
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			}
		}
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
		g.Set(sum)
		return g
	}
	t.Fatalf("metric %s not registered", name)
	return nil
}

// TestFleetFairness runs 1,000 sites at a 10s interval for 60s on one
// scheduler started after the sites exist: every site gets its 6 commands,
// the rate is flat from the first second (no start-up burst), and commands
// arrive well within a second of their due instants.
func TestFleetFairness(t *testing.T) {
	if testing.Short() {
		t.Skip("60s acceptance run")
	}
	t.Parallel()
	const n, iv, window = 1000, 10 * time.Second, 60 * time.Second
	srv := natstest.Start(t, true)
	checks := collect(t, srv.JS)
	sites := fleet(n, "fair", iv)
	publishSites(t, srv.JS, sites)

	reg := prometheus.NewRegistry()
	r := startScheduler(t, srv.JS, scheduler.WithRegisterer(reg))
	started := time.Now()
	// Measure whole seconds of due instants from 2s after the start.
	from := started.Add(2 * time.Second).Truncate(time.Second)
	to := from.Add(window)
	time.Sleep(time.Until(to.Add(2 * time.Second)))
	r.stop(t)

	perSite := map[string]int{}
	perSecond := map[int64]int{}
	var lags []time.Duration
	firstSecond := 0
	for _, rc := range checks.all("") {
		if rc.arrived.Before(started.Add(time.Second)) {
			firstSecond++
		}
		if rc.cmd.DueAt.Before(from) || !rc.cmd.DueAt.Before(to) {
			continue
		}
		perSite[rc.cmd.SiteID]++
		perSecond[rc.cmd.DueAt.Unix()]++
		lags = append(lags, rc.arrived.Sub(rc.cmd.DueAt))
	}
	bad := 0
	for _, s := range sites {
		if got := perSite[s.ID]; got < 5 || got > 7 {
			if bad < 10 {
				t.Errorf("site %s got %d commands in %s, want 6±1", s.ID, got, window)
			}
			bad++
		}
	}
	exact := 0
	for _, c := range perSite {
		if c == 6 {
			exact++
		}
	}
	var rates []int
	for _, c := range perSecond {
		rates = append(rates, c)
	}
	slices.Sort(rates)
	p50, p99, max := percentile(lags, .5), percentile(lags, .99), percentile(lags, 1)
	t.Logf("%d sites: %d with exactly 6 commands, %d outside 6±1; lag (arrival − due) p50 %s p99 %s max %s; due/s min %d max %d (mean %d); %d commands in the first second after start",
		n, exact, bad, p50.Round(time.Millisecond), p99.Round(time.Millisecond), max.Round(time.Millisecond),
		rates[0], rates[len(rates)-1], n/int(iv.Seconds()), firstSecond)
	if p99 >= time.Second {
		t.Errorf("publish lag p99 %s, want under 1s", p99)
	}
	if rates[len(rates)-1] > 2*n/int(iv.Seconds()) {
		t.Errorf("busiest second had %d due checks, mean is %d: not flat", rates[len(rates)-1], n/int(iv.Seconds()))
	}
	if firstSecond > 2*n/int(iv.Seconds()) {
		t.Errorf("%d commands in the first second after start: a start-up burst", firstSecond)
	}
	if missed := testutil.ToFloat64(mustCounter(t, reg, "vigil_scheduler_commands_missed_total")); missed != 0 {
		t.Errorf("%v commands missed", missed)
	}
}

// TestRestartNoDoubleCheck stops a scheduler cleanly and starts another at
// once: no (site, due) is published by both, and the only slots without a
// command are those due while neither was running.
func TestRestartNoDoubleCheck(t *testing.T) {
	t.Parallel()
	const iv = 4 * time.Second
	srv := natstest.Start(t, true)
	checks := collect(t, srv.JS)
	sites := fleet(200, "restart", iv)
	publishSites(t, srv.JS, sites)

	pa, pb := newPublished(), newPublished()
	a := startScheduler(t, srv.JS, scheduler.WithInstanceID("a"), scheduler.OnPublished(pa.hook))
	time.Sleep(9 * time.Second)
	stopping := time.Now()
	a.stop(t)
	_, js2 := srv.Connect(t, "b")
	b := startScheduler(t, js2, scheduler.WithInstanceID("b"), scheduler.OnPublished(pb.hook))
	waitFor(t, 5*time.Second, "new instance owns every bucket", func() bool { return len(b.s.Owned()) == events.Buckets })
	ready := time.Now()
	time.Sleep(9 * time.Second)
	b.stop(t)

	sa, sb := pa.snapshot(), pb.snapshot()
	both := 0
	for k := range sb {
		if _, ok := sa[k]; ok {
			both++
		}
	}
	if both > 0 {
		t.Errorf("%d (site, due) pairs published by both the old and the new instance", both)
	}
	missing := 0
	for _, s := range sites {
		rs := checks.all(s.ID)
		for i := 1; i < len(rs); i++ {
			for due := rs[i-1].cmd.DueAt.Add(iv); due.Before(rs[i].cmd.DueAt); due = due.Add(iv) {
				missing++
				// Allow for the tick and for the bucket loads of the new
				// instance, which follow its acquisitions.
				if due.Before(stopping.Add(-200*time.Millisecond)) || due.After(ready.Add(time.Second)) {
					t.Errorf("site %s: slot %v without a command outside the restart (%v to %v)", s.ID, due, stopping, ready)
				}
			}
		}
	}
	t.Logf("restart: old instance published %d, new %d, both %d; %d slots fell in the %s between stopping the old instance and the new one owning every bucket",
		len(sa), len(sb), both, missing, ready.Sub(stopping).Round(time.Millisecond))
}

// TestFailoverThreeSchedulers runs three schedulers over 500 sites, then
// crashes one (no lease release): its buckets are taken over within two lease
// periods, so no site goes longer than interval + 2×TTL without a command, and
// the only (site, due) pairs published by two instances are due within one
// lease period of the crash (the takeover re-sends recent slots). Those the old
// owner sent alone the stream drops as duplicates; those it sent in a batch
// the successor cannot compose alike, so they may arrive, and be checked,
// twice: only those may.
func TestFailoverThreeSchedulers(t *testing.T) {
	if testing.Short() {
		t.Skip("40s failover run")
	}
	t.Parallel()
	const iv = 10 * time.Second
	srv := natstest.Start(t, true)
	checks := collect(t, srv.JS)
	sites := fleet(500, "fo", iv)
	publishSites(t, srv.JS, sites)

	var rs []*running
	var pubs []*published
	for i := range 3 {
		_, js := srv.Connect(t, fmt.Sprint("sched", i))
		p := newPublished()
		pubs = append(pubs, p)
		rs = append(rs, startScheduler(t, js, scheduler.WithInstanceID(fmt.Sprint("sched", i)), scheduler.OnPublished(p.hook),
			scheduler.WithLeaseOptions(lease.WithoutRelease())))
	}
	owned := func(i int) int { return len(rs[i].s.Owned()) }
	waitFor(t, 10*ttl, "three schedulers share the buckets", func() bool {
		total := 0
		for i := range rs {
			if owned(i) < 20 || owned(i) > 22 {
				return false
			}
			total += owned(i)
		}
		return total == events.Buckets
	})
	stable := time.Now()
	t.Logf("shared %d/%d/%d", owned(0), owned(1), owned(2))
	time.Sleep(12 * time.Second)

	victim := 0
	victimBuckets := rs[victim].s.Owned()
	rs[victim].stop(t)
	killed := time.Now()
	waitFor(t, 2*ttl+time.Second, "survivors own every bucket", func() bool { return owned(1)+owned(2) == events.Buckets })
	t.Logf("survivors own all buckets %s after the crash: %d/%d", time.Since(killed).Round(time.Millisecond), owned(1), owned(2))
	time.Sleep(20 * time.Second)
	end := time.Now()
	rs[1].stop(t)
	rs[2].stop(t)

	// Gaps: from one full interval after ownership settled.
	from := stable.Add(iv)
	allowed := iv + 2*ttl
	var worst time.Duration
	worstSite := ""
	seen := map[string]bool{}
	dup := 0
	var dups []string // arrived twice where they must not
	for _, s := range sites {
		var dues []time.Time
		for _, r := range checks.all(s.ID) {
			k := r.cmd.SiteID + r.cmd.DueAt.String()
			if seen[k] {
				// Only a slot of a crashed instance's bucket re-sent by
				// its successor's takeover may arrive twice: the old
				// owner sent it in a batch the successor cannot compose
				// alike, so the stream cannot drop it as a duplicate.
				// While the three shared the buckets out at the start,
				// buckets moved the same way (a takeover while running).
				d := r.cmd.DueAt.Sub(killed)
				takeover := d >= -lease.MaxHandover(ttl) && d <= ttl && slices.Contains(victimBuckets, events.Bucket(s.ID))
				if !takeover && !r.cmd.DueAt.Before(stable) {
					dups = append(dups, fmt.Sprintf("%s due %s from the crash", s.ID, d))
				}
				dup++
			}
			seen[k] = true
			if !r.cmd.DueAt.Before(from) {
				dues = append(dues, r.cmd.DueAt)
			}
		}
		slices.SortFunc(dues, func(a, b time.Time) int { return a.Compare(b) })
		if len(dues) == 0 || end.Sub(dues[len(dues)-1]) > iv+time.Second {
			t.Errorf("site %s not scheduled at the end (dues %v)", s.ID, dues)
			continue
		}
		for i := 1; i < len(dues); i++ {
			if g := dues[i].Sub(dues[i-1]); g > worst {
				worst, worstSite = g, s.ID
			}
		}
	}
	t.Logf("longest gap between a site's commands: %s (%s, bucket %d, victim's: %v); allowed interval + 2×TTL = %s",
		worst, worstSite, events.Bucket(worstSite), slices.Contains(victimBuckets, events.Bucket(worstSite)), allowed)
	if worst > allowed {
		t.Errorf("site %s went %s without a command, want at most %s", worstSite, worst, allowed)
	}
	t.Logf("(site, due) pairs arrived twice on CHECKS: %d", dup)
	if len(dups) > 0 {
		t.Errorf("%d (site, due) pairs arrived twice on CHECKS outside the takeover of the crashed instance's buckets: %v", len(dups), dups[:min(len(dups), 10)])
	}

	// Overlap of what each instance published, after ownership settled.
	var overlaps, dropped int
	var far []string
	var earliest, latest time.Duration
	for i := range pubs {
		for j := i + 1; j < len(pubs); j++ {
			si, sj := pubs[i].snapshot(), pubs[j].snapshot()
			for k, p := range si {
				q, ok := sj[k]
				if !ok || p.due.Before(stable) {
					continue
				}
				overlaps++
				if p.duplicate || q.duplicate {
					dropped++
				}
				d := p.due.Sub(killed)
				if overlaps == 1 || d < earliest {
					earliest = d
				}
				if overlaps == 1 || d > latest {
					latest = d
				}
				if d < -ttl || d > ttl {
					far = append(far, fmt.Sprintf("%s due %s from the crash", p.site, d))
				}
			}
		}
	}
	t.Logf("(site, due) pairs published by two instances: %d, due %s to %s from the crash; %d of them dropped by the stream as duplicates", overlaps, earliest, latest, dropped)
	if len(far) > 0 {
		t.Errorf("%d pairs published by two instances away from the crash: %v", len(far), far[:min(len(far), 10)])
	}
}

// TestCadenceOverride: an override makes the site's checks retries at the
// override interval carrying the incident; clearing it, or its Until
// passing, returns the site to its own slots.
func TestCadenceOverride(t *testing.T) {
	t.Parallel()
	const iv = 10 * time.Second
	srv := natstest.Start(t, true)
	checks := collect(t, srv.JS)
	kv, err := srv.JS.KeyValue(context.Background(), events.KVCadence)
	if err != nil {
		t.Fatal(err)
	}
	const id = "flaky-1"
	publishSite(t, srv.JS, events.Site{ID: id, URL: "https://flaky.example", Interval: events.Duration(iv)}, events.ChangeCreated, false)
	r := startScheduler(t, srv.JS)
	waitFor(t, 5*time.Second, "scheduler owns every bucket", func() bool { return len(r.s.Owned()) == events.Buckets })

	ctx := context.Background()
	set := time.Now()
	if err := scheduler.SetCadence(ctx, kv, events.Cadence{SiteID: id, Interval: events.Duration(2 * time.Second), IncidentID: "INC1", Until: set.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	retries := func(after time.Time) []received {
		var out []received
		for _, rc := range commandsAfter(checks, id, after) {
			if rc.cmd.Purpose == events.PurposeRetry {
				out = append(out, rc)
			}
		}
		return out
	}
	waitFor(t, 10*time.Second, "four retries", func() bool { return len(retries(set)) >= 4 })
	rts := retries(set)
	checkCadence(t, rts, id, 2*time.Second)
	for _, rc := range rts {
		if rc.cmd.IncidentID != "INC1" || rc.cmd.ID != events.CommandID(id, "local", events.PurposeRetry, rc.cmd.DueAt) {
			t.Errorf("retry command %+v", rc.cmd)
		}
		if lag := rc.arrived.Sub(rc.cmd.DueAt); lag > time.Second {
			t.Errorf("retry arrived %s late", lag)
		}
	}
	for _, rc := range commandsAfter(checks, id, set.Add(time.Second)) {
		if rc.cmd.Purpose != events.PurposeRetry {
			t.Errorf("scheduled command due %v while the override stands", rc.cmd.DueAt)
		}
	}
	t.Logf("retries due %v", dueTimes(rts))

	// Cleared: no retries after a second; the next command is on the
	// site's own 10s slots.
	cleared := time.Now()
	if err := scheduler.ClearCadence(ctx, kv, id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, iv+3*time.Second, "a scheduled command after clearing", func() bool {
		for _, rc := range commandsAfter(checks, id, cleared) {
			if rc.cmd.Purpose == events.PurposeScheduled {
				return true
			}
		}
		return false
	})
	for _, rc := range commandsAfter(checks, id, cleared.Add(time.Second)) {
		if rc.cmd.Purpose == events.PurposeRetry {
			t.Errorf("retry due %v after the override was cleared at %v", rc.cmd.DueAt, cleared)
		} else if !scheduler.NextDue(id, iv, rc.cmd.DueAt).Equal(rc.cmd.DueAt) {
			t.Errorf("scheduled command off the site's phase")
		}
	}

	// An override whose Until passes ends by itself.
	set2 := time.Now()
	until := set2.Add(5 * time.Second)
	if err := scheduler.SetCadence(ctx, kv, events.Cadence{SiteID: id, Interval: events.Duration(2 * time.Second), IncidentID: "INC2", Until: until}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Until(until)+iv+3*time.Second, "a scheduled command after Until", func() bool {
		for _, rc := range commandsAfter(checks, id, until) {
			if rc.cmd.Purpose == events.PurposeScheduled {
				return true
			}
		}
		return false
	})
	r2 := retries(set2.Add(time.Second))
	if len(r2) < 1 {
		t.Error("no retries under the second override")
	}
	for _, rc := range r2 {
		if !rc.cmd.DueAt.Before(until) || rc.cmd.IncidentID != "INC2" {
			t.Errorf("retry due %v (until %v) incident %s", rc.cmd.DueAt, until, rc.cmd.IncidentID)
		}
	}

	// The helpers refuse what the scheduler could not honour.
	if err := scheduler.SetCadence(ctx, kv, events.Cadence{SiteID: id, Interval: events.Duration(2 * time.Second)}); err == nil {
		t.Error("SetCadence without Until accepted")
	}
	if err := scheduler.SetCadence(ctx, kv, events.Cadence{SiteID: "bad.id", Interval: events.Duration(2 * time.Second), Until: time.Now().Add(time.Minute)}); err == nil {
		t.Error("SetCadence with an invalid site ID accepted")
	}
}

func dueTimes(rs []received) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.cmd.DueAt.Format("15:04:05.000"))
	}
	return out
}

// TestBucketLoadIgnoresOlderConfig: a site whose live change arrives before
// its bucket load delivers an older configuration keeps the newer one. Here
// via a restart: the last message per subject is what is loaded.
func TestLoadsCurrentConfigOnly(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, true)
	checks := collect(t, srv.JS)
	site := events.Site{ID: "hist-1", URL: "https://old.example", Interval: events.Duration(2 * time.Second)}
	publishSite(t, srv.JS, site, events.ChangeCreated, false)
	site.URL = "https://new.example"
	seq := publishSite(t, srv.JS, site, events.ChangeUpdated, false)
	gone := events.Site{ID: "gone-1", URL: "https://gone.example", Interval: events.Duration(2 * time.Second)}
	publishSite(t, srv.JS, gone, events.ChangeCreated, false)
	publishSite(t, srv.JS, gone, events.ChangeDeleted, false)
	// A message whose site ID does not match its subject is ignored.
	bad := siteChange(t, events.Site{ID: "other", URL: "https://x.example"}, events.ChangeCreated, false)
	msg, err := events.Marshal(bad)
	if err != nil {
		t.Fatal(err)
	}
	msg.Subject = events.SiteSubject("hist-2")
	if _, err := srv.JS.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}

	startScheduler(t, srv.JS)
	waitFor(t, 6*time.Second, "two commands", func() bool { return len(checks.all("hist-1")) >= 2 })
	for _, rc := range checks.all("hist-1") {
		if rc.cmd.Check.URL != "https://new.example" || rc.cmd.ConfigSeq != seq {
			t.Errorf("command built from an old configuration: %s seq %d", rc.cmd.Check.URL, rc.cmd.ConfigSeq)
		}
	}
	if n := len(checks.all("gone-1")) + len(checks.all("hist-2")) + len(checks.all("other")); n > 0 {
		t.Errorf("%d commands for deleted or malformed sites", n)
	}
}

// TestPublishFailureRetriedUntilDeadline deletes CHECKS for a while: the
// scheduler counts the failed publishes, sends each failed command again on
// later ticks while it is before its deadline (so the commands due in the
// last seconds of the outage arrive, late but in time), and counts the
// commands whose deadline passed as missed instead of sending them late.
func TestPublishFailureRetriedUntilDeadline(t *testing.T) {
	t.Parallel()
	const iv = 2 * time.Second // deadline window 5s
	srv := natstest.Start(t, true)
	sites := fleet(20, "outage", iv)
	publishSites(t, srv.JS, sites)
	reg := prometheus.NewRegistry()
	r := startScheduler(t, srv.JS, scheduler.WithRegisterer(reg), scheduler.WithAckTimeout(time.Second))
	waitFor(t, 5*time.Second, "scheduler owns every bucket", func() bool { return len(r.s.Owned()) == events.Buckets })
	time.Sleep(time.Second)

	ctx := context.Background()
	if err := srv.JS.DeleteStream(ctx, events.StreamChecks); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	time.Sleep(7 * time.Second)
	restoring := time.Now()
	if _, err := topology.Apply(ctx, srv.JS, natstest.Options()); err != nil {
		t.Fatal(err)
	}
	checks := collect(t, srv.JS)
	up := time.Now()
	t.Logf("outage %s, restore took %s", restoring.Sub(down), up.Sub(restoring))
	time.Sleep(3 * time.Second)
	r.stop(t)

	errs := testutil.ToFloat64(mustCounter(t, reg, "vigil_scheduler_publish_errors_total"))
	missed := testutil.ToFloat64(mustCounter(t, reg, "vigil_scheduler_commands_missed_total"))
	var recovered int
	for _, rc := range checks.all("") {
		if rc.cmd.DueAt.Before(up) {
			recovered++
			if !rc.cmd.DueAt.After(down) {
				t.Errorf("command due %v, before the outage began at %v, sent after it", rc.cmd.DueAt, down)
			}
			if rc.arrived.After(rc.cmd.Deadline.Add(500 * time.Millisecond)) {
				t.Errorf("command due %v arrived at %v, after its deadline %v", rc.cmd.DueAt, rc.arrived, rc.cmd.Deadline)
			}
		}
	}
	t.Logf("7s outage of CHECKS: %v publish errors, %v commands missed, %d commands due during the outage delivered after it", errs, missed, recovered)
	if errs == 0 || missed == 0 || recovered == 0 {
		t.Errorf("want publish errors, missed commands and late-but-in-time commands; got %v, %v, %d", errs, missed, recovered)
	}
	// Every site is back on schedule.
	for _, s := range sites {
		if len(commandsAfter(checks, s.ID, up)) == 0 {
			t.Errorf("site %s has no command after the outage", s.ID)
		}
	}
}

// TestLeaseTTLMismatchStopsRun: a lease period unlike the KV bucket's TTL
// would break the lease safety argument, so Run refuses it.
func TestLeaseTTLMismatchStopsRun(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, true)
	s, err := scheduler.New(srv.JS, scheduler.WithLeaseTTL(ttl+time.Second), scheduler.WithLogger(logger()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Run(ctx); err == nil || ctx.Err() != nil {
		t.Fatalf("Run with a mismatched lease TTL returned %v, want an error at once", err)
	}
	if _, err := scheduler.New(srv.JS, scheduler.WithRegions("Bad Region")); err == nil {
		t.Fatal("New accepted an invalid region")
	}
}
