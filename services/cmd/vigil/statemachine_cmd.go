package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/config"
	"github.com/vigil-dev/vigil/services/sites"
	"github.com/vigil-dev/vigil/services/stack"
	"github.com/vigil-dev/vigil/services/statemachine"
)

func runStateMachine(ctx context.Context, c *cli, args []string) int {
	if len(args) > 0 && args[0] == "replay" {
		return runReplay(ctx, c, args[1:])
	}
	return runService(ctx, c, "statemachine", args, func(cfg *config.Config, js jetstream.JetStream, reg prometheus.Registerer, logger *slog.Logger) (runner, error) {
		return stack.StateMachine(cfg, js, reg, logger)
	})
}

// runReplay feeds stored observations through a fresh state machine and
// prints, as JSON lines, the events it would emit. It writes nothing.
func runReplay(ctx context.Context, c *cli, args []string) int {
	fs := flag.NewFlagSet("statemachine replay", flag.ContinueOnError)
	from := fs.Uint64("from-seq", 1, "first OBSERVATIONS sequence to replay")
	to := fs.Uint64("to-seq", 0, "last sequence (0: the end)")
	bucket := fs.Int("bucket", -1, "replay only this bucket (-1: all)")
	site := fs.String("site", "", "print only this site's events")
	dryRun := fs.Bool("dry-run", true, "print what would be emitted, write nothing (the only mode)")
	cfg, _, logger, code := c.setup("statemachine replay", config.Service, fs, args)
	if code >= 0 {
		return code
	}
	if !*dryRun {
		fmt.Fprintln(c.stderr, "vigil statemachine replay: only --dry-run is supported; the live state machine writes events")
		return exitUsage
	}
	if *bucket >= events.Buckets {
		fmt.Fprintf(c.stderr, "vigil statemachine replay: --bucket %d is out of range [0,%d)\n", *bucket, events.Buckets)
		return exitUsage
	}
	nc, js, ok := c.connect(cfg, "vigil-replay", logger)
	if !ok {
		return exitError
	}
	defer nc.Close()
	reg := sites.NewRegistry(js)
	rep := &statemachine.Replayer{
		Env: statemachine.Env{Regions: cfg.Regions, AllowSingleRegion: cfg.StateMachine.SingleRegion, VerifyTimeout: cfg.StateMachine.VerifyTimeout},
		Site: func(ctx context.Context, id string) (events.Site, bool, error) {
			cur, err := reg.Get(ctx, id)
			if err != nil {
				return events.Site{}, false, nil
			}
			return cur.Site, true, nil
		},
	}
	enc := json.NewEncoder(c.stdout)
	n := 0
	err := rep.Replay(ctx, js, *from, *to, *bucket, func(obs events.Observation, out statemachine.Output) error {
		if *site != "" && obs.SiteID != *site {
			return nil
		}
		for i := range out.Events {
			n++
			if err := enc.Encode(out.Events[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		fmt.Fprintln(c.stderr, "vigil statemachine replay:", err)
		return exitError
	}
	fmt.Fprintf(c.stderr, "%d events would be emitted\n", n)
	return exitOK
}
