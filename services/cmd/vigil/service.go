package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vigil-dev/vigil/services/config"
	"github.com/vigil-dev/vigil/services/ops"
)

// buildFunc builds a service from its configuration and connection.
type buildFunc func(cfg *config.Config, js jetstream.JetStream, reg prometheus.Registerer, logger *slog.Logger) (runner, error)

// runService runs one service alone against the NATS at --nats, with the ops
// HTTP server (health, readiness, metrics, pprof) on --http-addr, until ctx is
// done; then the service drains and the connection flushes before exit.
func runService(ctx context.Context, c *cli, name string, args []string, build buildFunc) int {
	cfg, _, logger, code := c.setup(name, config.Service, nil, args)
	if code >= 0 {
		return code
	}
	l, err := ops.Listen(cfg.HTTPAddr)
	if err != nil {
		fmt.Fprintln(c.stderr, "vigil:", err)
		return exitError
	}
	defer l.Close()
	nc, js, ok := c.connect(cfg, "vigil-"+name, logger)
	if !ok {
		return exitError
	}
	defer nc.Close()
	reg := ops.NewRegistry()
	svc, err := build(cfg, js, reg, logger)
	if err != nil {
		fmt.Fprintln(c.stderr, "vigil:", err)
		return exitError
	}
	web := ops.NewServer(reg, logger)
	web.AddCheck("nats", func(context.Context) error {
		if !nc.IsConnected() {
			return errors.New("not connected")
		}
		return nil
	})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	webDone := make(chan error, 1)
	go func() { webDone <- web.Serve(ctx, l) }()
	logger.Info("service running", "nats", cfg.NATS.URL, "http", l.Addr().String())
	runErr := svc.Run(ctx)
	cancel()
	<-webDone
	if err := nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		logger.Warn("drain nats connection", "err", err)
	}
	waitClosed(nc, 10*time.Second)
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		fmt.Fprintf(c.stderr, "vigil %s: %v\n", name, runErr)
		return exitError
	}
	logger.Info("service stopped")
	return exitOK
}
