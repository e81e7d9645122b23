package checker

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/checker/httpcheck"
	"github.com/vigil-dev/vigil/services/internal/natstest"
	"github.com/vigil-dev/vigil/services/topology"
)

const testRegion = "local"

// waitTimeout bounds every wait in these tests; they normally take well under
// a second, the margin is for loaded CI machines and -race.
const waitTimeout = 20 * time.Second

// engine returns the real HTTP engine, allowed to reach 127.0.0.1.
func engine(t *testing.T) *httpcheck.Checker {
	t.Helper()
	e, err := httpcheck.New(httpcheck.Options{TargetPolicy: httpcheck.AllowPrivate})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// newTestChecker returns a Checker of testRegion with its own registry and
// short retry delays.
func newTestChecker(t *testing.T, js jetstream.JetStream, p Prober, opts ...Option) (*Checker, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	all := append([]Option{WithRegion(testRegion), WithRegisterer(reg), WithMinWorkers(4), WithMaxWorkers(32)}, opts...)
	c, err := New(js, p, all...)
	if err != nil {
		t.Fatal(err)
	}
	c.controlEvery = 50 * time.Millisecond
	c.nakDelay = 200 * time.Millisecond
	c.retryEvery = 100 * time.Millisecond
	return c, reg
}

// running is a Checker running in the background.
type running struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// start runs c until the test ends or stop is called.
func start(t *testing.T, c *Checker) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the checker and waits for Run to return.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitTimeout):
			t.Error("Run did not return after its context was canceled")
		}
	})
}

func command(site, url string, due time.Time) *events.CheckCommand {
	return &events.CheckCommand{
		ID:        events.CommandID(site, testRegion, events.PurposeScheduled, due),
		SiteID:    site,
		Bucket:    events.Bucket(site),
		Region:    testRegion,
		Purpose:   events.PurposeScheduled,
		DueAt:     due,
		Deadline:  due.Add(time.Minute),
		ConfigSeq: 7,
		Check: events.CheckSpec{
			URL:       url,
			Method:    "GET",
			Timeout:   events.Duration(5 * time.Second),
			Redirects: events.RedirectFollow,
		},
	}
}

func publish(t *testing.T, js jetstream.JetStream, cmd *events.CheckCommand) uint64 {
	t.Helper()
	m, err := events.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := js.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatalf("publish command: %v", err)
	}
	return ack.Sequence
}

// observations returns every observation stored on OBSERVATIONS.
func observations(t *testing.T, js jetstream.JetStream) []events.Observation {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, events.StreamObservations)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []events.Observation
	if info.State.Msgs == 0 {
		return nil
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		raw, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get observation %d: %v", seq, err)
		}
		var o events.Observation
		if _, err := events.Decode(raw.Header, raw.Data, &o); err != nil {
			t.Fatalf("decode observation %d: %v", seq, err)
		}
		if raw.Header.Get(events.HeaderMsgID) != o.ID {
			t.Errorf("observation %s stored with Nats-Msg-Id %q", o.ID, raw.Header.Get(events.HeaderMsgID))
		}
		out = append(out, o)
	}
	return out
}

// waitObservations waits until OBSERVATIONS holds at least n observations and
// returns them.
func waitObservations(t *testing.T, js jetstream.JetStream, n int) []events.Observation {
	t.Helper()
	var obs []events.Observation
	waitFor(t, fmt.Sprintf("%d observations", n), func() bool {
		obs = observations(t, js)
		return len(obs) >= n
	})
	return obs
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checksPending returns the messages left on CHECKS.
func checksPending(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), events.StreamChecks)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func consumerInfo(t *testing.T, js jetstream.JetStream) *jetstream.ConsumerInfo {
	t.Helper()
	ctx := context.Background()
	cons, err := js.Consumer(ctx, events.StreamChecks, ConsumerName(testRegion))
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// waitAcked waits until CHECKS is empty and the consumer's ack floor has
// reached seq with nothing pending.
func waitAcked(t *testing.T, js jetstream.JetStream, seq uint64) {
	t.Helper()
	waitFor(t, "commands acknowledged", func() bool {
		info := consumerInfo(t, js)
		return checksPending(t, js) == 0 && info.AckFloor.Stream >= seq && info.NumAckPending == 0 && info.NumPending == 0
	})
}

// metric sums the samples of the metric name whose labels include labels.
func metric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

// countingServer is a local HTTP server answering status after delay.
type countingServer struct {
	*httptest.Server
	requests atomic.Int64
}

func newServer(t *testing.T, status int, delay time.Duration) *countingServer {
	t.Helper()
	s := &countingServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		if delay > 0 {
			time.Sleep(delay)
		}
		w.WriteHeader(status)
		fmt.Fprintln(w, "hello from the test site")
	}))
	t.Cleanup(s.Close)
	return s
}

func TestHealthyCheckPublishesObservationThenAcks(t *testing.T) {
	ns := natstest.Start(t, true)
	site := newServer(t, http.StatusOK, 0)
	c, reg := newTestChecker(t, ns.JS, engine(t), WithInstanceID("chk-1"))
	start(t, c)

	due := time.Now().Truncate(time.Millisecond)
	cmd := command("shop-1", site.URL, due)
	cmd.IncidentID = "01JINCIDENT"
	seq := publish(t, ns.JS, cmd)

	obs := waitObservations(t, ns.JS, 1)
	waitAcked(t, ns.JS, seq)
	if len(obs) != 1 {
		t.Fatalf("got %d observations, want 1: %+v", len(obs), obs)
	}
	o := obs[0]
	if o.Class != events.ClassOK || o.StatusCode != 200 || o.Error != "" {
		t.Errorf("class %s status %d err %q, want ok 200", o.Class, o.StatusCode, o.Error)
	}
	if o.SiteID != "shop-1" || o.CommandID != cmd.ID || o.Bucket != cmd.Bucket || o.Region != testRegion ||
		o.CheckerID != "chk-1" || o.Purpose != events.PurposeScheduled || o.IncidentID != "01JINCIDENT" || o.ConfigSeq != 7 {
		t.Errorf("observation does not carry the command's identity: %+v", o)
	}
	if !o.DueAt.Equal(due) || o.StartedAt.Before(due) {
		t.Errorf("due %v started %v, command due %v", o.DueAt, o.StartedAt, due)
	}
	if o.Timings.TotalMs <= 0 || o.Timings.ConnectMs <= 0 {
		t.Errorf("timings not filled: %+v", o.Timings)
	}
	if o.FinalURL == "" {
		t.Error("final URL empty")
	}
	if _, err := events.IDTime(o.ID); err != nil {
		t.Errorf("observation ID %q is not a ULID: %v", o.ID, err)
	}
	if site.requests.Load() != 1 {
		t.Errorf("site got %d requests, want 1", site.requests.Load())
	}
	if got := metric(t, reg, "vigil_checker_checks_total", "region", testRegion, "class", "ok"); got != 1 {
		t.Errorf("checks_total{class=ok} = %v", got)
	}
	if got := metric(t, reg, "vigil_checker_check_duration_seconds", "outcome", "ok"); got != 1 {
		t.Errorf("check_duration{outcome=ok} count = %v", got)
	}
	if got := metric(t, reg, "vigil_checker_lateness_seconds"); got != 1 {
		t.Errorf("lateness count = %v", got)
	}
	if got := metric(t, reg, "vigil_checker_pool_size"); got < 4 {
		t.Errorf("pool_size = %v, want at least MinWorkers", got)
	}
}

func TestHTTPStatusFailure(t *testing.T) {
	ns := natstest.Start(t, true)
	site := newServer(t, http.StatusServiceUnavailable, 0)
	c, reg := newTestChecker(t, ns.JS, engine(t))
	start(t, c)

	seq := publish(t, ns.JS, command("down-1", site.URL, time.Now()))
	obs := waitObservations(t, ns.JS, 1)
	waitAcked(t, ns.JS, seq)
	if o := obs[0]; o.Class != events.ClassHTTPStatus || o.StatusCode != 503 || o.Error == "" {
		t.Errorf("got class %s status %d err %q, want http_status 503", o.Class, o.StatusCode, o.Error)
	}
	if got := metric(t, reg, "vigil_checker_checks_total", "class", "http_status"); got != 1 {
		t.Errorf("checks_total{class=http_status} = %v", got)
	}
	if got := metric(t, reg, "vigil_checker_check_duration_seconds", "outcome", "fail"); got != 1 {
		t.Errorf("check_duration{outcome=fail} count = %v", got)
	}
}

func TestExpiredCommandIsReportedNotChecked(t *testing.T) {
	ns := natstest.Start(t, true)
	site := newServer(t, http.StatusOK, 0)
	c, reg := newTestChecker(t, ns.JS, engine(t))
	start(t, c)

	cmd := command("late-1", site.URL, time.Now().Add(-2*time.Minute))
	cmd.Deadline = time.Now().Add(-time.Minute)
	seq := publish(t, ns.JS, cmd)

	obs := waitObservations(t, ns.JS, 1)
	waitAcked(t, ns.JS, seq)
	o := obs[0]
	if o.Class != events.ClassCommandExpired || o.Class.Side() != events.SideMonitor {
		t.Errorf("class %s, want command_expired (monitor side)", o.Class)
	}
	if o.CommandID != cmd.ID || o.SiteID != "late-1" || o.Error == "" {
		t.Errorf("observation %+v", o)
	}
	if n := site.requests.Load(); n != 0 {
		t.Errorf("an expired command reached the site (%d requests)", n)
	}
	if got := metric(t, reg, "vigil_checker_commands_expired_total", "region", testRegion); got != 1 {
		t.Errorf("commands_expired_total = %v", got)
	}
}

func TestPoisonIsTerminatedAndDoesNotBlock(t *testing.T) {
	ns := natstest.Start(t, true)
	site := newServer(t, http.StatusOK, 0)
	// One worker and a prefetch of one: a stuck poison message would block
	// everything behind it.
	c, reg := newTestChecker(t, ns.JS, engine(t), WithMinWorkers(1), WithMaxWorkers(1))
	ctx := context.Background()

	// Garbage: not a CloudEvent at all.
	if _, err := ns.JS.Publish(ctx, "vigil.checks.local.3.x", []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	// A well-formed command on the wrong subject: its headers and payload
	// disagree with where it was queued.
	wrong := command("other-site", site.URL, time.Now())
	m, err := events.Marshal(wrong)
	if err != nil {
		t.Fatal(err)
	}
	m.Subject = events.CheckSubject(testRegion, "x")
	if _, err := ns.JS.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	good := command("good-1", site.URL, time.Now())
	seq := publish(t, ns.JS, good)

	start(t, c)
	obs := waitObservations(t, ns.JS, 1)
	waitAcked(t, ns.JS, seq)
	if len(obs) != 1 || obs[0].CommandID != good.ID || obs[0].Class != events.ClassOK {
		t.Fatalf("observations %+v, want one ok for %s", obs, good.ID)
	}
	if got := metric(t, reg, "vigil_checker_poison_total"); got != 2 {
		t.Errorf("poison_total = %v, want 2", got)
	}
	if n := site.requests.Load(); n != 1 {
		t.Errorf("site got %d requests, want 1 (poison must not be checked)", n)
	}
}

// startWithoutObservations starts a checker with OBSERVATIONS deleted, so
// that every publish fails until restoreObservations.
func startWithoutObservations(t *testing.T) (*natstest.Server, *countingServer, *prometheus.Registry) {
	t.Helper()
	ns := natstest.Start(t, true)
	site := newServer(t, http.StatusOK, 0)
	c, reg := newTestChecker(t, ns.JS, engine(t))
	c.nakDelay = 300 * time.Millisecond
	// With OBSERVATIONS gone nothing captures vigil.obs.>: publishes fail.
	if err := ns.JS.DeleteStream(context.Background(), events.StreamObservations); err != nil {
		t.Fatal(err)
	}
	start(t, c)
	return ns, site, reg
}

// restoreObservations brings OBSERVATIONS back.
func restoreObservations(t *testing.T, ns *natstest.Server) {
	t.Helper()
	if _, err := topology.Apply(context.Background(), ns.JS, natstest.Options()); err != nil {
		t.Fatal(err)
	}
}

func TestPublishFailureLeavesCommandUnacked(t *testing.T) {
	ns, site, reg := startWithoutObservations(t)
	cmd := command("flaky-1", site.URL, time.Now())
	seq := publish(t, ns.JS, cmd)

	waitFor(t, "a publish error", func() bool {
		return metric(t, reg, "vigil_checker_publish_errors_total") >= 1
	})
	if n := checksPending(t, ns.JS); n != 1 {
		t.Fatalf("after a failed publish CHECKS holds %d commands, want the unacknowledged one", n)
	}
	if got := metric(t, reg, "vigil_checker_checks_total"); got != 0 {
		t.Errorf("checks_total = %v after failed publishes", got)
	}

	// The stream comes back: the redelivered command is checked again and
	// its observation published.
	restoreObservations(t, ns)
	obs := waitObservations(t, ns.JS, 1)
	waitAcked(t, ns.JS, seq)
	if len(obs) != 1 || obs[0].CommandID != cmd.ID || obs[0].Class != events.ClassOK {
		t.Fatalf("observations %+v", obs)
	}
	if n := site.requests.Load(); n < 2 {
		t.Errorf("site got %d requests; the command should have been checked again", n)
	}
}

func TestTwoInstancesShareTheDurable(t *testing.T) {
	ns := natstest.Start(t, true)
	site := newServer(t, http.StatusOK, 2*time.Millisecond)
	_, js2 := ns.Connect(t, "second")
	a, _ := newTestChecker(t, ns.JS, engine(t), WithInstanceID("a"))
	b, _ := newTestChecker(t, js2, engine(t), WithInstanceID("b"))
	start(t, a)
	start(t, b)
	// Both must be pulling before the work arrives, or the first could take
	// it all.
	waitFor(t, "both checkers pulling", func() bool {
		cons, err := ns.JS.Consumer(context.Background(), events.StreamChecks, ConsumerName(testRegion))
		if err != nil {
			return false // not created yet
		}
		info, err := cons.Info(context.Background())
		return err == nil && info.NumWaiting >= 2
	})

	const n = 200
	due := time.Now()
	var last uint64
	for i := range n {
		last = publish(t, ns.JS, command(fmt.Sprintf("site-%03d", i), site.URL, due))
	}
	waitObservations(t, ns.JS, n)
	waitAcked(t, ns.JS, last)
	// Anything extra would have arrived by now.
	time.Sleep(100 * time.Millisecond)
	obs := observations(t, ns.JS)

	perCommand := map[string]int{}
	perChecker := map[string]int{}
	for _, o := range obs {
		perCommand[o.CommandID]++
		perChecker[o.CheckerID]++
		if o.Class != events.ClassOK {
			t.Errorf("%s: class %s (%s)", o.SiteID, o.Class, o.Error)
		}
	}
	if len(obs) != n || len(perCommand) != n {
		t.Errorf("%d observations for %d distinct commands, want %d each", len(obs), len(perCommand), n)
	}
	for id, k := range perCommand {
		if k != 1 {
			t.Errorf("command %s checked %d times", id, k)
		}
	}
	if perChecker["a"] == 0 || perChecker["b"] == 0 {
		t.Errorf("work not shared: %v", perChecker)
	}
	t.Logf("observations per checker: %v", perChecker)
}

func TestGracefulShutdownFinishesInFlightChecks(t *testing.T) {
	ns := natstest.Start(t, true)
	site := newServer(t, http.StatusOK, 500*time.Millisecond)
	c, _ := newTestChecker(t, ns.JS, engine(t), WithMinWorkers(8))
	r := start(t, c)

	const n = 5
	var cmds []*events.CheckCommand
	for i := range n {
		cmd := command(fmt.Sprintf("slow-%d", i), site.URL, time.Now())
		cmds = append(cmds, cmd)
		publish(t, ns.JS, cmd)
	}
	waitFor(t, "checks in flight", func() bool { return site.requests.Load() == n })

	began := time.Now()
	r.stop(t)
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("shutdown took %v", took)
	}

	obs := observations(t, ns.JS)
	observed := map[string]bool{}
	for _, o := range obs {
		observed[o.CommandID] = true
	}
	// Never acknowledged without an observation: a command gone from CHECKS
	// must have one.
	ctx := context.Background()
	s, err := ns.JS.Stream(ctx, events.StreamChecks)
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range cmds {
		_, err := s.GetLastMsgForSubject(ctx, events.CheckSubject(testRegion, cmd.SiteID))
		acked := err != nil
		if acked && !observed[cmd.ID] {
			t.Errorf("command %s acknowledged without an observation", cmd.ID)
		}
	}
	// With a grace period far above the 500ms checks, all finished.
	if len(obs) != n {
		t.Errorf("%d observations after shutdown, want %d", len(obs), n)
	}
	if p := checksPending(t, ns.JS); p != 0 {
		t.Errorf("%d commands left unacknowledged", p)
	}
}

func TestShutdownAbandonsChecksPastGrace(t *testing.T) {
	ns := natstest.Start(t, true)
	site := newServer(t, http.StatusOK, 1500*time.Millisecond)
	c, _ := newTestChecker(t, ns.JS, engine(t))
	c.shutdownGrace = 200 * time.Millisecond
	r := start(t, c)

	cmd := command("stuck-1", site.URL, time.Now())
	publish(t, ns.JS, cmd)
	waitFor(t, "check in flight", func() bool { return site.requests.Load() == 1 })
	began := time.Now()
	r.stop(t)
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("shutdown took %v with a 200ms grace", took)
	}
	if obs := observations(t, ns.JS); len(obs) != 0 {
		t.Errorf("an abandoned check published %+v", obs)
	}
	if p := checksPending(t, ns.JS); p != 1 {
		t.Errorf("CHECKS holds %d commands, want the abandoned one left for another checker", p)
	}
}

func TestShutdownHandsBackUnstartedCommands(t *testing.T) {
	ns := natstest.Start(t, true)
	site := newServer(t, http.StatusOK, 300*time.Millisecond)
	// One worker, so commands queue on the client behind the one in flight.
	first, _ := newTestChecker(t, ns.JS, engine(t), WithMinWorkers(1), WithMaxWorkers(1), WithInstanceID("first"))
	r := start(t, first)
	const n = 4
	for i := range n {
		publish(t, ns.JS, command(fmt.Sprintf("queued-%d", i), site.URL, time.Now()))
	}
	waitFor(t, "first check in flight", func() bool { return site.requests.Load() >= 1 })
	r.stop(t)
	done := len(observations(t, ns.JS))
	if done == n {
		t.Skip("the first checker finished everything before it was stopped")
	}
	if p := checksPending(t, ns.JS); int(p) != n-done {
		t.Fatalf("%d observations and %d commands left, want %d in all", done, p, n)
	}
	// What the first checker held but never started was handed back, so a
	// second checker gets it at once, not after the two-minute AckWait.
	began := time.Now()
	second, _ := newTestChecker(t, ns.JS, engine(t), WithInstanceID("second"))
	start(t, second)
	obs := waitObservations(t, ns.JS, n)
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("handed-back commands took %v to be checked again", took)
	}
	seen := map[string]int{}
	for _, o := range obs {
		seen[o.SiteID]++
	}
	if len(seen) != n {
		t.Errorf("observed sites %v, want %d distinct", seen, n)
	}
}

// fakeProber answers after a delay chosen per spec, and records the largest
// number of checks it ran at once.
type fakeProber struct {
	answer func(spec events.CheckSpec) (events.Class, time.Duration)

	mu      sync.Mutex
	cur     int
	maxSeen int
}

func (f *fakeProber) Check(ctx context.Context, spec events.CheckSpec) httpcheck.Result {
	f.mu.Lock()
	f.cur++
	f.maxSeen = max(f.maxSeen, f.cur)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.cur--
		f.mu.Unlock()
	}()
	class, d := f.answer(spec)
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
	return httpcheck.Result{Class: class, StartedAt: time.Now(), FinalURL: spec.URL}
}

func (f *fakeProber) max() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxSeen
}

// runMany runs n commands through a checker using p and returns once all are
// observed.
func runMany(t *testing.T, p Prober, n int, opts ...Option) {
	t.Helper()
	ns := natstest.Start(t, true)
	c, _ := newTestChecker(t, ns.JS, p, opts...)
	start(t, c)
	var last uint64
	for i := range n {
		last = publish(t, ns.JS, command(fmt.Sprintf("s-%03d", i), fmt.Sprintf("http://127.0.0.1:1/%d", i), time.Now()))
	}
	waitObservations(t, ns.JS, n)
	waitAcked(t, ns.JS, last)
}

func TestConcurrencyNeverExceedsMaxWorkers(t *testing.T) {
	p := &fakeProber{answer: func(events.CheckSpec) (events.Class, time.Duration) {
		return events.ClassOK, 20 * time.Millisecond
	}}
	runMany(t, p, 150, WithMinWorkers(2), WithMaxWorkers(5))
	if m := p.max(); m > 5 {
		t.Errorf("%d checks ran at once with MaxWorkers 5", m)
	}
}

func TestPoolGrowsWhileChecksSucceed(t *testing.T) {
	p := &fakeProber{answer: func(events.CheckSpec) (events.Class, time.Duration) {
		return events.ClassOK, 20 * time.Millisecond
	}}
	runMany(t, p, 300, WithMinWorkers(2), WithMaxWorkers(64))
	if m := p.max(); m <= 2 {
		t.Errorf("saturated with successful checks, the pool never grew past MinWorkers (max concurrency %d)", m)
	} else {
		t.Logf("max concurrency %d", m)
	}
}

func TestPoolDoesNotGrowOnTimeouts(t *testing.T) {
	// Nine checks in ten time out (slowly), one in ten succeeds quickly. The
	// pool is saturated the whole time, but failure latency must not size
	// it: it stays near MinWorkers instead of racing to MaxWorkers.
	var i atomic.Int64
	p := &fakeProber{answer: func(events.CheckSpec) (events.Class, time.Duration) {
		if i.Add(1)%10 == 0 {
			return events.ClassOK, time.Millisecond
		}
		return events.ClassTimeout, 100 * time.Millisecond
	}}
	runMany(t, p, 60, WithMinWorkers(2), WithMaxWorkers(64))
	if m := p.max(); m > 4 {
		t.Errorf("mostly timeouts grew the pool to %d concurrent checks", m)
	}
}

func TestNewValidatesOptions(t *testing.T) {
	ns := natstest.Start(t, false)
	p := &fakeProber{}
	for name, opts := range map[string][]Option{
		"no region":      {},
		"bad region":     {WithRegion("Not A Region")},
		"min above max":  {WithRegion("eu"), WithMinWorkers(10), WithMaxWorkers(5)},
		"zero min":       {WithRegion("eu"), WithMinWorkers(0)},
		"negative pend.": {WithRegion("eu"), WithMaxAckPending(-1)},
	} {
		if _, err := New(ns.JS, p, opts...); err == nil {
			t.Errorf("%s: New accepted %d options", name, len(opts))
		}
	}
	if _, err := New(nil, p, WithRegion("eu")); err == nil {
		t.Error("New accepted a nil JetStream")
	}
	c, err := New(ns.JS, p, WithRegion("eu"), WithMaxWorkers(50))
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.consumerConfig()
	if cfg.Durable != "checkers-eu" || cfg.FilterSubject != "vigil.checks.eu.>" || cfg.MaxAckPending != 100 ||
		cfg.AckPolicy != jetstream.AckExplicitPolicy || cfg.AckWait < 2*MaxCheckTimeout || cfg.BackOff[0] != cfg.AckWait ||
		cfg.MaxDeliver < len(cfg.BackOff) {
		t.Errorf("consumer config %+v", cfg)
	}
	if c.InstanceID() == "" {
		t.Error("no default instance ID")
	}
}

func TestRunFailsWithoutChecksStream(t *testing.T) {
	ns := natstest.Start(t, false)
	c, _ := newTestChecker(t, ns.JS, &fakeProber{})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := c.Run(ctx); err == nil {
		t.Fatal("Run succeeded without a CHECKS stream")
	}
}

func TestCheckersOfSeveralRegionsShareARegistry(t *testing.T) {
	ns := natstest.Start(t, false)
	reg := prometheus.NewRegistry()
	for _, r := range []string{"eu", "us", "eu"} {
		if _, err := New(ns.JS, &fakeProber{}, WithRegion(r), WithRegisterer(reg)); err != nil {
			t.Fatalf("region %s: %v", r, err)
		}
	}
}
