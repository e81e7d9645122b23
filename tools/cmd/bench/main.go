// Command bench is Vigil's capacity harness (issue 5). It runs the whole
// pipeline, as `vigil dev` wires it, against a simulated fleet in a child
// process, prints a table and writes bench-results/<timestamp>.json and
// bench-results/latest.json.
//
//	bench --mode short     10,000 sites every 60s, 60s measured (make bench)
//	bench --mode long      100,000 sites every 60s, 5m measured (make bench-long)
//	bench --sites 1000000 --interval 5m --duration 10m
//	bench --mode custom --ramp --sites 20000 --interval 20s --ramp-step 10000
//
// Profiles of the Vigil side: --cpuprofile FILE (the measurement window) and
// --memprofile FILE (heap at the window's end). While a run is going,
// --http-addr serves /metrics and /debug/pprof/ as every Vigil service does.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/vigil-dev/vigil/tools/bench"
	"github.com/vigil-dev/vigil/tools/fleet"
)

func main() {
	bench.RunChildIfAsked() // the fleet child re-executes this binary
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	mode := fs.String("mode", "short", "short (10,000 sites, 60s interval, 60s), long (100,000 sites, 60s interval, 5m) or custom")
	sitesN := fs.Int("sites", 0, "number of sites (default: the mode's)")
	interval := fs.Duration("interval", 0, "check interval of every site (default: the mode's)")
	duration := fs.Duration("duration", 0, "measurement window (default: the mode's)")
	warmup := fs.Duration("warmup", 0, "warm-up before the window (default: one interval; negative: none)")
	drain := fs.Duration("drain", 0, "after the window, time for the checks due in it to finish (default: timeout + 5s)")
	seed := fs.Uint64("seed", 1, "fleet seed")
	mix := fs.String("mix", fleet.DefaultMix().String(), "fleet mix of scripted incident sites (none: all healthy)")
	latency := fs.Duration("latency", 20*time.Millisecond, "median latency of healthy sites")
	incidents := fs.Int("incidents", -1, "control-API outages started on healthy sites at the window's start (default: the mode's)")
	incidentFor := fs.Duration("incident-for", 0, "how long control outages last (0: to the end)")
	inproc := fs.Bool("fleet-inproc", false, "run the fleet in this process (its CPU then counts as Vigil's)")
	fleetExe := fs.String("fleet-exe", "", "binary to run as the fleet child (default: this one)")
	minW := fs.Int("min-workers", 0, "checker min workers (default: the configuration's)")
	maxW := fs.Int("max-workers", 0, "checker max workers (default: the configuration's)")
	batch := fs.Int("batch-size", 0, "scheduler's check commands per CHECKS message (default: the configuration's; 1: no batching)")
	noBare := fs.Bool("no-bare", false, "skip the bare HTTP loop")
	bareFlat := fs.Duration("bare-flat", 10*time.Second, "how long the bare loop runs flat out (0 skips it)")
	barePaced := fs.Duration("bare-paced-max", 40*time.Second, "each paced bare-loop run makes at most this long's worth of checks at the required rate")
	bareRuns := fs.Int("bare-runs", 3, "paced bare-loop runs, one after another; Vigil's CPU per check is compared with the median run's")
	flatConc := fs.Int("bare-flat-concurrency", 256, "goroutines of the flat-out bare loop")
	out := fs.String("out", "bench-results", "directory of the JSON results and the run's log")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the measurement window (Vigil side) to this file")
	memprofile := fs.String("memprofile", "", "write a heap profile at the end of the window to this file")
	httpAddr := fs.String("http-addr", "127.0.0.1:0", "serve /metrics and /debug/pprof/ here during the run (empty: no)")
	keep := fs.Bool("keep-data", false, "keep the NATS store")
	strict := fs.Bool("strict", false, "exit 1 when a target is missed")
	ramp := fs.Bool("ramp", false, "find Vigil's highest sustained rate: start at --sites and add --ramp-step sites every two intervals until a step fails")
	rampStep := fs.Int("ramp-step", 10000, "sites added per ramp step")
	rampMax := fs.Int("ramp-max", 1000000, "most sites a ramp goes to")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg := bench.Config{Mode: *mode, Seed: *seed, LatencyMedian: *latency, IncidentFor: *incidentFor,
		FleetInProcess: *inproc, FleetExe: *fleetExe, MinWorkers: *minW, MaxWorkers: *maxW, BatchSize: *batch,
		NoBare: *noBare, BareFlat: *bareFlat, BarePacedMax: *barePaced, BareRuns: *bareRuns, BareFlatConcurrency: *flatConc, OutDir: *out,
		CPUProfile: *cpuprofile, MemProfile: *memprofile, HTTPAddr: *httpAddr, KeepData: *keep,
		Ramp: *ramp, RampStep: *rampStep, RampMax: *rampMax,
		Log: os.Stdout, Command: "bench " + strings.Join(args, " "), Warmup: *warmup, Drain: *drain}
	switch *mode {
	case "short":
		cfg.Sites, cfg.Interval, cfg.Duration, cfg.Incidents = 10000, time.Minute, time.Minute, 10
	case "long":
		cfg.Sites, cfg.Interval, cfg.Duration, cfg.Incidents = 100000, time.Minute, 5*time.Minute, 20
	case "custom":
		cfg.Sites, cfg.Interval, cfg.Duration = 1000, time.Minute, time.Minute
	default:
		fmt.Fprintf(os.Stderr, "bench: unknown --mode %q\n", *mode)
		return 2
	}
	if *sitesN > 0 {
		cfg.Sites = *sitesN
	}
	if *interval > 0 {
		cfg.Interval = *interval
	}
	if *duration > 0 {
		cfg.Duration = *duration
	}
	if *incidents >= 0 {
		cfg.Incidents = *incidents
	}
	if *bareFlat == 0 {
		cfg.BareFlat = -1
	}
	var err error
	if cfg.Mix, err = fleet.ParseMix(*mix); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := bench.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	r.WriteTable(os.Stdout)
	if *out != "" {
		path, err := r.Write(*out)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: write results:", err)
			return 1
		}
		fmt.Printf("\nresults: %s (and %s/latest.json)\n", path, *out)
	}
	if *strict && !r.Passed() {
		return 1
	}
	return 0
}
