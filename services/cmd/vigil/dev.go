package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/services/config"
	"github.com/vigil-dev/vigil/services/devserver"
	"github.com/vigil-dev/vigil/services/ops"
	"github.com/vigil-dev/vigil/services/stack"
	"github.com/vigil-dev/vigil/services/topology"
)

// runner is a long-running service: it works until ctx is done, then stops
// taking work, finishes or abandons (unacknowledged) what it holds, and
// returns.
type runner interface {
	Run(ctx context.Context) error
}

func runDev(ctx context.Context, c *cli, args []string) int {
	cfg, _, logger, code := c.setup("dev", config.Dev, nil, args)
	if code >= 0 {
		return code
	}
	if err := dev(ctx, c, cfg, logger); err != nil {
		fmt.Fprintln(c.stderr, "vigil dev:", err)
		if errors.Is(err, devserver.ErrPortInUse) {
			return exitUsage
		}
		return exitError
	}
	return exitOK
}

func dev(ctx context.Context, c *cli, cfg *config.Config, logger *slog.Logger) error {
	httpListener, err := ops.Listen(cfg.HTTPAddr)
	if err != nil {
		return err
	}
	defer httpListener.Close()

	srv, err := devserver.Start(devserver.Options{
		DataDir:      filepath.Join(cfg.DataDir, "nats"),
		Port:         cfg.NATS.Port,
		FallbackPort: !cfg.IsSet("nats.port"),
		Logger:       logger,
	})
	if err != nil {
		if errors.Is(err, devserver.ErrPortInUse) {
			return fmt.Errorf("%w: choose another with --nats-port or VIGIL_NATS_PORT", err)
		}
		return err
	}
	// The server shuts down last, after every service has drained.
	defer func() {
		srv.Shutdown()
		logger.Info("embedded nats-server stopped")
	}()

	nc, err := srv.Connect("vigil-dev")
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return fmt.Errorf("jetstream: %w", err)
	}
	applyCtx, cancel := context.WithTimeout(ctx, time.Minute)
	results, err := topology.Apply(applyCtx, js, topology.FromConfig(cfg))
	cancel()
	if err != nil {
		nc.Close()
		return fmt.Errorf("apply topology: %w", err)
	}
	for _, r := range results {
		logger.Info("topology", "name", r.Name, "action", r.Action, "changed", r.Changed, "drift", r.Drift)
	}

	db, dsn, err := openStore(ctx, cfg, true)
	if err != nil {
		nc.Close()
		return err
	}
	defer db.Close()
	if err := db.Migrate(ctx); err != nil {
		nc.Close()
		return fmt.Errorf("migrate store %s: %w", redactDSN(dsn), err)
	}

	reg := ops.NewRegistry()
	st, err := stack.Dev(cfg, func(name string) (*nats.Conn, error) { return srv.Connect(name) }, db, reg, logger)
	if err != nil {
		nc.Close()
		return err
	}
	services := st.Services

	printBanner(c, cfg, srv, httpListener.Addr().String(), redactDSN(dsn), services)

	var running atomic.Bool
	web := ops.NewServer(reg, logger)
	web.AddCheck("nats", func(context.Context) error {
		if !nc.IsConnected() {
			return errors.New("not connected")
		}
		return st.Connected()
	})
	web.AddCheck("services", func(context.Context) error {
		if !running.Load() {
			return errors.New("not started")
		}
		return nil
	})

	svcCtx, stopServices := context.WithCancel(ctx)
	defer stopServices()
	var wg sync.WaitGroup
	errc := make(chan error, len(services)+1)
	for _, s := range services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Run(svcCtx); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("%s: %w", s.Name, err)
			}
		}()
	}
	webDone := make(chan error, 1)
	go func() { webDone <- web.Serve(svcCtx, httpListener) }()
	running.Store(true)
	logger.Info("vigil dev running", "nats", srv.URL(), "http", httpListener.Addr().String(), "services", len(services))

	var runErr error
	select {
	case <-ctx.Done():
		logger.Info("shutting down: draining services")
	case runErr = <-errc:
		logger.Error("a service failed; shutting down", "err", runErr)
	case runErr = <-webDone:
		logger.Error("http server failed; shutting down", "err", runErr)
	}
	running.Store(false)
	stopServices()
	wg.Wait()
	<-webDone
	// Services have acknowledged only what they made durable; drain flushes
	// their last publishes and acks before the server stops.
	if err := st.Drain(10 * time.Second); err != nil {
		logger.Warn("drain nats connections", "err", err)
	}
	if err := nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		logger.Warn("drain nats connection", "err", err)
	}
	waitClosed(nc, 10*time.Second)
	return runErr
}

func waitClosed(nc *nats.Conn, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for !nc.IsClosed() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

func printBanner(c *cli, cfg *config.Config, srv *devserver.Server, httpAddr, dsn string, services []stack.Service) {
	host := httpAddr
	if strings.HasPrefix(host, "[::]:") || strings.HasPrefix(host, "0.0.0.0:") {
		host = "localhost" + host[strings.LastIndex(host, ":"):]
	}
	names := make([]string, 0, len(services))
	for _, s := range services {
		names = append(names, s.Name)
	}
	if len(names) == 0 {
		names = append(names, "(none yet)")
	}
	w := c.stdout
	fmt.Fprintln(w, "")
	fmt.Fprintln(w, "  Vigil dev is running")
	if srv.FellBack {
		fmt.Fprintf(w, "  !! NATS port %d was taken: the embedded server listens on %d instead\n", cfg.NATS.Port, srv.Port)
	}
	fmt.Fprintf(w, "  NATS      %s\n", srv.URL())
	fmt.Fprintf(w, "            nats --server %s stream ls\n", srv.URL())
	fmt.Fprintf(w, "  HTTP      http://%s  (/healthz /readyz /metrics /debug/pprof/)\n", host)
	fmt.Fprintf(w, "  Data      %s\n", cfg.DataDir)
	fmt.Fprintf(w, "  Store     %s\n", dsn)
	fmt.Fprintf(w, "  Regions   %s (primary %s)\n", strings.Join(cfg.Regions, ", "), cfg.Regions[0])
	fmt.Fprintf(w, "  Services  %s\n", strings.Join(names, ", "))
	fmt.Fprintln(w, "  Ctrl-C stops everything; nothing acknowledged is lost.")
	fmt.Fprintln(w, "")
}
