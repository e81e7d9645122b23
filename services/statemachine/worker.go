package statemachine

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
)

// worker processes one owned bucket: its durable consumer on OBSERVATIONS and
// the states of its sites. Everything it does happens under mu, one
// observation at a time, so a site's history is applied in stream order.
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
	ready   chan struct{}
}

func newWorker(s *Service, b int) *worker {
	return &worker{
		s: s, bucket: b,
		logger: s.logger.With("bucket", b),
		ready:  make(chan struct{}),
	}
}

// start loads the bucket's states and starts consuming, retrying until it
// succeeds or the worker is stopped.
func (w *worker) start(ctx context.Context) {
	defer close(w.ready)
	backoff := 500 * time.Millisecond
	for {
		err := w.startOnce(ctx)
		if err == nil {
			w.logger.Info("bucket started")
			return
		}
		w.logger.Warn("start bucket", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		w.mu.Lock()
		stopped := w.stopped
		w.mu.Unlock()
		if stopped {
			return
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
	cons, err := w.s.js.CreateOrUpdateConsumer(ctx, events.StreamObservations, jetstream.ConsumerConfig{
		Durable:       ConsumerName(w.bucket),
		Description:   fmt.Sprintf("state machine, bucket %d", w.bucket),
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
	})
	if err != nil {
		return fmt.Errorf("create consumer %s: %w", ConsumerName(w.bucket), err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { w.handle(ctx, m) },
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if ctx.Err() == nil {
				w.logger.Debug("consume", "err", err)
			}
		}))
	if err != nil {
		return fmt.Errorf("consume %s: %w", ConsumerName(w.bucket), err)
	}
	w.cc = cc
	return nil
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

// stop stops consuming and waits for the observation in hand. Unacknowledged
// observations are redelivered to the bucket's next owner.
func (w *worker) stop() {
	w.mu.Lock()
	w.stopped = true
	cc := w.cc
	w.mu.Unlock()
	if cc != nil {
		cc.Stop()
		<-cc.Closed()
	}
	// Wait for a handler that was running.
	w.mu.Lock()
	w.states = nil
	w.mu.Unlock()
	w.logger.Info("bucket stopped")
}

func (w *worker) handle(ctx context.Context, m jetstream.Msg) {
	var obs events.Observation
	if _, err := events.Decode(m.Headers(), m.Data(), &obs); err != nil {
		w.s.m.observations.WithLabelValues("poison").Inc()
		w.logger.Warn("quarantined an undecodable observation", "subject", m.Subject(), "err", err)
		_ = m.TermWithReason("undecodable observation: " + err.Error())
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
		_ = m.Ack()
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
	if err := m.Ack(); err != nil {
		logger.Debug("ack", "err", err)
	}
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
