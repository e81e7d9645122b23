package checker

import (
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Sizing constants.
const (
	// defaultHeadroom multiplies the Little's-law estimate: room for bursts
	// (the scheduler publishes in ticks), for the checks that fail slowly
	// and for estimation lag.
	defaultHeadroom = 1.5
	// smoothing is the time constant of the rate and latency averages.
	smoothing = 5 * time.Second
	// saturatedWait is the share of a control interval the dispatcher must
	// have spent waiting for an idle worker for the pool to count as
	// saturated (every worker busy while commands wait).
	saturatedWait = 0.1
	// maxShrink is the largest share of the pool retired in one interval, so
	// a lull does not collapse a pool the next burst needs.
	maxShrink = 0.1
)

// poolSize is Little's law: the number of checks in progress L equals the
// rate at which they start λ times how long each takes W. It returns
// ceil(rate × okLatency × headroom) clamped to [minW, maxW].
//
// okLatency must be the latency of successful checks only. Failed checks,
// timeouts above all, are left out on purpose: their latency is the check
// timeout, they come in correlated waves (a region's network in trouble, a
// hosting provider down), and sizing on them grows the pool exactly when
// more concurrency makes things worse (Jetmon's runaway concurrency). Without
// a successful check to measure (okLatency <= 0) the pool stays at minW.
func poolSize(rate float64, okLatency time.Duration, headroom float64, minW, maxW int) int {
	if !(rate > 0) || okLatency <= 0 || math.IsInf(rate, 0) {
		return minW
	}
	n := math.Ceil(rate * okLatency.Seconds() * headroom)
	switch {
	case n >= float64(maxW):
		return maxW
	case n <= float64(minW):
		return minW
	}
	return int(n)
}

// sample is what the estimator measured over the last control interval,
// smoothed.
type sample struct {
	// rate is checks started per second.
	rate float64
	// okLatency is the latency of successful checks; 0 if none seen yet.
	okLatency time.Duration
	// saturated is whether commands waited for an idle worker.
	saturated bool
}

// sizing decides the pool size from samples.
type sizing struct {
	min, max int
	headroom float64
}

// next returns the pool size for the next interval, given the current one.
//
// It moves toward the Little's-law target with two rules that keep slow
// failures from steering it. The pool grows whenever the target is above it.
// While saturated the started rate is the pool's throughput, so the target is
// cur × headroom × okLatency / (mean latency of all checks): above cur while
// checks mostly succeed (the pool grows geometrically until it keeps up),
// below it while slow failures dominate; the pool then holds its size rather
// than shrink, since shrinking a saturated pool would only add to the backlog.
// It shrinks only when not saturated, by at most maxShrink per interval.
func (s sizing) next(cur int, smp sample) int {
	target := poolSize(smp.rate, smp.okLatency, s.headroom, s.min, s.max)
	switch {
	case target > cur:
		return target
	case target == cur || smp.saturated:
		return max(cur, s.min)
	}
	step := max(1, int(float64(cur)*maxShrink))
	return max(target, cur-step, s.min)
}

// estimator measures what sizing needs: how fast checks start, how long
// successful ones take, and whether the dispatcher waits for workers. Workers
// and the dispatcher report to it; the controller reads it once per interval.
type estimator struct {
	mu       sync.Mutex
	nStarted int
	nExpired int
	nOK      int
	okSum    time.Duration
	waited   time.Duration

	primed    bool
	rate      float64 // checks/s, smoothed
	okLatency float64 // seconds, smoothed; 0 = unknown
}

func newEstimator() *estimator { return &estimator{} }

// started records that a check started.
func (e *estimator) started() {
	e.mu.Lock()
	e.nStarted++
	e.mu.Unlock()
}

// expired records a command that expired before a worker took it: demand
// the pool did not meet. It counts as started (so the rate is the demand, not
// what the pool managed), and an interval with one is saturated (so the pool
// never shrinks while commands expire).
func (e *estimator) expired() {
	e.mu.Lock()
	e.nStarted++
	e.nExpired++
	e.mu.Unlock()
}

// finished records a check's latency. Only successful checks feed the
// latency estimate; see poolSize for why failures must not.
func (e *estimator) finished(d time.Duration, ok bool) {
	if !ok {
		return
	}
	e.mu.Lock()
	e.nOK++
	e.okSum += d
	e.mu.Unlock()
}

// dispatchWaited records that the dispatcher held a command for d waiting
// for an idle worker.
func (e *estimator) dispatchWaited(d time.Duration) {
	e.mu.Lock()
	e.waited += d
	e.mu.Unlock()
}

// tick closes an interval of length dt and returns the smoothed sample.
func (e *estimator) tick(dt time.Duration) sample {
	e.mu.Lock()
	defer e.mu.Unlock()
	if dt <= 0 {
		dt = time.Millisecond
	}
	alpha := 1 - math.Exp(-dt.Seconds()/smoothing.Seconds())
	rate := float64(e.nStarted) / dt.Seconds()
	if !e.primed {
		e.rate = rate
		e.primed = true
	} else {
		e.rate += alpha * (rate - e.rate)
	}
	if e.nOK > 0 {
		mean := (e.okSum / time.Duration(e.nOK)).Seconds()
		if e.okLatency == 0 {
			e.okLatency = mean
		} else {
			e.okLatency += alpha * (mean - e.okLatency)
		}
	}
	saturated := e.waited.Seconds() >= saturatedWait*dt.Seconds() || e.nExpired > 0
	e.nStarted, e.nExpired, e.nOK, e.okSum, e.waited = 0, 0, 0, 0, 0
	return sample{
		rate:      e.rate,
		okLatency: time.Duration(math.Round(e.okLatency * float64(time.Second))),
		saturated: saturated,
	}
}

// pool is a resizable set of worker goroutines taking jobs from one channel.
// Workers are never started per job: resize starts or retires whole workers,
// and a retired worker finishes its current job before it exits.
type pool struct {
	jobs  <-chan job
	run   func(job)
	max   int
	gauge prometheus.Gauge

	mu     sync.Mutex
	active []chan struct{} // quit channels of the workers taking jobs
	live   int             // worker goroutines alive, retiring ones included
	wg     sync.WaitGroup
}

func newPool(jobs <-chan job, run func(job), maxWorkers int, gauge prometheus.Gauge) *pool {
	return &pool{jobs: jobs, run: run, max: maxWorkers, gauge: gauge}
}

// size returns the number of workers taking jobs.
func (p *pool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.active)
}

// resize sets the number of workers taking jobs to n (at most max). Workers
// being retired still count against max until their job is done, so the
// number of concurrent jobs never exceeds max. It returns the new size.
func (p *pool) resize(n int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n = max(0, min(n, p.max))
	for len(p.active) > n {
		last := len(p.active) - 1
		close(p.active[last])
		p.active = p.active[:last]
		p.gauge.Dec()
	}
	for len(p.active) < n && p.live < p.max {
		quit := make(chan struct{})
		p.active = append(p.active, quit)
		p.live++
		p.gauge.Inc()
		p.wg.Add(1)
		go p.work(quit)
	}
	return len(p.active)
}

func (p *pool) work(quit chan struct{}) {
	defer func() {
		p.mu.Lock()
		p.live--
		p.mu.Unlock()
		p.wg.Done()
	}()
	for {
		// A retired worker must not take another job, even when one is
		// ready at the same moment.
		select {
		case <-quit:
			return
		default:
		}
		select {
		case <-quit:
			return
		case j, ok := <-p.jobs:
			if !ok {
				p.retire(quit)
				return
			}
			p.run(j)
		}
	}
}

// retire removes a worker whose job channel closed from the active set.
func (p *pool) retire(quit chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, q := range p.active {
		if q == quit {
			p.active = append(p.active[:i], p.active[i+1:]...)
			p.gauge.Dec()
			return
		}
	}
}

// wait returns when every worker has exited; the job channel must be closed.
func (p *pool) wait() { p.wg.Wait() }
