package main

import (
	"context"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vigil-dev/vigil/services/config"
	"github.com/vigil-dev/vigil/services/stack"
)

// runScheduler runs the scheduler alone against --nats.
func runScheduler(ctx context.Context, c *cli, args []string) int {
	return runService(ctx, c, "scheduler", args, func(cfg *config.Config, js jetstream.JetStream, reg prometheus.Registerer, logger *slog.Logger) (runner, error) {
		return stack.Scheduler(cfg, js, reg, logger)
	})
}
