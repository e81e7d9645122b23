package statemachine

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/events"
)

// ---------------------------------------------------------------------------
// Scenario DSL.
//
// A scenario is a site, an Env and a list of steps. A step is one input (an
// observation, Expire or Close) and the exact output expected from it: the
// event kinds (with reasons) in order, the regions verification commands go to,
// whether a cadence override is set or cleared, plus an optional check of the
// details. A step that declares nothing expects an entirely empty Output.
//
// The runner checks, at every step: the exact expectations; invariants of every
// event and command (derived IDs, required fields, non-empty observation IDs,
// votes sorted, state/severity agreeing with kind); that at most one incident
// is open at a time and events follow the lifecycle; and that a copy of the
// state serialised to JSON and back before the step produces byte-identical
// output and state.

var t0 = time.Date(2025, 3, 14, 9, 0, 0, 0, time.UTC)

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

const day = 24 * 60 * 60 // seconds

const siteID = "blog-42"

func baseSite() events.Site {
	return events.Site{ID: siteID, URL: "https://blog.example.com/"}
}

// env3 is a three-region deployment: primary eu, verifiers ap and us.
func env3() Env { return Env{Regions: []string{"eu", "us", "ap"}} }

// env4 is a four-region deployment: primary eu, verifiers ap, sa and us.
func env4() Env { return Env{Regions: []string{"eu", "us", "ap", "sa"}} }

type stepKind int

const (
	stepObserve stepKind = iota
	stepExpire
	stepClose
)

type step struct {
	kind stepKind
	sec  int

	// Observations.
	region    string         // "" = the primary
	purpose   events.Purpose // "" = retry while an incident is open, else scheduled
	class     events.Class
	status    int
	incident  string // verify: "" = the open incident (else the last closed), "prev" = the last closed one
	replay    bool   // replay exactly the observation of step replayOf
	replayOf  int
	tlsAfter  time.Time
	hasTLS    bool
	closeWhat events.Reason

	// Expectations.
	events  []string // "kind" or "kind:reason", in order
	verify  []string // regions of the verification commands, in order
	cadence bool
	clear   bool
	check   func(t *testing.T, c *stepCtx)
}

type stepCtx struct {
	out   Output
	obs   events.Observation // the input, for observation steps
	after *SiteState
	r     *runner
}

func obsStep(sec int, class events.Class, status int) step {
	return step{kind: stepObserve, sec: sec, class: class, status: status}
}

// ok is a local (primary) success.
func ok(sec int) step { return obsStep(sec, events.ClassOK, 200) }

// fail is a local (primary) site-side failure: HTTP 503.
func fail(sec int) step { return obsStep(sec, events.ClassHTTPStatus, 503) }

// failWith is a local observation of any class.
func failWith(sec int, c events.Class) step { return obsStep(sec, c, 0) }

// mon is a local monitor-side result: the checker's resolver failed.
func mon(sec int) step { return failWith(sec, events.ClassMonitorResolver) }

// vote is a verify observation from region.
func vote(region string, sec int, c events.Class) step {
	s := obsStep(sec, c, 0)
	switch c {
	case events.ClassOK:
		s.status = 200
	case events.ClassHTTPStatus:
		s.status = 503
	}
	s.region, s.purpose = region, events.PurposeVerify
	return s
}

func expireAt(sec int) step { return step{kind: stepExpire, sec: sec} }

func closeAt(sec int, r events.Reason) step { return step{kind: stepClose, sec: sec, closeWhat: r} }

// replayStep replays the observation of step i (same ID, same time).
func replayStep(i int) step { return step{kind: stepObserve, replay: true, replayOf: i} }

func (s step) forIncident(id string) step       { s.incident = id; return s }
func (s step) withCert(notAfter time.Time) step { s.tlsAfter, s.hasTLS = notAfter, true; return s }
func (s step) want(kinds ...string) step        { s.events = kinds; return s }
func (s step) verifies(regions ...string) step  { s.verify = regions; return s }
func (s step) setsCadence() step                { s.cadence = true; return s }
func (s step) clears() step                     { s.clear = true; return s }
func (s step) then(f func(t *testing.T, c *stepCtx)) step {
	prev := s.check
	s.check = func(t *testing.T, c *stepCtx) {
		t.Helper()
		if prev != nil {
			prev(t, c)
		}
		f(t, c)
	}
	return s
}

type scenario struct {
	name  string
	site  events.Site
	env   Env
	steps []step
}

type runner struct {
	sc   scenario
	obs  map[int]events.Observation
	ids  map[string]bool
	open string // open incident per the events so far
	down bool   // the open incident is Down
	// closed lists incident IDs in the order they closed.
	closed    []string
	incidents []string // every incident ID opened, in order
}

func (r *runner) lastClosed() string {
	if len(r.closed) == 0 {
		return "no-such-incident"
	}
	return r.closed[len(r.closed)-1]
}

func (r *runner) input(i int, s step, st *SiteState) events.Observation {
	if s.replay {
		return r.obs[s.replayOf]
	}
	region := s.region
	if region == "" {
		region = r.sc.env.Regions[0]
	}
	purpose := s.purpose
	if purpose == "" {
		purpose = events.PurposeScheduled
		if st.Incident != nil {
			purpose = events.PurposeRetry
		}
	}
	var incident string
	switch {
	case purpose == events.PurposeVerify && s.incident == "prev":
		incident = r.lastClosed()
	case purpose == events.PurposeVerify && s.incident == "":
		if st.Incident != nil {
			incident = st.Incident.ID
		} else {
			incident = r.lastClosed()
		}
	case purpose == events.PurposeVerify:
		incident = s.incident
	case purpose == events.PurposeRetry && st.Incident != nil:
		incident = st.Incident.ID
	}
	t := at(s.sec)
	obs := events.Observation{
		ID:         events.DeriveID(t, "test-observation", region, strconv.Itoa(i)),
		SiteID:     r.sc.site.ID,
		Bucket:     events.Bucket(r.sc.site.ID),
		Region:     region,
		CheckerID:  region + "-1",
		CommandID:  events.CommandID(r.sc.site.ID, region, purpose, t),
		Purpose:    purpose,
		IncidentID: incident,
		DueAt:      t,
		StartedAt:  t,
		Class:      s.class,
		StatusCode: s.status,
	}
	if s.hasTLS {
		obs.TLS = &events.TLSInfo{Version: "TLS1.3", NotBefore: s.tlsAfter.Add(-90 * 24 * time.Hour), NotAfter: s.tlsAfter, ChainValid: true}
	}
	return obs
}

func apply(st *SiteState, sc scenario, s step, obs events.Observation) Output {
	switch s.kind {
	case stepExpire:
		return st.Expire(sc.site, at(s.sec), sc.env)
	case stepClose:
		return st.Close(sc.site, s.closeWhat, at(s.sec), sc.env)
	}
	return st.Observe(sc.site, obs, sc.env)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return b
}

func eventStrings(evs []events.SiteEvent) []string {
	var out []string
	for _, e := range evs {
		s := string(e.Kind)
		if e.Reason != "" {
			s += ":" + string(e.Reason)
		}
		out = append(out, s)
	}
	return out
}

func commandRegions(cmds []events.CheckCommand) []string {
	var out []string
	for _, c := range cmds {
		out = append(out, c.Region)
	}
	return out
}

// run plays a scenario and returns the JSON of every step's output.
func run(t *testing.T, sc scenario) [][]byte {
	r := &runner{sc: sc, obs: map[int]events.Observation{}, ids: map[string]bool{}}
	st := &SiteState{}
	var outs [][]byte
	for i, s := range sc.steps {
		// A checkpoint of the state before the step, restored from JSON.
		var restored SiteState
		if err := json.Unmarshal(mustJSON(t, st), &restored); err != nil {
			t.Fatalf("step %d: unmarshal state: %v", i, err)
		}
		obs := r.input(i, s, st)
		if s.kind == stepObserve {
			r.obs[i] = obs
		}
		out := apply(st, sc, s, obs)
		outRestored := apply(&restored, sc, s, obs)

		got := mustJSON(t, out)
		if b := mustJSON(t, outRestored); !bytes.Equal(got, b) {
			t.Fatalf("step %d: output after a JSON round trip of the state differs:\n%s\n%s", i, got, b)
		}
		if a, b := mustJSON(t, st), mustJSON(t, &restored); !bytes.Equal(a, b) {
			t.Fatalf("step %d: state after a JSON round trip differs:\n%s\n%s", i, a, b)
		}
		outs = append(outs, got)

		if g := eventStrings(out.Events); !slices.Equal(g, s.events) {
			t.Errorf("step %d (t+%ds): events %v, want %v\n%s", i, s.sec, g, s.events, got)
		}
		if g := commandRegions(out.Verify); !slices.Equal(g, s.verify) {
			t.Errorf("step %d (t+%ds): verify commands to %v, want %v", i, s.sec, g, s.verify)
		}
		if (out.Cadence != nil) != s.cadence {
			t.Errorf("step %d (t+%ds): cadence override %v, want set=%v", i, s.sec, out.Cadence, s.cadence)
		}
		if out.ClearCadence != s.clear {
			t.Errorf("step %d (t+%ds): ClearCadence %v, want %v", i, s.sec, out.ClearCadence, s.clear)
		}
		r.checkInvariants(t, i, out)
		if t.Failed() {
			t.FailNow()
		}
		if s.check != nil {
			s.check(t, &stepCtx{out: out, obs: obs, after: st, r: r})
			if t.Failed() {
				t.Fatalf("step %d (t+%ds) failed its checks: %s", i, s.sec, got)
			}
		}
	}
	return outs
}

func (r *runner) checkInvariants(t *testing.T, i int, out Output) {
	t.Helper()
	site, env := r.sc.site, r.sc.env
	bucket := events.Bucket(site.ID)
	if out.Cadence != nil && out.ClearCadence {
		t.Errorf("step %d: both Cadence and ClearCadence set", i)
	}
	opened, closed := "", false
	for _, e := range out.Events {
		if r.ids[e.ID] {
			t.Errorf("step %d: event ID %s repeated", i, e.ID)
		}
		r.ids[e.ID] = true
		idTime, err := events.IDTime(e.ID)
		if err != nil {
			t.Errorf("step %d: event ID: %v", i, err)
		} else if !idTime.Equal(e.At.Truncate(time.Millisecond)) {
			t.Errorf("step %d: event ID time %v, event at %v", i, idTime, e.At)
		}
		if e.SiteID != site.ID || e.Bucket != bucket {
			t.Errorf("step %d: event site %q bucket %d", i, e.SiteID, e.Bucket)
		}
		if e.At.Location() != time.UTC {
			t.Errorf("step %d: event time %v not UTC", i, e.At)
		}
		if len(e.ObservationIDs) == 0 {
			t.Errorf("step %d: %s has no observation IDs", i, e.Kind)
		}
		if !slices.IsSortedFunc(e.Votes, func(a, b events.RegionVote) int { return strings.Compare(a.Region, b.Region) }) {
			t.Errorf("step %d: votes not sorted: %v", i, e.Votes)
		}
		for j := 1; j < len(e.Votes); j++ {
			if e.Votes[j].Region == e.Votes[j-1].Region {
				t.Errorf("step %d: two votes from %s", i, e.Votes[j].Region)
			}
		}
		switch e.Kind {
		case events.KindSeemsDown, events.KindDown, events.KindRecovered:
			if e.IncidentID == "" || e.StartedAt == nil || e.FailureClass.Side() != events.SideSite || e.CertNotAfter != nil {
				t.Errorf("step %d: incident event lacks fields: %+v", i, e)
			}
		default:
			if e.IncidentID != "" || e.StartedAt != nil || e.Reason != "" || e.CertNotAfter == nil || e.CertDaysLeft == nil || e.Votes != nil {
				t.Errorf("step %d: TLS advisory has wrong fields: %+v", i, e)
			}
		}
		switch e.Kind {
		case events.KindSeemsDown:
			if r.open != "" {
				t.Errorf("step %d: incident %s opened while %s is open", i, e.IncidentID, r.open)
			}
			if e.State != events.StateSeemsDown || e.Severity != events.SeveritySeemsDown || e.Reason != "" || e.Votes != nil {
				t.Errorf("step %d: bad seems_down: %+v", i, e)
			}
			if !e.StartedAt.Equal(e.At) {
				t.Errorf("step %d: seems_down started_at %v, at %v", i, e.StartedAt, e.At)
			}
			if slices.Contains(r.incidents, e.IncidentID) {
				t.Errorf("step %d: incident ID %s reused", i, e.IncidentID)
			}
			r.open, r.down, opened = e.IncidentID, false, e.IncidentID
			r.incidents = append(r.incidents, e.IncidentID)
		case events.KindDown:
			if e.IncidentID != r.open || r.down {
				t.Errorf("step %d: down for %s, open %s (down=%v)", i, e.IncidentID, r.open, r.down)
			}
			if e.State != events.StateDown || e.Severity != events.SeverityDown || e.Reason != "" {
				t.Errorf("step %d: bad down: %+v", i, e)
			}
			if e.SingleRegion == (len(e.Votes) > 0) {
				t.Errorf("step %d: down must carry votes unless single-region: %+v", i, e)
			}
			r.down = true
		case events.KindRecovered:
			if e.IncidentID != r.open {
				t.Errorf("step %d: recovered %s, open %s", i, e.IncidentID, r.open)
			}
			if e.State != events.StateUp || e.Severity != events.SeverityUp || e.Reason == "" || e.SingleRegion {
				t.Errorf("step %d: bad recovered: %+v", i, e)
			}
			if (e.Reason == events.ReasonFalseAlarm) != (len(e.Votes) > 0) {
				t.Errorf("step %d: votes on %s: %v", i, e.Reason, e.Votes)
			}
			if e.Reason == events.ReasonRecovered && !r.down || e.Reason == events.ReasonProbeCleared && r.down ||
				e.Reason == events.ReasonFalseAlarm && r.down {
				t.Errorf("step %d: %s from down=%v", i, e.Reason, r.down)
			}
			r.closed = append(r.closed, r.open)
			r.open, r.down, closed = "", false, true
		case events.KindTLSExpiring:
			if e.Severity != events.SeverityWarning && e.Severity != events.SeverityDegraded {
				t.Errorf("step %d: tls_expiring severity %d", i, e.Severity)
			}
		case events.KindTLSExpired:
			if e.Severity != events.SeverityDegraded || *e.CertDaysLeft >= 0 {
				t.Errorf("step %d: bad tls_expired %+v", i, e)
			}
		case events.KindTLSRenewed:
			if e.Severity != events.SeverityUp {
				t.Errorf("step %d: bad tls_renewed %+v", i, e)
			}
		default:
			t.Errorf("step %d: unexpected kind %q", i, e.Kind)
		}
	}
	// Overrides follow incidents: set exactly when one opens, cleared
	// exactly when one closes and none opens.
	if (out.Cadence != nil) != (opened != "") {
		t.Errorf("step %d: cadence %v with incident opened %q", i, out.Cadence, opened)
	}
	if out.ClearCadence != (closed && opened == "") {
		t.Errorf("step %d: ClearCadence %v, closed %v opened %q", i, out.ClearCadence, closed, opened)
	}
	if c := out.Cadence; c != nil {
		want := DefaultRetryInterval
		if site.RetryInterval > 0 {
			want = site.RetryInterval.Std()
		}
		var started time.Time
		for _, e := range out.Events {
			if e.Kind == events.KindSeemsDown {
				started = *e.StartedAt
			}
		}
		if c.SiteID != site.ID || c.IncidentID != opened || c.Interval.Std() != want || !c.Until.Equal(started.Add(CadenceBound)) {
			t.Errorf("step %d: bad cadence %+v", i, c)
		}
	}
	timeout := env.VerifyTimeout
	if timeout == 0 {
		timeout = DefaultVerifyTimeout
	}
	for j, c := range out.Verify {
		if c.ID != events.CommandID(site.ID, c.Region, events.PurposeVerify, c.DueAt) || c.Purpose != events.PurposeVerify ||
			c.SiteID != site.ID || c.Bucket != bucket || c.IncidentID == "" || c.IncidentID != r.open || r.down ||
			!c.Deadline.Equal(c.DueAt.Add(timeout)) || c.Region == env.Regions[0] || c.Check.URL != site.URL {
			t.Errorf("step %d: bad verify command %+v", i, c)
		}
		if j > 0 && out.Verify[j-1].Region >= c.Region {
			t.Errorf("step %d: verify commands not sorted by region", i)
		}
	}
}

// Check helpers.

func wantAt(sec int) func(t *testing.T, c *stepCtx) {
	return func(t *testing.T, c *stepCtx) {
		t.Helper()
		for _, e := range c.out.Events {
			if !e.At.Equal(at(sec)) {
				t.Errorf("%s at %v, want %v", e.Kind, e.At, at(sec))
			}
		}
	}
}

// wantVotes checks the votes of the last event: "region=vote" each.
func wantVotes(votes ...string) func(t *testing.T, c *stepCtx) {
	return func(t *testing.T, c *stepCtx) {
		t.Helper()
		e := c.out.Events[len(c.out.Events)-1]
		var got []string
		for _, v := range e.Votes {
			got = append(got, v.Region+"="+string(v.Vote))
			if v.Vote != events.VoteNone && v.ObservationID == "" {
				t.Errorf("vote %+v has no observation", v)
			}
		}
		if !slices.Equal(got, votes) {
			t.Errorf("votes %v, want %v", got, votes)
		}
	}
}

// obsOf checks the last event's observation IDs are those of the given steps
// observations, in order.
func obsOf(steps ...int) func(t *testing.T, c *stepCtx) {
	return func(t *testing.T, c *stepCtx) {
		t.Helper()
		var want []string
		for _, s := range steps {
			want = append(want, c.r.obs[s].ID)
		}
		e := c.out.Events[len(c.out.Events)-1]
		if !slices.Equal(e.ObservationIDs, want) {
			t.Errorf("%s observation IDs %v, want those of steps %v: %v", e.Kind, e.ObservationIDs, steps, want)
		}
	}
}

func wantMaintenance(flags ...bool) func(t *testing.T, c *stepCtx) {
	return func(t *testing.T, c *stepCtx) {
		t.Helper()
		var got []bool
		for _, e := range c.out.Events {
			got = append(got, e.Maintenance)
		}
		if !slices.Equal(got, flags) {
			t.Errorf("maintenance flags %v, want %v", got, flags)
		}
	}
}

func wantCert(notAfter time.Time, daysLeft int, sev events.Severity) func(t *testing.T, c *stepCtx) {
	return func(t *testing.T, c *stepCtx) {
		t.Helper()
		e := c.out.Events[len(c.out.Events)-1]
		if !e.CertNotAfter.Equal(notAfter) || *e.CertDaysLeft != daysLeft || e.Severity != sev {
			t.Errorf("%s: cert %v days %d severity %d, want %v %d %d", e.Kind, e.CertNotAfter, *e.CertDaysLeft, e.Severity, notAfter, daysLeft, sev)
		}
	}
}

func wantState(s events.State) func(t *testing.T, c *stepCtx) {
	return func(t *testing.T, c *stepCtx) {
		t.Helper()
		for _, e := range c.out.Events {
			if e.State != s {
				t.Errorf("%s state %s, want %s", e.Kind, e.State, s)
			}
		}
	}
}

func noIncident(t *testing.T, c *stepCtx) {
	t.Helper()
	if c.after.Incident != nil {
		t.Errorf("incident open: %+v", c.after.Incident)
	}
}

func emptyOutput(t *testing.T, c *stepCtx) {
	t.Helper()
	if !reflect.DeepEqual(c.out, Output{}) {
		t.Errorf("want no output at all, got %+v", c.out)
	}
}

// confirmSteps are the steps that take a site from up to Down in a
// three-region deployment (env3): three local failures, verification to ap and
// us, two down votes. Step indexes start at first.
func confirmSteps() []step {
	return []step{
		fail(0).want("seems_down").setsCadence(),
		fail(30),
		fail(60).verifies("ap", "us"),
		vote("ap", 62, events.ClassHTTPStatus),
		vote("us", 63, events.ClassConnectTimeout).want("down"),
	}
}

func seq(parts ...[]step) []step { return slices.Concat(parts...) }

// ---------------------------------------------------------------------------
// Scenarios.

func scenarios() []scenario {
	site := baseSite()

	restricted := baseSite()
	restricted.Regions = []string{"sa", "us", "eu", "nowhere"}

	quorum1 := baseSite()
	quorum1.Quorum = 1

	quorum3 := baseSite()
	quorum3.Quorum = 3

	recover3 := baseSite()
	recover3.RecoverAfter = 3

	confirm1 := baseSite()
	confirm1.ConfirmAfter = 1
	confirm1.RetryInterval = events.Duration(10 * time.Second)

	custom := baseSite()
	custom.Method = "HEAD"
	custom.Timeout = events.Duration(5 * time.Second)
	noVerify := false
	custom.TLSVerify = &noVerify
	custom.Redirects = events.RedirectFail
	custom.Headers = map[string]string{"X-Probe": "1"}
	custom.ExpectStatus = []int{200, 204}

	single := Env{Regions: []string{"eu"}, AllowSingleRegion: true}
	twoRegions := Env{Regions: []string{"eu", "us"}}
	slowVerify := env4()
	slowVerify.VerifyTimeout = 2 * time.Minute

	impairedEU := env3()
	impairedEU.Impaired = func(region string, t time.Time) bool {
		return region == "eu" && t.Before(at(100))
	}
	impairedAP := env4()
	impairedAP.Impaired = func(region string, t time.Time) bool { return region == "ap" }

	maint := env3()
	maint.InMaintenance = func(s events.Site, t time.Time) bool {
		if s.ID != siteID {
			panic("wrong site")
		}
		return !t.Before(at(-60)) && t.Before(at(60)) || // window A
			!t.Before(at(3000)) && t.Before(at(3100)) // window B
	}

	cert1 := t0.Add(31 * 24 * time.Hour)  // 31 days left at t0
	cert2 := t0.Add(130 * 24 * time.Hour) // the renewal
	cert3 := t0.Add(220 * 24 * time.Hour) // renewed again, no advisory in between
	shortCert := t0.Add(40*day*time.Second + 5*24*time.Hour)

	var alternating []step
	for i := 0; i < 100; i++ {
		if i%2 == 0 {
			alternating = append(alternating, fail(i*30).want("seems_down").setsCadence())
		} else {
			alternating = append(alternating, ok(i*30).want("recovered:probe_cleared").clears())
		}
	}
	alternating[len(alternating)-1] = alternating[len(alternating)-1].then(func(t *testing.T, c *stepCtx) {
		if n := len(c.r.incidents); n != 50 {
			t.Errorf("%d incidents, want 50", n)
		}
	})

	var resolverAlways []step
	for i := 0; i < 20; i++ {
		c := []events.Class{events.ClassMonitorResolver, events.ClassMonitorNetwork, events.ClassCommandExpired,
			events.ClassMonitorOverload, events.ClassTargetRefused, events.Class("something_new")}[i%6]
		resolverAlways = append(resolverAlways, failWith(i*300, c).then(emptyOutput).then(noIncident))
	}

	return []scenario{
		{
			name: "healthy_checks_produce_no_output_at_all",
			site: site, env: env3(),
			steps: []step{
				ok(0).then(emptyOutput), ok(300).then(emptyOutput), ok(600).then(emptyOutput),
				vote("us", 610, events.ClassHTTPStatus).then(emptyOutput), // nobody asked
				expireAt(10000).then(emptyOutput),
				ok(900).then(emptyOutput).then(func(t *testing.T, c *stepCtx) {
					if c.after.LastObsID != c.obs.ID || !c.after.LastObsAt.Equal(at(900)) {
						t.Errorf("last applied observation not recorded: %+v", c.after)
					}
				}),
			},
		},
		{
			name: "single_failure_then_success_probe_cleared",
			site: site, env: env3(),
			steps: []step{
				ok(0),
				fail(300).want("seems_down").setsCadence().then(wantAt(300)).then(obsOf(1)).
					then(func(t *testing.T, c *stepCtx) {
						e := c.out.Events[0]
						if e.FailureClass != events.ClassHTTPStatus || e.FailureStatus != 503 {
							t.Errorf("failure %s %d", e.FailureClass, e.FailureStatus)
						}
						wantID := events.DeriveID(at(300), siteID, c.obs.ID, "incident")
						if e.IncidentID != wantID || c.out.Cadence.IncidentID != wantID {
							t.Errorf("incident ID %s, want %s", e.IncidentID, wantID)
						}
						if e.ID != events.DeriveID(at(300), siteID, wantID, "seems_down", c.obs.ID) {
							t.Errorf("event ID not derived from the facts")
						}
						if c.out.Cadence.Interval.Std() != 30*time.Second || !c.out.Cadence.Until.Equal(at(300).Add(24*time.Hour)) {
							t.Errorf("cadence %+v", c.out.Cadence)
						}
						if c.after.Incident.Failures != 1 {
							t.Errorf("failures %d", c.after.Incident.Failures)
						}
					}),
				ok(330).want("recovered:probe_cleared").clears().then(wantAt(330)).then(obsOf(2)).then(noIncident).
					then(func(t *testing.T, c *stepCtx) {
						e := c.out.Events[0]
						if !e.StartedAt.Equal(at(300)) || e.FailureClass != events.ClassHTTPStatus || e.FailureStatus != 503 {
							t.Errorf("recovered lost the incident's facts: %+v", e)
						}
					}),
				ok(360).then(emptyOutput),
			},
		},
		{
			name: "confirm_after_failures_send_verify_to_other_regions_restricted_by_site_regions",
			site: restricted, env: env4(),
			steps: []step{
				fail(0).want("seems_down").setsCadence(),
				fail(30).then(func(t *testing.T, c *stepCtx) {
					if c.after.Incident.Failures != 2 {
						t.Errorf("failures %d", c.after.Incident.Failures)
					}
				}),
				// ap is deployed but not in site.Regions; eu is the primary;
				// "nowhere" is not deployed.
				fail(60).verifies("sa", "us").then(func(t *testing.T, c *stepCtx) {
					for _, cmd := range c.out.Verify {
						if !cmd.DueAt.Equal(at(60)) || !cmd.Deadline.Equal(at(150)) ||
							cmd.IncidentID != c.after.Incident.ID || cmd.ConfigSeq != c.obs.ConfigSeq {
							t.Errorf("command %+v", cmd)
						}
						want := events.CheckSpec{URL: restricted.URL, Method: "GET", Timeout: events.Duration(10 * time.Second),
							Redirects: events.RedirectFollow, TLSVerify: true}
						if !reflect.DeepEqual(cmd.Check, want) {
							t.Errorf("spec %+v, want defaults %+v", cmd.Check, want)
						}
					}
					v := c.after.Incident.Verification
					if !v.RequestedAt.Equal(at(60)) || !v.Deadline.Equal(at(150)) || v.Quorum != 2 || v.Unconfirmable {
						t.Errorf("verification %+v", v)
					}
				}),
				// Further failures count but ask nobody again.
				fail(90),
				vote("ap", 95, events.ClassHTTPStatus), // not asked: ignored
				fail(120).then(func(t *testing.T, c *stepCtx) {
					if c.after.Incident.Failures != 5 || len(c.after.Incident.Verification.Votes) != 0 {
						t.Errorf("incident %+v", c.after.Incident)
					}
				}),
				vote("sa", 125, events.ClassHTTPStatus),
				vote("us", 130, events.ClassHTTPStatus).want("down").then(wantVotes("sa=down", "us=down")),
			},
		},
		{
			name: "verify_command_carries_the_site_check_spec",
			site: custom, env: slowVerify,
			steps: []step{
				fail(0).want("seems_down").setsCadence(),
				fail(30),
				fail(60).verifies("ap", "sa", "us").then(func(t *testing.T, c *stepCtx) {
					want := events.CheckSpec{URL: custom.URL, Method: "HEAD", Timeout: events.Duration(5 * time.Second),
						Headers: map[string]string{"X-Probe": "1"}, ExpectStatus: []int{200, 204},
						Redirects: events.RedirectFail, TLSVerify: false}
					for _, cmd := range c.out.Verify {
						if !reflect.DeepEqual(cmd.Check, want) || !cmd.Deadline.Equal(at(180)) {
							t.Errorf("command %+v", cmd)
						}
					}
					// The commands do not alias the site.
					c.out.Verify[0].Check.Headers["X-Probe"] = "changed"
					if custom.Headers["X-Probe"] != "1" {
						t.Errorf("command aliases the site's headers")
					}
				}),
			},
		},
		{
			name: "two_down_votes_confirm_down_with_votes_and_unanswered_region_vote_none",
			site: site, env: env4(),
			steps: []step{
				fail(0).want("seems_down").setsCadence(),
				fail(30),
				fail(60).verifies("ap", "sa", "us"),
				vote("us", 61, events.ClassConnectRefused),
				vote("ap", 64, events.ClassTimeout).want("down").then(wantAt(64)).
					then(wantVotes("ap=down", "sa=none", "us=down")).then(obsOf(4, 3)).then(wantState(events.StateDown)).
					then(func(t *testing.T, c *stepCtx) {
						e := c.out.Events[0]
						if !e.StartedAt.Equal(at(0)) || e.FailureClass != events.ClassHTTPStatus || e.SingleRegion {
							t.Errorf("down %+v", e)
						}
						if e.Votes[0].Class != events.ClassTimeout || e.Votes[2].Class != events.ClassConnectRefused {
							t.Errorf("vote classes %+v", e.Votes)
						}
					}),
				// Late votes after Down are ignored.
				vote("sa", 70, events.ClassOK).then(emptyOutput),
				fail(90), // still down: no event
			},
		},
		{
			name: "quorum_floor_configured_quorum_1_still_needs_2_down_votes",
			site: quorum1, env: env3(),
			steps: seq(confirmSteps()[:4], []step{
				vote("us", 63, events.ClassHTTPStatus).want("down").then(wantVotes("ap=down", "us=down")),
			}),
		},
		{
			name: "quorum_1_in_two_region_deployment_never_down_closes_via_probe_cleared",
			site: quorum1, env: twoRegions,
			steps: []step{
				fail(0).want("seems_down").setsCadence(),
				fail(30),
				fail(60).then(func(t *testing.T, c *stepCtx) {
					if v := c.after.Incident.Verification; v == nil || !v.Unconfirmable || v.Quorum != 2 {
						t.Errorf("verification %+v", v)
					}
				}),
				ok(90).want("recovered:probe_cleared").clears(),
			},
		},
		{
			name: "two_region_deployment_quorum_exceeds_verifiers_never_down_closes_via_probe_cleared",
			site: site, env: twoRegions,
			steps: []step{
				fail(0).want("seems_down").setsCadence(),
				fail(30),
				fail(60).then(func(t *testing.T, c *stepCtx) { // no commands: 1 verifier < quorum 2
					v := c.after.Incident.Verification
					if v == nil || !v.Unconfirmable || !slices.Equal(v.Regions, []string{"us"}) {
						t.Errorf("verification %+v", v)
					}
				}),
				vote("us", 65, events.ClassHTTPStatus), // never asked: ignored
				fail(90), fail(120), fail(150),
				expireAt(100000),
				fail(200),
				ok(230).want("recovered:probe_cleared").clears(),
			},
		},
		{
			name: "quorum_3_with_2_eligible_verifiers_never_down_closes_via_probe_cleared",
			site: quorum3, env: env3(),
			steps: []step{
				fail(0).want("seems_down").setsCadence(),
				fail(30),
				fail(60), // no commands: 2 verifiers < quorum 3
				vote("ap", 62, events.ClassHTTPStatus),
				vote("us", 63, events.ClassHTTPStatus),
				fail(90),
				ok(120).want("recovered:probe_cleared").clears(),
			},
		},
		{
			name: "quorum_3_with_3_verifiers_needs_all_three",
			site: quorum3, env: env4(),
			steps: []step{
				fail(0).want("seems_down").setsCadence(),
				fail(30),
				fail(60).verifies("ap", "sa", "us"),
				vote("ap", 62, events.ClassHTTPStatus),
				vote("sa", 62, events.ClassHTTPStatus),
				vote("us", 63, events.ClassHTTPStatus).want("down").then(wantVotes("ap=down", "sa=down", "us=down")),
			},
		},
		{
			name: "one_verifier_never_answers_deadline_passes_false_alarm_with_vote_none",
			site: site, env: env3(),
			steps: []step{
				fail(0).want("seems_down").setsCadence(),
				fail(30),
				fail(60).verifies("ap", "us"),
				vote("ap", 62, events.ClassHTTPStatus),
				expireAt(150), // the deadline itself has not passed
				expireAt(151).want("recovered:false_alarm").clears().then(wantAt(150)).
					then(wantVotes("ap=down", "us=none")).then(obsOf(3)).
					then(func(t *testing.T, c *stepCtx) {
						e := c.out.Events[0]
						if e.ID != events.DeriveID(at(150), siteID, e.IncidentID, "recovered", "verify_deadline") {
							t.Errorf("deadline event ID not derived from the deadline")
						}
					}),
				expireAt(152).then(emptyOutput),
				vote("us", 149, events.ClassHTTPStatus).then(emptyOutput), // for a closed incident
				fail(180).want("seems_down").setsCadence(),
			},
		},
		{
			name: "no_verifier_answers_later_observation_finds_deadline_passed_and_opens_new_incident",
			site: site, env: env3(),
			steps: []step{
				fail(0).want("seems_down").setsCadence(),
				fail(30),
				fail(60).verifies("ap", "us"),
				fail(90),
				fail(120),
				fail(150), // at the deadline: not after it
				fail(180).want("recovered:false_alarm", "seems_down").setsCadence().
					then(wantVotes()).
					then(func(t *testing.T, c *stepCtx) {
						fa, sd := c.out.Events[0], c.out.Events[1]
						if !fa.At.Equal(at(150)) || !sd.At.Equal(at(180)) || fa.IncidentID == sd.IncidentID {
							t.Errorf("false alarm %+v then %+v", fa, sd)
						}
						if got := []string{fa.Votes[0].Region + "=" + string(fa.Votes[0].Vote), fa.Votes[1].Region + "=" + string(fa.Votes[1].Vote)}; !slices.Equal(got, []string{"ap=none", "us=none"}) {
							t.Errorf("votes %v", got)
						}
						// Nobody answered: the evidence is the incident's opening observation.
						if !slices.Equal(fa.ObservationIDs, []string{c.r.obs[0].ID}) {
							t.Errorf("observation IDs %v", fa.ObservationIDs)
						}
					}),
			},
		},
		{
			name: "verifiers_disagree_two_up_votes_false_alarm_as_soon_as_impossible",
			site: site, env: env4(),
			steps: []step{
				fail(0).want("seems_down").setsCadence(),
				fail(30),
				fail(60).verifies("ap", "sa", "us"),
				vote("sa", 61, events.ClassOK), // 0 down + 2 pending: still possible
				vote("us", 62, events.ClassOK).want("recovered:false_alarm").clears().then(wantAt(62)).
					then(wantVotes("ap=none", "sa=up", "us=up")).then(obsOf(3, 4)),
				vote("ap", 63, events.ClassHTTPStatus).then(emptyOutput),
			},
		},
		{
			name: "one_up_vote_of_two_verifiers_false_alarm_at_once",
			site: site, env: env3(),
			steps: seq(confirmSteps()[:3], []step{
				vote("us", 61, events.ClassOK).want("recovered:false_alarm").clears().then(wantVotes("ap=none", "us=up")),
			}),
		},
		{
			name: "monitor_side_vote_is_unknown_and_uses_up_the_region",
			site: site, env: env3(),
			steps: seq(confirmSteps()[:4], []step{
				vote("us", 63, events.ClassCommandExpired).want("recovered:false_alarm").clears().
					then(wantVotes("ap=down", "us=unknown")),
			}),
		},
		{
			name: "one_vote_per_region_first_counts",
			site: site, env: env4(),
			steps: []step{
				fail(0).want("seems_down").setsCadence(),
				fail(30),
				fail(60).verifies("ap", "sa", "us"),
				vote("ap", 61, events.ClassOK),
				vote("ap", 62, events.ClassHTTPStatus), // second answer from ap: ignored
				vote("eu", 62, events.ClassHTTPStatus), // the primary does not vote
				vote("sa", 63, events.ClassHTTPStatus),
				vote("us", 64, events.ClassHTTPStatus).want("down").then(wantVotes("ap=up", "sa=down", "us=down")),
			},
		},
		{
			name: "monitor_side_classes_never_open_an_incident",
			site: site, env: env3(),
			steps: resolverAlways,
		},
		{
			name: "monitor_side_classes_never_advance_or_reset_an_incident",
			site: site, env: env3(),
			steps: []step{
				fail(0).want("seems_down").setsCadence(),
				mon(30), failWith(40, events.ClassMonitorNetwork), failWith(50, events.ClassCommandExpired),
				failWith(55, events.ClassTargetRefused),
				fail(60).then(func(t *testing.T, c *stepCtx) {
					if c.after.Incident.Failures != 2 {
						t.Errorf("failures %d, want 2", c.after.Incident.Failures)
					}
				}),
				mon(70),
				fail(90).verifies("ap", "us"),
				vote("ap", 92, events.ClassHTTPStatus),
				vote("us", 93, events.ClassHTTPStatus).want("down"),
				ok(120),
				mon(150), // does not reset the success count
				failWith(160, events.ClassMonitorOverload),
				ok(180).want("recovered:recovered").clears().then(obsOf(10, 13)),
			},
		},
		{
			name: "impaired_primary_failure_opens_nothing",
			site: site, env: impairedEU,
			steps: []step{
				fail(0).then(emptyOutput), fail(30), fail(60), fail(90),
				fail(120).want("seems_down").setsCadence(),
			},
		},
		{
			name: "impaired_region_vote_is_vote_none",
			site: site, env: impairedAP,
			steps: []step{
				fail(0).want("seems_down").setsCadence(),
				fail(30),
				fail(60).verifies("ap", "sa", "us"),
				vote("ap", 61, events.ClassHTTPStatus),
				vote("sa", 62, events.ClassHTTPStatus),
				vote("us", 63, events.ClassHTTPStatus).want("down").then(wantVotes("ap=none", "sa=down", "us=down")).
					then(obsOf(4, 5)),
			},
		},
		{
			name: "impaired_vote_makes_quorum_impossible_false_alarm",
			site: site, env: func() Env { e := env3(); e.Impaired = impairedAP.Impaired; return e }(),
			steps: seq(confirmSteps()[:3], []step{
				vote("ap", 61, events.ClassHTTPStatus).want("recovered:false_alarm").clears().
					then(wantVotes("ap=none", "us=none")),
			}),
		},
		{
			name: "down_then_recover_after_successes_recovered",
			site: site, env: env3(),
			steps: seq(confirmSteps(), []step{
				ok(90).then(func(t *testing.T, c *stepCtx) {
					if c.after.Incident.Successes != 1 {
						t.Errorf("successes %d", c.after.Incident.Successes)
					}
				}),
				ok(120).want("recovered:recovered").clears().then(wantAt(120)).then(obsOf(5, 6)).then(noIncident),
				ok(150).then(emptyOutput),
			}),
		},
		{
			name: "recover_after_3",
			site: recover3, env: env3(),
			steps: seq(confirmSteps(), []step{
				ok(90), ok(120),
				ok(150).want("recovered:recovered").clears().then(obsOf(5, 6, 7)),
			}),
		},
		{
			name: "down_one_success_one_failure_then_successes_recovery_count_reset",
			site: site, env: env3(),
			steps: seq(confirmSteps(), []step{
				ok(90),
				fail(120).then(func(t *testing.T, c *stepCtx) {
					if c.after.Incident.Successes != 0 || c.after.Incident.State != events.StateDown {
						t.Errorf("incident %+v", c.after.Incident)
					}
				}),
				ok(150),
				ok(180).want("recovered:recovered").clears().then(obsOf(7, 8)),
			}),
		},
		{
			name: "alternating_200_503_on_every_check_never_more_than_one_open_incident",
			site: site, env: env3(),
			steps: alternating,
		},
		{
			name: "new_failure_right_after_recovered_opens_new_incident_at_once",
			site: site, env: env3(),
			steps: seq(confirmSteps(), []step{
				ok(90), ok(120).want("recovered:recovered").clears(),
				fail(150).want("seems_down").setsCadence().then(func(t *testing.T, c *stepCtx) {
					if c.out.Events[0].IncidentID == c.r.incidents[0] || !c.out.Events[0].StartedAt.Equal(at(150)) {
						t.Errorf("new incident %+v", c.out.Events[0])
					}
				}),
			}),
		},
		{
			name: "single_region_allowance_confirms_down_locally",
			site: site, env: single,
			steps: []step{
				fail(0).want("seems_down").setsCadence(),
				fail(30),
				fail(60).want("down").then(wantAt(60)).then(obsOf(0, 1, 2)).then(func(t *testing.T, c *stepCtx) {
					if e := c.out.Events[0]; !e.SingleRegion || e.Votes != nil {
						t.Errorf("down %+v", e)
					}
				}),
				fail(90),
				ok(120), ok(150).want("recovered:recovered").clears(),
			},
		},
		{
			name: "single_region_allowance_confirm_after_1_seems_down_and_down_at_once",
			site: confirm1, env: single,
			steps: []step{
				fail(0).want("seems_down", "down").setsCadence().then(func(t *testing.T, c *stepCtx) {
					if c.out.Cadence.Interval.Std() != 10*time.Second {
						t.Errorf("cadence %+v", c.out.Cadence)
					}
				}),
			},
		},
		{
			name: "confirm_after_1_multi_region_verifies_at_once",
			site: confirm1, env: env3(),
			steps: []step{
				fail(0).want("seems_down").setsCadence().verifies("ap", "us"),
			},
		},
		{
			name: "single_region_without_allowance_never_down_closes_via_probe_cleared",
			site: site, env: Env{Regions: []string{"eu"}},
			steps: []step{
				fail(0).want("seems_down").setsCadence(),
				fail(30), fail(60), fail(90),
				ok(120).want("recovered:probe_cleared").clears(),
			},
		},
		{
			name: "single_region_allowance_ignored_in_multi_region_deployment",
			site: site, env: func() Env { e := env3(); e.AllowSingleRegion = true; return e }(),
			steps: confirmSteps(),
		},
		{
			name: "close_manual_paused_deleted",
			site: site, env: env3(),
			steps: seq([]step{
				closeAt(0, events.ReasonManual).then(emptyOutput), // nothing open
				fail(10).want("seems_down").setsCadence(),
				closeAt(20, events.ReasonManual).want("recovered:manual").clears().then(wantAt(20)).then(obsOf(1)),
				closeAt(25, events.ReasonManual).then(emptyOutput),
				fail(40).want("seems_down").setsCadence(),
				closeAt(45, events.ReasonRecovered).then(emptyOutput), // not a close reason
				closeAt(45, events.ReasonFalseAlarm).then(emptyOutput),
				closeAt(50, events.ReasonPaused).want("recovered:paused").clears(),
			}, []step{
				fail(100).want("seems_down").setsCadence(),
				fail(130),
				fail(160).verifies("ap", "us"),
				vote("ap", 162, events.ClassHTTPStatus),
				vote("us", 163, events.ClassHTTPStatus).want("down"),
				closeAt(200, events.ReasonDeleted).want("recovered:deleted").clears().then(obsOf(8)),
			}),
		},
		{
			name: "close_after_verification_deadline_is_false_alarm_at_the_deadline",
			site: site, env: env3(),
			steps: seq(confirmSteps()[:4], []step{
				closeAt(500, events.ReasonManual).want("recovered:false_alarm").clears().then(wantAt(150)),
			}),
		},
		{
			name: "maintenance_flags_whole_incident_started_in_window_and_events_in_window",
			site: site, env: maint,
			steps: []step{
				fail(0).want("seems_down").setsCadence().then(wantMaintenance(true)),
				fail(30),
				fail(60).verifies("ap", "us"),
				vote("ap", 62, events.ClassHTTPStatus),
				vote("us", 63, events.ClassHTTPStatus).want("down").then(wantMaintenance(true)), // after the window
				ok(2000),
				ok(2030).want("recovered:recovered").clears().then(wantMaintenance(true)),
				fail(2990).want("seems_down").setsCadence().then(wantMaintenance(false)),
				ok(3050).want("recovered:probe_cleared").clears().then(wantMaintenance(true)), // in window B
				ok(3060).withCert(at(3060 + 10*day)).want("tls_expiring").then(wantMaintenance(true)),
				fail(3200).want("seems_down").setsCadence().then(wantMaintenance(false)),
				ok(3230).want("recovered:probe_cleared").clears().then(wantMaintenance(false)),
			},
		},
		{
			name: "tls_advisories_30_14_7_expired_renewed_each_exactly_once",
			site: site, env: env3(),
			steps: []step{
				ok(0).withCert(cert1).then(emptyOutput), // 31 days
				ok(1 * day).withCert(cert1).want("tls_expiring").then(wantCert(cert1, 30, events.SeverityWarning)).
					then(wantState(events.StateUp)).
					then(func(t *testing.T, c *stepCtx) {
						e := c.out.Events[0]
						if e.ID != events.DeriveID(at(day), siteID, "tls_expiring", cert1.Format(time.RFC3339Nano), "30") {
							t.Errorf("TLS event ID not derived from (site, kind, NotAfter, threshold)")
						}
					}),
				ok(2 * day).withCert(cert1),
				ok(17 * day).withCert(cert1).want("tls_expiring").then(wantCert(cert1, 14, events.SeverityWarning)),
				ok(18 * day).withCert(cert1),
				ok(24 * day).withCert(cert1).want("tls_expiring").then(wantCert(cert1, 7, events.SeverityDegraded)),
				ok(25 * day).withCert(cert1),
				ok(31 * day).withCert(cert1), // 0 days left: not expired yet
				ok(31*day + 3600).withCert(cert1).want("tls_expired").then(wantCert(cert1, -1, events.SeverityDegraded)),
				ok(32 * day).withCert(cert1),
				ok(33 * day).withCert(cert2).want("tls_renewed").then(wantCert(cert2, 97, events.SeverityUp)),
				ok(34 * day).withCert(cert1), // the old certificate again: ignored
				ok(35 * day).withCert(cert2),
				ok(36 * day).withCert(cert3).then(func(t *testing.T, c *stepCtx) { // no advisory for cert2: no renewed
					if !c.after.TLS.NotAfter.Equal(cert3) || c.after.TLS.Stage != 0 {
						t.Errorf("tls state %+v", c.after.TLS)
					}
				}),
				vote("us", 200*day, events.ClassOK).withCert(at(200*day + day)), // not the primary: ignored
				ok(37 * day),
			},
		},
		{
			name: "tls_first_seen_close_to_expiry_gets_only_the_most_severe_advisory",
			site: site, env: env3(),
			steps: []step{
				ok(40 * day).withCert(shortCert).want("tls_expiring").then(wantCert(shortCert, 5, events.SeverityDegraded)),
				ok(41 * day).withCert(shortCert),
				// Renewed to a certificate itself within 30 days.
				ok(42*day).withCert(at(62*day)).want("tls_renewed", "tls_expiring").then(wantCert(at(62*day), 20, events.SeverityWarning)),
			},
		},
		{
			name: "tls_advisories_never_touch_the_downtime_path",
			site: site, env: env3(),
			steps: []step{
				failWith(0, events.ClassTLSExpired).withCert(at(-3600)).want("seems_down", "tls_expired").setsCadence().
					then(wantState(events.StateSeemsDown)),
				mon(30).withCert(at(-3600)),
				ok(60).withCert(at(90*day)).want("recovered:probe_cleared", "tls_renewed").clears(),
			},
		},
		{
			name: "stale_vote_for_old_incident_ignored",
			site: site, env: env3(),
			steps: seq(confirmSteps()[:3], []step{
				ok(90).want("recovered:probe_cleared").clears(),
				vote("ap", 91, events.ClassHTTPStatus).forIncident("prev").then(emptyOutput),
				fail(120).want("seems_down").setsCadence(),
				fail(150),
				fail(180).verifies("ap", "us"),
				vote("ap", 181, events.ClassHTTPStatus).forIncident("prev"),
				vote("us", 182, events.ClassHTTPStatus).forIncident("prev"),
				vote("us", 183, events.ClassHTTPStatus).forIncident("01ARZ3NDEKTSV4RRFFQ69G5FAV"),
				vote("us", 184, events.ClassHTTPStatus),
				vote("ap", 185, events.ClassHTTPStatus).want("down").then(wantVotes("ap=down", "us=down")).then(obsOf(12, 11)),
			}),
		},
		{
			name: "out_of_order_and_duplicate_observations_ignored",
			site: site, env: env3(),
			steps: []step{
				ok(0),
				fail(60).want("seems_down").setsCadence(),
				fail(30),                       // older than the last applied: ignored
				replayStep(1),                  // redelivery of the same observation: ignored
				ok(45),                         // would clear the incident if applied
				fail(60),                       // same time, another ID: not after the last applied
				fail(90),                       // 2nd failure
				replayStep(6),                  // duplicate
				fail(120).verifies("ap", "us"), // 3rd
				vote("ap", 121, events.ClassHTTPStatus),
				replayStep(9), // duplicate vote
				fail(150),     // a local retry that arrives before the vote below
				vote("us", 130, events.ClassHTTPStatus).want("down"), // started before the last local check: still counts
			},
		},
	}
}

func TestScenarios(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) { run(t, sc) })
	}
}

// TestDeterminism runs every scenario twice from scratch and requires
// byte-identical output: same IDs, same order.
func TestDeterminism(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			a := bytes.Join(run(t, sc), []byte("\n"))
			b := bytes.Join(run(t, sc), []byte("\n"))
			if !bytes.Equal(a, b) {
				t.Fatalf("two runs differ:\n%s\n%s", a, b)
			}
		})
	}
}

// TestRoundTripWholeRun runs every scenario as a restarting service would:
// the state is only ever kept as JSON between steps (a fresh SiteState is
// decoded from the checkpoint before each step and encoded after it), and the
// whole output must equal that of an uninterrupted run.
func TestRoundTripWholeRun(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			plain := bytes.Join(run(t, sc), []byte("\n"))
			r := &runner{sc: sc, obs: map[int]events.Observation{}, ids: map[string]bool{}}
			ckpt := []byte("{}")
			var outs [][]byte
			for i, s := range sc.steps {
				var st SiteState
				if err := json.Unmarshal(ckpt, &st); err != nil {
					t.Fatal(err)
				}
				obs := r.input(i, s, &st)
				if s.kind == stepObserve {
					r.obs[i] = obs
				}
				out := apply(&st, sc, s, obs)
				for _, e := range out.Events {
					if e.Kind == events.KindRecovered {
						r.closed = append(r.closed, e.IncidentID)
					}
				}
				outs = append(outs, mustJSON(t, out))
				ckpt = mustJSON(t, &st)
			}
			if got := bytes.Join(outs, []byte("\n")); !bytes.Equal(got, plain) {
				t.Fatalf("checkpointed run differs from uninterrupted run:\n%s\n%s", got, plain)
			}
		})
	}
}

// TestAlternatingNeverTwoOpenIncidents asserts directly, across 100 checks of
// 200/503 alternating, that the state never holds more than one incident and
// that every Seems Down is closed before the next opens.
func TestAlternatingNeverTwoOpenIncidents(t *testing.T) {
	env, site := env3(), baseSite()
	st := &SiteState{}
	open := ""
	for i := 0; i < 100; i++ {
		class, status := events.ClassOK, 200
		if i%2 == 0 {
			class, status = events.ClassHTTPStatus, 503
		}
		ts := at(i * 30)
		out := st.Observe(site, events.Observation{
			ID: events.DeriveID(ts, "obs", strconv.Itoa(i)), SiteID: siteID, Region: "eu",
			Purpose: events.PurposeScheduled, StartedAt: ts, Class: class, StatusCode: status,
		}, env)
		for _, e := range out.Events {
			switch e.Kind {
			case events.KindSeemsDown:
				if open != "" {
					t.Fatalf("check %d: second open incident %s while %s is open", i, e.IncidentID, open)
				}
				open = e.IncidentID
			case events.KindRecovered:
				open = ""
			}
		}
		if (st.Incident != nil) != (open != "") {
			t.Fatalf("check %d: state and events disagree", i)
		}
	}
}

func TestDaysLeft(t *testing.T) {
	for _, tc := range []struct {
		left time.Duration
		want int
	}{
		{31 * 24 * time.Hour, 31},
		{30*24*time.Hour + time.Second, 30},
		{30 * 24 * time.Hour, 30},
		{30*24*time.Hour - time.Second, 29},
		{time.Hour, 0},
		{0, 0},
		{-time.Second, -1},
		{-24 * time.Hour, -1},
		{-24*time.Hour - time.Second, -2},
	} {
		if got := daysLeft(t0.Add(tc.left), t0); got != tc.want {
			t.Errorf("daysLeft(%v) = %d, want %d", tc.left, got, tc.want)
		}
	}
}

// TestObserveIgnoresOtherSitesAndEmptyEnv checks the defensive edges.
func TestObserveIgnoresOtherSitesAndEmptyEnv(t *testing.T) {
	site := baseSite()
	obs := events.Observation{ID: events.DeriveID(t0, "x"), SiteID: "other", Region: "eu",
		Purpose: events.PurposeScheduled, StartedAt: t0, Class: events.ClassHTTPStatus}
	st := &SiteState{}
	if out := st.Observe(site, obs, env3()); !reflect.DeepEqual(out, Output{}) {
		t.Errorf("another site's observation: %+v", out)
	}
	obs.SiteID = siteID
	if out := st.Observe(site, obs, Env{}); !reflect.DeepEqual(out, Output{}) {
		t.Errorf("no regions: %+v", out)
	}
	if out := st.Expire(site, t0, Env{}); !reflect.DeepEqual(out, Output{}) {
		t.Errorf("no regions: %+v", out)
	}
	obs.Purpose = ""
	if out := st.Observe(site, obs, env3()); !reflect.DeepEqual(out, Output{}) {
		t.Errorf("no purpose: %+v", out)
	}
	obs.Purpose = events.PurposeScheduled
	obs.Region = "us"
	if out := st.Observe(site, obs, env3()); !reflect.DeepEqual(out, Output{}) {
		t.Errorf("scheduled check from a non-primary region: %+v", out)
	}
}

// TestNoClockNoRandomness keeps the decision core pure: no wall clock, no
// randomness, no map ranged into an output. (The service around it, which
// does I/O, lives in other files.)
func TestNoClockNoRandomness(t *testing.T) {
	for _, f := range []string{"machine.go", "tls.go"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"time.Now", "time.Since", "time.Until", "math/rand", "crypto/rand", "range site.Headers"} {
			if bytes.Contains(b, []byte(bad)) {
				t.Errorf("%s uses %s", f, bad)
			}
		}
	}
}

// ExampleSiteState_Observe shows the opening of an incident.
func ExampleSiteState_Observe() {
	site := events.Site{ID: "blog-42", URL: "https://blog.example.com/"}
	env := Env{Regions: []string{"eu", "us", "ap"}}
	var st SiteState
	t := time.Date(2025, 3, 14, 9, 0, 0, 0, time.UTC)
	out := st.Observe(site, events.Observation{
		ID: events.DeriveID(t, "example"), SiteID: "blog-42", Region: "eu",
		Purpose: events.PurposeScheduled, StartedAt: t, Class: events.ClassHTTPStatus, StatusCode: 503,
	}, env)
	e := out.Events[0]
	fmt.Println(e.Kind, e.State, e.Severity, e.StartedAt.Format(time.RFC3339), out.Cadence.Interval)
	// Output: seems_down seems_down 3 2025-03-14T09:00:00Z 30s
}
