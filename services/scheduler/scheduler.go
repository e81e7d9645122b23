// Package scheduler turns site configurations into check commands: for every
// site of the buckets this instance owns, one command per due instant, on the
// site's CHECKS subject for the primary region.
//
// # Targets
//
// The scheduler holds no database and never polls. Its targets come from
// SITES, where the last message on a site's subject is its complete current
// configuration. At start it opens one ordered consumer on every site subject
// from the stream's current end (live changes), and only then starts
// campaigning for buckets; on acquiring a bucket it loads the bucket's current
// configurations with an ordered consumer delivering the last message per
// subject. A configuration is applied only if its stream sequence is newer
// than the one held for the site, so the live consumer and a load may deliver
// the same site in either order. Paused and deleted sites are kept as
// sequence-only tombstones so an older configuration delivered late cannot
// bring them back. Losing a bucket drops its sites at once.
//
// # When checks are due
//
// Each site has a stable phase within its interval, FNV-1a 64 of its ID
// modulo the interval (ms); its due instants are the t with
// (t − phase) mod interval == 0, counted from the Unix epoch. So the fleet's
// check rate is flat, every instance computes the same instants, and the next
// due is always the previous one plus the interval (no drift). A new,
// resumed or re-timed site, and every site after a restart, starts at the
// first such instant at or after now: no burst at start, and no check done
// twice. The one exception is a bucket taken over from another instance
// while running (not in the initial grab): its sites start at the first slot
// no older than lease.MaxHandover, so the slots that fell between the old
// owner's death and the takeover are still sent if their deadline has not
// passed. Slots the old owner did send are then sent twice, but with the same
// deterministic command ID inside CHECKS's two-minute duplicate window, so
// the stream drops them.
//
// Due slots wait in a min-heap keyed by due instant with lazy invalidation
// (see dueHeap): a tick costs in proportion to the checks due, not to the
// fleet.
//
// # Publishing
//
// Every tick publishes the commands due, at most MaxPerTick and never more
// than the free room of a bounded async-publish window; the rest stay due and
// go out on the next tick. A command whose publish fails is retried on the
// following ticks (same ID, so a publish that did reach the stream is dropped
// as a duplicate) while before its deadline and until a later slot of the same
// site comes due and supersedes it: after an outage a site gets one check, not
// one per missed slot. Commands whose deadline passed (a stalled scheduler, a
// long outage of NATS) are counted as missed and never sent late, so
// recovering from a stall is not a burst. Publishing runs on the tick
// goroutine and waits for acknowledgements on others; reading SITES and
// KVCadence runs on goroutines of its own and shares with the tick only a
// mutex held for map and heap operations.
//
// # Fast retries
//
// While the state machine has an override for a site in KVCadence (see
// SetCadence), the site is checked every override interval instead, with
// purpose retry and the incident ID, on slots aligned the same way to the
// override interval. When the override is removed or its Until passes, the
// site returns to its own slots.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"github.com/vigil-dev/vigil/services/ops"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/lease"
)

// Service is the name the scheduler's leases are taken under.
const Service = "scheduler"

// Defaults.
const (
	DefaultTick       = 100 * time.Millisecond
	DefaultMaxPerTick = 5000
	DefaultMaxPending = 4000
	DefaultAckTimeout = 5 * time.Second
)

// Option configures a Scheduler.
type Option func(*options)

type options struct {
	instanceID  string
	regions     []string
	tick        time.Duration
	leaseTTL    time.Duration
	logger      *slog.Logger
	registerer  prometheus.Registerer
	now         func() time.Time
	maxPerTick  int
	maxPending  int
	ackTimeout  time.Duration
	leaseOpts   []lease.Option
	onPublished func(cmd events.CheckCommand, duplicate bool)
}

// WithInstanceID sets the instance ID written into leases (default: host name
// and a random suffix). It must be unique among running schedulers.
func WithInstanceID(id string) Option { return func(o *options) { o.instanceID = id } }

// WithRegions sets the checker regions; commands go to the first, the
// primary region (default "local").
func WithRegions(regions ...string) Option {
	return func(o *options) { o.regions = append([]string(nil), regions...) }
}

// WithTick sets how often due checks are published (default 100ms).
func WithTick(d time.Duration) Option { return func(o *options) { o.tick = d } }

// WithLeaseTTL sets the lease period; it must equal the TTL of VIGIL_LEASES
// (default lease.DefaultTTL).
func WithLeaseTTL(d time.Duration) Option { return func(o *options) { o.leaseTTL = d } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithRegisterer registers the scheduler's and its lease manager's metrics.
func WithRegisterer(r prometheus.Registerer) Option { return func(o *options) { o.registerer = r } }

// WithNow sets the clock (default time.Now). Timers still run on real time.
func WithNow(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithMaxPerTick caps the commands published per tick (default 5000); what is
// due beyond it goes out on the following ticks.
func WithMaxPerTick(n int) Option { return func(o *options) { o.maxPerTick = n } }

// WithMaxPending caps the publishes awaiting acknowledgement (default 4000).
func WithMaxPending(n int) Option { return func(o *options) { o.maxPending = n } }

// WithAckTimeout sets how long a publish may wait for its acknowledgement
// before it counts as failed and is retried (default 5s).
func WithAckTimeout(d time.Duration) Option { return func(o *options) { o.ackTimeout = d } }

// WithLeaseOptions passes further options to the lease manager (tests use
// lease.WithoutRelease to simulate a crash).
func WithLeaseOptions(opts ...lease.Option) Option {
	return func(o *options) { o.leaseOpts = append(o.leaseOpts, opts...) }
}

// OnPublished sets a function called, from an acknowledgement goroutine, for
// every command CHECKS acknowledged; duplicate is set when the stream
// recognised its ID and dropped it. For tests and debugging.
func OnPublished(fn func(cmd events.CheckCommand, duplicate bool)) Option {
	return func(o *options) { o.onPublished = fn }
}

// Scheduler publishes the check commands of the buckets it owns.
type Scheduler struct {
	js     jetstream.JetStream // the caller's: consumers and KV
	pub    jetstream.JetStream // our own context: bounded async publishing
	o      options
	region string
	logger *slog.Logger
	m      *metrics

	mu sync.Mutex // guards st
	st *state

	carryMu sync.Mutex
	// carry holds the commands to send again on the next tick: at most one
	// per site, the one due last.
	carry map[string]*events.CheckCommand

	// Set by Run before the lease manager starts.
	runCtx  context.Context
	started time.Time

	loaders sync.WaitGroup // bucket loads in flight
	acks    sync.WaitGroup // acknowledgement waiters in flight
}

// New returns a scheduler publishing through js's connection. It does not
// contact the server; Run does.
func New(js jetstream.JetStream, opts ...Option) (*Scheduler, error) {
	o := options{
		regions:    []string{"local"},
		tick:       DefaultTick,
		leaseTTL:   lease.DefaultTTL,
		now:        time.Now,
		maxPerTick: DefaultMaxPerTick,
		maxPending: DefaultMaxPending,
		ackTimeout: DefaultAckTimeout,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if err := events.ValidateRegions(o.regions); err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	if o.tick <= 0 || o.leaseTTL <= 0 || o.maxPerTick <= 0 || o.maxPending <= 0 || o.ackTimeout <= 0 {
		return nil, errors.New("scheduler: tick, lease TTL, max per tick, max pending and ack timeout must be positive")
	}
	if o.instanceID == "" {
		o.instanceID = ops.InstanceID("scheduler")
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	m, err := newMetrics(o.registerer)
	if err != nil {
		return nil, fmt.Errorf("scheduler: register metrics: %w", err)
	}
	// A JetStream context of our own, on the caller's connection, so the
	// bound on pending publishes and the ack timeout are ours and
	// PublishAsyncComplete waits only for our publishes.
	pub, err := jetstream.New(js.Conn(),
		jetstream.WithPublishAsyncMaxPending(o.maxPending),
		jetstream.WithPublishAsyncTimeout(o.ackTimeout))
	if err != nil {
		return nil, fmt.Errorf("scheduler: jetstream publish context: %w", err)
	}
	return &Scheduler{
		js:     js,
		pub:    pub,
		o:      o,
		region: o.regions[0],
		logger: o.logger.With("scheduler_id", o.instanceID),
		m:      m,
		st:     newState(o.regions[0]),
	}, nil
}

// InstanceID returns the ID this scheduler holds leases under.
func (s *Scheduler) InstanceID() string { return s.o.instanceID }

// Owned returns the buckets this scheduler currently schedules.
func (s *Scheduler) Owned() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for b, ok := range s.st.owned {
		if ok {
			out = append(out, b)
		}
	}
	return out
}

// Run schedules until ctx is done: it follows SITES and KVCadence, takes its
// share of the buckets and publishes due commands every tick. When ctx is
// done it stops publishing, waits for outstanding acknowledgements (at most
// the ack timeout), gives its leases up and returns.
func (s *Scheduler) Run(ctx context.Context) error {
	leaseKV, err := s.js.KeyValue(ctx, events.KVLeases)
	if err != nil {
		return fmt.Errorf("scheduler: open kv %s: %w", events.KVLeases, err)
	}
	cadenceKV, err := s.js.KeyValue(ctx, events.KVCadence)
	if err != nil {
		return fmt.Errorf("scheduler: open kv %s: %w", events.KVCadence, err)
	}

	// Live changes first, so nothing written while buckets load is missed.
	live, err := s.followSites(ctx)
	if err != nil {
		return err
	}
	defer live.Stop()

	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watchDone, err := s.followCadences(watchCtx, cadenceKV)
	if err != nil {
		return err
	}

	s.runCtx, s.started = ctx, s.o.now()
	mgr := lease.New(leaseKV, Service, s.o.instanceID, append([]lease.Option{
		lease.WithTTL(s.o.leaseTTL),
		lease.WithNow(s.o.now),
		lease.WithLogger(s.logger),
		lease.WithRegisterer(s.o.registerer),
		lease.OnAcquire(s.acquired),
		lease.OnLose(s.lost),
	}, s.o.leaseOpts...)...)
	// The leases outlive ctx until our last publishes are acknowledged, so
	// no successor starts on a bucket while we may still be sending to it.
	mgrCtx, stopMgr := context.WithCancel(context.WithoutCancel(ctx))
	defer stopMgr()
	mgrDone := make(chan error, 1)
	go func() { mgrDone <- mgr.Run(mgrCtx) }()

	s.logger.Info("scheduler running", "region", s.region, "tick", s.o.tick, "lease_ttl", s.o.leaseTTL)
	var runErr error
	ticker := time.NewTicker(s.o.tick)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-mgrDone:
			// The lease manager stops early only if it cannot start.
			runErr = fmt.Errorf("scheduler: %w", err)
			mgrDone <- nil
			break loop
		case <-ticker.C:
			s.tick()
		}
	}
	ticker.Stop()

	// Stop: no more publishing; let acknowledgements settle; then leases.
	settled := make(chan struct{})
	go func() { s.acks.Wait(); close(settled) }()
	select {
	case <-settled:
	case <-time.After(s.o.ackTimeout + time.Second):
		s.logger.Warn("stopping with check command acknowledgements outstanding")
	}
	stopMgr()
	<-mgrDone
	live.Stop()
	stopWatch()
	<-watchDone
	s.loaders.Wait()
	if runErr == nil {
		runErr = ctx.Err()
	}
	s.logger.Info("scheduler stopped")
	return runErr
}

// acquired is the lease manager's OnAcquire: own bucket b and load its sites.
func (s *Scheduler) acquired(b int) {
	now := s.o.now()
	s.mu.Lock()
	epoch := s.st.acquire(b)
	n := s.ownedCount()
	s.mu.Unlock()
	s.m.owned.Set(float64(n))
	// A bucket taken over while running may have been ownerless since its
	// holder died: reach back over the longest possible handover.
	var lookback time.Duration
	if now.Sub(s.started) >= s.o.leaseTTL {
		lookback = lease.MaxHandover(s.o.leaseTTL)
	}
	s.loaders.Add(1)
	go func() {
		defer s.loaders.Done()
		s.loadBucket(s.runCtx, b, epoch, lookback)
	}()
}

// lost is the lease manager's OnLose: drop bucket b's sites at once.
func (s *Scheduler) lost(b int) {
	s.mu.Lock()
	s.st.lose(b)
	n, active := s.ownedCount(), s.st.active
	s.mu.Unlock()
	s.m.owned.Set(float64(n))
	s.m.targets.Set(float64(active))
	s.logger.Debug("bucket dropped", "bucket", b)
}

// ownedCount counts owned buckets; s.mu must be held.
func (s *Scheduler) ownedCount() int {
	n := 0
	for _, ok := range s.st.owned {
		if ok {
			n++
		}
	}
	return n
}

// stillOwned reports whether bucket b is owned in the given epoch.
func (s *Scheduler) stillOwned(b int, epoch uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.owned[b] && s.st.epoch[b] == epoch
}

// tick publishes what is due now: first the commands carried over from
// earlier ticks (failed publishes), then the slots that came due, within the
// tick's budget.
func (s *Scheduler) tick() {
	now := s.o.now()
	nowMs := now.UnixMilli()
	budget := min(s.o.maxPerTick, s.o.maxPending-s.pub.PublishAsyncPending())
	if budget <= 0 {
		return // the window is full: everything due stays due
	}

	s.carryMu.Lock()
	carry := s.carry
	s.carry = nil
	s.carryMu.Unlock()

	var batch, keep []*events.CheckCommand
	missed := 0
	s.mu.Lock()
	for _, c := range carry {
		switch {
		case !s.st.owned[c.Bucket]:
			// Not ours any more: the new owner schedules it.
		case s.st.stale(c), !now.Before(c.Deadline):
			missed++
		case len(batch) < budget:
			batch = append(batch, c)
		default:
			keep = append(keep, c)
		}
	}
	due, skipped := s.st.popDue(nowMs, budget-len(batch))
	if len(due) > 0 && len(batch)+len(keep) > 0 {
		// A slot that came due just now supersedes an older command of
		// the same site still waiting to be sent.
		n := len(batch) + len(keep)
		batch = slices.DeleteFunc(batch, s.st.stale)
		keep = slices.DeleteFunc(keep, s.st.stale)
		missed += n - len(batch) - len(keep)
	}
	active := s.st.active
	s.mu.Unlock()
	missed += skipped
	batch = append(batch, due...)
	if len(keep) > 0 {
		missed += s.carryOver(keep)
	}

	s.m.targets.Set(float64(active))
	if missed > 0 {
		s.m.missed.Add(float64(missed))
		s.logger.Warn("check commands not sent: deadline passed or superseded by a newer slot", "count", missed)
	}
	if len(batch) > 0 {
		s.publish(batch)
	}
}

// inflight is a published command awaiting its acknowledgement.
type inflight struct {
	cmd    *events.CheckCommand
	fut    jetstream.PubAckFuture
	sentAt time.Time
}

// publish sends a batch asynchronously; acknowledgements are awaited on
// another goroutine.
func (s *Scheduler) publish(batch []*events.CheckCommand) {
	var sent []inflight
	var failed []*events.CheckCommand
	var firstErr error
	for _, cmd := range batch {
		msg, err := events.Marshal(cmd)
		if err != nil {
			// A command we cannot encode will not encode next time either.
			s.m.errors.Inc()
			s.logger.Error("encode check command", "site", cmd.SiteID, "bucket", cmd.Bucket, "msg_id", cmd.ID, "err", err)
			continue
		}
		at := s.o.now()
		fut, err := s.pub.PublishMsgAsync(msg, jetstream.WithExpectStream(events.StreamChecks))
		if err != nil {
			failed = append(failed, cmd)
			firstErr = firstOf(firstErr, fmt.Errorf("publish check command %s for site %s: %w", cmd.ID, cmd.SiteID, err))
			continue
		}
		sent = append(sent, inflight{cmd: cmd, fut: fut, sentAt: at})
	}
	if len(failed) > 0 {
		s.retryLater(failed, firstErr)
	}
	if len(sent) > 0 {
		s.acks.Add(1)
		go func() {
			defer s.acks.Done()
			s.awaitAcks(sent)
		}()
	}
}

// awaitAcks waits for a batch's acknowledgements and queues the failures for
// a retry.
func (s *Scheduler) awaitAcks(sent []inflight) {
	// The publish context's ack timeout resolves every future; the timer is
	// a guard against a future that is never resolved (connection closed).
	guard := time.NewTimer(s.o.ackTimeout + time.Second)
	defer guard.Stop()
	var failed []*events.CheckCommand
	var firstErr error
	expired := false
	for _, f := range sent {
		var ack *jetstream.PubAck
		var err error
		if expired {
			err = errors.New("no acknowledgement")
		} else {
			select {
			case ack = <-f.fut.Ok():
			case err = <-f.fut.Err():
			case <-guard.C:
				expired = true
				err = errors.New("no acknowledgement")
			}
		}
		if err != nil {
			failed = append(failed, f.cmd)
			firstErr = firstOf(firstErr, fmt.Errorf("publish check command %s for site %s: %w", f.cmd.ID, f.cmd.SiteID, err))
			continue
		}
		s.m.published.WithLabelValues(string(f.cmd.Purpose)).Inc()
		s.m.lag.Observe(f.sentAt.Sub(f.cmd.DueAt).Seconds())
		if s.o.onPublished != nil {
			s.o.onPublished(*f.cmd, ack.Duplicate)
		}
	}
	if len(failed) > 0 {
		s.retryLater(failed, firstErr)
	}
}

// retryLater counts failed publishes and queues them for the next tick, which
// sends them again while before their deadline (with the same ID, so a
// publish that did reach the stream is dropped as a duplicate).
func (s *Scheduler) retryLater(cmds []*events.CheckCommand, err error) {
	s.m.errors.Add(float64(len(cmds)))
	c := cmds[0]
	s.logger.Warn("check command publish failed; retrying while before deadline",
		"count", len(cmds), "site", c.SiteID, "bucket", c.Bucket, "msg_id", c.ID, "err", err)
	if n := s.carryOver(cmds); n > 0 {
		s.m.missed.Add(float64(n))
	}
}

// carryOver queues commands for the next tick, keeping one per site, the
// one due last; it returns how many older ones it dropped.
func (s *Scheduler) carryOver(cmds []*events.CheckCommand) int {
	s.carryMu.Lock()
	defer s.carryMu.Unlock()
	if s.carry == nil {
		s.carry = make(map[string]*events.CheckCommand, len(cmds))
	}
	dropped := 0
	for _, c := range cmds {
		if old, ok := s.carry[c.SiteID]; ok {
			dropped++
			if !c.DueAt.After(old.DueAt) {
				continue
			}
		}
		s.carry[c.SiteID] = c
	}
	return dropped
}

// firstOf returns first if set, else err.
func firstOf(first, err error) error {
	if first != nil {
		return first
	}
	return err
}
