// Package bench is Vigil's capacity harness (issue 5): it runs the whole
// pipeline as `vigil dev` wires it, in this process, against a simulated
// fleet (package fleet) in a child process, measures what a check costs and
// how punctual and complete checking is, and compares the cost with a bare
// HTTP loop against the same fleet. cmd/bench is its command line; `make
// bench` runs it.
//
// A run:
//
//  1. starts the fleet (a child process, so its CPU and memory are measured
//     apart from Vigil's) and builds the same plan here;
//  2. starts an embedded nats-server on a file store in a temporary
//     directory and applies the topology;
//  3. registers every site by publishing created changes straight onto SITES
//     (asynchronously), then starts the scheduler, one checker (region
//     local, the fleet's resolver, allow_private) and the state machine
//     (single-region allowance), and waits until the scheduler has loaded
//     every site;
//  4. warms up (one interval by default: every site checked once, the
//     worker pool sized, caches filled), then measures a window: process CPU
//     (getrusage) and peak RSS of this process, the fleet child's CPU and RSS
//     (/proc), stream sizes, the checker's pool; optionally a CPU profile of
//     the window and a heap profile at its end;
//  5. lets the checks due in the window finish (drain), stops the services
//     and reads OBSERVATIONS and EVENTS back: lateness (start − due),
//     freshness at the window's end, slot coverage, false events;
//  6. with NATS shut down, runs the bare loop paced at the same rate a few
//     times over (for CPU per check: Vigil's is compared with the median
//     run's, as one run's figure swings too much on a small machine) and
//     flat out for a few seconds (for its top rate).
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/sites"
	"github.com/vigil-dev/vigil/tools/fleet"
)

// Config is one run's parameters.
type Config struct {
	// Mode labels the run: short, long or custom.
	Mode     string
	Sites    int
	Interval time.Duration
	// Duration is the measurement window.
	Duration time.Duration
	// Warmup runs before the window (default: one interval).
	Warmup time.Duration
	// Drain runs after the window so that checks due in it can finish
	// (default: the sites' check timeout plus 5s).
	Drain time.Duration
	Seed  uint64
	// Mix is the fleet's share of scripted incident sites (nil: the
	// default mix; empty: every site healthy).
	Mix fleet.Mix
	// LatencyMedian of healthy sites (default 20ms).
	LatencyMedian time.Duration
	// Incidents is how many healthy sites get a control-API outage (503)
	// at the window's start, lasting IncidentFor (default: to the end).
	Incidents   int
	IncidentFor time.Duration
	// FleetInProcess runs the fleet in this process (its CPU is then
	// included in Vigil's); FleetExe is the binary to run as the fleet
	// child (default: this one, with ChildEnv set).
	FleetInProcess bool
	FleetExe       string
	// MinWorkers and MaxWorkers override the checker's pool bounds (0:
	// the configuration defaults).
	MinWorkers, MaxWorkers int
	// BatchSize overrides the scheduler's commands per CHECKS message (0:
	// the configuration default; 1: every command alone).
	BatchSize int
	// NoBare skips the bare loop. BareFlat is how long it runs flat out
	// (default 10s); BarePacedMax bounds each paced run (default 40s).
	NoBare       bool
	BareFlat     time.Duration
	BarePacedMax time.Duration
	// BareRuns is how many paced runs are made, one after another
	// (default 3). One run's CPU per check varies between runs by more than
	// the ratio target's margin; Vigil is compared with the median run.
	BareRuns int
	// BareFlatConcurrency is the flat-out run's goroutines (default 256:
	// enough that the rate is bound by CPU, not by the fleet's latency).
	BareFlatConcurrency int
	// OutDir receives the JSON results and the run's log ("" writes none).
	OutDir string
	// CPUProfile and MemProfile are written for the window when set.
	CPUProfile, MemProfile string
	// HTTPAddr serves /metrics and /debug/pprof/ during the run ("" none).
	HTTPAddr string
	// KeepData keeps the NATS store (its path is logged).
	KeepData bool
	// Log receives progress lines (nil: discarded).
	Log io.Writer
	// Command is recorded in the result.
	Command string

	// Ramp finds Vigil's highest sustained rate instead of measuring a
	// window: starting from Sites, it adds RampStep sites every two
	// intervals (one to settle, one measured) until a step fails or
	// RampMax sites are reached. See runRamp.
	Ramp     bool
	RampStep int
	RampMax  int
}

func (c Config) withDefaults() Config {
	if c.Mode == "" {
		c.Mode = "custom"
	}
	if c.Warmup < 0 {
		c.Warmup = 0
	} else if c.Warmup == 0 {
		c.Warmup = c.Interval
	}
	if c.Drain <= 0 {
		c.Drain = min(sites.DefaultTimeout, c.Interval/2) + 5*time.Second
	}
	if c.Mix == nil {
		c.Mix = fleet.DefaultMix()
	}
	if c.LatencyMedian <= 0 {
		c.LatencyMedian = 20 * time.Millisecond
	}
	if c.BareFlat == 0 {
		c.BareFlat = 10 * time.Second
	}
	if c.BarePacedMax == 0 {
		c.BarePacedMax = 40 * time.Second
	}
	if c.BareRuns == 0 {
		c.BareRuns = 3
	}
	if c.BareFlatConcurrency <= 0 {
		c.BareFlatConcurrency = 256
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Sites < 1:
		return errors.New("bench: at least one site")
	case c.Interval < sites.MinInterval || c.Interval > sites.MaxInterval:
		return fmt.Errorf("bench: interval %s outside [%s, %s]", c.Interval, sites.MinInterval, sites.MaxInterval)
	case c.Duration <= 0:
		return errors.New("bench: the duration must be positive")
	case c.BareRuns < 0:
		return fmt.Errorf("bench: %d paced bare-loop runs: cannot be negative", c.BareRuns)
	}
	return nil
}

// Run runs the bench and returns its result. The result is returned (with
// Errors) even when a target fails; err is for runs that could not measure.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	start := time.Now()
	logf := func(format string, args ...any) {
		fmt.Fprintf(cfg.Log, "[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	r := &Result{
		Timestamp: start.UTC(),
		Mode:      cfg.Mode,
		Command:   cfg.Command,
		Machine:   machine(),
	}

	// The services' log goes to a file beside the results.
	logger := slog.New(slog.DiscardHandler)
	if cfg.OutDir != "" {
		if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
			return nil, err
		}
		lf, err := os.Create(filepath.Join(cfg.OutDir, start.UTC().Format("20060102-150405")+".log"))
		if err != nil {
			return nil, err
		}
		defer lf.Close()
		logger = slog.New(slog.NewTextHandler(lf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}

	// 1. The fleet.
	fleetSites := cfg.Sites
	if cfg.Ramp {
		fleetSites = max(cfg.Sites, cfg.RampMax)
	}
	fcfg := fleet.Config{
		Sites:         fleetSites,
		Seed:          cfg.Seed,
		Mix:           cfg.Mix,
		Epoch:         start.Truncate(time.Second),
		LatencyMedian: cfg.LatencyMedian,
	}.Defaults()
	plan, err := fleet.NewPlan(fcfg)
	if err != nil {
		return nil, err
	}
	logf("starting the fleet: %d sites (%v)", fleetSites, plan.Counts())
	budget := 15*time.Minute + cfg.Warmup + cfg.Duration + cfg.Drain + time.Duration(cfg.BareRuns)*cfg.pacedMaxDur() + cfg.BareFlat + time.Duration(fleetSites)*time.Millisecond
	if cfg.Ramp {
		budget += time.Duration(fleetSites/max(1, cfg.RampStep)+1) * 2 * cfg.Interval
	}
	fh, err := startFleet(fcfg, !cfg.FleetInProcess, cfg.FleetExe, budget, os.Stderr)
	if err != nil {
		return nil, err
	}
	defer fh.stop()
	r.Setup.FleetStartSeconds = round3(time.Since(start).Seconds())
	res, err := fleet.NewResolver(plan, fh.info)
	if err != nil {
		return nil, err
	}
	roots, err := fleet.CertPool([]byte(fh.info.CAPEM))
	if err != nil {
		return nil, err
	}

	// 2. NATS.
	dataDir, err := os.MkdirTemp("", "vigil-bench-")
	if err != nil {
		return nil, err
	}
	if cfg.KeepData {
		logf("NATS store kept in %s", dataDir)
	} else {
		defer os.RemoveAll(dataDir)
	}
	v, err := startNATS(ctx, vigilOptions{dataDir: dataDir, logger: logger, minWorkers: cfg.MinWorkers, maxWorkers: cfg.MaxWorkers, batchSize: cfg.BatchSize})
	if err != nil {
		return nil, err
	}
	closed := false
	defer func() {
		v.stop()
		if !closed {
			v.close()
		}
	}()
	r.Config = Settings{
		Sites: cfg.Sites, IntervalSeconds: cfg.Interval.Seconds(), DurationSeconds: cfg.Duration.Seconds(),
		WarmupSeconds: cfg.Warmup.Seconds(), DrainSeconds: cfg.Drain.Seconds(), Seed: cfg.Seed,
		Mix: cfg.Mix.String(), LatencyMedianMs: float64(cfg.LatencyMedian) / 1e6, Incidents: cfg.Incidents,
		FleetInProcess: cfg.FleetInProcess, MinWorkers: v.cfg.Checker.MinWorkers, MaxWorkers: v.cfg.Checker.MaxWorkers,
		BatchSize: v.cfg.Scheduler.BatchSize,
	}

	// 3. Sites, services.
	logf("registering %d sites on SITES", cfg.Sites)
	t := time.Now()
	if err := v.register(ctx, plan, res, cfg.Interval, 0, cfg.Sites); err != nil {
		return nil, fmt.Errorf("register sites: %w", err)
	}
	r.Setup.RegisterSeconds = round3(time.Since(t).Seconds())
	r.Setup.RegisterPerSec = round3(float64(cfg.Sites) / time.Since(t).Seconds())
	logf("registered in %.1fs; starting scheduler, checker (local), state machine and projector", r.Setup.RegisterSeconds)
	if err := v.start(res, roots, cfg.HTTPAddr); err != nil {
		return nil, err
	}
	r.OpsAddr = v.opsAddr
	if v.opsAddr != "" {
		logf("metrics and pprof on http://%s/debug/pprof/", v.opsAddr)
	}
	t0 := time.Now()
	if err := v.waitTargets(ctx, cfg.Sites, 10*time.Minute); err != nil {
		return nil, err
	}
	r.Setup.SchedulerLoadSeconds = round3(time.Since(t0).Seconds())
	logf("scheduler loaded %d sites in %.1fs", cfg.Sites, r.Setup.SchedulerLoadSeconds)
	if cfg.Ramp {
		if err := runRamp(ctx, cfg, r, v, plan, res, logf); err != nil {
			return nil, err
		}
		r.Machine.LoadAfter = loadavg()
		return r, nil
	}

	// 4. Warm-up, then the window.
	progress := func(until time.Time, what string) error {
		for time.Now().Before(until) {
			wait := min(10*time.Second, time.Until(until))
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
			if errs := v.errs(); len(errs) > 0 {
				return errors.Join(errs...)
			}
			smp := Sample{
				Phase:    what,
				Seconds:  round3(time.Since(t0).Seconds()),
				Checks:   int64(v.metric("vigil_checker_checks_total")),
				Expired:  int64(v.metric("vigil_checker_commands_expired_total")),
				Pool:     int(v.metric("vigil_checker_pool_size")),
				InFlight: int(v.metric("vigil_checker_in_flight")),
			}
			if n := len(r.Timeline); n > 0 {
				prev := r.Timeline[n-1]
				smp.Rate = round3(float64(smp.Checks-prev.Checks-(smp.Expired-prev.Expired)) / (smp.Seconds - prev.Seconds))
			}
			r.Timeline = append(r.Timeline, smp)
			logf("%s: %d checks (%.0f/s), %d expired, pool %d workers, %d in flight, %d left",
				what, smp.Checks, smp.Rate, smp.Expired, smp.Pool, smp.InFlight, int(time.Until(until).Seconds()+0.5))
		}
		return nil
	}
	logf("warming up for %s", cfg.Warmup)
	if err := progress(t0.Add(cfg.Warmup), "warm-up"); err != nil {
		return nil, err
	}

	bytes0, err := v.streamBytes(ctx)
	if err != nil {
		return nil, err
	}
	var prof *os.File
	if cfg.CPUProfile != "" {
		if prof, err = os.Create(cfg.CPUProfile); err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(prof); err != nil {
			return nil, err
		}
		r.Profiles.CPU = cfg.CPUProfile
	}
	ws := time.Now()
	cpu0, fcpu0 := selfCPU(), fh.cpu()
	busy0, _ := machineCPU()
	checks0 := v.metric("vigil_checker_checks_total")
	stalls0 := v.metric("vigil_checker_pull_stalls_total")

	incidents := map[int]time.Time{}
	if cfg.Incidents > 0 {
		healthy := plan.Sites(fleet.Healthy)
		step := max(1, len(healthy)/cfg.Incidents)
		var ids []string
		for k := 0; k < cfg.Incidents && k*step < len(healthy); k++ {
			i := healthy[k*step]
			ids = append(ids, plan.ID(i))
			incidents[i] = time.Now()
		}
		o := fleet.Outage{Mode: fleet.ModeStatus, Status: 503, For: fleet.Duration(cfg.IncidentFor)}
		if err := fleet.NewClient(fh.info.Control).StartOutages(ctx, ids, o); err != nil {
			return nil, fmt.Errorf("start control incidents: %w", err)
		}
		logf("started %d control-API outages (503)", len(ids))
	}

	var sampMu sync.Mutex
	var poolSum, poolMax, flightSum float64
	var nSamples int
	var rssMax int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tk := time.NewTicker(time.Second)
		defer tk.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tk.C:
			}
			p, f := v.metric("vigil_checker_pool_size"), v.metric("vigil_checker_in_flight")
			rss, _, _ := procMem(0)
			sampMu.Lock()
			poolSum += p
			flightSum += f
			poolMax = max(poolMax, p)
			rssMax = max(rssMax, rss)
			nSamples++
			sampMu.Unlock()
		}
	}()
	logf("measuring for %s", cfg.Duration)
	err = progress(ws.Add(cfg.Duration), "window")
	we := time.Now()
	cpu1, fcpu1 := selfCPU(), fh.cpu()
	busy1, _ := machineCPU()
	checks1 := v.metric("vigil_checker_checks_total")
	stalls1 := v.metric("vigil_checker_pull_stalls_total")
	close(stopSampling)
	<-sampled
	if prof != nil {
		pprof.StopCPUProfile()
		_ = prof.Close()
	}
	rssEnd, hwm, _ := procMem(0)
	r.Machine.LoadAfter = loadavg()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	_, fhwm := fh.mem()
	if err != nil {
		return nil, err
	}
	bytes1, err := v.streamBytes(ctx)
	if err != nil {
		return nil, err
	}
	if cfg.MemProfile != "" {
		if err := writeHeapProfile(cfg.MemProfile); err != nil {
			return nil, err
		}
		r.Profiles.Mem = cfg.MemProfile
	}
	r.Window = Window{Start: ws.UTC(), End: we.UTC(), Seconds: round3(we.Sub(ws).Seconds())}

	// 5. Drain, stop, read back.
	logf("draining for %s", cfg.Drain)
	if err := progress(we.Add(cfg.Drain), "drain"); err != nil {
		return nil, err
	}
	for _, e := range v.errs() {
		r.Errors = append(r.Errors, e.Error())
	}
	v.stop()
	r.NATSAsyncErrors = v.asyncErrs.Load()
	logf("services stopped; reading OBSERVATIONS and EVENTS")
	a := newAnalysis(plan, cfg.Interval, ws, we)
	nObs, err := readStream(ctx, v.js, events.StreamObservations, func(_ string, data []byte) { a.observation(data) })
	if err != nil {
		return nil, err
	}
	evs, det, err := readEvents(ctx, v.js, plan, incidents)
	if err != nil {
		return nil, err
	}
	v.close()
	closed = true
	logf("read %d observations and %d events", nObs, evs.Total)

	win := we.Sub(ws).Seconds()
	r.RequiredChecksPerSec = round3(float64(cfg.Sites) / cfg.Interval.Seconds())
	r.AchievedChecksPerSec = round3(float64(a.inWindow) / win)
	r.Checks = Checks{
		InWindow: a.inWindow, ExpiredInWindow: a.expiredIn,
		CheckerCountedInWindow: int(checks1 - checks0),
		PullStallsInWindow:     int(stalls1 - stalls0),
		Total:                  a.total, ByClass: map[string]int{}, ByPurpose: map[string]int{},
	}
	for k, n := range a.byClass {
		r.Checks.ByClass[string(k)] = n
	}
	for k, n := range a.byPurpose {
		r.Checks.ByPurpose[string(k)] = n
	}
	if a.okN > 0 {
		r.Checks.MeanOKMs = round3(a.okMsSum / float64(a.okN))
	}
	if a.undecoded > 0 {
		r.Errors = append(r.Errors, fmt.Sprintf("%d observations could not be read", a.undecoded))
	}
	r.Lateness = a.latenessStats()
	r.Freshness = a.freshness()
	r.Coverage = a.coverage(mapKeys(incidents))
	vcpu, fcpu := (cpu1 - cpu0).Seconds(), (fcpu1 - fcpu0).Seconds()
	r.CPU = CPU{
		VigilSeconds: round3(vcpu), FleetSeconds: round3(fcpu),
		VigilCores: round3(vcpu / win),
		OtherCores: round3(max(0, (busy1-busy0).Seconds()-vcpu-fcpu) / win),
	}
	if a.inWindow > 0 {
		r.CPU.VigilPer1000 = round3(vcpu / float64(a.inWindow) * 1000)
		r.CPU.FleetPer1000 = round3(fcpu / float64(a.inWindow) * 1000)
	}
	sampMu.Lock()
	r.Memory = Memory{VigilPeakRSS: max(hwm, rssMax), VigilRSSEnd: rssEnd, VigilHeapInuse: int64(ms.HeapInuse), FleetPeakRSS: fhwm}
	if nSamples > 0 {
		r.Pool = Pool{MeanWorkers: round3(poolSum / float64(nSamples)), MaxWorkers: poolMax, MeanInFlight: round3(flightSum / float64(nSamples))}
	}
	sampMu.Unlock()
	r.JetStream = JetStream{DeltaBytes: map[string]int64{}, DeltaMsgs: map[string]int64{}}
	var totalDelta int64
	for name, b1 := range bytes1 {
		b0 := bytes0[name]
		d := int64(b1[0]) - int64(b0[0])
		r.JetStream.DeltaBytes[name] = d
		r.JetStream.DeltaMsgs[name] = int64(b1[1]) - int64(b0[1])
		totalDelta += d
	}
	if a.inWindow > 0 {
		r.JetStream.BytesPerCheck = round3(float64(totalDelta) / float64(a.inWindow))
		r.JetStream.ObservationBytesPerCheck = round3(float64(r.JetStream.DeltaBytes[events.StreamObservations]) / float64(a.inWindow))
	}
	r.Events, r.Detection = evs, det

	// 6. The bare loop, with Vigil stopped.
	if !cfg.NoBare {
		conc := max(1, int(math.Round(r.Pool.MeanWorkers)))
		var urls []string
		for _, i := range plan.Sites(fleet.Healthy) {
			if _, down := incidents[i]; !down {
				urls = append(urls, res.URL(i))
			}
		}
		if len(urls) == 0 {
			urls = append(urls, res.URL(0))
		}
		bt := bareTarget{res: res, urls: urls, userAgent: v.cfg.Checker.UserAgent,
			timeout: min(sites.DefaultTimeout, cfg.Interval/2), fleet: fh}
		n := min(max(a.inWindow, 1), int(r.RequiredChecksPerSec*cfg.BarePacedMax.Seconds())+1)
		logf("bare loop: %d runs of %d checks paced at %.0f/s with %d goroutines", cfg.BareRuns, n, r.RequiredChecksPerSec, conc)
		r.setBarePaced(runPaced(ctx, cfg, bt, conc, r.RequiredChecksPerSec, n, logf))
		if b := r.BarePaced; b != nil && len(r.BarePacedRuns) > 1 {
			logf("bare loop: median %.3f CPU s / 1000 checks (runs %.3f–%.3f)", b.CPUPer1000, r.BarePacedCPUMin, r.BarePacedCPUMax)
		}
		if cfg.BareFlat > 0 {
			logf("bare loop: flat out for %s with %d goroutines", cfg.BareFlat, cfg.BareFlatConcurrency)
			flat := bt.run(ctx, cfg.BareFlatConcurrency, 0, 0, cfg.BareFlat)
			r.BareFlat = &flat
		}
	}
	r.evaluate()
	return r, nil
}

// pacedMaxDur is the longest one paced bare-loop run may take: its checks
// are bounded to BarePacedMax's worth at the required rate, and the slack
// lets the last ones finish.
func (c Config) pacedMaxDur() time.Duration {
	return c.BarePacedMax + 30*time.Second
}

// runPaced makes cfg.BareRuns paced runs of the bare loop one after another,
// each exactly alike (n checks at rate from conc goroutines), and logs each
// run's CPU per 1,000 checks. They are returned in order.
func runPaced(ctx context.Context, cfg Config, bt bareTarget, conc int, rate float64, n int, logf func(string, ...any)) []Bare {
	runs := make([]Bare, 0, cfg.BareRuns)
	for k := range cfg.BareRuns {
		b := bt.run(ctx, conc, rate, n, cfg.pacedMaxDur())
		logf("bare loop: paced run %d of %d: %.3f CPU s / 1000 checks (%d checks at %.0f/s, %d failed)",
			k+1, cfg.BareRuns, b.CPUPer1000, b.Checks, b.Rate, b.Failed)
		runs = append(runs, b)
	}
	return runs
}

func mapKeys(m map[int]time.Time) map[int]bool {
	out := make(map[int]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	runtime.GC()
	return pprof.Lookup("heap").WriteTo(f, 0)
}
