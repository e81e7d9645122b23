package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vigil-dev/vigil/services/checker"
	"github.com/vigil-dev/vigil/services/checker/httpcheck"
	"github.com/vigil-dev/vigil/services/config"
)

// runChecker runs a checker of --region against the NATS at --nats.
func runChecker(ctx context.Context, c *cli, args []string) int {
	return runService(ctx, c, "checker", args, func(cfg *config.Config, js jetstream.JetStream, reg prometheus.Registerer, logger *slog.Logger) (runner, error) {
		return newChecker(cfg, cfg.Region, js, reg, logger)
	})
}

// newChecker builds the checker of region from the configuration: the HTTP
// engine with the target policy, user agent and body bound, and the pool
// bounds.
func newChecker(cfg *config.Config, region string, js jetstream.JetStream, reg prometheus.Registerer, logger *slog.Logger) (*checker.Checker, error) {
	policy, err := targetPolicy(cfg.Checker.TargetPolicy)
	if err != nil {
		return nil, err
	}
	engine, err := httpcheck.New(httpcheck.Options{
		UserAgent:    cfg.Checker.UserAgent,
		TargetPolicy: policy,
		MaxBodyBytes: cfg.Checker.MaxBodyBytes,
	})
	if err != nil {
		return nil, fmt.Errorf("http check engine: %w", err)
	}
	return checker.New(js, engine,
		checker.WithRegion(region),
		checker.WithMinWorkers(cfg.Checker.MinWorkers),
		checker.WithMaxWorkers(cfg.Checker.MaxWorkers),
		checker.WithLogger(logger.With("service", "checker")),
		checker.WithRegisterer(reg),
	)
}

// targetPolicy maps checker.target_policy to the engine's policy.
func targetPolicy(name string) (httpcheck.TargetPolicy, error) {
	switch name {
	case "public_only":
		return httpcheck.PublicOnly, nil
	case "allow_private":
		return httpcheck.AllowPrivate, nil
	}
	return 0, fmt.Errorf("unknown checker.target_policy %q: use public_only or allow_private", name)
}
