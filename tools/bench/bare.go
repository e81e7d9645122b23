package bench

import (
	"cmp"
	"context"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil-dev/vigil/tools/fleet"
)

// Bare is one run of the bare HTTP loop: the same requests Vigil's checker
// makes (GET, the checker's User-Agent, keep-alive off, body closed unread,
// the fleet's resolver, the same timeout), from a fixed set of goroutines,
// with no NATS, no scheduling, no encoding. It is the floor a check can cost
// on this machine.
type Bare struct {
	Concurrency int     `json:"concurrency"`
	TargetRate  float64 `json:"target_rate"` // 0: flat out
	Checks      int     `json:"checks"`
	Failed      int     `json:"failed"`
	Seconds     float64 `json:"seconds"`
	Rate        float64 `json:"rate"`
	CPUSeconds  float64 `json:"cpu_seconds"`
	CPUPer1000  float64 `json:"cpu_seconds_per_1000_checks"`
	// Fleet is the fleet child's CPU over the same run.
	FleetCPUSeconds float64 `json:"fleet_cpu_seconds"`
	FleetCPUPer1000 float64 `json:"fleet_cpu_seconds_per_1000_checks"`
}

type bareTarget struct {
	res       *fleet.Resolver
	urls      []string
	userAgent string
	timeout   time.Duration
	fleet     *fleetHandle
}

// run makes requests from conc goroutines: at rate per second (0: as fast as
// they go) until maxChecks are done or maxDur has passed.
func (b bareTarget) run(ctx context.Context, conc int, rate float64, maxChecks int, maxDur time.Duration) Bare {
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            b.res.DialContext(&net.Dialer{KeepAlive: -1}),
		DisableKeepAlives:      true,
		ResponseHeaderTimeout:  b.timeout,
		MaxResponseHeaderBytes: 256 << 10,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: b.timeout}
	var done, failed atomic.Int64
	one := func(url string) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			failed.Add(1)
			return
		}
		req.Header.Set("User-Agent", b.userAgent)
		resp, err := client.Do(req)
		if err != nil {
			failed.Add(1)
		} else {
			_ = resp.Body.Close()
			if resp.StatusCode >= 400 {
				failed.Add(1)
			}
		}
		done.Add(1)
	}

	cpu0, fcpu0, t0 := selfCPU(), b.fleet.cpu(), time.Now()
	deadline := t0.Add(maxDur)
	var wg sync.WaitGroup
	if rate <= 0 {
		var next atomic.Int64
		for range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil && time.Now().Before(deadline) {
					n := next.Add(1) - 1
					if maxChecks > 0 && n >= int64(maxChecks) {
						return
					}
					one(b.urls[n%int64(len(b.urls))])
				}
			}()
		}
	} else {
		jobs := make(chan string)
		for range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for u := range jobs {
					one(u)
				}
			}()
		}
		issued := 0
		tick := time.NewTicker(5 * time.Millisecond)
	loop:
		for issued < maxChecks && ctx.Err() == nil {
			now := time.Now()
			if !now.Before(deadline) {
				break
			}
			due := min(maxChecks, int(rate*now.Sub(t0).Seconds()))
			for ; issued < due; issued++ {
				select {
				case jobs <- b.urls[issued%len(b.urls)]:
				case <-ctx.Done():
					break loop
				}
			}
			<-tick.C
		}
		tick.Stop()
		close(jobs)
	}
	wg.Wait()
	el := time.Since(t0)
	cpu, fcpu := selfCPU()-cpu0, b.fleet.cpu()-fcpu0
	r := Bare{
		Concurrency: conc, TargetRate: round3(rate),
		Checks: int(done.Load()), Failed: int(failed.Load()),
		Seconds: round3(el.Seconds()), CPUSeconds: round3(cpu.Seconds()),
		FleetCPUSeconds: round3(fcpu.Seconds()),
	}
	if r.Checks > 0 {
		r.Rate = round3(float64(r.Checks) / el.Seconds())
		r.CPUPer1000 = round3(cpu.Seconds() / float64(r.Checks) * 1000)
		r.FleetCPUPer1000 = round3(fcpu.Seconds() / float64(r.Checks) * 1000)
	}
	return r
}

// medianRun returns the index in runs of the run with the median CPU per
// 1,000 checks: for an even count, the lower of the two middle runs, so the
// floor Vigil is compared with is never raised by averaging. Runs that
// measured nothing (CPUPer1000 0: no check finished) carry no figure and are
// left out of the ordering rather than counted as the cheapest; if no run
// measured anything, the first is returned. Ties keep the runs' order. It
// returns -1 for no runs.
func medianRun(runs []Bare) int {
	if len(runs) == 0 {
		return -1
	}
	idx := measuredRuns(runs)
	if len(idx) == 0 {
		return 0
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(runs[a].CPUPer1000, runs[b].CPUPer1000) })
	return idx[(len(idx)-1)/2]
}

// cpuSpread returns the lowest and highest CPU per 1,000 checks of the runs
// that measured something (0, 0 if none did).
func cpuSpread(runs []Bare) (lo, hi float64) {
	for k, i := range measuredRuns(runs) {
		c := runs[i].CPUPer1000
		if k == 0 {
			lo, hi = c, c
		}
		lo, hi = min(lo, c), max(hi, c)
	}
	return lo, hi
}

// measuredRuns returns the indexes of the runs with a CPU per 1,000 checks.
func measuredRuns(runs []Bare) []int {
	var idx []int
	for i, b := range runs {
		if b.CPUPer1000 > 0 {
			idx = append(idx, i)
		}
	}
	return idx
}
