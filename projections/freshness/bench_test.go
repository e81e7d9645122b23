package freshness_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/projections/freshness"
	"github.com/vigil-dev/vigil/projections/internal/testenv"
)

// BenchSitesEnv sets BenchmarkFlush's site count (default 100,000):
//
//	VIGIL_BENCH_SITES=10000 go test -run '^$' -bench Flush -benchtime 2x ./freshness
const BenchSitesEnv = "VIGIL_BENCH_SITES"

// BenchmarkFlush measures what Run's flushes cost per observation with
// VIGIL_BENCH_SITES sites each checked once a minute, on SQLite in a
// temporary directory. One op is five minutes: every site observed once a
// minute, each minute followed by one of Run's ticks (Tick), so both
// variants do whole rollup cycles. rollup=1x (RollupInterval = Interval)
// writes site_status and both rollups every minute; rollup=5x writes
// site_status every minute and the rollups every fifth. Only the ticks are
// timed; flush-µs/obs is their cost per observation. A warm-up cycle first
// fills the tables, so the rollup flushes read stored histograms as they do
// in steady state.
func BenchmarkFlush(b *testing.B) {
	sites := benchSites(b)
	ids := make([]string, sites)
	for i := range ids {
		ids[i] = fmt.Sprintf("site-%07d", i)
	}
	const cycle = 5 // minutes per op
	for _, every := range []int{1, cycle} {
		b.Run(fmt.Sprintf("rollup=%dx", every), func(b *testing.B) {
			ctx := context.Background()
			a := freshness.New(testenv.SQLite(b), freshness.Config{Interval: time.Minute, RollupInterval: time.Duration(every) * time.Minute})
			var seq uint64
			minute := func(m int) {
				for i, id := range ids {
					seq++
					a.Observe(seq, benchObservation(id, i, m))
				}
			}
			tick := func() {
				if err := a.Tick(ctx); err != nil {
					b.Fatal(err)
				}
			}
			m := 0
			for ; m < cycle; m++ { // warm-up: the rows exist
				minute(m)
				tick()
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for j := 0; j < cycle; j++ {
					b.StopTimer()
					minute(m)
					m++
					b.StartTimer()
					tick()
				}
			}
			b.StopTimer()
			perObs := float64(b.Elapsed()) / float64(b.N*cycle*sites)
			b.ReportMetric(perObs/1e3, "flush-µs/obs")
			if a.Pending() != 0 {
				b.Fatalf("%d observations left unflushed after whole cycles", a.Pending())
			}
		})
	}
}

func benchSites(b *testing.B) int {
	v := os.Getenv(BenchSitesEnv)
	if v == "" {
		return 100_000
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q", BenchSitesEnv, v)
	}
	return n
}

// benchObservation is site i's check in minute m: mostly OK with response
// times spread over a few histogram buckets, 1 % failing, a certificate
// expiry on every tenth site.
func benchObservation(id string, i, m int) *events.ObservationSummary {
	at := time.Date(2026, 5, 28, 0, 0, 0, 0, time.UTC).Add(time.Duration(m)*time.Minute + time.Duration(i%60)*time.Second)
	o := &events.ObservationSummary{ID: id, SiteID: id, Region: "eu", Purpose: events.PurposeScheduled, StartedAt: at,
		Class: events.ClassOK, StatusCode: 200, Timings: events.Timings{TotalMs: float64(40 + (i*7+m*13)%400)}}
	if (i+m)%100 == 0 {
		o.Class, o.StatusCode = events.ClassHTTPStatus, 503
	}
	if i%10 == 0 {
		o.TLS = &events.CertExpiry{NotAfter: at.Add(60 * 24 * time.Hour)}
	}
	return o
}
