package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vigil-dev/vigil/projections/projector"
	"github.com/vigil-dev/vigil/projections/store"
	"github.com/vigil-dev/vigil/services/config"
	"github.com/vigil-dev/vigil/services/readmodels"
	"github.com/vigil-dev/vigil/services/stack"
)

// storeDSN is the configured store, or in dev mode the SQLite file under the
// data directory.
func storeDSN(cfg *config.Config, dev bool) (string, error) {
	if cfg.Store.DSN != "" {
		return cfg.Store.DSN, nil
	}
	if dev {
		return "sqlite:" + filepath.Join(cfg.DataDir, "vigil.db"), nil
	}
	return "", errors.New("no store configured: set --store or VIGIL_STORE_DSN (mysql://user:pw@tcp(host:3306)/vigil or sqlite:PATH)")
}

func openStore(ctx context.Context, cfg *config.Config, dev bool) (*store.DB, string, error) {
	dsn, err := storeDSN(cfg, dev)
	if err != nil {
		return nil, "", err
	}
	db, err := store.Open(ctx, dsn)
	if err != nil {
		return nil, "", fmt.Errorf("open store %s: %w", redactDSN(dsn), err)
	}
	return db, dsn, nil
}

// redactDSN hides a password in a DSN for logs.
func redactDSN(dsn string) string {
	at := strings.Index(dsn, "@")
	colon := strings.Index(dsn, "://")
	start := colon + 3
	if colon < 0 {
		start = 0
	}
	if at < 0 || start > at {
		return dsn
	}
	if pw := strings.Index(dsn[start:at], ":"); pw >= 0 {
		return dsn[:start+pw+1] + "***" + dsn[at:]
	}
	return dsn
}

// runProjector runs the read models alone against --nats and --store. The
// store's migrations must have been applied (vigil migrate).
func runProjector(ctx context.Context, c *cli, args []string) int {
	return runService(ctx, c, "projector", args, func(cfg *config.Config, js jetstream.JetStream, reg prometheus.Registerer, logger *slog.Logger) (runner, error) {
		db, _, err := openStore(ctx, cfg, false)
		if err != nil {
			return nil, err
		}
		return stack.ReadModels(cfg, db, js, reg, logger)
	})
}

// runMigrate applies the store's migrations.
func runMigrate(ctx context.Context, c *cli, args []string) int {
	cfg, _, _, code := c.setup("migrate", config.Service, nil, args)
	if code >= 0 {
		return code
	}
	db, dsn, err := openStore(ctx, cfg, false)
	if err != nil {
		fmt.Fprintln(c.stderr, "vigil migrate:", err)
		return exitError
	}
	defer db.Close()
	if err := db.Migrate(ctx); err != nil {
		fmt.Fprintln(c.stderr, "vigil migrate:", err)
		return exitError
	}
	fmt.Fprintf(c.stdout, "migrations applied to %s\n", redactDSN(dsn))
	return exitOK
}

// runProjections reports the projections' positions or rebuilds them.
func runProjections(ctx context.Context, c *cli, args []string) int {
	if len(args) == 0 || (args[0] != "status" && args[0] != "rebuild") {
		fmt.Fprintln(c.stderr, "usage: vigil projections status | rebuild NAME|all  [--store DSN] [--nats URL]")
		return exitUsage
	}
	sub := args[0]
	cfg, pos, logger, code := c.setup("projections "+sub, config.Service, nil, args[1:])
	if code >= 0 {
		return code
	}
	if sub == "rebuild" && len(pos) != 1 {
		fmt.Fprintln(c.stderr, "usage: vigil projections rebuild NAME|all")
		return exitUsage
	}
	db, _, err := openStore(ctx, cfg, false)
	if err != nil {
		fmt.Fprintln(c.stderr, "vigil projections:", err)
		return exitError
	}
	defer db.Close()
	nc, js, ok := c.connect(cfg, "vigil-projections", logger)
	if !ok {
		return exitError
	}
	defer nc.Close()
	projs := readmodels.Projections(js, cfg.Regions[0])
	if sub == "rebuild" {
		// A live projector in another process is not paused: its next batch
		// fails the checkpoint compare-and-set after the handover and it
		// continues from the rebuilt position.
		res, err := projector.Rebuild(ctx, db, js, projs, pos[0], projector.RebuildOptions{})
		if err != nil {
			fmt.Fprintln(c.stderr, "vigil projections rebuild:", err)
			return exitError
		}
		fmt.Fprintf(c.stdout, "rebuilt %s: %d events replayed in %s, now at seq %d\n",
			strings.Join(res.Projections, ", "), res.Events, res.Duration.Round(time.Millisecond), res.Seq)
		return exitOK
	}
	st, err := projector.Status(ctx, db, js, projs)
	if err != nil {
		fmt.Fprintln(c.stderr, "vigil projections status:", err)
		return exitError
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROJECTION\tCHECKPOINT\tSTREAM LAST\tLAG\tQUARANTINED\tREBUILDABLE\tUPDATED")
	for _, p := range st {
		updated := "-"
		if p.UpdatedAt != nil {
			updated = p.UpdatedAt.UTC().Format(time.RFC3339)
		}
		note := ""
		if p.Rebuilding {
			note = fmt.Sprintf(" (rebuilding, at %d)", p.RebuildCheckpoint)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%v\t%s%s\n", p.Name, p.Checkpoint, p.StreamLastSeq, p.Lag, p.Quarantined, p.Rebuildable, updated, note)
	}
	tw.Flush()
	return exitOK
}
