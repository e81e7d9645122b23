package catalog_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/projections/internal/scenario"
	"github.com/vigil-dev/vigil/projections/internal/testenv"
	"github.com/vigil-dev/vigil/projections/projector"
	"github.com/vigil-dev/vigil/projections/store"
)

// BenchEventsEnv sets BenchmarkRebuild's event count (default 5000):
//
//	VIGIL_BENCH_EVENTS=1000000 go test -run '^$' -bench BenchmarkRebuild -benchtime 1x ./catalog
const BenchEventsEnv = "VIGIL_BENCH_EVENTS"

// BenchmarkRebuild rebuilds every rebuildable projection (site_status,
// incidents, uptime) from an EVENTS stream of VIGIL_BENCH_EVENTS events, on
// SQLite and, with VIGIL_TEST_MYSQL_DSN, on MySQL. The stream's size does not
// depend on b.N: each iteration is one full rebuild. events/s is the figure
// for BENCHMARKS.md.
func BenchmarkRebuild(b *testing.B) {
	count := 5000
	if v := os.Getenv(BenchEventsEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("%s=%q", BenchEventsEnv, v)
		}
		count = n
	}
	n := testenv.StartNATS(b)
	g := scenario.ForEvents(count, 11, time.Date(2026, 5, 20, 0, 0, 0, 0, time.UTC))
	n.Publish(b, g.Messages...)
	stores := []struct {
		name string
		open func(testing.TB) *store.DB
	}{{"sqlite", testenv.SQLite}, {"mysql", testenv.MySQL}}
	for _, s := range stores {
		b.Run(s.name, func(b *testing.B) {
			db := s.open(b)
			projs := projections()
			opts := projector.RebuildOptions{Options: projector.Options{BatchSize: 1000, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}}
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				res, err := projector.Rebuild(context.Background(), db, n.JS, projs, "all", opts)
				if err != nil {
					b.Fatal(err)
				}
				if res.Events != uint64(len(g.Messages)) {
					b.Fatalf("rebuilt %d events of %d", res.Events, len(g.Messages))
				}
			}
			b.StopTimer()
			perRebuild := time.Since(start) / time.Duration(b.N)
			b.ReportMetric(float64(len(g.Messages))/perRebuild.Seconds(), "events/s")
			b.ReportMetric(float64(len(g.Messages)), "events")
		})
	}
}
