// Package readmodels runs Vigil's projections as a service: the projection
// runner over EVENTS and the freshness applier over OBSERVATIONS, writing the
// read models in MySQL or SQLite (module projections).
//
// One instance is active at a time: instances elect a leader with a single
// lease in VIGIL_LEASES, and only the leader runs. A standby takes over within
// two lease periods of the leader's death. Correctness does not rest on the
// lease: checkpoints advance by compare-and-set in the same transaction as the
// rows, so a stale leader's batch rolls back.
package readmodels

import (
	"context"
	"errors"
	"fmt"
	"github.com/vigil-dev/vigil/services/ops"
	"github.com/vigil-dev/vigil/services/sites"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/projections/catalog"
	"github.com/vigil-dev/vigil/projections/freshness"
	"github.com/vigil-dev/vigil/projections/outbox"
	"github.com/vigil-dev/vigil/projections/projector"
	"github.com/vigil-dev/vigil/projections/store"
	"github.com/vigil-dev/vigil/projections/uptime"
	"github.com/vigil-dev/vigil/services/lease"
)

// LeaseService names the leader lease in VIGIL_LEASES.
const LeaseService = "projector"

// Options configure a Service.
type Options struct {
	// PrimaryRegion is the region whose impairment makes every site's time
	// unknown in the uptime rollups.
	PrimaryRegion string
	// FreshnessInterval is how often last-check columns are flushed: at most
	// one write per site per interval (default 60s).
	FreshnessInterval time.Duration
	// RollupInterval is how often the uptime rollups and the freshness
	// checkpoint are flushed (default 5m, never more often than
	// FreshnessInterval).
	RollupInterval time.Duration
	LeaseTTL       time.Duration
	InstanceID     string
	Logger         *slog.Logger
	Registerer     prometheus.Registerer
	// LeaseOptions are passed to the lease manager (tests simulate crashes).
	LeaseOptions []lease.Option
}

// Service runs the projections while it holds the leader lease.
type Service struct {
	js     jetstream.JetStream
	db     *store.DB
	o      Options
	logger *slog.Logger
	lag    prometheus.Gauge

	mu      sync.Mutex
	stop    context.CancelFunc
	done    chan struct{}
	runner  *projector.Runner
	baseCtx context.Context
}

// Projections returns the projections the service runs, for commands that
// rebuild them or report their status. Subscriptions with a label filter
// match on the site's current labels, read from SITES through js.
func Projections(js jetstream.JetStream, primaryRegion string) []projector.Projection {
	reg := sites.NewRegistry(js)
	return catalog.All(catalog.Config{
		Uptime: uptime.Config{PrimaryRegion: primaryRegion},
		Outbox: outbox.Config{Labels: func(ctx context.Context, siteID string) (map[string]string, error) {
			cur, err := reg.Get(ctx, siteID)
			if errors.Is(err, sites.ErrNotFound) {
				return cur.Site.Labels, nil // a deleted site keeps its last labels
			}
			return cur.Site.Labels, err
		}},
	})
}

// New returns the service over db, whose migrations must have been applied.
func New(js jetstream.JetStream, db *store.DB, o Options) (*Service, error) {
	if o.PrimaryRegion == "" {
		return nil, errors.New("readmodels: the primary region is required")
	}
	if o.FreshnessInterval <= 0 {
		o.FreshnessInterval = time.Minute
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = lease.DefaultTTL
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.InstanceID == "" {
		o.InstanceID = ops.InstanceID("projector")
	}
	s := &Service{js: js, db: db, o: o, logger: o.Logger.With("service", "projector")}
	s.lag = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "vigil_projector_lag_events",
		Help: "Events on EVENTS not yet applied to the read models (on the leader).",
	})
	if o.Registerer != nil {
		if err := o.Registerer.Register(s.lag); err != nil {
			return nil, fmt.Errorf("readmodels: register metrics: %w", err)
		}
	}
	return s, nil
}

// Run campaigns for the leader lease and runs the projections while it holds
// it, until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	kv, err := s.js.KeyValue(ctx, events.KVLeases)
	if err != nil {
		return fmt.Errorf("readmodels: open kv %s: %w", events.KVLeases, err)
	}
	s.mu.Lock()
	s.baseCtx = ctx
	s.mu.Unlock()
	mgr := lease.New(kv, LeaseService, s.o.InstanceID, append([]lease.Option{
		lease.WithBuckets(1),
		lease.WithTTL(s.o.LeaseTTL),
		lease.WithLogger(s.logger),
		lease.OnAcquire(func(int) { s.lead() }),
		lease.OnLose(func(int) { s.follow() }),
	}, s.o.LeaseOptions...)...)
	go s.reportLag(ctx)
	err = mgr.Run(ctx)
	s.follow()
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("readmodels: lease: %w", err)
	}
	return nil
}

// lead starts the runner and the freshness applier.
func (s *Service) lead() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop != nil || s.baseCtx == nil || s.baseCtx.Err() != nil {
		return
	}
	r, err := projector.New(s.db, s.js, Projections(s.js, s.o.PrimaryRegion), projector.Options{Logger: s.logger})
	if err != nil {
		s.logger.Error("create projection runner", "err", err)
		return
	}
	ctx, cancel := context.WithCancel(s.baseCtx)
	done := make(chan struct{})
	s.stop, s.done, s.runner = cancel, done, r
	fresh := freshness.New(s.db, freshness.Config{Interval: s.o.FreshnessInterval, RollupInterval: s.o.RollupInterval, Logger: s.logger})
	s.logger.Info("leading: projecting EVENTS and OBSERVATIONS")
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := r.Run(ctx); err != nil && ctx.Err() == nil {
				s.logger.Error("projection runner stopped", "err", err)
			}
		}()
		go func() {
			defer wg.Done()
			if err := freshness.Follow(ctx, s.js, fresh, freshness.FollowOptions{}); err != nil && ctx.Err() == nil {
				s.logger.Error("freshness applier stopped", "err", err)
			}
		}()
		wg.Wait()
	}()
}

// follow stops leading, waiting for the runner to finish its batch.
func (s *Service) follow() {
	s.mu.Lock()
	stop, done := s.stop, s.done
	s.stop, s.done, s.runner = nil, nil, nil
	s.mu.Unlock()
	if stop != nil {
		stop()
		<-done
		s.logger.Info("no longer leading")
	}
}

// Pause pauses the local runner (for an in-process rebuild); nil when this
// instance is not leading.
func (s *Service) Pause(ctx context.Context) (func(), error) {
	s.mu.Lock()
	r := s.runner
	s.mu.Unlock()
	if r == nil {
		return func() {}, nil
	}
	return r.Pause(ctx)
}

func (s *Service) reportLag(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		r := s.runner
		s.mu.Unlock()
		if r == nil {
			continue
		}
		if lag, err := r.Lag(ctx); err == nil {
			s.lag.Set(float64(lag))
		}
	}
}
