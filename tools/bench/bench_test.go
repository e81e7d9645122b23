package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/services/scheduler"
	"github.com/vigil-dev/vigil/tools/fleet"
)

// TestMain lets the bench start the fleet child by re-executing the test
// binary, as it re-executes cmd/bench.
func TestMain(m *testing.M) {
	RunChildIfAsked()
	os.Exit(m.Run())
}

// TestTinyRun runs the whole harness: 50 sites every 10s, 15s measured,
// the fleet in a child process, the bare loop after (two paced runs).
func TestTinyRun(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole pipeline for about 22s")
	}
	out := t.TempDir()
	var log strings.Builder
	r, err := Run(context.Background(), Config{
		Mode:         "test",
		Sites:        50,
		Interval:     10 * time.Second,
		Duration:     15 * time.Second,
		Warmup:       2 * time.Second,
		Drain:        2 * time.Second,
		Mix:          fleet.Mix{},
		Incidents:    1,
		BareFlat:     time.Second,
		BarePacedMax: 500 * time.Millisecond,
		BareRuns:     2,
		OutDir:       out,
		CPUProfile:   filepath.Join(out, "cpu.prof"),
		MemProfile:   filepath.Join(out, "mem.prof"),
		Log:          &log,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Log(log.String())
	path, err := r.Write(out)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	r.WriteTable(&sb)
	t.Log(sb.String())

	b, err := os.ReadFile(filepath.Join(out, "latest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if other, _ := os.ReadFile(path); string(other) != string(b) {
		t.Fatal("latest.json differs from the timestamped file")
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{
		"required_checks_per_sec", "achieved_checks_per_sec",
		"lateness.p50_seconds", "lateness.p99_seconds", "lateness.max_seconds",
		"freshness.p99_seconds", "freshness.max_seconds", "freshness.never_checked",
		"cpu.vigil_seconds_per_1000_checks", "cpu.fleet_seconds_per_1000_checks",
		"memory.vigil_peak_rss_bytes", "jetstream.bytes_per_check", "events.false_events",
		"bare_paced.cpu_seconds_per_1000_checks", "bare_paced_runs", "bare_flat.rate", "cpu_ratio_vigil_over_bare",
		"coverage.missed_slots", "machine.cpus", "targets",
	} {
		if _, ok := lookup(doc, field); !ok {
			t.Errorf("result JSON lacks %s", field)
		}
	}
	checkPacedRuns(t, doc, 2)
	if r.RequiredChecksPerSec != 5 {
		t.Errorf("required %v checks/s, want 5", r.RequiredChecksPerSec)
	}
	if r.Freshness.NeverChecked != 0 || r.Coverage.MissedSlots != 0 || r.Coverage.ExpectedSlots < 49 {
		t.Errorf("not every site was checked: freshness %+v, coverage %+v", r.Freshness, r.Coverage)
	}
	if r.Checks.InWindow < 60 {
		t.Errorf("%d checks in a 15s window of 5/s", r.Checks.InWindow)
	}
	if r.Events.False != 0 {
		t.Errorf("false events: %+v", r.Events)
	}
	if r.Detection.SeemsDown != 1 {
		t.Errorf("the control incident was not detected: %+v (events %+v)", r.Detection, r.Events)
	}
	if r.CPU.VigilSeconds <= 0 || r.CPU.FleetSeconds <= 0 || r.Memory.VigilPeakRSS <= 0 || r.Memory.FleetPeakRSS <= 0 {
		t.Errorf("CPU %+v, memory %+v", r.CPU, r.Memory)
	}
	if r.BarePaced == nil || r.BarePaced.Checks == 0 || r.BareFlat == nil || r.BareFlat.Rate <= 0 || r.CPURatio <= 0 {
		t.Errorf("bare loop: paced %+v, flat %+v, ratio %v", r.BarePaced, r.BareFlat, r.CPURatio)
	}
	for k, b := range r.BarePacedRuns {
		if b.Failed > 0 {
			t.Errorf("bare loop: paced run %d: %d failed requests to healthy sites", k+1, b.Failed)
		}
	}
	for _, p := range []string{"cpu.prof", "mem.prof"} {
		if st, err := os.Stat(filepath.Join(out, p)); err != nil || st.Size() == 0 {
			t.Errorf("profile %s not written: %v", p, err)
		}
	}
}

// checkPacedRuns checks that the result JSON has want paced bare-loop runs
// and that bare_paced is one of them.
func checkPacedRuns(t *testing.T, doc map[string]any, want int) {
	t.Helper()
	v, _ := lookup(doc, "bare_paced_runs")
	runs, ok := v.([]any)
	if !ok || len(runs) != want {
		t.Errorf("bare_paced_runs = %v, want %d runs", v, want)
		return
	}
	med, _ := lookup(doc, "bare_paced")
	if !slices.ContainsFunc(runs, func(run any) bool { return reflect.DeepEqual(run, med) }) {
		t.Errorf("bare_paced %v is none of bare_paced_runs %v", med, runs)
	}
}

func lookup(doc map[string]any, path string) (any, bool) {
	var cur any = doc
	for part := range strings.SplitSeq(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// TestMedianRun checks which paced run is taken as the floor.
func TestMedianRun(t *testing.T) {
	runs := func(cpu ...float64) []Bare {
		out := make([]Bare, len(cpu))
		for i, c := range cpu {
			out[i] = Bare{CPUPer1000: c, Checks: 100}
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		runs   []Bare
		want   int
		lo, hi float64
	}{
		{"none", nil, -1, 0, 0},
		{"one", runs(0.2), 0, 0.2, 0.2},
		{"odd", runs(0.29, 0.171, 0.2), 2, 0.171, 0.29},
		{"even: the lower middle", runs(0.3, 0.1, 0.2, 0.4), 2, 0.1, 0.4},
		{"two", runs(0.25, 0.19), 1, 0.19, 0.25},
		{"ties keep the order", runs(0.2, 0.2, 0.2), 1, 0.2, 0.2},
		{"a run that measured nothing is left out", runs(0, 0.3, 0.2), 2, 0.2, 0.3},
		{"nothing measured but one", runs(0, 0.3, 0), 1, 0.3, 0.3},
		{"nothing measured", runs(0, 0), 0, 0, 0},
	} {
		if got := medianRun(tc.runs); got != tc.want {
			t.Errorf("%s: medianRun = %d, want %d", tc.name, got, tc.want)
		}
		if lo, hi := cpuSpread(tc.runs); lo != tc.lo || hi != tc.hi {
			t.Errorf("%s: cpuSpread = %v, %v, want %v, %v", tc.name, lo, hi, tc.lo, tc.hi)
		}
	}
}

// TestBarePacedResult checks the ratio against the median run and the
// table's bare-loop line.
func TestBarePacedResult(t *testing.T) {
	r := &Result{CPU: CPU{VigilPer1000: 0.392}}
	r.setBarePaced([]Bare{
		{CPUPer1000: 0.214, Checks: 100001, Rate: 1665, Concurrency: 95},
		{CPUPer1000: 0.188, Checks: 100001, Rate: 1666, Concurrency: 95},
		{CPUPer1000: 0.196, Checks: 100001, Rate: 1665.2, Concurrency: 95},
	})
	if r.BarePaced == nil || r.BarePaced.CPUPer1000 != 0.196 || len(r.BarePacedRuns) != 3 {
		t.Fatalf("bare paced %+v, runs %+v", r.BarePaced, r.BarePacedRuns)
	}
	if r.CPURatio != 2 || r.BarePacedCPUMin != 0.188 || r.BarePacedCPUMax != 0.214 {
		t.Errorf("ratio %v, spread %v–%v", r.CPURatio, r.BarePacedCPUMin, r.BarePacedCPUMax)
	}
	var sb strings.Builder
	r.WriteTable(&sb)
	want := "0.196  (median of 3: 0.188–0.214; 100001 checks at 1665/s, 95 goroutines)"
	if !strings.Contains(sb.String(), want) {
		t.Errorf("table lacks %q:\n%s", want, sb.String())
	}

	one := &Result{CPU: CPU{VigilPer1000: 0.4}}
	one.setBarePaced([]Bare{{CPUPer1000: 0.2, Checks: 6, Rate: 5, Concurrency: 1}})
	sb.Reset()
	one.WriteTable(&sb)
	if want := "0.200  (6 checks at 5/s, 1 goroutines)"; !strings.Contains(sb.String(), want) {
		t.Errorf("single run: table lacks %q:\n%s", want, sb.String())
	}

	none := &Result{}
	none.setBarePaced(nil)
	if none.BarePaced != nil || none.BarePacedRuns != nil || none.CPURatio != 0 {
		t.Errorf("no runs: %+v", none)
	}
}

// TestBareRunsConfig checks --bare-runs' default and that a negative count
// is refused.
func TestBareRunsConfig(t *testing.T) {
	c := Config{Sites: 1, Interval: time.Minute, Duration: time.Minute}.withDefaults()
	if c.BareRuns != 3 || c.BarePacedMax != 40*time.Second {
		t.Errorf("defaults: %d runs of at most %s, want 3 of 40s", c.BareRuns, c.BarePacedMax)
	}
	if err := c.validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	c.BareRuns = -1
	if err := c.withDefaults().validate(); err == nil {
		t.Error("-1 paced runs accepted")
	}
}

func TestPercentiles(t *testing.T) {
	s := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if pct(s, 0.5) != 5 || pct(s, 0.99) != 10 || pct(s, 1) != 10 || pct(s, 0) != 1 || pct(nil, 0.5) != 0 {
		t.Fatal("pct")
	}
}

// TestAnalysis feeds synthetic observations: one site checked on every
// slot, one that misses a slot, one never checked, one late.
func TestAnalysis(t *testing.T) {
	plan, err := fleet.NewPlan(fleet.Config{Sites: 4})
	if err != nil {
		t.Fatal(err)
	}
	iv := 10 * time.Second
	ws := time.Unix(1_800_000_000, 0)
	we := ws.Add(30 * time.Second)
	a := newAnalysis(plan, iv, ws, we)
	obs := func(i int, due time.Time, late time.Duration, class string) {
		b := fmt.Sprintf(`{"site_id":%q,"purpose":"scheduled","due_at":%q,"started_at":%q,"class":%q,"timings":{"total_ms":12}}`,
			plan.ID(i), due.UTC().Format(time.RFC3339Nano), due.Add(late).UTC().Format(time.RFC3339Nano), class)
		a.observation([]byte(b))
	}
	for i := range 3 {
		for due := scheduler.NextDue(plan.ID(i), iv, ws); due.Before(we); due = due.Add(iv) {
			if i == 1 && due.After(ws.Add(15*time.Second)) {
				continue // site 1 misses its last slot
			}
			late := 50 * time.Millisecond
			if i == 2 {
				late = 3 * time.Second
			}
			obs(i, due, late, "ok")
		}
	}
	obs(3, ws.Add(time.Second), 0, "command_expired") // unchecked, not a check
	c := a.coverage(nil)
	if c.ExpectedSlots != 12 || c.MissedSlots != 4 || c.SitesMissingSlots != 2 {
		t.Errorf("coverage %+v: want 12 expected, 4 missed (site 1's last, site 3's three), 2 sites", c)
	}
	f := a.freshness()
	if f.NeverChecked != 1 || f.MaxSeconds > 20 {
		t.Errorf("freshness %+v", f)
	}
	l := a.latenessStats()
	if l.N != 8 || l.P50Seconds != 0.05 || l.MaxSeconds != 3 {
		t.Errorf("lateness %+v", l)
	}
	if a.expiredIn != 1 || a.inWindow != 7 {
		t.Errorf("in window %d (want 7: one of site 2's starts falls after the window), expired %d", a.inWindow, a.expiredIn)
	}
}

func TestProcReaders(t *testing.T) {
	cpu, err := procCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if cpu < 0 || selfCPU() <= 0 {
		t.Fatalf("cpu %s, self %s", cpu, selfCPU())
	}
	rss, hwm, err := procMem(0)
	if err != nil || rss <= 0 || hwm < rss {
		t.Fatalf("rss %d hwm %d err %v", rss, hwm, err)
	}
	if busy, total := machineCPU(); busy <= 0 || total < busy {
		t.Fatalf("machine cpu %s of %s", busy, total)
	}
	if m := machine(); m.CPUs < 1 || m.LoadBefore == "" {
		t.Fatalf("machine %+v", m)
	}
}

func TestHistQuantile(t *testing.T) {
	inf := math.Inf(1)
	h0 := map[float64]uint64{0.1: 0, 1: 0, 2.5: 0, inf: 0}
	h1 := map[float64]uint64{0.1: 50, 1: 90, 2.5: 100, inf: 100}
	if got := histQuantile(h0, h1, 0.5); got != 0.1 {
		t.Errorf("p50 = %v, want 0.1", got)
	}
	if got := histQuantile(h0, h1, 0.95); got != 1.75 {
		t.Errorf("p95 = %v, want 1.75 (half-way through the 1-2.5 bucket)", got)
	}
	if got := histQuantile(h1, h1, 0.99); got != 0 {
		t.Errorf("no observations: %v", got)
	}
}
