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
	"github.com/vigil-dev/vigil/projections/store"
	"github.com/vigil-dev/vigil/services/checker/httpcheck"
	"github.com/vigil-dev/vigil/services/config"
	"github.com/vigil-dev/vigil/services/devserver"
	"github.com/vigil-dev/vigil/services/ops"
	"github.com/vigil-dev/vigil/services/sites"
	"github.com/vigil-dev/vigil/services/stack"
	"github.com/vigil-dev/vigil/services/topology"
	"github.com/vigil-dev/vigil/tools/fleet"
)

// vigil is the pipeline under test, built the way `vigil dev` builds it
// (stack.Dev): an embedded nats-server on a file store, the topology applied,
// and the scheduler, one checker (region local), the state machine and the
// projector (read models in SQLite), each with its own connection, with the
// dev profile's configuration. The only differences from `vigil dev` are the
// checker's resolver (the fleet's) and its roots (the fleet's CA), which a
// real fleet gets from DNS and the system.
type vigil struct {
	cfg     *config.Config
	srv     *devserver.Server
	dataDir string
	nc      *nats.Conn // the bench's own: topology, registration, read-back
	js      jetstream.JetStream
	stack   *stack.Stack
	db      *store.DB
	reg     *prometheus.Registry
	logger  *slog.Logger

	// asyncErrs counts the connections' asynchronous errors (slow consumer
	// drops above all), which `vigil dev` does not report.
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
	batchSize  int // 0: the configuration default
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
	if o.batchSize > 0 {
		cfg.Scheduler.BatchSize = o.batchSize
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
	v := &vigil{cfg: cfg, srv: srv, dataDir: o.dataDir, logger: o.logger, reg: ops.NewRegistry()}
	if v.nc, err = v.connect("vigil-bench"); err != nil {
		srv.Shutdown()
		return nil, err
	}
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

// connect opens a connection to the embedded server whose asynchronous
// errors are counted.
func (v *vigil) connect(name string) (*nats.Conn, error) {
	return v.srv.Connect(name, nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		if n := v.asyncErrs.Add(1); n <= 20 {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			v.logger.Warn("nats client async error", "connection", name, "subject", subj, "err", err, "count", n)
		}
	}))
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

// start builds and runs the services with stack.Dev, as `vigil dev` does:
// each with its own connection, the read models in a SQLite store in the
// data directory.
func (v *vigil) start(res *fleet.Resolver, roots *x509.CertPool, httpAddr string) error {
	cfg := v.cfg
	logger := v.logger
	if cfg.Checker.TargetPolicy != "allow_private" {
		return fmt.Errorf("the dev profile's target policy is %q; the fleet needs allow_private", cfg.Checker.TargetPolicy)
	}
	db, err := store.Open(context.Background(), "sqlite:"+filepath.Join(v.dataDir, "vigil.db"))
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	v.db = db
	if err := db.Migrate(context.Background()); err != nil {
		return fmt.Errorf("migrate store: %w", err)
	}
	st, err := stack.Dev(cfg, v.connect, db, v.reg, logger, stack.WithEngineOptions(func(o *httpcheck.Options) {
		o.Resolver = res
		o.RootCAs = roots
	}))
	if err != nil {
		return err
	}
	v.stack = st
	ctx, cancel := context.WithCancel(context.Background())
	v.cancel = cancel
	for _, svc := range st.Services {
		name, r := svc.Name, svc.Runner
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

// close flushes the connections, closes the store and shuts the server down.
func (v *vigil) close() {
	if v.stack != nil {
		if err := v.stack.Drain(10 * time.Second); err != nil {
			v.logger.Warn("drain service connections", "err", err)
		}
	}
	if v.db != nil {
		_ = v.db.Close()
	}
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
