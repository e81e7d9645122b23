// Command vigil runs Vigil's services, alone or all together (`vigil dev`), and
// the operator commands that manage streams, sites and configuration.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/services/config"
	"github.com/vigil-dev/vigil/services/ops"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the command failed while running
	exitUsage = 2 // bad arguments or configuration
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], &cli{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv})
	stop()
	os.Exit(code)
}

// cli is what every command gets from the process: its output streams and
// environment, passed in so tests can run commands in-process.
type cli struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, c *cli, args []string) int
}

func commands() []command {
	return []command{
		{"dev", "run everything in one process: embedded NATS, every service, HTTP on :8080", runDev},
		{"streams", "apply the JetStream topology (streams apply) or show it (streams status)", runStreams},
		{"config", "print the effective configuration (config validate)", runConfig},
		{"sites", "manage sites: add, list, pause, resume, delete, apply -f sites.yaml", runSites},
		{"scheduler", "run the scheduler against --nats", runScheduler},
		{"checker", "run a checker of --region against --nats", runChecker},
		{"statemachine", "run the incident state machine against --nats; statemachine replay --from-seq N --dry-run", runStateMachine},
		{"projector", "run the read models (site status, incidents, uptime, outbox) against --nats and --store", runProjector},
		{"migrate", "apply the store's migrations (--store DSN)", runMigrate},
		{"projections", "projections status | projections rebuild NAME|all", runProjections},
	}
}

func run(ctx context.Context, args []string, c *cli) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(c.stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, cmd := range commands() {
		if cmd.name == args[0] {
			return cmd.run(ctx, c, args[1:])
		}
	}
	fmt.Fprintf(c.stderr, "vigil: unknown command %q; run vigil help\n", args[0])
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Vigil: uptime monitoring for large fleets of websites, on NATS JetStream.")
	fmt.Fprintln(w, "\nUsage: vigil <command> [flags]\n\nCommands:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, cmd := range commands() {
		fmt.Fprintf(tw, "  %s\t%s\n", cmd.name, cmd.summary)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nEvery command takes the configuration flags; see vigil <command> --help.")
	fmt.Fprintln(w, "Configuration also comes from VIGIL_* environment variables and --config FILE (YAML).")
}

// setup parses a command's flags and configuration and builds its logger. It
// returns a non-negative exit code when the command should stop there.
func (c *cli) setup(name string, profile config.Profile, fs *flag.FlagSet, args []string) (*config.Config, []string, *slog.Logger, int) {
	if fs == nil {
		fs = flag.NewFlagSet(name, flag.ContinueOnError)
	}
	fs.SetOutput(c.stderr)
	cfg, pos, err := config.Load(profile, fs, args, c.getenv)
	if errors.Is(err, flag.ErrHelp) {
		return nil, nil, nil, exitOK
	}
	if err != nil {
		var ce *config.Error
		if !errors.As(err, &ce) {
			// The flag package has already printed the problem and usage.
			return nil, nil, nil, exitUsage
		}
		fmt.Fprintln(c.stderr, err)
		return nil, nil, nil, exitUsage
	}
	logger := ops.NewLogger(c.stderr, cfg.Log.Level, cfg.Log.Format).With("cmd", name)
	return cfg, pos, logger, -1
}

// connect opens a command's connection to the NATS server at --nats. On
// failure it reports on stderr and ok is false: the command exits with
// exitError.
func (c *cli) connect(cfg *config.Config, name string, logger *slog.Logger) (nc *nats.Conn, js jetstream.JetStream, ok bool) {
	nc, js, err := dial(cfg, name, logger)
	if err != nil {
		fmt.Fprintln(c.stderr, "vigil:", err)
		return nil, nil, false
	}
	return nc, js, true
}

// dial opens a connection to the NATS server of a separately run service.
func dial(cfg *config.Config, name string, logger *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(cfg.NATS.URL,
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { logger.Info("nats reconnected", "url", nc.ConnectedUrl()) }),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to nats at %s: %w", cfg.NATS.URL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}
