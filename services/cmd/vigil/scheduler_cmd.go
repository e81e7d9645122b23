package main

import (
	"context"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vigil-dev/vigil/services/config"
	"github.com/vigil-dev/vigil/services/scheduler"
)

// runScheduler runs the scheduler alone against --nats.
func runScheduler(ctx context.Context, c *cli, args []string) int {
	return runService(ctx, c, "scheduler", args, newScheduler)
}

// newScheduler builds the scheduler from the configuration; `vigil dev` can
// use it too.
func newScheduler(cfg *config.Config, js jetstream.JetStream, reg prometheus.Registerer, logger *slog.Logger) (runner, error) {
	return scheduler.New(js,
		scheduler.WithRegions(cfg.Regions...),
		scheduler.WithTick(cfg.Scheduler.Tick),
		scheduler.WithLeaseTTL(cfg.Lease.TTL),
		scheduler.WithLogger(logger.With("service", "scheduler")),
		scheduler.WithRegisterer(reg),
	)
}
