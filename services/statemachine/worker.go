package statemachine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
)

// worker processes one owned bucket: a consumer on OBSERVATIONS filtered to
// the bucket, and the states of its sites. Everything it does happens under
// mu, one observation at a time, so a site's history is applied in stream
// order.
//
// The consumer keeps its state in memory. A file-backed consumer rewrites its
// state file up to ten times a second while it changes, and 64 of them were
// a tenth of the whole system's CPU in the capacity benchmark (BENCHMARKS.md,
// finding 3). The bucket's position lives instead in KVStateMachine
// (events.PositionKey), saved about once a second; on a change of owner, a
// crash or a server restart the consumer is created afresh from that position
// (or from the old consumer's ack floor, if it is further on). Observations
// applied after the last save are applied again, which changes nothing:
// event IDs are derived, appends are conditional and a site's state ignores
// an observation it has already applied.
type worker struct {
	s      *Service
	bucket int
	logger *slog.Logger

	mu     sync.Mutex
	states map[string]*SiteState
	app    *appender
	// stale is set after an effect failed half-way: the in-memory states may
	// be ahead of what is durable, so they are reloaded before the next step.
	stale   bool
	cc      jetstream.ConsumeContext
	stopped bool
	// applied is the stream sequence of the newest observation whose effects
	// are durable (or that was given up as poison): the bucket's position.
	applied uint64

	saveMu sync.Mutex // serializes position saves; guards saved
	saved  uint64

	ready   chan struct{} // closed once the first start has finished
	recheck chan struct{} // the consumer may be gone: see run
	quit    chan struct{}
	done    chan struct{}
}

func newWorker(s *Service, b int) *worker {
	return &worker{
		s: s, bucket: b,
		logger:  s.logger.With("bucket", b),
		ready:   make(chan struct{}),
		recheck: make(chan struct{}, 1),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// run starts consuming, retrying until it succeeds, and starts again whenever
// the consumer turns out to be gone, until the worker is stopped.
func (w *worker) run(ctx context.Context) {
	defer close(w.done)
	first := true
	for {
		ok := w.start(ctx)
		if first {
			close(w.ready)
			first = false
		}
		if !ok {
			return
		}
		for gone := false; !gone; {
			select {
			case <-ctx.Done():
				return
			case <-w.quit:
				return
			case <-w.recheck:
				gone = w.consumerGone(ctx)
			}
		}
		w.logger.Warn("bucket consumer gone; starting again from the saved position")
		w.stopConsuming()
	}
}

// start loads the bucket's states and starts consuming, retrying with backoff.
// It reports false if the worker was stopped first.
func (w *worker) start(ctx context.Context) bool {
	backoff := 500 * time.Millisecond
	for {
		err := w.startOnce(ctx)
		if err == nil {
			w.mu.Lock()
			stopped := w.stopped
			w.mu.Unlock()
			if !stopped {
				w.logger.Info("bucket started")
			}
			return !stopped
		}
		w.logger.Warn("start bucket", "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-w.quit:
			return false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func (w *worker) startOnce(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return nil
	}
	if err := w.reload(ctx); err != nil {
		return err
	}
	from, err := w.position(ctx)
	if err != nil {
		return err
	}
	name := ConsumerName(w.bucket)
	cfg := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   fmt.Sprintf("state machine, bucket %d (position in %s %s)", w.bucket, events.KVStateMachine, events.PositionKey(w.bucket)),
		FilterSubject: events.ObservationsBucketFilter(w.bucket),
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		// One observation in flight per bucket: strict stream order per
		// site, redeliveries included. A bucket's share of a million sites
		// is about 50 observations a second, far below what one in-flight
		// message allows, and the 64 buckets run in parallel.
		MaxAckPending: 1,
		AckWait:       10 * time.Second,
		// A failing effect is retried with backoff; after MaxDeliver the
		// observation is given up (and counted by the server's advisory) so
		// the bucket is never blocked for good.
		MaxDeliver: 20,
		BackOff:    []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second},
		// See the type's comment: the position is kept in KV instead.
		MemoryStorage: true,
		// A consumer left by an instance that died goes away by itself.
		InactiveThreshold: consumerInactiveThreshold,
	}
	if from > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = from + 1
	}
	// A consumer's start cannot be changed, so the previous one goes.
	if err := w.s.js.DeleteConsumer(ctx, events.StreamObservations, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("delete consumer %s: %w", name, err)
	}
	cons, err := w.s.js.CreateConsumer(ctx, events.StreamObservations, cfg)
	if err != nil {
		return fmt.Errorf("create consumer %s: %w", name, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { w.handle(ctx, m) },
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if ctx.Err() != nil {
				return
			}
			w.logger.Debug("consume", "err", err)
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) ||
				errors.Is(err, jetstream.ErrNoHeartbeat) {
				select {
				case w.recheck <- struct{}{}:
				default:
				}
			}
		}))
	if err != nil {
		return fmt.Errorf("consume %s: %w", name, err)
	}
	w.cc = cc
	w.applied = from
	w.logger.Debug("consuming", "consumer", name, "from_seq", from+1)
	return nil
}

// consumerInactiveThreshold is how long a bucket consumer nobody pulls from
// lives on.
const consumerInactiveThreshold = 5 * time.Minute

// position returns the sequence after which the bucket's consumer starts: the
// furthest of the saved position, the position this worker reached, and the
// ack floor of a consumer a previous owner left (everything up to it was
// acknowledged, so it is durable). Called with mu held.
func (w *worker) position(ctx context.Context) (uint64, error) {
	pos, err := w.s.store.loadPosition(ctx, w.bucket)
	if err != nil {
		return 0, err
	}
	pos = max(pos, w.applied)
	c, err := w.s.js.Consumer(ctx, events.StreamObservations, ConsumerName(w.bucket))
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
	case err != nil:
		return 0, fmt.Errorf("look up consumer %s: %w", ConsumerName(w.bucket), err)
	default:
		pos = max(pos, c.CachedInfo().AckFloor.Stream)
	}
	return pos, nil
}

// consumerGone reports whether the consumer must be created again: its
// consume loop ended, or the server no longer has it (a server restart loses
// a memory-state consumer).
func (w *worker) consumerGone(ctx context.Context) bool {
	w.mu.Lock()
	cc := w.cc
	w.mu.Unlock()
	if cc != nil {
		select {
		case <-cc.Closed():
			return true
		default:
		}
	}
	_, err := w.s.js.Consumer(ctx, events.StreamObservations, ConsumerName(w.bucket))
	return errors.Is(err, jetstream.ErrConsumerNotFound)
}

// stopConsuming ends the consume loop and waits for the observation in hand.
func (w *worker) stopConsuming() {
	w.mu.Lock()
	cc := w.cc
	w.cc = nil
	w.mu.Unlock()
	if cc != nil {
		cc.Stop()
		<-cc.Closed()
	}
}

// reload replaces the in-memory states with the durable ones. Called with mu
// held.
func (w *worker) reload(ctx context.Context) error {
	states, err := w.s.store.load(ctx, w.bucket)
	if err != nil {
		return err
	}
	w.states = states
	w.app = newAppender(w.s.js, w.s.evStream)
	w.stale = false
	return nil
}

// stop stops consuming, waits for the observation in hand and saves the
// position. Unacknowledged observations are redelivered to the bucket's next
// owner.
func (w *worker) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
	close(w.quit)
	<-w.done
	w.stopConsuming()
	// Run's context may be over already (shutdown): the save gets its own.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := w.checkpoint(ctx); err != nil {
		w.logger.Warn("save position at stop; the next owner repeats a little more", "err", err)
	}
	w.mu.Lock()
	w.states = nil
	w.mu.Unlock()
	w.logger.Info("bucket stopped")
}

// checkpoint saves the bucket's position if it moved since the last save.
func (w *worker) checkpoint(ctx context.Context) error {
	w.mu.Lock()
	pos := w.applied
	w.mu.Unlock()
	w.saveMu.Lock()
	defer w.saveMu.Unlock()
	if pos <= w.saved {
		return nil
	}
	if err := w.s.store.savePosition(ctx, w.bucket, pos); err != nil {
		return err
	}
	w.saved = pos
	return nil
}

func (w *worker) handle(ctx context.Context, m jetstream.Msg) {
	var seq uint64
	if md, err := m.Metadata(); err == nil {
		seq = md.Sequence.Stream
	}
	// Most observations are healthy checks of healthy sites: the summary
	// tells, and the whole observation is decoded only when it may matter.
	var sum events.ObservationSummary
	if _, err := events.Decode(m.Headers(), m.Data(), &sum); err != nil {
		w.quarantine(m, seq, err)
		return
	}
	w.s.regions.observeFromWorker(&sum)
	if w.ackUneventful(m, seq, &sum) {
		return
	}
	var obs events.Observation
	if _, err := events.Decode(m.Headers(), m.Data(), &obs); err != nil {
		w.quarantine(m, seq, err)
		return
	}
	logger := w.logger.With("site", obs.SiteID, "msg_id", obs.ID)
	sc, ok, err := w.s.sites.get(ctx, obs.SiteID)
	if err != nil {
		logger.Warn("site configuration unavailable; will retry", "err", err)
		_ = m.NakWithDelay(time.Second)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	if !ok {
		// Observations of a deleted or unknown site change nothing.
		w.s.m.observations.WithLabelValues("ignored").Inc()
		w.ackLocked(m, seq, obs.SiteID, obs.ID)
		return
	}
	if w.stale {
		if err := w.reload(ctx); err != nil {
			logger.Warn("reload bucket states; will retry", "err", err)
			_ = m.NakWithDelay(time.Second)
			return
		}
	}
	st := w.state(obs.SiteID)
	before := !trivial(st)
	out := st.Observe(sc.site, obs, w.s.env)
	if err := w.apply(ctx, st, out, before, logger); err != nil {
		w.stale = true
		w.s.m.errors.Inc()
		logger.Warn("effects not yet durable; observation will be redelivered", "err", err)
		_ = m.NakWithDelay(time.Second)
		return
	}
	w.s.m.observations.WithLabelValues("applied").Inc()
	w.ackLocked(m, seq, obs.SiteID, obs.ID)
}

// quarantine terminates an undecodable observation: the server never
// redelivers it and announces it, with the reason, in a terminated-delivery
// advisory. The bucket moves past it.
func (w *worker) quarantine(m jetstream.Msg, seq uint64, err error) {
	w.s.m.observations.WithLabelValues("poison").Inc()
	w.logger.Warn("quarantined an undecodable observation", "subject", m.Subject(), "stream_seq", seq, "err", err)
	_ = m.TermWithReason("undecodable observation: " + err.Error())
	w.advance(seq)
}

// ackUneventful acknowledges obs without reading the site's configuration if
// it can change nothing: a healthy observation (Uneventful) of a site with no
// state. Most observations of a large fleet are that. It reports whether it
// did.
func (w *worker) ackUneventful(m jetstream.Msg, seq uint64, obs *events.ObservationSummary) bool {
	if !Uneventful(obs) {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, has := w.states[obs.SiteID]; has || w.stale || w.stopped {
		return false
	}
	w.s.m.observations.WithLabelValues("uneventful").Inc()
	w.ackLocked(m, seq, obs.SiteID, obs.ID)
	return true
}

func (w *worker) ackLocked(m jetstream.Msg, seq uint64, siteID, msgID string) {
	w.applied = max(w.applied, seq)
	if err := m.Ack(); err != nil {
		w.logger.Debug("ack", "site", siteID, "msg_id", msgID, "err", err)
	}
}

// advance moves the bucket's position past an observation given up as poison.
func (w *worker) advance(seq uint64) {
	w.mu.Lock()
	w.applied = max(w.applied, seq)
	w.mu.Unlock()
}

// state returns the site's state, a fresh one for a site with none.
func (w *worker) state(siteID string) *SiteState {
	if st, ok := w.states[siteID]; ok {
		return st
	}
	return &SiteState{SiteID: siteID}
}

// apply makes out durable, in an order that makes every retry safe: events
// first (idempotent by ID and OCC), then verification commands (by command
// ID), then the cadence override, then the site's state. Only then may the
// caller acknowledge the observation. Called with mu held.
func (w *worker) apply(ctx context.Context, st *SiteState, out Output, before bool, logger *slog.Logger) error {
	for i := range out.Events {
		ev := &out.Events[i]
		seq, err := w.app.appendSite(ctx, ev)
		if err != nil {
			w.s.m.appendErrors.Inc()
			return err
		}
		w.s.m.events.WithLabelValues(string(ev.Kind)).Inc()
		logger.Info("event", "kind", ev.Kind, "event_id", ev.ID, "incident", ev.IncidentID, "reason", ev.Reason, "seq", seq)
	}
	for i := range out.Verify {
		cmd := &out.Verify[i]
		msg, err := events.Marshal(cmd)
		if err != nil {
			return err
		}
		if _, err := w.s.js.PublishMsg(ctx, msg); err != nil {
			return fmt.Errorf("publish verification command %s to region %s: %w", cmd.ID, cmd.Region, err)
		}
		w.s.m.verifications.Inc()
	}
	if out.Cadence != nil {
		if err := w.s.setCadence(ctx, *out.Cadence); err != nil {
			return err
		}
	} else if out.ClearCadence {
		if err := w.s.clearCadence(ctx, st.SiteID); err != nil {
			return err
		}
	}
	after := !trivial(st)
	if before || after {
		if err := w.s.store.save(ctx, st); err != nil {
			return err
		}
	}
	if after {
		w.states[st.SiteID] = st
	} else {
		// A healthy site keeps nothing in memory either.
		delete(w.states, st.SiteID)
		w.app.forget(events.SiteEventsFilter(st.SiteID))
	}
	return nil
}

// close closes a site's open incident (paused, deleted).
func (w *worker) close(site events.Site, reason events.Reason, at time.Time) {
	<-w.ready
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped || w.states == nil {
		return
	}
	st, ok := w.states[site.ID]
	if !ok {
		return
	}
	ctx := w.s.ctx
	out := st.Close(site, reason, at, w.s.env)
	if err := w.apply(ctx, st, out, true, w.logger.With("site", site.ID)); err != nil {
		// The incident stays open in KV; the next observation or a restart
		// sees the site paused or deleted and closes nothing more. Logged so
		// an operator can close it by hand.
		w.stale = true
		w.logger.Warn("close incident", "site", site.ID, "reason", reason, "err", err)
	}
}

// expire closes verifications whose deadline passed.
func (w *worker) expire(ctx context.Context, now time.Time) {
	select {
	case <-w.ready:
	default:
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped || w.states == nil || w.stale {
		return
	}
	for id, st := range w.states {
		if st.Incident == nil || st.Incident.Verification == nil || !now.After(st.Incident.Verification.Deadline) {
			continue
		}
		sc, ok, err := w.s.sites.get(ctx, id)
		if err != nil || !ok {
			continue
		}
		out := st.Expire(sc.site, now, w.s.env)
		if err := w.apply(ctx, st, out, true, w.logger.With("site", id)); err != nil {
			w.stale = true
			w.logger.Warn("expire verification", "site", id, "err", err)
			return
		}
	}
}
