package statemachine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/lease"
	"github.com/vigil-dev/vigil/services/ops"
	"github.com/vigil-dev/vigil/services/scheduler"
)

// LeaseService is the name under which state machine instances split the
// buckets in KVLeases.
const LeaseService = "statemachine"

// ConsumerName is the consumer of one bucket on OBSERVATIONS. It is per
// bucket, not per instance: the bucket's owner creates it afresh from the
// bucket's saved position, replacing whatever a previous owner left.
func ConsumerName(bucket int) string { return "statemachine-" + strconv.Itoa(bucket) }

// Option configures a Service.
type Option func(*options)

type options struct {
	instanceID        string
	regions           []string
	allowSingleRegion bool
	verifyTimeout     time.Duration
	leaseTTL          time.Duration
	leaseOpts         []lease.Option
	logger            *slog.Logger
	registerer        prometheus.Registerer
	now               func() time.Time
	expireEvery       time.Duration
	impaired          func(region string, at time.Time) bool
	regionThresholds  RegionThresholds
	retry             retryPolicy
}

// WithInstanceID names this instance in leases and logs (default: host and pid).
func WithInstanceID(id string) Option { return func(o *options) { o.instanceID = id } }

// WithRegions sets the deployment's regions; the first is the primary.
func WithRegions(regions ...string) Option { return func(o *options) { o.regions = regions } }

// WithSingleRegionAllowance lets a single-region deployment confirm Down
// locally (the brief's single-region allowance).
func WithSingleRegionAllowance(allow bool) Option {
	return func(o *options) { o.allowSingleRegion = allow }
}

// WithVerifyTimeout sets how long verifying regions have to answer.
func WithVerifyTimeout(d time.Duration) Option { return func(o *options) { o.verifyTimeout = d } }

// WithLeaseTTL sets the lease period (it must match the KV bucket's TTL).
func WithLeaseTTL(d time.Duration) Option { return func(o *options) { o.leaseTTL = d } }

// WithLeaseOptions passes options to the lease manager (tests use
// lease.WithoutRelease to simulate a crash).
func WithLeaseOptions(opts ...lease.Option) Option {
	return func(o *options) { o.leaseOpts = append(o.leaseOpts, opts...) }
}

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithRegisterer registers the service's metrics on r.
func WithRegisterer(r prometheus.Registerer) Option { return func(o *options) { o.registerer = r } }

// WithNow sets the clock used for verification deadlines that no observation
// closes. Events never take their time from it.
func WithNow(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithImpaired replaces the region watch's answer to whether a region was
// impaired at a time (tests of the decision path use it).
func WithImpaired(f func(region string, at time.Time) bool) Option {
	return func(o *options) { o.impaired = f }
}

// WithRegionThresholds sets when a region counts as impaired.
func WithRegionThresholds(th RegionThresholds) Option {
	return func(o *options) { o.regionThresholds = th }
}

// Service is the state machine: it consumes OBSERVATIONS bucket by bucket, in
// order per site, and appends the events the core derives to EVENTS.
//
// Instances split the 64 buckets with leases. Correctness does not rest on the
// leases: events are appended with optimistic concurrency on the site's event
// subjects, so a stale owner's write is refused. An observation is
// acknowledged only after all its effects (events, verification commands,
// cadence overrides, the site's state) are durable; every effect is idempotent,
// so redelivery after a crash repeats nothing.
type Service struct {
	js     jetstream.JetStream
	o      options
	env    Env
	m      *metrics
	logger *slog.Logger

	obsStream jetstream.Stream
	evStream  jetstream.Stream
	cadenceKV jetstream.KeyValue
	store     *stateStore
	sites     *siteCache
	regions   *regionWatch

	mu      sync.Mutex
	workers map[int]*worker
	ctx     context.Context
}

// New returns a state machine service.
func New(js jetstream.JetStream, opts ...Option) (*Service, error) {
	o := options{
		verifyTimeout:    90 * time.Second,
		leaseTTL:         lease.DefaultTTL,
		logger:           slog.Default(),
		now:              time.Now,
		expireEvery:      time.Second,
		regionThresholds: DefaultRegionThresholds(),
		retry:            defaultRetryPolicy(),
	}
	for _, opt := range opts {
		opt(&o)
	}
	if err := events.ValidateRegions(o.regions); err != nil {
		return nil, fmt.Errorf("statemachine: %w", err)
	}
	if o.instanceID == "" {
		o.instanceID = ops.InstanceID("statemachine")
	}
	m, err := newMetrics(o.registerer)
	if err != nil {
		return nil, err
	}
	s := &Service{
		js: js, o: o, m: m,
		logger:  o.logger.With("service", "statemachine", "instance", o.instanceID),
		workers: map[int]*worker{},
		env: Env{
			Regions:           o.regions,
			AllowSingleRegion: o.allowSingleRegion,
			VerifyTimeout:     o.verifyTimeout,
			Impaired:          o.impaired,
		},
	}
	return s, nil
}

// Run works until ctx is done: it campaigns for buckets, and for each bucket
// it owns consumes observations and appends events. On return every worker
// has stopped; nothing unacknowledged was made durable only in part.
func (s *Service) Run(ctx context.Context) error {
	var err error
	if s.obsStream, err = s.js.Stream(ctx, events.StreamObservations); err != nil {
		return fmt.Errorf("statemachine: look up %s: %w", events.StreamObservations, err)
	}
	if s.evStream, err = s.js.Stream(ctx, events.StreamEvents); err != nil {
		return fmt.Errorf("statemachine: look up %s: %w", events.StreamEvents, err)
	}
	sitesStream, err := s.js.Stream(ctx, events.StreamSites)
	if err != nil {
		return fmt.Errorf("statemachine: look up %s: %w", events.StreamSites, err)
	}
	if s.cadenceKV, err = s.js.KeyValue(ctx, events.KVCadence); err != nil {
		return fmt.Errorf("statemachine: open kv %s: %w", events.KVCadence, err)
	}
	stateKV, err := s.js.KeyValue(ctx, events.KVStateMachine)
	if err != nil {
		return fmt.Errorf("statemachine: open kv %s: %w", events.KVStateMachine, err)
	}
	s.store = &stateStore{kv: stateKV}
	leases, err := s.js.KeyValue(ctx, events.KVLeases)
	if err != nil {
		return fmt.Errorf("statemachine: open kv %s: %w", events.KVLeases, err)
	}
	s.env.InMaintenance = s.inMaintenance
	s.regions = newRegionWatch(s.js, s.evStream, s.o.regionThresholds, s.logger, s.o.now)
	if s.env.Impaired == nil {
		s.env.Impaired = s.regions.Impaired
	}
	regionsDone := make(chan error, 1)
	go func() { regionsDone <- s.regions.run(ctx) }()

	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()

	s.sites = newSiteCache(sitesStream, s.logger, s.siteChanged)
	follow, err := s.sites.follow(ctx, s.js)
	if err != nil {
		return fmt.Errorf("statemachine: %w", err)
	}
	defer follow.Stop()

	mgr := lease.New(leases, LeaseService, s.o.instanceID, append([]lease.Option{
		lease.WithTTL(s.o.leaseTTL),
		lease.WithLogger(s.logger),
		lease.WithRegisterer(s.o.registerer),
		lease.OnAcquire(s.acquired),
		lease.OnLose(s.lost),
	}, s.o.leaseOpts...)...)

	var loops sync.WaitGroup
	loops.Go(func() { s.expireLoop(ctx) })
	loops.Go(func() { s.ackLoop(ctx) })
	err = mgr.Run(ctx)
	loops.Wait()
	s.stopAll()
	if rerr := <-regionsDone; rerr != nil && err == nil {
		err = rerr
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("statemachine: leases: %w", err)
	}
	return nil
}

// Owned lists the buckets this instance works on.
func (s *Service) Owned() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int, 0, len(s.workers))
	for b := range s.workers {
		out = append(out, b)
	}
	return out
}

func (s *Service) acquired(b int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx == nil || s.ctx.Err() != nil {
		return
	}
	if _, ok := s.workers[b]; ok {
		return
	}
	w := newWorker(s, b)
	s.workers[b] = w
	s.m.buckets.Set(float64(len(s.workers)))
	s.regions.feedFromWorkers(len(s.workers) == events.Buckets)
	go w.run(s.ctx)
}

func (s *Service) lost(b int) {
	s.mu.Lock()
	w := s.workers[b]
	delete(s.workers, b)
	s.m.buckets.Set(float64(len(s.workers)))
	s.regions.feedFromWorkers(len(s.workers) == events.Buckets)
	s.mu.Unlock()
	if w != nil {
		w.stop()
	}
}

func (s *Service) stopAll() {
	s.mu.Lock()
	ws := s.workers
	s.workers = map[int]*worker{}
	s.m.buckets.Set(0)
	s.mu.Unlock()
	for _, w := range ws {
		w.stop()
	}
}

func (s *Service) worker(b int) *worker {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.workers[b]
}

// siteChanged closes the incident of a site that was paused or deleted.
func (s *Service) siteChanged(sc siteConfig, ch events.SiteChange) {
	var reason events.Reason
	switch {
	case ch.Change == events.ChangeDeleted:
		reason = events.ReasonDeleted
	case ch.Change == events.ChangePaused:
		reason = events.ReasonPaused
	default:
		return
	}
	if w := s.worker(events.Bucket(ch.Site.ID)); w != nil {
		w.close(ch.Site, reason, ch.At)
	}
}

func (s *Service) inMaintenance(site events.Site, at time.Time) bool {
	sc, ok, err := s.sites.get(context.Background(), site.ID)
	if err != nil || !ok {
		return false
	}
	return sc.maintenance.Active(at)
}

// expireLoop closes verifications whose deadline passed without an
// observation to notice it (every verifying region silent, say), and saves
// the buckets' positions.
func (s *Service) expireLoop(ctx context.Context) {
	s.everyWorker(ctx, s.o.expireEvery, func(w *worker) {
		w.expire(ctx, s.o.now())
		if err := w.checkpoint(ctx); err != nil && ctx.Err() == nil {
			w.logger.Warn("save position; will retry", "err", err)
		}
	})
}

// ackEvery is how often the buckets acknowledge what they applied, when
// fewer than ackBatch observations wait for it.
const ackEvery = 200 * time.Millisecond

// ackLoop acknowledges what the buckets applied (see worker).
func (s *Service) ackLoop(ctx context.Context) {
	s.everyWorker(ctx, ackEvery, (*worker).flushAck)
}

// everyWorker calls f for each worker every period until ctx is done.
func (s *Service) everyWorker(ctx context.Context, period time.Duration, f func(*worker)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		ws := make([]*worker, 0, len(s.workers))
		for _, w := range s.workers {
			ws = append(ws, w)
		}
		s.mu.Unlock()
		for _, w := range ws {
			f(w)
		}
	}
}

// setCadence and clearCadence are the state machine's side of the fast-retry
// interface (see scheduler.SetCadence).
func (s *Service) setCadence(ctx context.Context, c events.Cadence) error {
	return scheduler.SetCadence(ctx, s.cadenceKV, c)
}

func (s *Service) clearCadence(ctx context.Context, siteID string) error {
	return scheduler.ClearCadence(ctx, s.cadenceKV, siteID)
}
