package statemachine

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
)

// RegionThresholds say when a checker region is impaired: its checks fail at
// once across many sites, so the failures are the monitor's (its network, its
// resolver), not the sites'.
type RegionThresholds struct {
	// Window is the length of the epoch-aligned windows observations are
	// counted in.
	Window time.Duration
	// MinSites is how many distinct sites must fail in a window.
	MinSites int
	// FailureRatio is the share of a window's checks that must fail.
	FailureRatio float64
	// RecoverRatio is the share below which an impaired region recovers
	// (lower than FailureRatio, so a region near the line does not flap).
	RecoverRatio float64
	// Grace is how long after a window ends it is still open to late
	// observations.
	Grace time.Duration
}

// DefaultRegionThresholds: more than half of a region's checks over 60 s,
// on at least 50 sites, failing with connect, timeout or DNS classes.
func DefaultRegionThresholds() RegionThresholds {
	return RegionThresholds{Window: time.Minute, MinSites: 50, FailureRatio: 0.5, RecoverRatio: 0.25, Grace: 10 * time.Second}
}

// storm reports whether a class counts towards impairment: failures to reach
// anything at all, which a broken checker network produces across every site.
func storm(c events.Class) bool {
	switch c {
	case events.ClassConnectRefused, events.ClassConnectTimeout, events.ClassTimeout,
		events.ClassDNSNXDomain, events.ClassMonitorResolver, events.ClassMonitorNetwork:
		return true
	}
	return false
}

// windowStats counts one region's checks in one window.
type windowStats struct {
	checks   int
	failures int
	failing  map[string]struct{}
}

// regionWatch decides when regions are impaired and answers Impaired for the
// state machine.
//
// Every state-machine instance runs one over all observations. Windows are
// aligned to the epoch and an instance judges only windows that began after it
// started, so instances that see the same observations reach the same
// verdict, with the same event ID (derived from region, kind and window): the
// stream keeps one copy. What the state machine acts on is not this local
// verdict but the region events on EVENTS, so every instance, and a replay,
// answers Impaired alike.
//
// Where the observations come from depends on what the instance owns. While
// it owns every bucket (one instance: vigil dev, a small deployment) its
// bucket workers, which read every observation anyway, hand the watch each
// one's summary, and the watch reads nothing itself: a second delivery of
// every observation was about 5% of the system's CPU per check (BENCHMARKS.md,
// session 3). While it owns only some buckets, the watch reads all of
// OBSERVATIONS itself with an ordered consumer from that moment on. A switch
// between the two happens within a window, which is then judged on slightly
// fewer (or, for the instant of the switch, slightly more) observations: the
// thresholds are ratios over many sites, which that does not move.
type regionWatch struct {
	js      jetstream.JetStream
	th      RegionThresholds
	logger  *slog.Logger
	now     func() time.Time
	started time.Time

	// fromWorkers is set while the bucket workers feed the watch
	// (observeFromWorker); mode carries the latest wish to run() (see
	// feedFromWorkers).
	fromWorkers atomic.Bool
	mode        chan bool

	mu       sync.Mutex
	windows  map[string]map[int64]*windowStats // region -> window start (ms) -> stats
	periods  map[string][]period               // region -> impaired periods, from EVENTS
	app      *appender
	appendMu sync.Mutex
}

// period is a time a region was impaired: [from, to), to zero while it lasts.
type period struct{ from, to time.Time }

func newRegionWatch(js jetstream.JetStream, evStream jetstream.Stream, th RegionThresholds, logger *slog.Logger, now func() time.Time) *regionWatch {
	return &regionWatch{
		js: js, th: th, logger: logger, now: now, started: now(),
		windows: map[string]map[int64]*windowStats{},
		periods: map[string][]period{},
		app:     newAppender(js, evStream),
		mode:    make(chan bool, 1),
	}
}

// Impaired reports whether region was impaired at the given time, according
// to the region events on EVENTS.
func (r *regionWatch) Impaired(region string, at time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	ps := r.periods[region]
	i := sort.Search(len(ps), func(i int) bool { return ps[i].from.After(at) })
	if i == 0 {
		return false
	}
	p := ps[i-1]
	return p.to.IsZero() || at.Before(p.to)
}

// impairedNow reports whether the region's last event says impaired.
func (r *regionWatch) impairedNow(region string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	ps := r.periods[region]
	return len(ps) > 0 && ps[len(ps)-1].to.IsZero()
}

// record applies a region event read from EVENTS.
func (r *regionWatch) record(ev events.RegionEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ps := r.periods[ev.Region]
	switch ev.Kind {
	case events.KindRegionImpaired:
		if len(ps) > 0 && ps[len(ps)-1].to.IsZero() {
			return
		}
		r.periods[ev.Region] = append(ps, period{from: ev.At})
	case events.KindRegionRecovered:
		if len(ps) > 0 && ps[len(ps)-1].to.IsZero() {
			ps[len(ps)-1].to = ev.At
		}
	}
}

// feedFromWorkers says whether the bucket workers now see every observation
// (the instance owns every bucket), so the watch can stop reading them
// itself, or not. Only the latest call counts; callers serialize their calls.
func (r *regionWatch) feedFromWorkers(on bool) {
	select {
	case <-r.mode:
	default:
	}
	r.mode <- on
}

// observeFromWorker counts an observation a bucket worker took, if the
// workers are the watch's source.
func (r *regionWatch) observeFromWorker(obs *events.ObservationSummary) {
	if r.fromWorkers.Load() {
		r.observe(*obs)
	}
}

// observe counts one observation in its window.
func (r *regionWatch) observe(obs events.ObservationSummary) {
	start := obs.StartedAt.Truncate(r.th.Window)
	if start.Before(r.started) {
		return // a window this instance did not see whole
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	byStart := r.windows[obs.Region]
	if byStart == nil {
		byStart = map[int64]*windowStats{}
		r.windows[obs.Region] = byStart
	}
	w := byStart[start.UnixMilli()]
	if w == nil {
		w = &windowStats{failing: map[string]struct{}{}}
		byStart[start.UnixMilli()] = w
	}
	if obs.Class == events.ClassCommandExpired {
		return // never ran: says nothing about the region's network
	}
	w.checks++
	if storm(obs.Class) {
		w.failures++
		w.failing[obs.SiteID] = struct{}{}
	}
}

// judge closes the windows that ended more than Grace ago, oldest first, and
// returns the region events they call for.
func (r *regionWatch) judge(now time.Time) []events.RegionEvent {
	r.mu.Lock()
	type closed struct {
		region string
		start  int64
		stats  *windowStats
	}
	var done []closed
	for region, byStart := range r.windows {
		for start, w := range byStart {
			if now.Sub(time.UnixMilli(start).Add(r.th.Window)) >= r.th.Grace {
				done = append(done, closed{region, start, w})
				delete(byStart, start)
			}
		}
	}
	r.mu.Unlock()
	sort.Slice(done, func(i, j int) bool {
		if done[i].start != done[j].start {
			return done[i].start < done[j].start
		}
		return done[i].region < done[j].region
	})
	var out []events.RegionEvent
	impaired := map[string]bool{}
	for _, c := range done {
		was, ok := impaired[c.region]
		if !ok {
			was = r.impairedNow(c.region)
		}
		ratio := 0.0
		if c.stats.checks > 0 {
			ratio = float64(c.stats.failures) / float64(c.stats.checks)
		}
		var kind events.EventKind
		switch {
		case !was && ratio > r.th.FailureRatio && len(c.stats.failing) >= r.th.MinSites:
			kind = events.KindRegionImpaired
		case was && (ratio < r.th.RecoverRatio || len(c.stats.failing) < r.th.MinSites):
			kind = events.KindRegionRecovered
		default:
			continue
		}
		impaired[c.region] = kind == events.KindRegionImpaired
		ev := events.RegionEvent{
			Kind: kind, Region: c.region, At: time.UnixMilli(c.start).UTC(),
			Window: events.Duration(r.th.Window), Checks: c.stats.checks,
			Failures: c.stats.failures, Sites: len(c.stats.failing),
		}
		ev.ID = r.idFor(ev)
		out = append(out, ev)
	}
	return out
}

// idFor derives a region event's ID from what identifies it: region, kind and
// window. Every instance judging the window derives the same ID.
func (r *regionWatch) idFor(ev events.RegionEvent) string {
	return events.DeriveID(ev.At, "region", ev.Region, string(ev.Kind), ev.Window.String())
}

// publish appends region events with optimistic concurrency on the region's
// subjects; another instance's identical event counts as written.
func (r *regionWatch) publish(ctx context.Context, evs []events.RegionEvent) {
	r.appendMu.Lock()
	defer r.appendMu.Unlock()
	for i := range evs {
		ev := &evs[i]
		filter := events.RegionEventsFilter(ev.Region)
		if _, err := r.app.append(ctx, ev, filter); err != nil {
			// Another instance judged the window differently (it saw other
			// observations); its event stands.
			r.app.forget(filter)
			r.logger.Warn("region event not appended", "region", ev.Region, "kind", ev.Kind, "event_id", ev.ID, "err", err)
			continue
		}
		r.logger.Warn("region "+string(ev.Kind), "region", ev.Region, "event_id", ev.ID,
			"checks", ev.Checks, "failures", ev.Failures, "sites", ev.Sites)
	}
}

// run counts observations and follows region events until ctx is done.
func (r *regionWatch) run(ctx context.Context) error {
	evCons, err := r.js.OrderedConsumer(ctx, events.StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.RegionEventsAll},
	})
	if err != nil {
		return fmt.Errorf("follow region events: %w", err)
	}
	evCC, err := evCons.Consume(func(m jetstream.Msg) {
		var ev events.RegionEvent
		if _, err := events.Decode(m.Headers(), m.Data(), &ev); err != nil {
			r.logger.Warn("unreadable region event", "subject", m.Subject(), "err", err)
			return
		}
		r.record(ev)
	})
	if err != nil {
		return fmt.Errorf("follow region events: %w", err)
	}
	defer evCC.Stop()
	obsReader, err := r.readObservations(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if obsReader != nil {
			obsReader.stop()
		}
	}()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if evs := r.judge(r.now()); len(evs) > 0 {
				r.publish(ctx, evs)
			}
		case workers := <-r.mode:
			switch {
			case workers && obsReader != nil:
				r.fromWorkers.Store(true)
				obsReader.stop()
				obsReader = nil
				r.logger.Debug("region watch: counting what the bucket workers read")
			case !workers && obsReader == nil:
				// Read first, then stop taking the workers' counts, so no
				// observation falls between the two.
				if obsReader, err = r.readObservations(ctx); err != nil {
					r.logger.Warn("region watch: cannot read observations; keeping the workers' counts", "err", err)
					continue
				}
				r.fromWorkers.Store(false)
				r.logger.Debug("region watch: reading observations itself")
			}
		}
	}
}

// observationReader is the watch's own consumer on OBSERVATIONS.
type observationReader struct {
	js   jetstream.JetStream
	cons jetstream.Consumer
	cc   jetstream.ConsumeContext
}

// stop stops reading and deletes the consumer rather than leave it to expire.
func (o *observationReader) stop() {
	o.cc.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = o.js.DeleteConsumer(ctx, events.StreamObservations, o.cons.CachedInfo().Name)
}

// readObservations counts every new observation on OBSERVATIONS, for an
// instance whose bucket workers see only some of them.
func (r *regionWatch) readObservations(ctx context.Context) (*observationReader, error) {
	cons, err := r.js.OrderedConsumer(ctx, events.StreamObservations, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.ObservationsAll},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("count observations: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var obs events.ObservationSummary
		if _, err := events.Decode(m.Headers(), m.Data(), &obs); err == nil {
			r.observe(obs)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("count observations: %w", err)
	}
	return &observationReader{js: r.js, cons: cons, cc: cc}, nil
}
