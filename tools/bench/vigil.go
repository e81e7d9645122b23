package bench

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/checker"
	"github.com/vigil-dev/vigil/services/checker/httpcheck"
	"github.com/vigil-dev/vigil/services/config"
	"github.com/vigil-dev/vigil/services/devserver"
	"github.com/vigil-dev/vigil/services/ops"
	"github.com/vigil-dev/vigil/services/scheduler"
	"github.com/vigil-dev/vigil/services/sites"
	"github.com/vigil-dev/vigil/services/statemachine"
	"github.com/vigil-dev/vigil/services/topology"
	"github.com/vigil-dev/vigil/tools/fleet"
)

// vigil is the pipeline under test, wired the way `vigil dev` wires it
// (services/cmd/vigil/dev.go): an embedded nats-server on a file store, the
// topology applied, and the scheduler, one checker (region local) and the
// state machine built with the services' constructors and the dev profile's
// configuration. The only differences from `vigil dev` are the checker's
// resolver (the fleet's) and its roots (the fleet's CA), which a real fleet
// gets from DNS and the system.
type vigil struct {
	cfg    *config.Config
	srv    *devserver.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	reg    *prometheus.Registry
	logger *slog.Logger

	// asyncErrs counts the client connection's asynchronous errors (slow
	// consumer drops above all), which `vigil dev` does not report.
	asyncErrs atomic.Int64

	cancel  context.CancelFunc
	wg      sync.WaitGroup
	errMu   sync.Mutex
	runErrs []error
	opsAddr string
}

// vigilOptions are the bench's few departures from the dev defaults.
type vigilOptions struct {
	dataDir    string
	logger     *slog.Logger
	minWorkers int // 0: the configuration default
	maxWorkers int
}

// startNATS starts the embedded server and applies the topology.
func startNATS(ctx context.Context, o vigilOptions) (*vigil, error) {
	cfg := config.Default(config.Dev)
	if o.minWorkers > 0 {
		cfg.Checker.MinWorkers = o.minWorkers
	}
	if o.maxWorkers > 0 {
		cfg.Checker.MaxWorkers = o.maxWorkers
	}
	if cfg.Checker.MinWorkers > cfg.Checker.MaxWorkers {
		cfg.Checker.MinWorkers = cfg.Checker.MaxWorkers
	}
	srv, err := devserver.Start(devserver.Options{
		DataDir: filepath.Join(o.dataDir, "nats"),
		Port:    devserver.RandomPort,
		Logger:  o.logger,
	})
	if err != nil {
		return nil, err
	}
	v := &vigil{cfg: cfg, srv: srv, logger: o.logger, reg: ops.NewRegistry()}
	if v.nc, err = srv.Connect("vigil-bench"); err != nil {
		srv.Shutdown()
		return nil, err
	}
	v.nc.SetErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		if n := v.asyncErrs.Add(1); n <= 20 {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			o.logger.Warn("nats client async error", "subject", subj, "err", err, "count", n)
		}
	})
	if v.js, err = jetstream.New(v.nc); err != nil {
		v.close()
		return nil, err
	}
	actx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := topology.Apply(actx, v.js, topology.FromConfig(cfg)); err != nil {
		v.close()
		return nil, fmt.Errorf("apply topology: %w", err)
	}
	return v, nil
}

// register publishes a created change for every site of the plan, straight
// onto SITES with asynchronous publishes (the registry's Create reads each
// site first and publishes synchronously: too slow for 100,000 sites). Each
// configuration is normalized exactly as the registry would store it.
func (v *vigil) register(ctx context.Context, plan *fleet.Plan, res *fleet.Resolver, interval time.Duration, from, to int) error {
	pub, err := jetstream.New(v.nc, jetstream.WithPublishAsyncMaxPending(4096), jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		return err
	}
	ids := events.NewIDSource(rand.Reader)
	at := time.Now().UTC()
	for i := from; i < to; i++ {
		s := events.Site{ID: plan.ID(i), URL: res.URL(i), Interval: events.Duration(interval)}
		if kw := plan.Keyword(i); kw != "" {
			s.Keywords = []string{kw}
		}
		n, err := sites.Normalize(s)
		if err != nil {
			return fmt.Errorf("site %s: %w", s.ID, err)
		}
		id, err := ids.New(at)
		if err != nil {
			return err
		}
		msg, err := events.Marshal(&events.SiteChange{ID: id, Change: events.ChangeCreated, At: at, Actor: "bench", Site: n})
		if err != nil {
			return err
		}
		if _, err := pub.PublishMsgAsync(msg, jetstream.WithExpectStream(events.StreamSites)); err != nil {
			return fmt.Errorf("publish site %s: %w", s.ID, err)
		}
		if i%4096 == 4095 && ctx.Err() != nil {
			return ctx.Err()
		}
	}
	select {
	case <-pub.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(5 * time.Minute):
		return errors.New("site registrations not acknowledged within 5m")
	}
	// A failed publish shows as a missing change.
	st, err := v.js.Stream(ctx, events.StreamSites)
	if err != nil {
		return err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	if info.State.Msgs < uint64(to) {
		return fmt.Errorf("SITES holds %d changes after registering %d sites", info.State.Msgs, to)
	}
	return nil
}

// start builds and runs the services, as devServices does.
func (v *vigil) start(res *fleet.Resolver, roots *x509.CertPool, httpAddr string) error {
	cfg := v.cfg
	logger := v.logger
	sched, err := scheduler.New(v.js,
		scheduler.WithRegions(cfg.Regions...),
		scheduler.WithTick(cfg.Scheduler.Tick),
		scheduler.WithLeaseTTL(cfg.Lease.TTL),
		scheduler.WithLogger(logger.With("service", "scheduler")),
		scheduler.WithRegisterer(v.reg),
	)
	if err != nil {
		return err
	}
	policy := httpcheck.AllowPrivate // cfg.Checker.TargetPolicy is allow_private in the dev profile
	if cfg.Checker.TargetPolicy != "allow_private" {
		return fmt.Errorf("the dev profile's target policy is %q; the fleet needs allow_private", cfg.Checker.TargetPolicy)
	}
	engine, err := httpcheck.New(httpcheck.Options{
		UserAgent:    cfg.Checker.UserAgent,
		TargetPolicy: policy,
		MaxBodyBytes: cfg.Checker.MaxBodyBytes,
		Resolver:     res,
		RootCAs:      roots,
	})
	if err != nil {
		return err
	}
	region := cfg.Regions[0]
	chk, err := checker.New(v.js, engine,
		checker.WithRegion(region),
		checker.WithMinWorkers(cfg.Checker.MinWorkers),
		checker.WithMaxWorkers(cfg.Checker.MaxWorkers),
		checker.WithLogger(logger.With("service", "checker", "region", region)),
		checker.WithRegisterer(v.reg),
	)
	if err != nil {
		return err
	}
	th := statemachine.DefaultRegionThresholds()
	th.Window = cfg.StateMachine.ImpairedWindow
	th.MinSites = cfg.StateMachine.ImpairedMinSites
	th.FailureRatio = cfg.StateMachine.ImpairedRatio
	th.RecoverRatio = cfg.StateMachine.ImpairedRatio / 2
	sm, err := statemachine.New(v.js,
		statemachine.WithRegions(cfg.Regions...),
		statemachine.WithSingleRegionAllowance(cfg.StateMachine.SingleRegion),
		statemachine.WithVerifyTimeout(cfg.StateMachine.VerifyTimeout),
		statemachine.WithLeaseTTL(cfg.Lease.TTL),
		statemachine.WithRegionThresholds(th),
		statemachine.WithLogger(logger.With("service", "statemachine")),
		statemachine.WithRegisterer(v.reg),
	)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	v.cancel = cancel
	for name, r := range map[string]interface{ Run(context.Context) error }{
		"scheduler": sched, "checker-" + region: chk, "statemachine": sm,
	} {
		v.wg.Add(1)
		go func() {
			defer v.wg.Done()
			if err := r.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				v.errMu.Lock()
				v.runErrs = append(v.runErrs, fmt.Errorf("%s: %w", name, err))
				v.errMu.Unlock()
				logger.Error("service stopped", "service", name, "err", err)
			}
		}()
	}
	if httpAddr != "" {
		l, err := net.Listen("tcp", httpAddr)
		if err != nil {
			return fmt.Errorf("ops server: %w", err)
		}
		v.opsAddr = l.Addr().String()
		web := ops.NewServer(v.reg, logger)
		v.wg.Add(1)
		go func() {
			defer v.wg.Done()
			_ = web.Serve(ctx, l)
		}()
	}
	return nil
}

// errs returns the errors services stopped with.
func (v *vigil) errs() []error {
	v.errMu.Lock()
	defer v.errMu.Unlock()
	return append([]error(nil), v.runErrs...)
}

// stop stops the services, as `vigil dev` does on Ctrl-C.
func (v *vigil) stop() {
	if v.cancel == nil {
		return
	}
	v.cancel()
	done := make(chan struct{})
	go func() { v.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		v.logger.Warn("services still stopping after 90s")
	}
	v.cancel = nil
}

// close flushes the connection and shuts the server down.
func (v *vigil) close() {
	if v.nc != nil {
		_ = v.nc.Drain()
		deadline := time.Now().Add(10 * time.Second)
		for !v.nc.IsClosed() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		v.nc.Close()
	}
	v.srv.Shutdown()
}

// metric sums the values of every series of a metric family (gauge,
// counter, or a histogram's count).
func (v *vigil) metric(name string) float64 {
	mfs, err := v.reg.Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		return sumMetric(mf.GetMetric())
	}
	return 0
}

func sumMetric(ms []*dto.Metric) float64 {
	total := 0.0
	for _, m := range ms {
		switch {
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Histogram != nil:
			total += float64(m.Histogram.GetSampleCount())
		}
	}
	return total
}

// waitTargets waits until the scheduler schedules n sites.
func (v *vigil) waitTargets(ctx context.Context, n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		got := int(v.metric("vigil_scheduler_targets"))
		if got >= n {
			return nil
		}
		if errs := v.errs(); len(errs) > 0 {
			return errors.Join(errs...)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("scheduler loaded %d of %d sites in %s", got, n, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// streamBytes returns the stored bytes and messages of every stream
// (KV buckets included).
func (v *vigil) streamBytes(ctx context.Context) (map[string][2]uint64, error) {
	out := map[string][2]uint64{}
	l := v.js.ListStreams(ctx)
	for info := range l.Info() {
		out[info.Config.Name] = [2]uint64{info.State.Bytes, info.State.Msgs}
	}
	return out, l.Err()
}
