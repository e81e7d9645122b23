package bench

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/vigil-dev/vigil/tools/fleet"
)

// Ramp is the result of a ramp: Vigil's highest sustained rate.
type Ramp struct {
	Steps []RampStep `json:"steps"`
	// MaxSustained is the required rate of the last step that held.
	MaxSustained float64 `json:"max_sustained_checks_per_sec"`
	// Limit says why the ramp stopped.
	Limit string `json:"limit"`
}

// RampStep is one measured step.
type RampStep struct {
	Sites    int     `json:"sites"`
	Required float64 `json:"required_checks_per_sec"`
	Achieved float64 `json:"achieved_checks_per_sec"`
	Expired  int     `json:"expired"`
	// LatenessP99 is estimated from the checker's lateness histogram,
	// interpolating within the bucket holding it.
	LatenessP99 float64 `json:"lateness_p99_seconds"`
	CPUPer1000  float64 `json:"vigil_cpu_seconds_per_1000_checks"`
	VigilCores  float64 `json:"vigil_cores"`
	Pool        float64 `json:"pool"`
	RSS         int64   `json:"rss_bytes"`
	Held        bool    `json:"held"`
}

// A step holds when the achieved rate is at least rampRateShare of the
// required one, at most rampExpiredShare of the checks expired, and the
// lateness p99 is under 2s.
const (
	rampRateShare    = 0.97
	rampExpiredShare = 0.001
)

// runRamp adds sites step by step while the pipeline keeps up. Each step
// registers RampStep more sites, waits one interval (the new sites get their
// first slot, the pool adapts) and measures the next interval from the
// checker's metrics and the process's CPU.
func runRamp(ctx context.Context, cfg Config, r *Result, v *vigil, plan *fleet.Plan, res *fleet.Resolver, logf func(string, ...any)) error {
	ramp := &Ramp{}
	r.Ramp = ramp
	n := cfg.Sites
	step := max(1, cfg.RampStep)
	for {
		logf("ramp: %d sites (%.0f checks/s): settling for %s", n, float64(n)/cfg.Interval.Seconds(), cfg.Interval)
		if err := sleepCtx(ctx, cfg.Interval); err != nil {
			return err
		}
		c0, e0, h0 := v.metric("vigil_checker_checks_total"), v.metric("vigil_checker_commands_expired_total"), v.histogram("vigil_checker_lateness_seconds")
		cpu0, t0 := selfCPU(), time.Now()
		var poolSum float64
		var samples int
		var rss int64
		for time.Since(t0) < cfg.Interval {
			if err := sleepCtx(ctx, min(time.Second, cfg.Interval-time.Since(t0))); err != nil {
				return err
			}
			poolSum += v.metric("vigil_checker_pool_size")
			samples++
			cur, _, _ := procMem(0)
			rss = max(rss, cur)
		}
		dt := time.Since(t0).Seconds()
		c1, e1, h1 := v.metric("vigil_checker_checks_total"), v.metric("vigil_checker_commands_expired_total"), v.histogram("vigil_checker_lateness_seconds")
		cpu := (selfCPU() - cpu0).Seconds()
		real := (c1 - c0) - (e1 - e0)
		st := RampStep{
			Sites:       n,
			Required:    round3(float64(n) / cfg.Interval.Seconds()),
			Achieved:    round3(real / dt),
			Expired:     int(e1 - e0),
			LatenessP99: histQuantile(h0, h1, 0.99),
			VigilCores:  round3(cpu / dt),
			Pool:        round3(poolSum / float64(max(1, samples))),
			RSS:         rss,
		}
		if real > 0 {
			st.CPUPer1000 = round3(cpu / real * 1000)
		}
		st.Held = st.Achieved >= rampRateShare*st.Required && float64(st.Expired) <= rampExpiredShare*st.Required*dt && st.LatenessP99 < 2
		ramp.Steps = append(ramp.Steps, st)
		logf("ramp: %d sites: required %.0f/s, achieved %.0f/s, %d expired, lateness p99 ~%.2fs, %.2f cores, pool %.0f: held %v",
			n, st.Required, st.Achieved, st.Expired, st.LatenessP99, st.VigilCores, st.Pool, st.Held)
		if !st.Held {
			ramp.Limit = fmt.Sprintf("at %d sites (%.0f checks/s): achieved %.0f/s, %d expired, lateness p99 ~%.2fs",
				n, st.Required, st.Achieved, st.Expired, st.LatenessP99)
			return nil
		}
		ramp.MaxSustained = st.Required
		if n >= plan.Len() {
			ramp.Limit = fmt.Sprintf("the fleet's %d sites were reached while holding", n)
			return nil
		}
		next := min(plan.Len(), n+step)
		if err := v.register(ctx, plan, res, cfg.Interval, n, next); err != nil {
			return fmt.Errorf("ramp: register sites: %w", err)
		}
		if err := v.waitTargets(ctx, next, 5*time.Minute); err != nil {
			return err
		}
		n = next
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// histogram returns the cumulative bucket counts (upper bound -> count) of a
// histogram, summed over its series.
func (v *vigil) histogram(name string) map[float64]uint64 {
	out := map[float64]uint64{}
	mfs, err := v.reg.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			addBuckets(out, m)
		}
	}
	return out
}

func addBuckets(out map[float64]uint64, m *dto.Metric) {
	h := m.GetHistogram()
	if h == nil {
		return
	}
	for _, b := range h.GetBucket() {
		out[b.GetUpperBound()] += b.GetCumulativeCount()
	}
	out[math.Inf(1)] += h.GetSampleCount()
}

// histQuantile estimates the q-quantile of the observations made between
// two snapshots of a histogram, interpolating linearly within the bucket
// that holds it (as Prometheus's histogram_quantile does).
func histQuantile(h0, h1 map[float64]uint64, q float64) float64 {
	total := float64(h1[math.Inf(1)] - h0[math.Inf(1)])
	if total == 0 {
		return 0
	}
	bounds := make([]float64, 0, len(h1))
	for b := range h1 {
		bounds = append(bounds, b)
	}
	slices.Sort(bounds)
	lower, below := 0.0, 0.0
	for _, b := range bounds {
		n := float64(h1[b] - h0[b])
		if n >= q*total {
			if math.IsInf(b, 1) {
				return lower
			}
			if n == below {
				return round3(b)
			}
			return round3(lower + (b-lower)*(q*total-below)/(n-below))
		}
		lower, below = b, n
	}
	return math.Inf(1)
}
