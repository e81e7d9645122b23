package statemachine_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/internal/natstest"
	"github.com/vigil-dev/vigil/services/sites"
	"github.com/vigil-dev/vigil/services/statemachine"
	"github.com/vigil-dev/vigil/services/topology"
)

// harness is a real embedded server with a state machine running against it.
type harness struct {
	t   *testing.T
	srv *natstest.Server
	ids *events.IDSource
	reg *sites.Registry
}

func newHarness(t *testing.T) *harness {
	s := natstest.Start(t, true)
	return &harness{t: t, srv: s, ids: events.NewIDSource(rand.Reader), reg: sites.NewRegistry(s.JS)}
}

func (h *harness) site(id string, mod func(*events.Site)) events.Site {
	h.t.Helper()
	s := events.Site{ID: id, URL: "https://" + id + ".example.com/", Interval: events.Duration(time.Minute)}
	if mod != nil {
		mod(&s)
	}
	cur, err := h.reg.Create(context.Background(), s)
	if err != nil {
		h.t.Fatal(err)
	}
	return cur.Site
}

func (h *harness) run(opts ...statemachine.Option) context.CancelFunc {
	h.t.Helper()
	opts = append([]statemachine.Option{statemachine.WithLeaseTTL(2 * time.Second), statemachine.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, opts...)
	sm, err := statemachine.New(h.srv.JS, opts...)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sm.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("state machine: %v", err)
		}
	})
	return cancel
}

// observe publishes an observation as a checker would.
func (h *harness) observe(site events.Site, region string, purpose events.Purpose, class events.Class, at time.Time, incident string) events.Observation {
	h.t.Helper()
	id, err := h.ids.New(at)
	if err != nil {
		h.t.Fatal(err)
	}
	obs := events.Observation{
		ID: id, SiteID: site.ID, Bucket: events.Bucket(site.ID), Region: region, CheckerID: "test",
		CommandID: events.CommandID(site.ID, region, purpose, at), Purpose: purpose, IncidentID: incident,
		DueAt: at, StartedAt: at, Class: class,
	}
	if class == events.ClassHTTPStatus {
		obs.StatusCode = 503
	} else if class == events.ClassOK {
		obs.StatusCode = 200
	}
	msg, err := events.Marshal(&obs)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.srv.JS.PublishMsg(context.Background(), msg); err != nil {
		h.t.Fatal(err)
	}
	return obs
}

// siteEvents returns the site's events in stream order once there are n,
// failing the test after a timeout.
func (h *harness) siteEvents(siteID string, n int) []events.SiteEvent {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := h.allSiteEvents(siteID)
		if len(got) >= n || time.Now().After(deadline) {
			if len(got) < n {
				h.t.Fatalf("site %s has %d events after 20s, want %d: %s", siteID, len(got), n, kinds(got))
			}
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (h *harness) allSiteEvents(siteID string) []events.SiteEvent {
	h.t.Helper()
	ctx := context.Background()
	oc, err := h.srv.JS.OrderedConsumer(ctx, events.StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SiteEventsFilter(siteID)},
	})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []events.SiteEvent
	for {
		batch, err := oc.FetchNoWait(100)
		if err != nil {
			h.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var ev events.SiteEvent
			if _, err := events.Decode(m.Headers(), m.Data(), &ev); err != nil {
				h.t.Fatal(err)
			}
			out = append(out, ev)
		}
		if n == 0 {
			return out
		}
	}
}

func kinds(evs []events.SiteEvent) string {
	var parts []string
	for _, e := range evs {
		p := string(e.Kind)
		if e.Reason != "" {
			p += ":" + string(e.Reason)
		}
		parts = append(parts, p)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func (h *harness) kvHas(bucket, key string) bool {
	h.t.Helper()
	kv, err := h.srv.JS.KeyValue(context.Background(), bucket)
	if err != nil {
		h.t.Fatal(err)
	}
	_, err = kv.Get(context.Background(), key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return true
}

func (h *harness) streamLastSeq(name string) uint64 {
	h.t.Helper()
	st, err := h.srv.JS.Stream(context.Background(), name)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return info.State.LastSeq
}

// waitConsumed waits until the bucket's durable consumer has acknowledged
// everything.
func (h *harness) waitConsumed(siteID string) {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		c, err := h.srv.JS.Consumer(context.Background(), events.StreamObservations, statemachine.ConsumerName(events.Bucket(siteID)))
		if err == nil {
			info, err := c.Info(context.Background())
			if err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.t.Fatalf("observations of %s not consumed within 20s", siteID)
}

// t0 is when the scripted observations start: an hour ahead of the real
// clock, which the running service uses to expire verifications, so that no
// deadline in a script passes while a test runs. A fixed date here turned
// into a failing test once the real clock passed it.
var t0 = time.Now().UTC().Add(time.Hour).Truncate(time.Minute)

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

func TestOutageSingleRegion(t *testing.T) {
	h := newHarness(t)
	site := h.site("shop", nil)
	h.run(statemachine.WithRegions("local"), statemachine.WithSingleRegionAllowance(true))

	first := h.observe(site, "local", events.PurposeScheduled, events.ClassHTTPStatus, at(0), "")
	evs := h.siteEvents(site.ID, 1)
	if evs[0].Kind != events.KindSeemsDown || !evs[0].StartedAt.Equal(first.StartedAt) {
		t.Fatalf("first event %+v", evs[0])
	}
	if !h.kvHas(events.KVCadence, events.SiteKey(site.ID)) || !h.kvHas(events.KVStateMachine, events.SiteKey(site.ID)) {
		t.Error("an open incident has no cadence override or no durable state")
	}
	inc := evs[0].IncidentID
	h.observe(site, "local", events.PurposeRetry, events.ClassHTTPStatus, at(30), inc)
	h.observe(site, "local", events.PurposeRetry, events.ClassHTTPStatus, at(60), inc)
	evs = h.siteEvents(site.ID, 2)
	if evs[1].Kind != events.KindDown || !evs[1].SingleRegion || evs[1].IncidentID != inc {
		t.Fatalf("second event %+v", evs[1])
	}
	h.observe(site, "local", events.PurposeRetry, events.ClassOK, at(90), inc)
	h.observe(site, "local", events.PurposeRetry, events.ClassOK, at(120), inc)
	evs = h.siteEvents(site.ID, 3)
	if got := kinds(evs); got != "[seems_down down recovered:recovered]" {
		t.Fatalf("events %s", got)
	}
	h.waitConsumed(site.ID)
	if h.kvHas(events.KVCadence, events.SiteKey(site.ID)) || h.kvHas(events.KVStateMachine, events.SiteKey(site.ID)) {
		t.Error("a recovered site still has a cadence override or durable state")
	}
}

// Healthy observations produce no event and no write at all.
func TestHealthyObservationsWriteNothing(t *testing.T) {
	h := newHarness(t)
	site := h.site("calm", nil)
	h.run(statemachine.WithRegions("local"))
	before := map[string]uint64{}
	for _, name := range []string{events.StreamEvents, "KV_" + events.KVCadence, events.StreamChecks} {
		before[name] = h.streamLastSeq(name)
	}
	for i := range 50 {
		h.observe(site, "local", events.PurposeScheduled, events.ClassOK, at(60*i), "")
	}
	h.waitConsumed(site.ID)
	for name, seq := range before {
		if got := h.streamLastSeq(name); got != seq {
			t.Errorf("%s went from seq %d to %d on healthy observations", name, seq, got)
		}
	}
	// The state machine's KV holds the buckets' positions and nothing else.
	h.waitPosition(events.Bucket(site.ID), h.streamLastSeq(events.StreamObservations))
	for subject := range h.kvSubjects(events.KVStateMachine) {
		if !strings.HasPrefix(subject, "$KV."+events.KVStateMachine+".position.") {
			t.Errorf("healthy observations wrote %s", subject)
		}
	}
}

// TestPositionSurvivesConsumerLoss: the bucket consumers keep their state in
// memory, which a server restart loses. The worker notices the consumer is
// gone and creates it again from the bucket's saved position: the observations
// after it are applied once, those before it are not applied again.
func TestPositionSurvivesConsumerLoss(t *testing.T) {
	h := newHarness(t)
	site := h.site("amnesia", nil)
	bucket := events.Bucket(site.ID)
	h.run(statemachine.WithRegions("local"), statemachine.WithSingleRegionAllowance(true))

	h.observe(site, "local", events.PurposeScheduled, events.ClassHTTPStatus, at(0), "")
	h.observe(site, "local", events.PurposeRetry, events.ClassOK, at(30), "")
	h.siteEvents(site.ID, 2)
	h.waitConsumed(site.ID)
	pos := h.streamLastSeq(events.StreamObservations)
	h.waitPosition(bucket, pos)

	// What a server restart does to a memory-state consumer.
	if err := h.srv.JS.DeleteConsumer(context.Background(), events.StreamObservations, statemachine.ConsumerName(bucket)); err != nil {
		t.Fatal(err)
	}
	h.observe(site, "local", events.PurposeScheduled, events.ClassHTTPStatus, at(60), "")
	h.siteEvents(site.ID, 3)
	time.Sleep(500 * time.Millisecond) // a replay from too early would add events now
	evs := h.allSiteEvents(site.ID)
	if got, want := kinds(evs), "[seems_down recovered:probe_cleared seems_down]"; got != want {
		t.Fatalf("events %s, want %s", got, want)
	}
	c, err := h.srv.JS.Consumer(context.Background(), events.StreamObservations, statemachine.ConsumerName(bucket))
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.CachedInfo().Config
	if !cfg.MemoryStorage || cfg.DeliverPolicy != jetstream.DeliverByStartSequencePolicy || cfg.OptStartSeq != pos+1 {
		t.Fatalf("re-created consumer: memory %v, deliver %v from %d; want memory, by start sequence from %d",
			cfg.MemoryStorage, cfg.DeliverPolicy, cfg.OptStartSeq, pos+1)
	}
}

// waitPosition waits until the bucket's saved position reaches seq.
func (h *harness) waitPosition(bucket int, seq uint64) {
	h.t.Helper()
	kv, err := h.srv.JS.KeyValue(context.Background(), events.KVStateMachine)
	if err != nil {
		h.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		if e, err := kv.Get(context.Background(), events.PositionKey(bucket)); err == nil {
			last = string(e.Value())
			if last == fmt.Sprint(seq) {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.t.Fatalf("position of bucket %d is %q after 10s, want %d", bucket, last, seq)
}

// kvSubjects returns the subjects stored in a KV bucket's stream.
func (h *harness) kvSubjects(bucket string) map[string]uint64 {
	h.t.Helper()
	st, err := h.srv.JS.Stream(context.Background(), "KV_"+bucket)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := st.Info(context.Background(), jetstream.WithSubjectFilter("$KV."+bucket+".>"))
	if err != nil {
		h.t.Fatal(err)
	}
	return info.State.Subjects
}

func TestVerificationFromOtherRegions(t *testing.T) {
	h := newHarness(t)
	site := h.site("multi", nil)
	h.run(statemachine.WithRegions("local", "eu", "us"))
	h.observe(site, "local", events.PurposeScheduled, events.ClassConnectRefused, at(0), "")
	inc := h.siteEvents(site.ID, 1)[0].IncidentID
	h.observe(site, "local", events.PurposeRetry, events.ClassConnectRefused, at(30), inc)
	h.observe(site, "local", events.PurposeRetry, events.ClassConnectRefused, at(60), inc)
	h.waitConsumed(site.ID)
	// Verification commands wait on CHECKS for each other region.
	st, _ := h.srv.JS.Stream(context.Background(), events.StreamChecks)
	for _, region := range []string{"eu", "us"} {
		raw, err := st.GetLastMsgForSubject(context.Background(), events.CheckSubject(region, site.ID))
		if err != nil {
			t.Fatalf("no verification command for %s: %v", region, err)
		}
		var cmd events.CheckCommand
		if _, err := events.Decode(raw.Header, raw.Data, &cmd); err != nil || cmd.Purpose != events.PurposeVerify || cmd.IncidentID != inc {
			t.Fatalf("command for %s: %+v %v", region, cmd, err)
		}
	}
	if _, err := st.GetLastMsgForSubject(context.Background(), events.CheckSubject("local", site.ID)); err == nil {
		t.Error("the primary region was asked to verify")
	}
	h.observe(site, "eu", events.PurposeVerify, events.ClassConnectRefused, at(62), inc)
	h.observe(site, "us", events.PurposeVerify, events.ClassTimeout, at(63), inc)
	evs := h.siteEvents(site.ID, 2)
	down := evs[1]
	if down.Kind != events.KindDown || down.SingleRegion || len(down.Votes) != 2 {
		t.Fatalf("down event %+v", down)
	}
	for _, v := range down.Votes {
		if v.Vote != events.VoteDown {
			t.Errorf("vote %+v", v)
		}
	}
}

// Pausing a site closes its open incident with reason paused.
func TestPauseClosesIncident(t *testing.T) {
	h := newHarness(t)
	site := h.site("pausable", nil)
	h.run(statemachine.WithRegions("local"))
	h.observe(site, "local", events.PurposeScheduled, events.ClassTimeout, at(0), "")
	h.siteEvents(site.ID, 1)
	h.waitConsumed(site.ID)
	if _, _, err := h.reg.Pause(context.Background(), site.ID); err != nil {
		t.Fatal(err)
	}
	evs := h.siteEvents(site.ID, 2)
	if got := kinds(evs); got != "[seems_down recovered:paused]" {
		t.Errorf("events %s", got)
	}
}

// A poison message is quarantined and does not block its bucket.
func TestPoisonObservationDoesNotBlock(t *testing.T) {
	h := newHarness(t)
	site := h.site("robust", nil)
	h.run(statemachine.WithRegions("local"))
	subj := events.ObservationSubject(site.ID)
	if _, err := h.srv.JS.Publish(context.Background(), subj, []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	h.observe(site, "local", events.PurposeScheduled, events.ClassHTTPStatus, at(0), "")
	if evs := h.siteEvents(site.ID, 1); evs[0].Kind != events.KindSeemsDown {
		t.Errorf("events after poison: %s", kinds(evs))
	}
}

func TestRunNeedsRegions(t *testing.T) {
	s := natstest.Start(t, true)
	if _, err := statemachine.New(s.JS); err == nil {
		t.Error("a state machine without regions was created")
	}
	if _, err := statemachine.New(s.JS, statemachine.WithRegions("Bad.Region")); err == nil || !strings.Contains(err.Error(), "region") {
		t.Errorf("bad region: %v", err)
	}
}

// The primary region's resolver fails for every site: no incident opens (the
// class is the monitor's), and the region is marked impaired with an event;
// when its checks succeed again, another event says it recovered.
//
// With one instance the watch counts what the bucket workers read; with two,
// each owning some buckets, each watch reads all observations itself.
func TestRegionResolverFailureImpairsRegion(t *testing.T) {
	for _, instances := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d instances", instances), func(t *testing.T) { testRegionImpairment(t, instances) })
	}
}

func testRegionImpairment(t *testing.T, instances int) {
	h := newHarness(t)
	var siteList []events.Site
	for i := range 8 {
		siteList = append(siteList, h.site(fmt.Sprintf("dns-%d", i), nil))
	}
	th := statemachine.RegionThresholds{Window: 2 * time.Second, MinSites: 6, FailureRatio: 0.5, RecoverRatio: 0.25, Grace: 500 * time.Millisecond}
	for i := range instances {
		h.run(statemachine.WithRegions("local", "eu", "us"), statemachine.WithRegionThresholds(th),
			statemachine.WithInstanceID(fmt.Sprintf("sm-%d", i)))
	}
	if instances > 1 {
		h.waitSplit(instances)
	}
	time.Sleep(100 * time.Millisecond) // let the watch start before the window it judges
	// Start at the next window boundary so the whole storm is in windows the
	// watch saw from their beginning.
	next := time.Now().Truncate(th.Window).Add(th.Window)
	time.Sleep(time.Until(next))
	for round := range 3 {
		for _, s := range siteList {
			h.observe(s, "local", events.PurposeScheduled, events.ClassMonitorResolver, time.Now(), "")
		}
		time.Sleep(time.Duration(round) * 100 * time.Millisecond)
	}
	region := h.regionEvents(1)
	if region[0].Kind != events.KindRegionImpaired || region[0].Region != "local" || region[0].Sites != len(siteList) {
		t.Fatalf("region event %+v", region[0])
	}
	// Healthy again, two windows later.
	time.Sleep(time.Until(time.Now().Truncate(th.Window).Add(th.Window)))
	for _, s := range siteList {
		h.observe(s, "local", events.PurposeScheduled, events.ClassOK, time.Now(), "")
	}
	region = h.regionEvents(2)
	if region[1].Kind != events.KindRegionRecovered {
		t.Fatalf("second region event %+v", region[1])
	}
	for _, s := range siteList {
		if evs := h.allSiteEvents(s.ID); len(evs) != 0 {
			t.Errorf("site %s has events %s: a resolver failure is not downtime", s.ID, kinds(evs))
		}
	}
}

func (h *harness) regionEvents(n int) []events.RegionEvent {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		oc, err := h.srv.JS.OrderedConsumer(context.Background(), events.StreamEvents, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{events.RegionEventsAll},
		})
		if err != nil {
			h.t.Fatal(err)
		}
		batch, err := oc.FetchNoWait(100)
		if err != nil {
			h.t.Fatal(err)
		}
		var out []events.RegionEvent
		for m := range batch.Messages() {
			var ev events.RegionEvent
			if _, err := events.Decode(m.Headers(), m.Data(), &ev); err != nil {
				h.t.Fatal(err)
			}
			out = append(out, ev)
		}
		if len(out) >= n {
			return out
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%d region events after 20s, want %d: %+v", len(out), n, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// An observation whose effects cannot be made durable is applied again until
// they can, and nothing delivered behind it is applied first: here the
// cadence bucket is missing when an outage starts, more observations of the
// site arrive meanwhile, and once the bucket is back the site's events are
// exactly what an uninterrupted run derives.
func TestFailedEffectIsRetried(t *testing.T) {
	h, site := startWithoutCadence(t, "retried", statemachine.WithRetryPolicy(100, 200*time.Millisecond))
	h.observe(site, "local", events.PurposeScheduled, events.ClassHTTPStatus, at(0), "")
	h.siteEvents(site.ID, 1) // events are appended first, then the cadence fails
	// Behind the failing observation: the outage goes on, then ends.
	for i, class := range []events.Class{events.ClassHTTPStatus, events.ClassHTTPStatus, events.ClassOK, events.ClassOK} {
		h.observe(site, "local", events.PurposeScheduled, class, at(30*(i+1)), "")
	}
	time.Sleep(time.Second) // several retries, all failing
	if h.kvHas(events.KVStateMachine, events.SiteKey(site.ID)) {
		t.Fatal("the site's state was saved although its cadence could not be")
	}
	if evs := h.allSiteEvents(site.ID); kinds(evs) != "[seems_down]" {
		t.Fatalf("while the first failure's effects fail: events %s, want only its seems_down", kinds(evs))
	}
	h.createKV(events.KVCadence)
	h.waitConsumed(site.ID)
	want := h.replayed([]events.Site{site})
	if k := kinds(want[site.ID]); k != "[seems_down down recovered:recovered]" {
		t.Fatalf("the script replays as %s, want seems_down, down, recovered", k)
	}
	h.sameAsReplay([]events.Site{site}, want)
}

// An observation whose effects keep failing is given up after the retry
// policy's attempts, and the bucket goes on with the observations behind it.
func TestFailingObservationGivenUp(t *testing.T) {
	h, site := startWithoutCadence(t, "given-up", statemachine.WithRetryPolicy(3, 50*time.Millisecond))
	h.observe(site, "local", events.PurposeScheduled, events.ClassHTTPStatus, at(0), "")
	h.waitConsumed(site.ID) // given up: acknowledged without its effects
	if h.kvHas(events.KVStateMachine, events.SiteKey(site.ID)) {
		t.Fatal("the given-up observation's state was saved")
	}
	h.createKV(events.KVCadence)
	h.observe(site, "local", events.PurposeScheduled, events.ClassHTTPStatus, at(30), "")
	h.waitConsumed(site.ID)
	if !h.kvHas(events.KVCadence, events.CadenceKey(site.ID)) || !h.kvHas(events.KVStateMachine, events.SiteKey(site.ID)) {
		t.Error("the observation after the given-up one left no cadence override or no state")
	}
}

// startWithoutCadence runs a single-region state machine with retry, waits
// until a healthy observation of a new site is consumed (its buckets open),
// then deletes the cadence bucket, so that the next outage's effects fail.
func startWithoutCadence(t *testing.T, siteID string, retry statemachine.Option) (*harness, events.Site) {
	t.Helper()
	h := newHarness(t)
	site := h.site(siteID, nil)
	h.run(statemachine.WithRegions("local"), statemachine.WithSingleRegionAllowance(true), retry)
	h.observe(site, "local", events.PurposeScheduled, events.ClassOK, at(-60), "")
	h.waitConsumed(site.ID)
	if err := h.srv.JS.DeleteKeyValue(context.Background(), events.KVCadence); err != nil {
		t.Fatal(err)
	}
	return h, site
}

// createKV creates one of the topology's KV buckets.
func (h *harness) createKV(bucket string) {
	h.t.Helper()
	for _, cfg := range topology.KeyValues(topology.Options{}) {
		if cfg.Bucket == bucket {
			if _, err := h.srv.JS.CreateKeyValue(context.Background(), cfg); err != nil {
				h.t.Fatal(err)
			}
			return
		}
	}
	h.t.Fatalf("no KV bucket %s in the topology", bucket)
}

// An instance that owns every bucket counts region windows from what its
// bucket workers read: no consumer on OBSERVATIONS besides the buckets'.
func TestRegionWatchReadsThroughWorkers(t *testing.T) {
	h := newHarness(t)
	h.run(statemachine.WithRegions("local", "eu"))
	st, err := h.srv.JS.Stream(context.Background(), events.StreamObservations)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	var names []string
	for time.Now().Before(deadline) {
		names = names[:0]
		buckets := 0
		for name := range st.ConsumerNames(context.Background()).Name() {
			if strings.HasPrefix(name, "statemachine-") {
				buckets++
			} else {
				names = append(names, name)
			}
		}
		if buckets == events.Buckets && len(names) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("consumers on OBSERVATIONS besides the buckets': %v", names)
}

// waitSplit waits until the buckets' leases are spread over n instances.
func (h *harness) waitSplit(n int) {
	h.t.Helper()
	kv, err := h.srv.JS.KeyValue(context.Background(), events.KVLeases)
	if err != nil {
		h.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		owners := map[string]int{}
		keys, err := kv.ListKeysFiltered(context.Background(), statemachine.LeaseService+".>")
		if err != nil {
			h.t.Fatal(err)
		}
		for k := range keys.Keys() {
			if strings.Contains(k, ".members.") {
				continue
			}
			if e, err := kv.Get(context.Background(), k); err == nil {
				owners[string(e.Value())]++
			}
		}
		if len(owners) >= n {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	h.t.Fatalf("the buckets are not split over %d instances after 30s", n)
}
