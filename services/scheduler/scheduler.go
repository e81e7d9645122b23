// Package scheduler turns site configurations into check commands: for every
// site of the buckets this instance owns, one command per due instant for the
// primary region, sent to CHECKS together with the other commands of the
// region that came due in the same tick, in CheckBatch messages (see
// Publishing).
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
// passed. Slots the old owner did send are then sent twice. A command the old
// owner sent alone has the same deterministic ID inside CHECKS's two-minute
// duplicate window, so the stream drops it; one it sent in a batch came in
// company the new owner cannot reproduce (other buckets, other tick
// boundaries), so the new owner's message has another ID and the slot is
// checked twice, which the state machine tolerates. Only the old owner's
// slots due between the start of the look-back and its death are affected,
// less than a lease period of them.
//
// Due slots wait in a min-heap keyed by due instant with lazy invalidation
// (see dueHeap): a tick costs in proportion to the checks due, not to the
// fleet.
//
// # Publishing
//
// Every tick publishes the commands due, at most MaxPerTick and never more
// than the free room of a bounded async-publish window; the rest stay due and
// go out on the next tick. A message stored in CHECKS costs about as much as
// the check it asks for (a store, a delivery, an acknowledgement and a
// publish acknowledgement), so the commands of one region due in the same tick
// go out together: in events.CheckBatch messages of at most BatchSize commands
// (WithBatchSize), each on a subject of its own (events.CheckBatchSubject), and
// split further if a batch's encoding would come near CHECKS's maximum message
// size. A command left by itself (the only one of its region in a tick, a
// remainder, or with WithBatchSize(1) every command) is sent alone, as a
// CheckCommand on its site's subject, where the stream's
// one-pending-command-per-subject rule lets a newer command replace a stale
// one still waiting. A batch is never replaced; it carries a TTL instead,
// until its commands' last deadline, after which the server deletes it (a
// checker would only drop the commands unrun), so a backlog of batches never
// outlives its commands' deadlines.
//
// A message whose publish fails is retried command by command: each of its
// commands is carried over (one per site) and sent again on the following
// ticks while before its deadline and until a later slot of the same site
// comes due and supersedes it: after an outage a site gets one check, not one
// per missed slot. A command keeps its ID, and a batch's ID is derived from
// its region and its commands' IDs in order, so a message that did reach the
// stream is dropped as a duplicate when it is sent again alike (a tick sends
// its commands in order of due instant and ID, so the commands of a failed
// batch carried over by themselves are batched alike again); a batch sent
// again with other company (commands dropped or added since) has another ID,
// and if the first one did reach the stream (only its acknowledgement was
// lost) its commands are checked twice, which the state machine tolerates.
// Commands whose deadline passed (a stalled scheduler, a long outage of NATS)
// are counted as missed and never sent late, so recovering from a stall is
// not a burst. Publishing runs on the tick goroutine and waits for
// acknowledgements on others; reading SITES and KVCadence runs on goroutines
// of its own and shares with the tick only a mutex held for map and heap
// operations.
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
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
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
	// DefaultBatchSize is the most commands in one CHECKS message. Fifty
	// amortise the stream's per-message cost (store, delivery,
	// acknowledgement, publish acknowledgement) to a few percent of a
	// command's, while a batch stays a few tens of KiB, well under CHECKS's
	// 256 KiB maximum message size, and the work one checker takes at once
	// stays small.
	DefaultBatchSize = 50
)

// maxBatchBytes bounds the encoded data of a batch: a batch above it is split
// in halves. It is below CHECKS's 256 KiB maximum message size (the streams'
// MaxMsgSize in services/topology), leaving room for the headers, so a batch
// of commands with large check specs is split instead of refused.
const maxBatchBytes = 192 << 10

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
	batchSize   int
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

// WithBatchSize sets the most commands published in one CHECKS message
// (default DefaultBatchSize). With 1 every command is a message of its own on
// its site's subject.
func WithBatchSize(n int) Option { return func(o *options) { o.batchSize = n } }

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
	// maxBatchBytes is maxBatchBytes; tests lower it.
	maxBatchBytes int

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
		batchSize:  DefaultBatchSize,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if err := events.ValidateRegions(o.regions); err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	if o.tick <= 0 || o.leaseTTL <= 0 || o.maxPerTick <= 0 || o.maxPending <= 0 || o.ackTimeout <= 0 || o.batchSize <= 0 {
		return nil, errors.New("scheduler: tick, lease TTL, max per tick, max pending, ack timeout and batch size must be positive")
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

		maxBatchBytes: maxBatchBytes,
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
		// A deterministic order, so the commands of a batch whose publish
		// failed, carried over (from a map) and sent by themselves, make the
		// same batch again, with the same ID: if the first did reach the
		// stream, the second is dropped as a duplicate.
		slices.SortFunc(batch, func(a, b *events.CheckCommand) int {
			if c := a.DueAt.Compare(b.DueAt); c != 0 {
				return c
			}
			return strings.Compare(a.ID, b.ID)
		})
		s.publish(batch)
	}
}

// inflight is a published message awaiting its acknowledgement.
type inflight struct {
	id     string                 // the message's ID: a command's or a batch's
	cmds   []*events.CheckCommand // the commands in it
	fut    jetstream.PubAckFuture
	sentAt time.Time
}

// describe names a message for logs and errors.
func describe(id string, cmds []*events.CheckCommand) string {
	if len(cmds) == 1 {
		return fmt.Sprintf("check command %s for site %s", id, cmds[0].SiteID)
	}
	return fmt.Sprintf("check batch %s of %d commands", id, len(cmds))
}

// sending collects the outcome of one publish call.
type sending struct {
	sent     []inflight
	failed   []*events.CheckCommand
	firstErr error
}

// publish sends a tick's commands asynchronously, in batches of at most
// BatchSize commands of one region; acknowledgements are awaited on another
// goroutine.
func (s *Scheduler) publish(batch []*events.CheckCommand) {
	var out sending
	for _, cmds := range byRegion(batch) {
		for chunk := range slices.Chunk(cmds, s.o.batchSize) {
			s.publishChunk(&out, chunk)
		}
	}
	if len(out.failed) > 0 {
		s.retryLater(out.failed, out.firstErr)
	}
	if len(out.sent) > 0 {
		s.acks.Add(1)
		go func() {
			defer s.acks.Done()
			s.awaitAcks(out.sent)
		}()
	}
}

// byRegion groups commands by region, keeping their order within a region.
func byRegion(cmds []*events.CheckCommand) [][]*events.CheckCommand {
	region := cmds[0].Region
	i := 1
	for i < len(cmds) && cmds[i].Region == region {
		i++
	}
	if i == len(cmds) {
		return [][]*events.CheckCommand{cmds} // the usual case: one region
	}
	var groups [][]*events.CheckCommand
next:
	for _, c := range cmds {
		for g := range groups {
			if groups[g][0].Region == c.Region {
				groups[g] = append(groups[g], c)
				continue next
			}
		}
		groups = append(groups, []*events.CheckCommand{c})
	}
	return groups
}

// publishChunk sends commands of one region: alone if there is one, else as
// one batch, or as several if the batch's encoding is over the byte bound.
func (s *Scheduler) publishChunk(out *sending, cmds []*events.CheckCommand) {
	if len(cmds) == 1 {
		s.publishOne(out, cmds[0])
		return
	}
	b := &events.CheckBatch{Region: cmds[0].Region, Commands: make([]events.CheckCommand, len(cmds))}
	for i, c := range cmds {
		b.Commands[i] = *c
	}
	b.ID = events.BatchID(b.Region, b.Envelope().Time, b.Commands)
	msg, err := events.Marshal(b)
	if err != nil {
		// A command that cannot be encoded must not take the others down
		// with it: send them one by one, which logs and drops the bad one.
		s.logger.Warn("encode check batch; sending its commands one by one", "batch", b.ID, "commands", len(cmds), "err", err)
		for _, c := range cmds {
			s.publishOne(out, c)
		}
		return
	}
	if len(msg.Data) > s.maxBatchBytes {
		// Too large for CHECKS (or close to it): split, down to single
		// commands if need be.
		h := len(cmds) / 2
		s.publishChunk(out, cmds[:h])
		s.publishChunk(out, cmds[h:])
		return
	}
	// No newer batch replaces this one on CHECKS (its subject is its own),
	// so it carries a TTL: the server deletes it once every command in it
	// is past its deadline, which a checker would only drop unrun. A
	// backlog of batches (a region's checkers down) so lasts no longer than
	// the commands in it are worth running, as a site's stale command,
	// replaced by its next one, does.
	s.send(out, msg, b.ID, cmds, jetstream.WithMsgTTL(batchTTL(cmds, s.o.now())))
}

// batchTTL is how long a batch of cmds published at now is worth keeping:
// until the last of its deadlines, in whole seconds (the server's unit), at
// least one.
func batchTTL(cmds []*events.CheckCommand, now time.Time) time.Duration {
	var last time.Time
	for _, c := range cmds {
		if c.Deadline.After(last) {
			last = c.Deadline
		}
	}
	return max(time.Second, last.Sub(now).Truncate(time.Second)+time.Second)
}

// publishOne sends one command by itself, on its site's subject.
func (s *Scheduler) publishOne(out *sending, cmd *events.CheckCommand) {
	msg, err := events.Marshal(cmd)
	if err != nil {
		// A command we cannot encode will not encode next time either.
		s.m.errors.Inc()
		s.logger.Error("encode check command", "site", cmd.SiteID, "bucket", cmd.Bucket, "msg_id", cmd.ID, "err", err)
		return
	}
	s.send(out, msg, cmd.ID, []*events.CheckCommand{cmd}, nil)
}

// send publishes one encoded message carrying cmds, with ttl if not nil.
func (s *Scheduler) send(out *sending, msg *nats.Msg, id string, cmds []*events.CheckCommand, ttl jetstream.PublishOpt) {
	at := s.o.now()
	opts := []jetstream.PublishOpt{jetstream.WithExpectStream(events.StreamChecks)}
	if ttl != nil {
		opts = append(opts, ttl)
	}
	fut, err := s.pub.PublishMsgAsync(msg, opts...)
	if err != nil {
		out.failed = append(out.failed, cmds...)
		out.firstErr = firstOf(out.firstErr, fmt.Errorf("publish %s: %w", describe(id, cmds), err))
		return
	}
	out.sent = append(out.sent, inflight{id: id, cmds: cmds, fut: fut, sentAt: at})
}

// awaitAcks waits for the acknowledgements of a tick's messages and queues
// the commands of the failed ones for a retry. The commands of a failed batch
// are carried over like single commands and may go out next time in a batch
// composed otherwise (some dropped as past their deadline or superseded,
// others added): if the failed batch did reach the stream and only its
// acknowledgement was lost, its commands are then checked twice, which the
// state machine tolerates.
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
			failed = append(failed, f.cmds...)
			firstErr = firstOf(firstErr, fmt.Errorf("publish %s: %w", describe(f.id, f.cmds), err))
			continue
		}
		s.m.perMessage.Observe(float64(len(f.cmds)))
		for _, c := range f.cmds {
			s.m.published.WithLabelValues(string(c.Purpose)).Inc()
			s.m.lag.Observe(f.sentAt.Sub(c.DueAt).Seconds())
			if s.o.onPublished != nil {
				s.o.onPublished(*c, ack.Duplicate)
			}
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
