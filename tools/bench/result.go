package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is everything one bench run measured. It is written as JSON to
// bench-results/<timestamp>.json and bench-results/latest.json.
type Result struct {
	Timestamp time.Time `json:"timestamp"`
	Mode      string    `json:"mode"`
	Command   string    `json:"command"`
	Machine   Machine   `json:"machine"`
	Config    Settings  `json:"config"`
	Setup     Setup     `json:"setup"`
	Window    Window    `json:"window"`

	RequiredChecksPerSec float64 `json:"required_checks_per_sec"`
	AchievedChecksPerSec float64 `json:"achieved_checks_per_sec"`

	Checks    Checks    `json:"checks"`
	Lateness  Lateness  `json:"lateness"`
	Freshness Freshness `json:"freshness"`
	Coverage  Coverage  `json:"coverage"`
	CPU       CPU       `json:"cpu"`
	Memory    Memory    `json:"memory"`
	JetStream JetStream `json:"jetstream"`
	Events    Events    `json:"events"`
	Detection Detection `json:"detection"`
	Pool      Pool      `json:"pool"`

	// BarePaced is the paced bare-loop run with the median CPU per check
	// (see medianRun); BarePacedRuns is every paced run, in order, and
	// BarePacedCPUMin and BarePacedCPUMax their lowest and highest CPU per
	// 1,000 checks.
	BarePaced       *Bare   `json:"bare_paced,omitempty"`
	BarePacedRuns   []Bare  `json:"bare_paced_runs,omitempty"`
	BarePacedCPUMin float64 `json:"bare_paced_min_cpu_seconds_per_1000_checks,omitempty"`
	BarePacedCPUMax float64 `json:"bare_paced_max_cpu_seconds_per_1000_checks,omitempty"`
	BareFlat        *Bare   `json:"bare_flat,omitempty"`
	// CPURatio is Vigil's CPU per check over the median paced bare run's.
	CPURatio float64 `json:"cpu_ratio_vigil_over_bare"`

	// NATSAsyncErrors counts the client connection's asynchronous errors
	// during the run (slow-consumer drops).
	NATSAsyncErrors int64 `json:"nats_async_errors"`

	// Ramp is set by a ramp run (--ramp): the highest sustained rate.
	Ramp *Ramp `json:"ramp,omitempty"`

	// Timeline samples the checker every 10s from the services' start.
	Timeline []Sample `json:"timeline"`

	Targets  []Target `json:"targets"`
	Errors   []string `json:"errors,omitempty"`
	Profiles Profiles `json:"profiles"`
	// OpsAddr served /metrics and /debug/pprof/ during the run.
	OpsAddr string `json:"ops_addr,omitempty"`
}

// Settings records the run's parameters.
type Settings struct {
	Sites           int     `json:"sites"`
	IntervalSeconds float64 `json:"interval_seconds"`
	DurationSeconds float64 `json:"duration_seconds"`
	WarmupSeconds   float64 `json:"warmup_seconds"`
	DrainSeconds    float64 `json:"drain_seconds"`
	Seed            uint64  `json:"seed"`
	Mix             string  `json:"mix"`
	LatencyMedianMs float64 `json:"fleet_latency_median_ms"`
	Incidents       int     `json:"control_incidents"`
	FleetInProcess  bool    `json:"fleet_in_process"`
	MinWorkers      int     `json:"checker_min_workers"`
	MaxWorkers      int     `json:"checker_max_workers"`
	BatchSize       int     `json:"scheduler_batch_size"`
}

// Setup times the preparation.
type Setup struct {
	FleetStartSeconds    float64 `json:"fleet_start_seconds"`
	RegisterSeconds      float64 `json:"register_seconds"`
	RegisterPerSec       float64 `json:"register_per_sec"`
	SchedulerLoadSeconds float64 `json:"scheduler_load_seconds"`
}

// Window is the measurement window.
type Window struct {
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	Seconds float64   `json:"seconds"`
}

// Checks counts observations.
type Checks struct {
	// InWindow are real checks (not command_expired) started in the window.
	InWindow int `json:"in_window"`
	// ExpiredInWindow are commands that expired before they ran.
	ExpiredInWindow int `json:"expired_in_window"`
	// CheckerCountedInWindow is the checker's own counter over the window.
	CheckerCountedInWindow int `json:"checker_counted_in_window"`
	// PullStallsInWindow counts the checker's command pulls that went
	// silent and were re-issued (vigil_checker_pull_stalls_total, where the
	// checker has it).
	PullStallsInWindow int            `json:"pull_stalls_in_window"`
	Total              int            `json:"total_observations"`
	ByClass            map[string]int `json:"by_class"`
	ByPurpose          map[string]int `json:"by_purpose"`
	MeanOKMs           float64        `json:"mean_ok_check_ms"`
}

// CPU is CPU time over the window.
type CPU struct {
	VigilSeconds float64 `json:"vigil_seconds"`
	VigilPer1000 float64 `json:"vigil_seconds_per_1000_checks"`
	FleetSeconds float64 `json:"fleet_seconds"`
	FleetPer1000 float64 `json:"fleet_seconds_per_1000_checks"`
	// VigilCores is Vigil's average use of the machine's cores.
	VigilCores float64 `json:"vigil_cores"`
	// OtherCores is what the rest of the machine used meanwhile (other
	// work running on it), in cores.
	OtherCores float64 `json:"other_cores"`
}

// Memory is resident memory.
type Memory struct {
	VigilPeakRSS   int64 `json:"vigil_peak_rss_bytes"`
	VigilRSSEnd    int64 `json:"vigil_rss_end_bytes"`
	VigilHeapInuse int64 `json:"vigil_go_heap_inuse_bytes"`
	FleetPeakRSS   int64 `json:"fleet_peak_rss_bytes"`
}

// JetStream is what the streams stored during the window.
type JetStream struct {
	BytesPerCheck            float64          `json:"bytes_per_check"`
	ObservationBytesPerCheck float64          `json:"observation_bytes_per_check"`
	DeltaBytes               map[string]int64 `json:"delta_bytes_by_stream"`
	DeltaMsgs                map[string]int64 `json:"delta_msgs_by_stream"`
}

// Pool is the checker's worker pool over the window.
type Pool struct {
	MeanWorkers  float64 `json:"mean_workers"`
	MaxWorkers   float64 `json:"max_workers"`
	MeanInFlight float64 `json:"mean_in_flight"`
}

// Sample is the checker's state at one moment of the run.
type Sample struct {
	Phase   string  `json:"phase"`
	Seconds float64 `json:"t_seconds"`
	// Checks and Expired are the checker's counters so far; Rate is the
	// real checks per second since the previous sample.
	Checks   int64   `json:"checks"`
	Expired  int64   `json:"expired"`
	Rate     float64 `json:"rate"`
	Pool     int     `json:"pool"`
	InFlight int     `json:"in_flight"`
}

// Profiles names the profiles written.
type Profiles struct {
	CPU string `json:"cpu,omitempty"`
	Mem string `json:"mem,omitempty"`
}

// Target is one of issue 5's targets and whether the run met it.
type Target struct {
	Name     string `json:"name"`
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Pass     bool   `json:"pass"`
}

const gib = 1 << 30

// setBarePaced records the paced bare-loop runs: every one, their spread,
// and as BarePaced the median one, against which CPURatio is computed (one
// run is too noisy a floor). It sets nothing when there are no runs.
func (r *Result) setBarePaced(runs []Bare) {
	i := medianRun(runs)
	if i < 0 {
		return
	}
	med := runs[i]
	r.BarePaced = &med
	r.BarePacedRuns = runs
	r.BarePacedCPUMin, r.BarePacedCPUMax = cpuSpread(runs)
	if med.CPUPer1000 > 0 {
		r.CPURatio = round3(r.CPU.VigilPer1000 / med.CPUPer1000)
	}
}

// pacedSpread describes, for the table, the runs behind BarePaced: "" for a
// single run, else e.g. "median of 3: 0.188–0.214; ".
func (r *Result) pacedSpread() string {
	n := len(r.BarePacedRuns)
	if n < 2 {
		return ""
	}
	of := fmt.Sprint(n)
	if m := len(measuredRuns(r.BarePacedRuns)); m < n {
		of = fmt.Sprintf("%d measured runs of %d", m, n)
	}
	return fmt.Sprintf("median of %s: %.3f–%.3f; ", of, r.BarePacedCPUMin, r.BarePacedCPUMax)
}

func (r *Result) evaluate() {
	r.Targets = []Target{
		{
			Name:     "every site checked every interval",
			Target:   "0 missed slots, 0 gaps, 0 never checked",
			Measured: fmt.Sprintf("%d missed, %d with gaps, %d never", r.Coverage.MissedSlots, r.Coverage.SitesWithGap, r.Freshness.NeverChecked),
			Pass:     r.Coverage.MissedSlots == 0 && r.Coverage.SitesWithGap == 0 && r.Freshness.NeverChecked == 0 && r.Coverage.ExpectedSlots > 0,
		},
		{
			Name:     "lateness p99",
			Target:   "< 2s",
			Measured: fmt.Sprintf("%.3fs", r.Lateness.P99Seconds),
			Pass:     r.Lateness.N > 0 && r.Lateness.P99Seconds < 2,
		},
		{
			Name:     "false events",
			Target:   "0",
			Measured: fmt.Sprint(r.Events.False),
			Pass:     r.Events.False == 0,
		},
		{
			Name:     "peak RSS of Vigil",
			Target:   "< 1 GiB",
			Measured: fmt.Sprintf("%.0f MiB", float64(r.Memory.VigilPeakRSS)/(1<<20)),
			Pass:     r.Memory.VigilPeakRSS > 0 && r.Memory.VigilPeakRSS < gib,
		},
	}
	if r.BarePaced != nil {
		r.Targets = append(r.Targets, Target{
			Name:     "CPU per check vs bare loop",
			Target:   "<= 2x",
			Measured: fmt.Sprintf("%.2fx", r.CPURatio),
			Pass:     r.CPURatio > 0 && r.CPURatio <= 2,
		})
	}
}

// Passed reports whether every target was met.
func (r *Result) Passed() bool {
	for _, t := range r.Targets {
		if !t.Pass {
			return false
		}
	}
	return len(r.Errors) == 0
}

// WriteTable prints the result for people.
func (r *Result) WriteTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(k, v string) { fmt.Fprintf(tw, "  %s\t%s\n", k, v) }
	if r.Ramp != nil {
		fmt.Fprintf(tw, "\nVigil ramp: sites every %s, one interval settled and one measured per step\n\n", secs(r.Config.IntervalSeconds))
		fmt.Fprintln(tw, "  sites\trequired/s\tachieved/s\texpired\tlateness p99 ~\tcores\tCPU s/1000\tpool\tRSS MiB\theld\t")
		for _, s := range r.Ramp.Steps {
			fmt.Fprintf(tw, "  %d\t%.0f\t%.0f\t%d\t%.2fs\t%.2f\t%.3f\t%.0f\t%.0f\t%v\t\n",
				s.Sites, s.Required, s.Achieved, s.Expired, s.LatenessP99, s.VigilCores, s.CPUPer1000, s.Pool, mib(s.RSS), s.Held)
		}
		fmt.Fprintf(tw, "\n  highest sustained rate: %.0f checks/s; stopped %s\n", r.Ramp.MaxSustained, r.Ramp.Limit)
		_ = tw.Flush()
		return
	}
	fmt.Fprintf(tw, "\nVigil bench (%s): %d sites every %s, %s measured after %s warm-up\n",
		r.Mode, r.Config.Sites, secs(r.Config.IntervalSeconds), secs(r.Window.Seconds), secs(r.Config.WarmupSeconds))
	fmt.Fprintf(tw, "machine: %d CPUs (%s), load before %s, other work during the window %.2f cores\n\n",
		r.Machine.CPUs, r.Machine.CPUModel, r.Machine.LoadBefore, r.CPU.OtherCores)
	p("checks/s required", fmt.Sprintf("%.1f", r.RequiredChecksPerSec))
	p("checks/s achieved", fmt.Sprintf("%.1f  (%d checks; %d expired unrun; %d pull stalls)", r.AchievedChecksPerSec, r.Checks.InWindow, r.Checks.ExpiredInWindow, r.Checks.PullStallsInWindow))
	p("lateness p50 / p99 / max", fmt.Sprintf("%.3fs / %.3fs / %.3fs  (n=%d)", r.Lateness.P50Seconds, r.Lateness.P99Seconds, r.Lateness.MaxSeconds, r.Lateness.N))
	p("freshness p99 / max at end", fmt.Sprintf("%.1fs / %.1fs, never checked %d", r.Freshness.P99Seconds, r.Freshness.MaxSeconds, r.Freshness.NeverChecked))
	p("slots checked", fmt.Sprintf("%d of %d (%d sites missed one; %d sites with a gap > 1.5 intervals)",
		r.Coverage.CheckedSlots, r.Coverage.ExpectedSlots, r.Coverage.SitesMissingSlots, r.Coverage.SitesWithGap))
	p("CPU s / 1000 checks, Vigil", fmt.Sprintf("%.3f  (%.1f s, %.2f cores)", r.CPU.VigilPer1000, r.CPU.VigilSeconds, r.CPU.VigilCores))
	if r.Config.FleetInProcess {
		p("CPU s / 1000 checks, fleet", "in-process: included in Vigil's figure")
	} else {
		p("CPU s / 1000 checks, fleet", fmt.Sprintf("%.3f  (%.1f s)", r.CPU.FleetPer1000, r.CPU.FleetSeconds))
	}
	if b := r.BarePaced; b != nil {
		p("CPU s / 1000 checks, bare loop", fmt.Sprintf("%.3f  (%s%d checks at %.0f/s, %d goroutines)", b.CPUPer1000, r.pacedSpread(), b.Checks, b.Rate, b.Concurrency))
		p("CPU ratio Vigil / bare", fmt.Sprintf("%.2fx", r.CPURatio))
	}
	if b := r.BareFlat; b != nil {
		p("bare loop flat out", fmt.Sprintf("%.0f checks/s (%d goroutines, %.3f CPU s / 1000, fleet %.3f)", b.Rate, b.Concurrency, b.CPUPer1000, b.FleetCPUPer1000))
	}
	p("peak RSS Vigil", fmt.Sprintf("%.0f MiB (heap in use %.0f MiB)", mib(r.Memory.VigilPeakRSS), mib(r.Memory.VigilHeapInuse)))
	if !r.Config.FleetInProcess {
		p("peak RSS fleet", fmt.Sprintf("%.0f MiB", mib(r.Memory.FleetPeakRSS)))
	}
	p("JetStream bytes / check", fmt.Sprintf("%.0f (observations %.0f)", r.JetStream.BytesPerCheck, r.JetStream.ObservationBytesPerCheck))
	p("checker pool", fmt.Sprintf("mean %.0f, max %.0f workers; mean %.1f in flight", r.Pool.MeanWorkers, r.Pool.MaxWorkers, r.Pool.MeanInFlight))
	p("events", fmt.Sprintf("%d (%s); false %d", r.Events.Total, kv(r.Events.ByKind), r.Events.False))
	if r.Detection.Incidents > 0 {
		p("control incidents", fmt.Sprintf("%d: seems_down %d (p50 %.1fs, max %.1fs), down %d (p50 %.1fs)",
			r.Detection.Incidents, r.Detection.SeemsDown, r.Detection.SeemsDownP50Sec, r.Detection.SeemsDownMaxSec, r.Detection.Down, r.Detection.DownP50Sec))
	}
	if r.NATSAsyncErrors > 0 {
		p("NATS client async errors", fmt.Sprintf("%d (slow consumer drops; see the run's log)", r.NATSAsyncErrors))
	}
	p("setup", fmt.Sprintf("register %.1fs (%.0f/s), scheduler load %.1fs", r.Setup.RegisterSeconds, r.Setup.RegisterPerSec, r.Setup.SchedulerLoadSeconds))
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "  target\tgoal\tmeasured\t")
	for _, t := range r.Targets {
		mark := "PASS"
		if !t.Pass {
			mark = "FAIL"
		}
		fmt.Fprintf(tw, "  %s %s\t%s\t%s\t\n", mark, t.Name, t.Target, t.Measured)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(tw, "  error: %s\n", e)
	}
	_ = tw.Flush()
}

// Write stores the result as dir/<timestamp>.json and dir/latest.json and
// returns the first path.
func (r *Result) Write(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	b = append(b, '\n')
	path := filepath.Join(dir, r.Timestamp.UTC().Format("20060102-150405")+".json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return "", err
	}
	return path, os.WriteFile(filepath.Join(dir, "latest.json"), b, 0o644)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func secs(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(time.Second).String()
}

func kv(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
