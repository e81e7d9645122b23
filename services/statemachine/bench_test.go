package statemachine_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/internal/natstest"
	"github.com/vigil-dev/vigil/services/sites"
	"github.com/vigil-dev/vigil/services/statemachine"
)

// BenchmarkHealthyObservations measures the state machine service on the
// common case: healthy observations of up sites, which must produce no event
// and no write. b.N observations over 1,000 sites are published first, then
// timed from the service's start until every bucket consumer has acknowledged
// them all. Reports observations per second (wall) and per CPU-second of the
// whole process (server included: this is an in-process embedded server).
//
//	go test -run '^$' -bench HealthyObservations -benchtime 20000x ./statemachine/
func BenchmarkHealthyObservations(b *testing.B) {
	s := natstest.Start(b, true)
	ctx := context.Background()
	reg := sites.NewRegistry(s.JS)
	const nSites = 1000
	ids := events.NewIDSource(rand.Reader)
	siteIDs := make([]string, nSites)
	for i := range siteIDs {
		siteIDs[i] = fmt.Sprintf("bench-%04d", i)
		if _, err := reg.Create(ctx, events.Site{ID: siteIDs[i], URL: "https://" + siteIDs[i] + ".example.com/"}); err != nil {
			b.Fatal(err)
		}
	}
	start := time.Now().Add(-time.Hour)
	for i := range b.N {
		site := siteIDs[i%nSites]
		at := start.Add(time.Duration(i) * time.Millisecond)
		id, _ := ids.New(at)
		obs := &events.Observation{ID: id, SiteID: site, Bucket: events.Bucket(site), Region: "local", CheckerID: "bench",
			CommandID: events.CommandID(site, "local", events.PurposeScheduled, at), Purpose: events.PurposeScheduled,
			DueAt: at, StartedAt: at, Class: events.ClassOK, StatusCode: 200}
		msg, err := events.Marshal(obs)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.JS.PublishMsgAsync(msg); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-s.JS.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publishing observations took over a minute")
	}
	eventsBefore := lastSeq(b, s.JS, events.StreamEvents)

	sm, err := statemachine.New(s.JS, statemachine.WithRegions("local"), statemachine.WithLeaseTTL(2*time.Second),
		statemachine.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		b.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	cpu0 := cpuTime()
	b.ResetTimer()
	t0 := time.Now()
	go func() { _ = sm.Run(runCtx) }()
	for !consumedAll(s.JS, siteIDs) {
		time.Sleep(20 * time.Millisecond)
	}
	wall := time.Since(t0)
	b.StopTimer()
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(b.N)/wall.Seconds(), "obs/s")
	b.ReportMetric(float64(b.N)/cpu.Seconds(), "obs/cpu-s")
	if got := lastSeq(b, s.JS, events.StreamEvents); got != eventsBefore {
		b.Errorf("healthy observations appended %d events", got-eventsBefore)
	}
}

func consumedAll(js jetstream.JetStream, siteIDs []string) bool {
	seen := map[int]bool{}
	for _, id := range siteIDs {
		bkt := events.Bucket(id)
		if seen[bkt] {
			continue
		}
		seen[bkt] = true
		c, err := js.Consumer(context.Background(), events.StreamObservations, statemachine.ConsumerName(bkt))
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		if err != nil || info.NumPending != 0 || info.NumAckPending != 0 {
			return false
		}
	}
	return true
}

func lastSeq(b *testing.B, js jetstream.JetStream, name string) uint64 {
	st, err := js.Stream(context.Background(), name)
	if err != nil {
		b.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return info.State.LastSeq
}

// cpuTime is the CPU time (user + system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
