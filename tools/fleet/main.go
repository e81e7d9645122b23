package fleet

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Main is the fleet command (cmd/fleet): it parses args, serves the fleet and
// returns the exit code. The bench runs it in a child process of its own, so
// the fleet's CPU and memory are measured apart from Vigil's.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fleet", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg Config
	fs.IntVar(&cfg.Sites, "sites", 1000, "number of sites")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the plan and the latencies")
	mix := fs.String("mix", DefaultMix().String(), "share of each non-healthy kind, such as 5xx=0.01,timeout=0.005 (none: all healthy)")
	epoch := fs.String("epoch", "", "time zero of the scripts, RFC 3339 (default: now)")
	fs.DurationVar(&cfg.Period, "period", 10*time.Minute, "incident period")
	fs.DurationVar(&cfg.Outage, "outage", 3*time.Minute, "incident window within each period")
	fs.DurationVar(&cfg.FlapPeriod, "flap-period", time.Minute, "up, then down, for this long (flapping sites)")
	fs.DurationVar(&cfg.LatencyMedian, "latency-median", 20*time.Millisecond, "median latency of a healthy answer")
	fs.Float64Var(&cfg.LatencySigma, "latency-sigma", 0.6, "sigma of the log-normal latency")
	fs.DurationVar(&cfg.LatencyMax, "latency-max", time.Second, "latency cap")
	fs.DurationVar(&cfg.HangMax, "hang-max", 2*time.Minute, "longest a hanging or dripping answer lasts")
	fs.IntVar(&cfg.Listeners, "listeners", 64, "HTTP listeners (127.0.1.1, 127.0.1.2, ...)")
	fs.IntVar(&cfg.TLSListeners, "tls-listeners", 4, "TLS listeners (127.0.2.1, ...)")
	regions := fs.String("regions", "local=127.0.0.1,blocked=127.0.0.2", "checker regions and their source addresses")
	block := fs.String("block-regions", "blocked", "regions region_block sites refuse in their windows")
	fs.StringVar(&cfg.Control, "control", "127.0.0.1:0", "control API address")
	maxDur := fs.Duration("max-duration", 2*time.Hour, "stop after this long")
	exitOnEOF := fs.Bool("exit-on-eof", false, "stop when standard input closes")
	config := fs.String("config-json", "", "the whole configuration as JSON (overrides the other flags)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "fleet:", err)
		return 2
	}
	if *config != "" {
		cfg = Config{}
		if err := json.Unmarshal([]byte(*config), &cfg); err != nil {
			return fail(fmt.Errorf("--config-json: %w", err))
		}
	} else {
		var err error
		if cfg.Mix, err = ParseMix(*mix); err != nil {
			return fail(err)
		}
		if *epoch != "" {
			if cfg.Epoch, err = time.Parse(time.RFC3339, *epoch); err != nil {
				return fail(fmt.Errorf("--epoch: %w", err))
			}
		}
		cfg.Regions = map[string]netip.Addr{}
		for item := range strings.SplitSeq(*regions, ",") {
			name, addr, ok := strings.Cut(strings.TrimSpace(item), "=")
			a, err := netip.ParseAddr(addr)
			if !ok || err != nil {
				return fail(fmt.Errorf("--regions item %q: want name=127.x.y.z", item))
			}
			cfg.Regions[name] = a
		}
		cfg.BlockRegions = []string{}
		for r := range strings.SplitSeq(*block, ",") {
			if r = strings.TrimSpace(r); r != "" {
				cfg.BlockRegions = append(cfg.BlockRegions, r)
			}
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *maxDur)
	defer cancel()
	if *exitOnEOF {
		go func() {
			_, _ = io.Copy(io.Discard, stdin)
			cancel()
		}()
	}
	if err := Serve(ctx, cfg, stdout); err != nil {
		return fail(err)
	}
	return 0
}
