package main

import (
	"context"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vigil-dev/vigil/services/config"
	"github.com/vigil-dev/vigil/services/stack"
)

// runChecker runs a checker of --region against the NATS at --nats.
func runChecker(ctx context.Context, c *cli, args []string) int {
	return runService(ctx, c, "checker", args, func(cfg *config.Config, js jetstream.JetStream, reg prometheus.Registerer, logger *slog.Logger) (runner, error) {
		return stack.Checker(cfg, cfg.Region, js, reg, logger)
	})
}
