// Package lease splits Vigil's fixed set of buckets (events.Buckets) between the
// running instances of one service with leases in the KV bucket VIGIL_LEASES.
//
// # Protocol
//
// The lease on bucket b of service s is the key events.LeaseKey(s, b) ("scheduler.7")
// whose value is the holder's instance ID. The KV bucket has a bucket-level TTL
// (lease.ttl) and History 1, so a key that is not rewritten within one TTL is
// removed by the server.
//
//   - Campaign: kv.Create(key). It succeeds only when the key does not exist
//     (never written, expired, or deleted), so at most one campaigner wins.
//   - Renew: kv.Update(key, id, lastRevision) every TTL/3. Update is a
//     compare-and-set on the key's revision: it fails if anybody else wrote the
//     key since, or if the key expired in between.
//   - Release: the holder first stops using the bucket, then deletes the key
//     with a revision check (kv.Delete with LastRevision), so a successor can
//     take it at once instead of waiting for the TTL.
//
// Each instance also announces itself with a heartbeat key
// "<service>.members.<instance>", written (kv.Put) at the start of every round
// and expired by the same TTL. An instance holds at most
// ceil(Buckets / live members) leases; one that holds more releases the excess,
// and one under its share takes free buckets, trying them in an order that
// starts at an offset derived from its instance ID so that instances starting
// together do not all race for bucket 0.
//
// # Safety: at most one user of a bucket at a time
//
// A holder records, for every lease, the local time at which it SENT the last
// successful Create or Update. The server stores that write no earlier than it
// was sent, so the key cannot expire, and nobody else can Create it, before
// sent + TTL. The holder considers the lease lost at
// sent + TTL − margin, or at once when a renewal's compare-and-set fails,
// whichever comes first: a watchdog checks the deadlines several times per
// margin independently of the (possibly blocked) renewal requests, and the
// OnLose callback runs before the lease is given up in any other way (release
// deletes the key only after OnLose has returned). So a live, unpaused holder
// has stopped using a bucket before any other instance can acquire it; the
// margin absorbs the watchdog's granularity and clock-rate differences between
// hosts.
//
// What no lease protocol can prevent is a holder that is paused (a stop-the-world
// pause, SIGSTOP, a VM migration) past its deadline and acts once before its
// watchdog runs. Such double ownership is bounded: the paused holder's next
// renewal fails its compare-and-set and it drops the bucket, so the overlap
// lasts at most one lease period. Consumers of a bucket therefore make their
// effects idempotent (deterministic message IDs, optimistic concurrency)
// rather than rely on exclusivity.
//
// # Liveness
//
// A dead holder's keys expire one TTL after its last renewal, at the latest
// TTL after it died; the other instances' next round (every TTL/3) finds the
// bucket free. Because the heartbeat is written before the renewals of a round,
// a dead instance's heartbeat expires no later than its leases, so by the time
// its buckets are free the survivors already count one member less and have
// room in their share for them. A bucket is thus ownerless for at most about
// MaxHandover(TTL) = TTL + TTL/3 (+ slack) after its holder dies, well within
// two lease periods. Since ceil(Buckets/members) × members ≥ Buckets, the live
// members together always have room for every bucket.
package lease

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vigil-dev/vigil/events"
)

// DefaultTTL is the lease period when WithTTL is not given; it matches the
// default of the lease.ttl configuration key.
const DefaultTTL = 10 * time.Second

// MaxHandover returns how long a bucket can stay without an owner after its
// holder dies without releasing it, for a lease period ttl: the key expires at
// most ttl after the holder's last renewal, the survivors look for free
// buckets every ttl/3, and ttl/6 is slack for the server's expiry timer and
// request latency.
func MaxHandover(ttl time.Duration) time.Duration {
	return ttl + ttl/3 + ttl/6
}

// Option configures a Manager.
type Option func(*options)

type options struct {
	ttl         time.Duration
	margin      time.Duration
	now         func() time.Time
	logger      *slog.Logger
	registerer  prometheus.Registerer
	onAcquire   func(bucket int)
	onLose      func(bucket int)
	skipRelease bool
	buckets     int
}

// WithTTL sets the lease period. It must equal the TTL of the KV bucket: Run
// refuses to start otherwise, since a holder that believes its lease lasts
// longer than the server keeps it would break the safety argument.
func WithTTL(ttl time.Duration) Option { return func(o *options) { o.ttl = ttl } }

// WithMargin sets how long before its TTL runs out an unrenewed lease is
// considered lost locally. Default TTL/5.
func WithMargin(m time.Duration) Option { return func(o *options) { o.margin = m } }

// WithNow sets the clock (default time.Now).
func WithNow(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithRegisterer registers the metric vigil_lease_buckets_owned{service} on r.
func WithRegisterer(r prometheus.Registerer) Option {
	return func(o *options) { o.registerer = r }
}

// OnAcquire sets a function called when a lease has been acquired (Owned
// already lists the bucket). It must not block for long: renewals of the
// other leases wait for it. See Manager for the ordering of callbacks.
func OnAcquire(fn func(bucket int)) Option { return func(o *options) { o.onAcquire = fn } }

// OnLose sets a function called when a lease is lost or given up. The bucket
// must no longer be used once it returns; it must not block for long, since
// it delays the delete of a released key (never the local loss itself).
func OnLose(fn func(bucket int)) Option { return func(o *options) { o.onLose = fn } }

// WithBuckets sets how many leases the instances split: events.Buckets by
// default; 1 makes the lease a leader election, for a service that must have
// a single active instance (a projector).
func WithBuckets(n int) Option { return func(o *options) { o.buckets = n } }

// WithoutRelease makes Run return without deleting its keys, leaving them to
// expire as a crashed process would. For tests of failover.
func WithoutRelease() Option { return func(o *options) { o.skipRelease = true } }

// Manager campaigns for, renews and releases one instance's leases. Create it
// with New and start it with Run.
//
// Callbacks (OnAcquire, OnLose) are called one at a time, in the order the
// changes happened, never concurrently with each other: an OnLose for a bucket
// always follows the OnAcquire it ends. They may call Owned. By the time OnLose
// runs, Owned no longer lists the bucket.
type Manager struct {
	kv        jetstream.KeyValue
	service   string
	id        string
	memberKey string
	offset    int
	o         options
	renew     time.Duration
	logger    *slog.Logger
	gauge     prometheus.Gauge

	// cbMu serialises changes of held together with their callbacks; mu
	// guards held alone, so Owned (mu only) can be called from callbacks.
	cbMu sync.Mutex
	mu   sync.Mutex
	held map[int]*holding
}

// holding is one held lease.
type holding struct {
	rev uint64
	// deadline is when the lease is lost locally if not renewed:
	// sent time of the last successful write + TTL − margin.
	deadline time.Time
}

// New returns a Manager for instance instanceID of service. The instance ID
// is stored as the lease value; in the heartbeat key characters that cannot
// appear in a KV key token are replaced by '_'.
func New(kv jetstream.KeyValue, service, instanceID string, opts ...Option) *Manager {
	o := options{ttl: DefaultTTL, now: time.Now, buckets: events.Buckets}
	for _, opt := range opts {
		opt(&o)
	}
	o.buckets = max(o.buckets, 1)
	if o.margin <= 0 || o.margin >= o.ttl/2 {
		o.margin = o.ttl / 5
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	h := fnv.New32a()
	h.Write([]byte(instanceID))
	m := &Manager{
		kv:        kv,
		service:   service,
		id:        instanceID,
		memberKey: service + ".members." + keyToken(instanceID),
		offset:    int(h.Sum32() % uint32(o.buckets)),
		o:         o,
		renew:     o.ttl / 3,
		logger:    o.logger.With("lease_service", service, "lease_holder", instanceID),
		held:      map[int]*holding{},
	}
	if o.registerer != nil {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vigil_lease_buckets_owned",
			Help: "Buckets whose lease this instance holds.",
		}, []string{"service"})
		if err := o.registerer.Register(g); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				if existing, ok := are.ExistingCollector.(*prometheus.GaugeVec); ok {
					g = existing
				}
			} else {
				m.logger.Warn("register lease metric", "err", err)
			}
		}
		m.gauge = g.WithLabelValues(service)
	}
	return m
}

// ID returns the instance ID.
func (m *Manager) ID() string { return m.id }

// TTL returns the lease period.
func (m *Manager) TTL() time.Duration { return m.o.ttl }

// Owned returns the buckets whose lease is held and not past its local
// deadline, in increasing order.
func (m *Manager) Owned() []int {
	now := m.o.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]int, 0, len(m.held))
	for b, h := range m.held {
		if now.Before(h.deadline) {
			out = append(out, b)
		}
	}
	slices.Sort(out)
	return out
}

// Run campaigns for and renews leases until ctx is done. On return every lease
// has been given up locally (OnLose called) and, unless WithoutRelease was
// given, deleted from the KV bucket best-effort together with the heartbeat.
// It returns an error only when it cannot start (the KV bucket is missing, or
// its TTL does not match the lease period); otherwise ctx's error.
func (m *Manager) Run(ctx context.Context) error {
	st, err := m.status(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("lease %s: read kv %s status: %w", m.service, m.kv.Bucket(), err)
	}
	if st.TTL() != m.o.ttl {
		return fmt.Errorf("lease %s: kv %s has TTL %s but the lease period is %s; they must be equal (set lease.ttl and apply the topology)",
			m.service, m.kv.Bucket(), st.TTL(), m.o.ttl)
	}

	watchCtx, stopWatch := context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		m.watchdog(watchCtx)
	}()

	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			stopWatch()
			<-watchDone
			m.shutdown()
			return ctx.Err()
		case <-timer.C:
		}
		start := time.Now()
		m.round(ctx)
		timer.Reset(max(m.renew-time.Since(start), 0))
	}
}

// status reads the bucket's status. A server too busy to answer in time (the
// bench saw it while a million sites were being registered) is retried: only
// a missing bucket, or ctx's end, is final. Giving up on a timeout would stop
// the whole service for good.
func (m *Manager) status(ctx context.Context) (jetstream.KeyValueStatus, error) {
	backoff := 250 * time.Millisecond
	for {
		st, err := m.kv.Status(ctx)
		switch {
		case err == nil:
			return st, nil
		case ctx.Err() != nil, errors.Is(err, jetstream.ErrBucketNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
			return nil, err
		}
		m.logger.Warn("read lease bucket status; retrying", "kv", m.kv.Bucket(), "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// watchdog drops leases whose deadline passed, independently of renewal
// requests that may be blocked.
func (m *Manager) watchdog(ctx context.Context) {
	every := min(m.o.margin/4, 100*time.Millisecond)
	t := time.NewTicker(max(every, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := m.o.now()
		m.mu.Lock()
		var expired []holding
		var buckets []int
		for b, h := range m.held {
			if !now.Before(h.deadline) {
				expired = append(expired, *h)
				buckets = append(buckets, b)
			}
		}
		m.mu.Unlock()
		for i, b := range buckets {
			// The revision check keeps a lease renewed in the meantime.
			m.lose(b, expired[i].rev, "renewal did not succeed in time")
		}
	}
}

// round is one pass: heartbeat, renew, look at the bucket, rebalance.
func (m *Manager) round(ctx context.Context) {
	hctx, cancel := context.WithTimeout(ctx, m.renew)
	_, err := m.kv.Put(hctx, m.memberKey, []byte(m.id))
	cancel()
	if err != nil && ctx.Err() == nil {
		m.logger.Warn("lease heartbeat failed", "key", m.memberKey, "err", err)
	}
	m.renewAll(ctx)
	if ctx.Err() != nil {
		return
	}

	lctx, cancel := context.WithTimeout(ctx, m.renew)
	members, taken, err := m.list(lctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			m.logger.Warn("list leases failed", "err", err)
		}
		return
	}
	members[m.memberKey] = true // count ourselves even before our heartbeat is visible
	share := (m.o.buckets + len(members) - 1) / len(members)

	m.mu.Lock()
	have := make([]int, 0, len(m.held))
	for b := range m.held {
		have = append(have, b)
	}
	m.mu.Unlock()

	if len(have) > share {
		// Release the buckets furthest along our preference order, so each
		// instance tends to keep the ones near its own offset.
		slices.SortFunc(have, func(a, b int) int { return m.rank(a) - m.rank(b) })
		for _, b := range have[share:] {
			m.release(ctx, b, "over fair share")
		}
		return
	}
	for i := 0; i < m.o.buckets && len(have) < share; i++ {
		b := (m.offset + i) % m.o.buckets
		if taken[b] || slices.Contains(have, b) {
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if m.campaign(ctx, b) {
			have = append(have, b)
		}
	}
}

// rank is b's position in this instance's preference order.
func (m *Manager) rank(b int) int {
	return (b - m.offset + m.o.buckets) % m.o.buckets
}

// list returns the live heartbeat keys and the buckets whose lease key exists.
func (m *Manager) list(ctx context.Context) (map[string]bool, map[int]bool, error) {
	kl, err := m.kv.ListKeysFiltered(ctx, m.service+".>")
	if err != nil {
		return nil, nil, fmt.Errorf("list keys %s.>: %w", m.service, err)
	}
	members := map[string]bool{}
	taken := map[int]bool{}
	prefix := m.service + "."
	for k := range kl.Keys() {
		rest := strings.TrimPrefix(k, prefix)
		if strings.HasPrefix(rest, "members.") {
			members[k] = true
			continue
		}
		var b int
		if _, err := fmt.Sscanf(rest, "%d", &b); err == nil && b >= 0 && b < m.o.buckets && events.LeaseKey(m.service, b) == k {
			taken[b] = true
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("list keys %s.>: %w", m.service, err)
	}
	return members, taken, nil
}

// renewAll renews every held lease once. The renewals run concurrently (a
// few at a time), so one slow request cannot hold the others past their
// deadlines.
func (m *Manager) renewAll(ctx context.Context) {
	m.mu.Lock()
	type item struct {
		b   int
		rev uint64
	}
	items := make([]item, 0, len(m.held))
	for b, h := range m.held {
		items = append(items, item{b, h.rev})
	}
	m.mu.Unlock()
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, it := range items {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			m.renewOne(ctx, it.b, it.rev)
		}()
	}
	wg.Wait()
}

// renewOne renews the lease on bucket b held at revision rev.
func (m *Manager) renewOne(ctx context.Context, b int, rev uint64) {
	key := events.LeaseKey(m.service, b)
	sent := m.o.now()
	rctx, cancel := context.WithTimeout(ctx, m.renew)
	next, err := m.kv.Update(rctx, key, []byte(m.id), rev)
	cancel()
	switch {
	case err == nil:
		m.renewed(b, rev, next, sent)
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyNotFound):
		m.lose(b, rev, "renewal compare-and-set failed: "+err.Error())
	case ctx.Err() == nil:
		m.logger.Warn("lease renewal failed; will retry until the deadline", "bucket", b, "key", key, "err", err)
	}
}

// campaign tries to create bucket b's lease; it reports whether it did.
func (m *Manager) campaign(ctx context.Context, b int) bool {
	key := events.LeaseKey(m.service, b)
	sent := m.o.now()
	rctx, cancel := context.WithTimeout(ctx, m.renew)
	rev, err := m.kv.Create(rctx, key, []byte(m.id))
	cancel()
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) && ctx.Err() == nil {
			m.logger.Warn("lease campaign failed", "bucket", b, "key", key, "err", err)
		}
		return false
	}
	m.acquired(b, rev, sent)
	return true
}

// acquired records a new lease and announces it, unless its deadline has
// already passed (a very slow Create), in which case it is left to expire.
func (m *Manager) acquired(b int, rev uint64, sent time.Time) {
	deadline := sent.Add(m.o.ttl - m.o.margin)
	m.cbMu.Lock()
	defer m.cbMu.Unlock()
	if !m.o.now().Before(deadline) {
		return
	}
	m.mu.Lock()
	if _, ok := m.held[b]; ok {
		m.mu.Unlock()
		return
	}
	m.held[b] = &holding{rev: rev, deadline: deadline}
	n := len(m.held)
	m.mu.Unlock()
	m.setGauge(n)
	m.logger.Info("lease acquired", "bucket", b, "revision", rev)
	if m.o.onAcquire != nil {
		m.o.onAcquire(b)
	}
}

// renewed records a successful renewal from revision old to rev. If the lease
// was dropped meanwhile (the watchdog fired while the request was in flight),
// the write still gave us a fresh lease: it is announced as a new one.
func (m *Manager) renewed(b int, old, rev uint64, sent time.Time) {
	m.mu.Lock()
	h, ok := m.held[b]
	if ok && h.rev == old {
		h.rev = rev
		h.deadline = sent.Add(m.o.ttl - m.o.margin)
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	if !ok {
		m.acquired(b, rev, sent)
	}
}

// lose drops bucket b locally and calls OnLose. With rev non-zero it drops
// only the holding of that revision.
func (m *Manager) lose(b int, rev uint64, reason string) (uint64, bool) {
	m.cbMu.Lock()
	defer m.cbMu.Unlock()
	m.mu.Lock()
	h, ok := m.held[b]
	if !ok || (rev != 0 && h.rev != rev) {
		m.mu.Unlock()
		return 0, false
	}
	delete(m.held, b)
	n := len(m.held)
	m.mu.Unlock()
	m.setGauge(n)
	m.logger.Info("lease lost", "bucket", b, "reason", reason)
	if m.o.onLose != nil {
		m.o.onLose(b)
	}
	return h.rev, true
}

// release gives bucket b up: first locally (OnLose returns), then in KV with
// a revision check, so a successor can take it at once.
func (m *Manager) release(ctx context.Context, b int, reason string) {
	rev, ok := m.lose(b, 0, "released: "+reason)
	if !ok {
		return
	}
	key := events.LeaseKey(m.service, b)
	dctx, cancel := context.WithTimeout(ctx, m.renew)
	defer cancel()
	if err := m.kv.Delete(dctx, key, jetstream.LastRevision(rev)); err != nil {
		// Harmless: the key expires within one TTL.
		m.logger.Debug("delete released lease", "bucket", b, "key", key, "err", err)
	}
}

// shutdown gives up every lease on exit.
func (m *Manager) shutdown() {
	m.mu.Lock()
	buckets := make([]int, 0, len(m.held))
	for b := range m.held {
		buckets = append(buckets, b)
	}
	m.mu.Unlock()
	slices.Sort(buckets)
	if m.o.skipRelease {
		for _, b := range buckets {
			m.lose(b, 0, "stopped without release")
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(m.o.ttl/2, time.Second))
	defer cancel()
	for _, b := range buckets {
		m.release(ctx, b, "shutting down")
	}
	if err := m.kv.Delete(ctx, m.memberKey); err != nil {
		m.logger.Debug("delete heartbeat", "key", m.memberKey, "err", err)
	}
}

func (m *Manager) setGauge(n int) {
	if m.gauge != nil {
		m.gauge.Set(float64(n))
	}
}

// keyToken maps s onto the characters a KV key token may hold.
func keyToken(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "_"
	}
	return string(b)
}
