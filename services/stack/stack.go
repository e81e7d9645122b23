// Package stack builds Vigil's services from one configuration: each
// `vigil <service>` command builds one of them, and `vigil dev` builds them
// all in one process (Dev). The capacity benchmark (tools/bench) builds the
// same stack, so what it measures is what `vigil dev` runs.
package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vigil-dev/vigil/projections/store"
	"github.com/vigil-dev/vigil/services/checker"
	"github.com/vigil-dev/vigil/services/checker/httpcheck"
	"github.com/vigil-dev/vigil/services/config"
	"github.com/vigil-dev/vigil/services/readmodels"
	"github.com/vigil-dev/vigil/services/scheduler"
	"github.com/vigil-dev/vigil/services/statemachine"
)

// Runner is a service: it works until ctx is done, then drains.
type Runner interface {
	Run(ctx context.Context) error
}

// Option adjusts how services are built.
type Option func(*options)

type options struct {
	engine func(*httpcheck.Options)
}

// WithEngineOptions lets the caller adjust the HTTP engine's options after
// they are taken from the configuration (the benchmark points the resolver
// and the trusted roots at its simulated fleet).
func WithEngineOptions(f func(*httpcheck.Options)) Option {
	return func(o *options) { o.engine = f }
}

func buildOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// Scheduler builds the scheduler.
func Scheduler(cfg *config.Config, js jetstream.JetStream, reg prometheus.Registerer, logger *slog.Logger) (*scheduler.Scheduler, error) {
	return scheduler.New(js,
		scheduler.WithRegions(cfg.Regions...),
		scheduler.WithTick(cfg.Scheduler.Tick),
		scheduler.WithBatchSize(cfg.Scheduler.BatchSize),
		scheduler.WithLeaseTTL(cfg.Lease.TTL),
		scheduler.WithLogger(logger.With("service", "scheduler")),
		scheduler.WithRegisterer(reg),
	)
}

// Checker builds the checker of region: the HTTP engine with the target
// policy, user agent and body bound, and the pool bounds.
func Checker(cfg *config.Config, region string, js jetstream.JetStream, reg prometheus.Registerer, logger *slog.Logger, opts ...Option) (*checker.Checker, error) {
	o := buildOptions(opts)
	policy, err := TargetPolicy(cfg.Checker.TargetPolicy)
	if err != nil {
		return nil, err
	}
	eo := httpcheck.Options{
		UserAgent:    cfg.Checker.UserAgent,
		TargetPolicy: policy,
		MaxBodyBytes: cfg.Checker.MaxBodyBytes,
	}
	if o.engine != nil {
		o.engine(&eo)
	}
	engine, err := httpcheck.New(eo)
	if err != nil {
		return nil, fmt.Errorf("http check engine: %w", err)
	}
	return checker.New(js, engine,
		checker.WithRegion(region),
		checker.WithMinWorkers(cfg.Checker.MinWorkers),
		checker.WithMaxWorkers(cfg.Checker.MaxWorkers),
		checker.WithLogger(logger.With("service", "checker", "region", region)),
		checker.WithRegisterer(reg),
	)
}

// TargetPolicy maps checker.target_policy to the engine's policy.
func TargetPolicy(name string) (httpcheck.TargetPolicy, error) {
	switch name {
	case "public_only":
		return httpcheck.PublicOnly, nil
	case "allow_private":
		return httpcheck.AllowPrivate, nil
	}
	return 0, fmt.Errorf("unknown checker.target_policy %q: use public_only or allow_private", name)
}

// StateMachine builds the state machine.
func StateMachine(cfg *config.Config, js jetstream.JetStream, reg prometheus.Registerer, logger *slog.Logger) (*statemachine.Service, error) {
	return statemachine.New(js,
		statemachine.WithRegions(cfg.Regions...),
		statemachine.WithSingleRegionAllowance(cfg.StateMachine.SingleRegion),
		statemachine.WithVerifyTimeout(cfg.StateMachine.VerifyTimeout),
		statemachine.WithLeaseTTL(cfg.Lease.TTL),
		statemachine.WithRegionThresholds(RegionThresholds(cfg)),
		statemachine.WithLogger(logger),
		statemachine.WithRegisterer(reg),
	)
}

// RegionThresholds takes the region-impairment thresholds from cfg.
func RegionThresholds(cfg *config.Config) statemachine.RegionThresholds {
	th := statemachine.DefaultRegionThresholds()
	th.Window = cfg.StateMachine.ImpairedWindow
	th.MinSites = cfg.StateMachine.ImpairedMinSites
	th.FailureRatio = cfg.StateMachine.ImpairedRatio
	th.RecoverRatio = cfg.StateMachine.ImpairedRatio / 2
	return th
}

// ReadModels builds the projector of the read models in db.
func ReadModels(cfg *config.Config, db *store.DB, js jetstream.JetStream, reg prometheus.Registerer, logger *slog.Logger) (*readmodels.Service, error) {
	return readmodels.New(js, db, readmodels.Options{
		PrimaryRegion:     cfg.Regions[0],
		FreshnessInterval: cfg.Store.FreshnessInterval,
		RollupInterval:    cfg.Store.RollupInterval,
		LeaseTTL:          cfg.Lease.TTL,
		Logger:            logger,
		Registerer:        reg,
	})
}

// Service is one service of a Stack.
type Service struct {
	Name string
	Runner
}

// Stack is every service of a deployment in one process, each with its own
// NATS connection as when they run apart: one service's publishes, acks and
// deliveries do not queue behind another's on a shared connection.
type Stack struct {
	Services []Service
	conns    []*nats.Conn
}

// Connect opens a NATS connection named for one service.
type Connect func(name string) (*nats.Conn, error)

// Dev builds the scheduler, a checker per region (the first region is the
// primary; the others are vantage points for verification), the state
// machine and the read models in db. On error the connections opened so far
// are closed.
func Dev(cfg *config.Config, connect Connect, db *store.DB, reg prometheus.Registerer, logger *slog.Logger, opts ...Option) (*Stack, error) {
	s := &Stack{}
	err := s.build(cfg, connect, db, reg, logger, opts)
	if err != nil {
		for _, nc := range s.conns {
			nc.Close()
		}
		return nil, err
	}
	return s, nil
}

func (s *Stack) build(cfg *config.Config, connect Connect, db *store.DB, reg prometheus.Registerer, logger *slog.Logger, opts []Option) error {
	js := func(name string) (jetstream.JetStream, error) {
		nc, err := connect("vigil-" + name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		s.conns = append(s.conns, nc)
		j, err := jetstream.New(nc)
		if err != nil {
			return nil, fmt.Errorf("%s: jetstream: %w", name, err)
		}
		return j, nil
	}
	add := func(name string, build func(jetstream.JetStream) (Runner, error)) error {
		j, err := js(name)
		if err != nil {
			return err
		}
		r, err := build(j)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		s.Services = append(s.Services, Service{Name: name, Runner: r})
		return nil
	}
	if err := add("scheduler", func(j jetstream.JetStream) (Runner, error) { return Scheduler(cfg, j, reg, logger) }); err != nil {
		return err
	}
	for _, region := range cfg.Regions {
		if err := add("checker-"+region, func(j jetstream.JetStream) (Runner, error) {
			return Checker(cfg, region, j, reg, logger, opts...)
		}); err != nil {
			return err
		}
	}
	if err := add("statemachine", func(j jetstream.JetStream) (Runner, error) { return StateMachine(cfg, j, reg, logger) }); err != nil {
		return err
	}
	return add("projector", func(j jetstream.JetStream) (Runner, error) { return ReadModels(cfg, db, j, reg, logger) })
}

// Connected reports an error unless every service's connection is up.
func (s *Stack) Connected() error {
	for _, nc := range s.conns {
		if !nc.IsConnected() {
			return fmt.Errorf("connection %s: %s", nc.Opts.Name, nc.Status())
		}
	}
	return nil
}

// Drain flushes every connection's last publishes and acks, then closes
// them; call it after every service has returned.
func (s *Stack) Drain(limit time.Duration) error {
	var errs []error
	for _, nc := range s.conns {
		if err := nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			errs = append(errs, fmt.Errorf("drain %s: %w", nc.Opts.Name, err))
		}
	}
	deadline := time.Now().Add(limit)
	for _, nc := range s.conns {
		for !nc.IsClosed() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		nc.Close()
	}
	return errors.Join(errs...)
}
