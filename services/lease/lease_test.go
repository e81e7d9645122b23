package lease_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/internal/natstest"
	"github.com/vigil-dev/vigil/services/lease"
)

var quiet = slog.New(slog.DiscardHandler)

// ttl is the lease period of natstest's VIGIL_LEASES bucket.
var ttl = natstest.Options().LeaseTTL

func leasesKV(t *testing.T, js jetstream.JetStream) jetstream.KeyValue {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), events.KVLeases)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// running is a Manager running in the background.
type running struct {
	m      *lease.Manager
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, kv jetstream.KeyValue, id string, opts ...lease.Option) *running {
	t.Helper()
	opts = append([]lease.Option{lease.WithTTL(ttl), lease.WithLogger(quiet)}, opts...)
	m := lease.New(kv, "svc", id, opts...)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{m: m, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- m.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	r.cancel()
	<-r.done
	r.done <- nil // make stop idempotent
}

// waitFor polls cond every 50ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not reached within %s", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

func TestOneManagerTakesAll(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, true)
	kv := leasesKV(t, srv.JS)
	reg := prometheus.NewRegistry()
	var mu sync.Mutex
	acquired := map[int]int{}
	r := start(t, kv, "solo", lease.WithRegisterer(reg), lease.OnAcquire(func(b int) {
		mu.Lock()
		acquired[b]++
		mu.Unlock()
	}))
	d := waitFor(t, 5*time.Second, "own 64", func() bool { return len(r.m.Owned()) == events.Buckets })
	t.Logf("one manager owns all %d buckets after %s", events.Buckets, d.Round(time.Millisecond))
	mu.Lock()
	if len(acquired) != events.Buckets {
		t.Errorf("OnAcquire called for %d buckets, want %d", len(acquired), events.Buckets)
	}
	mu.Unlock()
	if got := testutil.ToFloat64(prometheusGauge(t, reg)); got != events.Buckets {
		t.Errorf("vigil_lease_buckets_owned = %v, want %d", got, events.Buckets)
	}
	e, err := kv.Get(context.Background(), events.LeaseKey("svc", 5))
	if err != nil || string(e.Value()) != "solo" {
		t.Fatalf("lease key of bucket 5: %v %v", e, err)
	}
	// Held across several lease periods: renewals work.
	time.Sleep(2 * ttl)
	if n := len(r.m.Owned()); n != events.Buckets {
		t.Fatalf("after %s owns %d buckets", 2*ttl, n)
	}
	// A clean stop releases every key at once.
	r.stop()
	if n := len(r.m.Owned()); n != 0 {
		t.Fatalf("after Run returned, Owned lists %d buckets", n)
	}
	for b := range events.Buckets {
		if _, err := kv.Get(context.Background(), events.LeaseKey("svc", b)); err == nil {
			t.Fatalf("bucket %d lease still in KV after release", b)
		}
	}
}

func prometheusGauge(t *testing.T, reg *prometheus.Registry) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "vigil_lease_buckets_owned" {
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
			g.Set(mf.GetMetric()[0].GetGauge().GetValue())
			return g
		}
	}
	t.Fatal("vigil_lease_buckets_owned not registered")
	return nil
}

func TestTTLMismatchRefused(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, true)
	m := lease.New(leasesKV(t, srv.JS), "svc", "x", lease.WithTTL(ttl+time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Run(ctx); err == nil || ctx.Err() != nil {
		t.Fatalf("Run with a TTL unlike the bucket's: %v, want an error at once", err)
	}
}

// sampler records, every 50ms, which managers consider which bucket owned,
// and measures the longest stretch during which two managers both did.
type sampler struct {
	mu         sync.Mutex
	since      map[int]time.Time // bucket -> start of the current overlap
	maxOverlap time.Duration
	worst      int
}

func (s *sampler) run(ctx context.Context, ms ...*lease.Manager) {
	s.since = map[int]time.Time{}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		count := map[int]int{}
		for _, m := range ms {
			for _, b := range m.Owned() {
				count[b]++
			}
		}
		s.mu.Lock()
		for b := range events.Buckets {
			if count[b] > 1 {
				if _, ok := s.since[b]; !ok {
					s.since[b] = now
				}
				if d := now.Sub(s.since[b]); d > s.maxOverlap {
					s.maxOverlap, s.worst = d, b
				}
			} else {
				delete(s.since, b)
			}
		}
		s.mu.Unlock()
	}
}

func (s *sampler) result() (time.Duration, int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxOverlap, s.worst, len(s.since)
}

func TestTwoManagersSplitAndFailover(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, true)
	_, js2 := srv.Connect(t, "second")
	a := start(t, leasesKV(t, srv.JS), "alpha")
	waitFor(t, 5*time.Second, "alpha owns 64", func() bool { return len(a.m.Owned()) == events.Buckets })

	// A second instance arrives: alpha releases half, beta takes it.
	b := start(t, leasesKV(t, js2), "beta", lease.WithoutRelease())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var s sampler
	sampled := make(chan struct{})
	go func() { s.run(ctx, a.m, b.m); close(sampled) }()
	d := waitFor(t, 10*ttl, "32/32 split", func() bool {
		return len(a.m.Owned()) == 32 && len(b.m.Owned()) == 32
	})
	t.Logf("split 32/32 %s after the second instance started", d.Round(time.Millisecond))
	if union := append(a.m.Owned(), b.m.Owned()...); len(union) != events.Buckets {
		t.Fatalf("union of owned buckets has %d entries", len(union))
	}
	// Stable: nothing moves over a few lease periods.
	before := b.m.Owned()
	time.Sleep(2 * ttl)
	if got := b.m.Owned(); !slices.Equal(got, before) {
		t.Fatalf("ownership moved while stable: %v -> %v", before, got)
	}

	// Crash beta: its Run returns without deleting its keys.
	b.stop()
	d = waitFor(t, 4*ttl, "alpha owns 64 after beta's crash", func() bool { return len(a.m.Owned()) == events.Buckets })
	t.Logf("alpha owns all %d buckets %s after beta crashed (bound: two lease periods = %s)", events.Buckets, d.Round(time.Millisecond), 2*ttl)
	if d > 2*ttl+500*time.Millisecond {
		t.Errorf("failover took %s, want within two lease periods (%s) plus sampling slack", d, 2*ttl)
	}
	cancel()
	<-sampled
	checkOverlap(t, &s)

	// Beta rejoins (the same ID reused): the buckets split again.
	b2 := start(t, leasesKV(t, js2), "beta")
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	var s2 sampler
	sampled = make(chan struct{})
	go func() { s2.run(ctx, a.m, b2.m); close(sampled) }()
	waitFor(t, 10*ttl, "32/32 split again", func() bool {
		return len(a.m.Owned()) == 32 && len(b2.m.Owned()) == 32
	})
	time.Sleep(ttl)
	cancel()
	<-sampled
	checkOverlap(t, &s2)
}

func checkOverlap(t *testing.T, s *sampler) {
	t.Helper()
	overlap, worst, open := s.result()
	t.Logf("longest double ownership seen: %s (bucket %d)", overlap, worst)
	if overlap >= ttl || open > 0 {
		t.Errorf("bucket %d was owned by two managers for %s (open overlaps %d), want under one lease period %s", worst, overlap, open, ttl)
	}
}

func TestThreeManagersConverge(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, true)
	var ms []*lease.Manager
	for i := range 3 {
		_, js := srv.Connect(t, fmt.Sprint("m", i))
		ms = append(ms, start(t, leasesKV(t, js), fmt.Sprint("m", i)).m)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var s sampler
	sampled := make(chan struct{})
	go func() { s.run(ctx, ms...); close(sampled) }()
	d := waitFor(t, 10*ttl, "three managers share the 64 buckets", func() bool {
		total := 0
		for _, m := range ms {
			n := len(m.Owned())
			if n > 22 || n < 20 {
				return false
			}
			total += n
		}
		return total == events.Buckets
	})
	t.Logf("three managers started together converged in %s: %d/%d/%d", d.Round(time.Millisecond),
		len(ms[0].Owned()), len(ms[1].Owned()), len(ms[2].Owned()))
	time.Sleep(ttl)
	cancel()
	<-sampled
	checkOverlap(t, &s)
}

// partitionKV is a KeyValue whose requests can be made to hang until their
// context ends, as if the instance were cut off from NATS.
type partitionKV struct {
	jetstream.KeyValue
	mu  sync.Mutex
	cut bool
}

func (p *partitionKV) setCut(v bool) { p.mu.Lock(); p.cut = v; p.mu.Unlock() }

func (p *partitionKV) hang(ctx context.Context) error {
	p.mu.Lock()
	cut := p.cut
	p.mu.Unlock()
	if !cut {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

func (p *partitionKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if err := p.hang(ctx); err != nil {
		return 0, err
	}
	return p.KeyValue.Update(ctx, key, value, rev)
}

func (p *partitionKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	if err := p.hang(ctx); err != nil {
		return 0, err
	}
	return p.KeyValue.Put(ctx, key, value)
}

func (p *partitionKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	if err := p.hang(ctx); err != nil {
		return 0, err
	}
	return p.KeyValue.Create(ctx, key, value, opts...)
}

func (p *partitionKV) ListKeysFiltered(ctx context.Context, filters ...string) (jetstream.KeyLister, error) {
	if err := p.hang(ctx); err != nil {
		return nil, err
	}
	return p.KeyValue.ListKeysFiltered(ctx, filters...)
}

// TestPartitionedHolderStepsDownFirst cuts a live holder off: its renewals
// hang, so it must give its buckets up locally before their keys expire and
// the other instance takes them. Unlike a crash, the cut-off holder is still
// running and would keep using its buckets if it did not step down.
func TestPartitionedHolderStepsDownFirst(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, true)
	_, js2 := srv.Connect(t, "second")
	pkv := &partitionKV{KeyValue: leasesKV(t, js2)}
	var mu sync.Mutex
	var lostAt []time.Time
	a := start(t, leasesKV(t, srv.JS), "alpha")
	b := start(t, pkv, "beta", lease.OnLose(func(int) {
		mu.Lock()
		lostAt = append(lostAt, time.Now())
		mu.Unlock()
	}))
	waitFor(t, 10*ttl, "32/32 split", func() bool {
		return len(a.m.Owned()) == 32 && len(b.m.Owned()) == 32
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var s sampler
	sampled := make(chan struct{})
	go func() { s.run(ctx, a.m, b.m); close(sampled) }()

	cut := time.Now()
	pkv.setCut(true)
	d := waitFor(t, 4*ttl, "alpha owns 64 after beta was cut off", func() bool { return len(a.m.Owned()) == events.Buckets })
	if n := len(b.m.Owned()); n != 0 {
		t.Fatalf("cut-off beta still owns %d buckets", n)
	}
	mu.Lock()
	lastLoss := slices.MaxFunc(lostAt, func(x, y time.Time) int { return x.Compare(y) }).Sub(cut)
	mu.Unlock()
	t.Logf("beta stepped down %s after the cut (TTL %s); alpha owned all %s after it", lastLoss.Round(time.Millisecond), ttl, d.Round(time.Millisecond))
	if lastLoss >= ttl {
		t.Errorf("beta gave its last lease up %s after the cut, want before one TTL (%s)", lastLoss, ttl)
	}
	cancel()
	<-sampled
	checkOverlap(t, &s)
	overlap, _, _ := s.result()
	if overlap > 0 {
		t.Errorf("a partitioned holder and its successor both owned a bucket for %s, want never", overlap)
	}
	pkv.setCut(false)
}

// TestOverwrittenLeaseIsLost: a failed compare-and-set drops the lease at once.
func TestOverwrittenLeaseIsLost(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, true)
	kv := leasesKV(t, srv.JS)
	lost := make(chan int, events.Buckets)
	a := start(t, kv, "alpha", lease.OnLose(func(b int) { lost <- b }))
	waitFor(t, 5*time.Second, "own 64", func() bool { return len(a.m.Owned()) == events.Buckets })
	if _, err := kv.Put(context.Background(), events.LeaseKey("svc", 9), []byte("intruder")); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-lost:
		if b != 9 {
			t.Fatalf("lost bucket %d, want 9", b)
		}
	case <-time.After(ttl):
		t.Fatal("overwritten lease not lost within one renewal")
	}
	if slices.Contains(a.m.Owned(), 9) {
		t.Fatal("Owned still lists the overwritten bucket")
	}
}

// With one bucket the lease is a leader election: one instance holds it, and
// another takes over when the holder dies without releasing it.
func TestSingleLeaseIsLeaderElection(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, true)
	kv := leasesKV(t, srv.JS)
	a := start(t, kv, "alpha", lease.WithBuckets(1), lease.WithoutRelease())
	waitFor(t, 5*time.Second, "alpha leads", func() bool { return len(a.m.Owned()) == 1 })
	b := start(t, kv, "beta", lease.WithBuckets(1))
	time.Sleep(2 * ttl)
	if len(b.m.Owned()) != 0 || len(a.m.Owned()) != 1 {
		t.Fatalf("alpha owns %v, beta owns %v: two leaders", a.m.Owned(), b.m.Owned())
	}
	a.stop() // dies without releasing
	waitFor(t, lease.MaxHandover(ttl)+2*time.Second, "beta takes over", func() bool { return len(b.m.Owned()) == 1 })
	if got := b.m.Owned(); got[0] != 0 {
		t.Errorf("beta owns %v", got)
	}
}

// slowStatus is a lease bucket whose Status times out a few times first, as
// on a server too busy to answer.
type slowStatus struct {
	jetstream.KeyValue
	failures atomic.Int32
}

func (s *slowStatus) Status(ctx context.Context) (jetstream.KeyValueStatus, error) {
	if s.failures.Add(-1) >= 0 {
		return nil, context.DeadlineExceeded
	}
	return s.KeyValue.Status(ctx)
}

// A timeout reading the bucket's status at start is retried, not fatal: the
// manager goes on to take the buckets.
func TestStatusTimeoutIsRetried(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, true)
	kv := &slowStatus{KeyValue: leasesKV(t, srv.JS)}
	kv.failures.Store(2)
	r := start(t, kv, "patient")
	waitFor(t, 10*time.Second, "buckets owned after two status timeouts", func() bool { return len(r.m.Owned()) == events.Buckets })
	select {
	case err := <-r.done:
		t.Fatalf("Run returned %v", err)
	default:
	}
}
