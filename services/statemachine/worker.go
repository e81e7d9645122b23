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
// Observations stream in without a round trip each (up to maxInFlight
// unacknowledged) and are acknowledged in groups, every ackBatch
// observations or ackEvery: the consumer acknowledges all (AckAll), so
// acknowledging the newest applied observation acknowledges the ones before
// it. Order survives failures because the worker never applies past one:
// when an observation's effects cannot be made durable, the worker halts,
// ignores what was delivered behind it, and after a backoff starts the
// consumer again just after the last observation it applied, so the failed
// one comes first (see failLocked).
//
// The consumer keeps its state in memory. A file-backed consumer rewrites its
// state file up to ten times a second while it changes, and 64 of them were
// a tenth of the whole system's CPU in the capacity benchmark (BENCHMARKS.md,
// finding 3). The bucket's position lives instead in KVStateMachine
// (events.PositionKey), saved about once a second; on a change of owner, a
// crash or a server restart the consumer is created afresh from that position
// (or from the old consumer's ack floor, if it is further on). Observations
// applied after that point are applied again, which changes nothing: event
// IDs are derived, appends are conditional and a site's state ignores an
// observation it has already applied. A site that recovered keeps no state
// to ignore anything with, so an observation that wrote something is
// acknowledged at once: the ack floor is then past every write but perhaps
// the last, and what is applied again after a crash wrote nothing the first
// time. Only when the server lost the consumer too (a restart of the server)
// is the saved position, up to a second old, all there is.
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
	// halted is set when an observation's effects failed: nothing more is
	// applied until run has started the consumer again from applied.
	halted bool
	// failSeq is the observation whose effects failed last, fails how many
	// times in a row; after the retry policy's attempts it is given up.
	failSeq uint64
	fails   int
	// ackMsg is the newest applied observation not yet acknowledged, unacked
	// how many applied observations its acknowledgement will cover.
	ackMsg  jetstream.Msg
	unacked int

	saveMu sync.Mutex // serializes position saves; guards saved
	saved  uint64

	ready   chan struct{} // closed once the first start has finished
	recheck chan struct{} // the consumer may be gone: see run
	restart chan struct{} // an observation failed: see failLocked
	quit    chan struct{}
	done    chan struct{}
}

func newWorker(s *Service, b int) *worker {
	return &worker{
		s: s, bucket: b,
		logger:  s.logger.With("bucket", b),
		ready:   make(chan struct{}),
		recheck: make(chan struct{}, 1),
		restart: make(chan struct{}, 1),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// run starts consuming, retrying until it succeeds, and starts again whenever
// the consumer turns out to be gone or an observation failed, until the
// worker is stopped.
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
		var delay time.Duration
		for again := false; !again; {
			select {
			case <-ctx.Done():
				return
			case <-w.quit:
				return
			case <-w.recheck:
				if again = w.consumerGone(ctx); again {
					w.logger.Warn("bucket consumer gone; starting again from the saved position")
				}
			case <-w.restart:
				again, delay = true, w.retryDelay()
			}
		}
		w.stopConsuming()
		// Nothing fails while nothing is consumed: a signal left now is
		// one this restart already answers.
		select {
		case <-w.restart:
		default:
		}
		select {
		case <-ctx.Done():
			return
		case <-w.quit:
			return
		case <-time.After(delay):
		}
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
		// See the type's comment: observations are applied in order and
		// acknowledged in groups; a failed one is retried by the worker
		// (fail), not redelivered by the server, so there is no MaxDeliver
		// or BackOff. A redelivery after AckWait (an observation held that
		// long) repeats one already applied, which handle skips.
		AckPolicy:     jetstream.AckAllPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxAckPending: maxInFlight,
		AckWait:       30 * time.Second,
		// See the type's comment: the position is kept in KV instead.
		MemoryStorage: true,
		// A consumer left by an instance that died goes away by itself.
		InactiveThreshold: consumerInactiveThreshold,
	}
	if from > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = from + 1
	}
	// A consumer's start cannot be changed, so the previous one goes; its
	// ack floor, part of the position, is saved first.
	if err := w.savePosition(ctx, from); err != nil {
		return err
	}
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
	w.halted = false
	w.ackMsg, w.unacked = nil, 0
	w.logger.Debug("consuming", "consumer", name, "from_seq", from+1)
	return nil
}

// consumerInactiveThreshold is how long a bucket consumer nobody pulls from
// lives on.
const consumerInactiveThreshold = 5 * time.Minute

const (
	// maxInFlight bounds the observations delivered to a bucket's worker
	// and not yet acknowledged.
	maxInFlight = 256
	// ackBatch is how many applied observations one acknowledgement covers
	// at most; fewer are acknowledged by the service's ackLoop.
	ackBatch = 64
)

// retryPolicy says how a bucket retries an observation whose effects failed:
// after delays[i] for the (i+1)th failure in a row (the last delay for any
// later one), and at most attempts times before it is given up, so the
// bucket is never blocked for good.
type retryPolicy struct {
	attempts int
	delays   []time.Duration
}

func defaultRetryPolicy() retryPolicy {
	return retryPolicy{attempts: 20, delays: []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second}}
}

// retryDelay is how long run waits before starting the consumer again after
// the effects of an observation failed: longer the more often in a row.
func (w *worker) retryDelay() time.Duration {
	w.mu.Lock()
	fails := w.fails
	w.mu.Unlock()
	d := w.s.o.retry.delays
	return d[min(max(fails, 1), len(d))-1]
}

// position returns the sequence after which the bucket's consumer starts: the
// furthest of the saved position, the position this worker reached, and the
// ack floor of a consumer a previous owner left (everything up to it was
// acknowledged, so it is durable). Called with mu held.
func (w *worker) position(ctx context.Context) (uint64, error) {
	pos, err := w.s.store.loadPosition(ctx, w.bucket)
	if err != nil {
		return 0, err
	}
	// What was loaded needs no saving again (see startOnce).
	w.saveMu.Lock()
	w.saved = max(w.saved, pos)
	w.saveMu.Unlock()
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
	w.flushAck()
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
	return w.savePosition(ctx, pos)
}

// savePosition saves pos as the bucket's position if it is further on than
// the saved one.
func (w *worker) savePosition(ctx context.Context, pos uint64) error {
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
	if !w.admit(seq) {
		return
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
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped || w.halted {
		return
	}
	if err != nil {
		w.failLocked(m, seq, logger, fmt.Errorf("read site configuration: %w", err))
		return
	}
	if !ok {
		// Observations of a deleted or unknown site change nothing.
		w.s.m.observations.WithLabelValues("ignored").Inc()
		w.ackLocked(m, seq)
		return
	}
	if w.stale {
		if err := w.reload(ctx); err != nil {
			w.failLocked(m, seq, logger, fmt.Errorf("reload bucket states: %w", err))
			return
		}
	}
	st := w.state(obs.SiteID)
	before := !trivial(st)
	out := st.Observe(sc.site, obs, w.s.env)
	wrote, err := w.apply(ctx, st, out, before, logger)
	if err != nil {
		w.stale = true
		w.s.m.errors.Inc()
		w.failLocked(m, seq, logger, fmt.Errorf("make effects durable: %w", err))
		return
	}
	w.s.m.observations.WithLabelValues("applied").Inc()
	w.ackLocked(m, seq)
	if wrote {
		// Applied again, an observation before this one could act on a
		// state this one has since changed or deleted (a healthy site keeps
		// none): acknowledged now, it and all before it are never applied
		// again, while the observations that wrote nothing since the last
		// write are safe to repeat, as they would write nothing again.
		w.flushAckLocked()
	}
}

// admit reports whether the observation at stream sequence seq is to be
// applied now: not when the worker is halted or stopped, nor when seq was
// applied already (a redelivery after AckWait).
func (w *worker) admit(seq uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.halted && !w.stopped && (seq == 0 || seq > w.applied)
}

// failLocked handles an observation whose effects could not all be made
// durable: the worker halts, and run starts the consumer again from the last
// applied observation after a backoff, so this one is tried again before any
// behind it. After the retry policy's attempts it is given up instead, as
// poison. Called with mu held.
func (w *worker) failLocked(m jetstream.Msg, seq uint64, logger *slog.Logger, err error) {
	if seq != 0 && seq == w.failSeq {
		w.fails++
	} else {
		w.failSeq, w.fails = seq, 1
	}
	if w.fails >= w.s.o.retry.attempts {
		w.s.m.observations.WithLabelValues("given_up").Inc()
		logger.Error("observation given up: its effects failed too often", "stream_seq", seq, "attempts", w.fails, "err", err)
		w.termLocked(m, seq, fmt.Sprintf("effects failed %d times: %v", w.fails, err))
		return
	}
	logger.Warn("effects not yet durable; the observation will be applied again", "stream_seq", seq, "attempt", w.fails, "err", err)
	w.halted = true
	select {
	case w.restart <- struct{}{}:
	default:
	}
}

// quarantine terminates an undecodable observation: the server never
// redelivers it and announces it, with the reason, in a terminated-delivery
// advisory. The bucket moves past it.
func (w *worker) quarantine(m jetstream.Msg, seq uint64, err error) {
	w.s.m.observations.WithLabelValues("poison").Inc()
	w.logger.Warn("quarantined an undecodable observation", "subject", m.Subject(), "stream_seq", seq, "err", err)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.termLocked(m, seq, "undecodable observation: "+err.Error())
}

// termLocked moves the bucket past m without applying it. The termination
// acknowledges it and, the consumer acknowledging all, every observation
// before it. Called with mu held.
func (w *worker) termLocked(m jetstream.Msg, seq uint64, reason string) {
	if err := m.TermWithReason(reason); err != nil {
		w.logger.Debug("terminate", "stream_seq", seq, "err", err)
	}
	w.applied = max(w.applied, seq)
	w.failSeq, w.fails = 0, 0
	w.ackMsg, w.unacked = nil, 0
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
	w.ackLocked(m, seq)
	return true
}

// ackLocked records m as applied. Its acknowledgement is sent once ackBatch
// applied observations are waiting for one, or by the next flushAck. Called
// with mu held.
func (w *worker) ackLocked(m jetstream.Msg, seq uint64) {
	w.applied = max(w.applied, seq)
	w.failSeq, w.fails = 0, 0
	w.ackMsg = m
	w.unacked++
	if w.unacked >= ackBatch {
		w.flushAckLocked()
	}
}

// flushAck acknowledges the applied observations not yet acknowledged.
func (w *worker) flushAck() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushAckLocked()
}

func (w *worker) flushAckLocked() {
	if w.ackMsg == nil {
		return
	}
	// Not waited for: the position is saved in KV, so a lost
	// acknowledgement only means a few observations applied again.
	if err := w.ackMsg.Ack(); err != nil {
		w.logger.Debug("ack", "stream_seq", w.applied, "err", err)
	}
	w.ackMsg, w.unacked = nil, 0
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
// caller acknowledge the observation. It reports whether it wrote anything.
// Called with mu held.
func (w *worker) apply(ctx context.Context, st *SiteState, out Output, before bool, logger *slog.Logger) (wrote bool, err error) {
	for i := range out.Events {
		ev := &out.Events[i]
		seq, err := w.app.appendSite(ctx, ev)
		if err != nil {
			w.s.m.appendErrors.Inc()
			return false, err
		}
		w.s.m.events.WithLabelValues(string(ev.Kind)).Inc()
		logger.Info("event", "kind", ev.Kind, "event_id", ev.ID, "incident", ev.IncidentID, "reason", ev.Reason, "seq", seq)
	}
	for i := range out.Verify {
		cmd := &out.Verify[i]
		msg, err := events.Marshal(cmd)
		if err != nil {
			return false, err
		}
		if _, err := w.s.js.PublishMsg(ctx, msg); err != nil {
			return false, fmt.Errorf("publish verification command %s to region %s: %w", cmd.ID, cmd.Region, err)
		}
		w.s.m.verifications.Inc()
	}
	if out.Cadence != nil {
		if err := w.s.setCadence(ctx, *out.Cadence); err != nil {
			return false, err
		}
	} else if out.ClearCadence {
		if err := w.s.clearCadence(ctx, st.SiteID); err != nil {
			return false, err
		}
	}
	after := !trivial(st)
	wrote = len(out.Events) > 0 || len(out.Verify) > 0 || out.Cadence != nil || out.ClearCadence || before || after
	if before || after {
		if err := w.s.store.save(ctx, st); err != nil {
			return false, err
		}
	}
	if after {
		w.states[st.SiteID] = st
	} else {
		// A healthy site keeps nothing in memory either.
		delete(w.states, st.SiteID)
		w.app.forget(events.SiteEventsFilter(st.SiteID))
	}
	return wrote, nil
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
	if _, err := w.apply(ctx, st, out, true, w.logger.With("site", site.ID)); err != nil {
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
		if _, err := w.apply(ctx, st, out, true, w.logger.With("site", id)); err != nil {
			w.stale = true
			w.logger.Warn("expire verification", "site", id, "err", err)
			return
		}
	}
}
