package checker

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestPoolSizeIsLittlesLaw(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rate     float64
		latency  time.Duration
		min, max int
		want     int
	}{
		// 100 checks/s × 0.2 s = 20 in progress; × 1.5 headroom = 30.
		{"littles law", 100, 200 * time.Millisecond, 2, 1000, 30},
		// 6,700 checks/s (Jetmon's rate) × 0.3 s × 1.5 = 3,015, above the ceiling.
		{"clamped to max", 6700, 300 * time.Millisecond, 8, 2000, 2000},
		{"clamped to min", 1, 10 * time.Millisecond, 8, 2000, 8},
		{"rounds up", 10, 110 * time.Millisecond, 1, 100, 2},
		{"idle", 0, 200 * time.Millisecond, 8, 2000, 8},
		{"no successful check yet", 500, 0, 8, 2000, 8},
	} {
		if got := poolSize(tc.rate, tc.latency, defaultHeadroom, tc.min, tc.max); got != tc.want {
			t.Errorf("%s: poolSize(%v, %v) = %d, want %d", tc.name, tc.rate, tc.latency, got, tc.want)
		}
	}
}

// A region where most checks time out: the estimator hears about every check,
// but only successes feed the latency, so the size stays near what the
// successful checks need instead of rate × timeout.
func TestSizingIgnoresFailureLatency(t *testing.T) {
	e := newEstimator()
	const rate = 200 // checks per second
	for range 10 {
		for i := range rate {
			e.started()
			if i%20 == 0 { // 5% succeed in 50ms
				e.finished(50*time.Millisecond, true)
			} else { // 95% time out after 30s
				e.finished(30*time.Second, false)
			}
		}
		e.dispatchWaited(time.Second) // saturated throughout
		s := e.tick(time.Second)
		if s.okLatency != 50*time.Millisecond {
			t.Fatalf("ok latency %v, want 50ms: failures leaked into it", s.okLatency)
		}
	}
	sz := sizing{min: 8, max: 2000, headroom: defaultHeadroom}
	s := e.tick(time.Second) // an empty interval keeps the last latency
	if s.okLatency != 50*time.Millisecond {
		t.Fatalf("ok latency %v after an interval without successes", s.okLatency)
	}
	got := poolSize(rate, s.okLatency, sz.headroom, sz.min, sz.max)
	// 200/s × 0.05 s × 1.5 = 15; counting the timeouts would give
	// 200 × ~28.5 s × 1.5 ≈ 8,500, i.e. the ceiling.
	if got != 15 {
		t.Errorf("pool size %d with 95%% timeouts, want 15", got)
	}
	// And from a saturated pool of 100 the controller holds, never grows.
	if next := sz.next(100, sample{rate: rate, okLatency: s.okLatency, saturated: true}); next != 100 {
		t.Errorf("saturated by timeouts, next size %d, want 100 (hold)", next)
	}
}

func TestSizingWithOnlyFailuresStaysAtMin(t *testing.T) {
	e := newEstimator()
	sz := sizing{min: 4, max: 500, headroom: defaultHeadroom}
	cur := 4
	for range 50 {
		for range 100 {
			e.started()
			e.finished(10*time.Second, false)
		}
		e.dispatchWaited(time.Second)
		cur = sz.next(cur, e.tick(time.Second))
	}
	if cur != 4 {
		t.Errorf("with every check failing the pool grew to %d", cur)
	}
}

func TestSizingNext(t *testing.T) {
	sz := sizing{min: 4, max: 100, headroom: defaultHeadroom}
	for _, tc := range []struct {
		name string
		cur  int
		s    sample
		want int
	}{
		// Saturated while checks succeed: the started rate is the pool's
		// throughput (10 workers / 0.1 s = 100/s); × 0.1 s × 1.5 = 15.
		{"grows when saturated by successes", 10, sample{rate: 100, okLatency: 100 * time.Millisecond, saturated: true}, 15},
		{"grows to target at once", 10, sample{rate: 400, okLatency: 100 * time.Millisecond}, 60},
		{"growth capped at max", 10, sample{rate: 4000, okLatency: 100 * time.Millisecond}, 100},
		{"holds when saturated", 50, sample{rate: 10, okLatency: 100 * time.Millisecond, saturated: true}, 50},
		{"shrinks slowly when idle", 50, sample{rate: 1, okLatency: 100 * time.Millisecond}, 45},
		{"shrinks by one at least", 5, sample{rate: 0, okLatency: 0}, 4},
		{"never below min", 4, sample{}, 4},
		{"shrinks to target when close", 50, sample{rate: 310, okLatency: 100 * time.Millisecond}, 47},
	} {
		if got := sz.next(tc.cur, tc.s); got != tc.want {
			t.Errorf("%s: next(%d, %+v) = %d, want %d", tc.name, tc.cur, tc.s, got, tc.want)
		}
	}
}

func TestEstimatorSmoothsRate(t *testing.T) {
	e := newEstimator()
	for range 100 {
		e.started()
	}
	if s := e.tick(time.Second); s.rate != 100 {
		t.Fatalf("first rate %v, want 100", s.rate)
	}
	// A silent interval lowers the rate, but not to zero at once.
	s := e.tick(time.Second)
	if s.rate <= 0 || s.rate >= 100 {
		t.Errorf("rate after a silent second %v, want between 0 and 100", s.rate)
	}
	if s.saturated {
		t.Error("saturated without any dispatcher wait")
	}
}

func TestPoolResize(t *testing.T) {
	jobs := make(chan job)
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	var mu sync.Mutex
	cur, maxSeen := 0, 0
	release := make(chan struct{})
	p := newPool(jobs, func(job) {
		mu.Lock()
		cur++
		maxSeen = max(maxSeen, cur)
		mu.Unlock()
		<-release
		mu.Lock()
		cur--
		mu.Unlock()
	}, 6, gauge)

	if n := p.resize(4); n != 4 {
		t.Fatalf("resize(4) = %d", n)
	}
	if n := p.resize(100); n != 6 {
		t.Fatalf("resize(100) = %d, want the ceiling 6", n)
	}
	// Occupy every worker, retire four of them while busy, then ask for six
	// again: busy retirees still count, so nothing new may start yet.
	for range 6 {
		jobs <- job{}
	}
	if n := p.resize(2); n != 2 {
		t.Fatalf("resize(2) = %d", n)
	}
	if n := p.resize(6); n != 2 {
		t.Fatalf("resize(6) with four retirees still busy = %d, want 2", n)
	}
	close(release)
	time.Sleep(50 * time.Millisecond)
	if n := p.resize(6); n != 6 {
		t.Fatalf("resize(6) after the retirees left = %d", n)
	}
	close(jobs)
	p.wait()
	if maxSeen > 6 {
		t.Errorf("%d jobs ran at once with a ceiling of 6", maxSeen)
	}
	if p.size() != 0 {
		t.Errorf("size %d after the job channel closed", p.size())
	}
}

// Commands that expire before a worker takes them are demand: they count in
// the rate, and the pool does not shrink while they happen.
func TestExpiredCommandsAreDemand(t *testing.T) {
	e := newEstimator()
	for range 100 {
		e.finished(20*time.Millisecond, true)
	}
	for range 1000 {
		e.expired()
	}
	smp := e.tick(time.Second)
	if !smp.saturated || smp.rate < 1000 {
		t.Fatalf("sample after expiries: %+v", smp)
	}
	s := sizing{min: 8, max: 2000, headroom: 1.5}
	if got := s.next(8, smp); got <= 8 {
		t.Errorf("pool stayed at %d with 1,000 commands expiring a second", got)
	}
	if got := s.next(50, sample{rate: 10, okLatency: 20 * time.Millisecond, saturated: true}); got != 50 {
		t.Errorf("a saturated pool shrank to %d", got)
	}
}
