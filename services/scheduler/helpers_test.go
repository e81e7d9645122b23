package scheduler_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/internal/natstest"
	"github.com/vigil-dev/vigil/services/scheduler"
)

// ttl is the lease period of natstest's VIGIL_LEASES bucket.
var ttl = natstest.Options().LeaseTTL

// logger is quiet unless VIGIL_TEST_LOG is set.
func logger() *slog.Logger {
	if os.Getenv("VIGIL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

var ids = events.NewIDSource(rand.Reader)

// siteChange returns the SITES message of a change to site.
func siteChange(t testing.TB, site events.Site, kind events.ChangeKind, paused bool) *events.SiteChange {
	t.Helper()
	id, err := ids.New(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &events.SiteChange{ID: id, Change: kind, At: time.Now().UTC(), Actor: "test", Paused: paused, Site: site}
}

// publishSite stores a change and returns its stream sequence.
func publishSite(t testing.TB, js jetstream.JetStream, site events.Site, kind events.ChangeKind, paused bool) uint64 {
	t.Helper()
	msg, err := events.Marshal(siteChange(t, site, kind, paused))
	if err != nil {
		t.Fatal(err)
	}
	ack, err := js.PublishMsg(context.Background(), msg)
	if err != nil {
		t.Fatalf("publish site %s: %v", site.ID, err)
	}
	return ack.Sequence
}

// publishSites creates many sites at once.
func publishSites(t testing.TB, js jetstream.JetStream, sites []events.Site) {
	t.Helper()
	for _, s := range sites {
		msg, err := events.Marshal(siteChange(t, s, events.ChangeCreated, false))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsgAsync(msg); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("site publishes not acknowledged")
	}
}

func fleet(n int, prefix string, iv time.Duration) []events.Site {
	sites := make([]events.Site, n)
	for i := range sites {
		id := fmt.Sprintf("%s-%04d", prefix, i)
		sites[i] = events.Site{ID: id, URL: "https://" + id + ".example", Interval: events.Duration(iv)}
	}
	return sites
}

// received is a command as it arrived on CHECKS, alone or in a batch.
type received struct {
	cmd     events.CheckCommand
	arrived time.Time
	// The message it arrived in: its subject, its ID (the command's own, or
	// the batch's) and how many commands it carried.
	subject string
	msgID   string
	size    int
}

// collector consumes every message for region "local" from CHECKS, acking
// each (CHECKS is a work queue keeping one pending command per subject, so
// the collector must keep up), and records the commands in it: a single
// command, or every command of a batch.
type collector struct {
	mu   sync.Mutex
	cmds []received
}

func collect(t testing.TB, js jetstream.JetStream) *collector {
	t.Helper()
	ctx := context.Background()
	cons, err := js.CreateOrUpdateConsumer(ctx, events.StreamChecks, jetstream.ConsumerConfig{
		Durable:       "test-collector",
		FilterSubject: events.ChecksRegionFilter("local"),
		AckPolicy:     jetstream.AckExplicitPolicy,
		MaxAckPending: 20000,
	})
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		arrived := time.Now()
		cmds, id, err := decodeChecks(m.Subject(), m.Headers(), m.Data())
		if err != nil {
			t.Errorf("undecodable message on %s: %v", m.Subject(), err)
		}
		_ = m.Ack()
		c.mu.Lock()
		for _, cmd := range cmds {
			c.cmds = append(c.cmds, received{cmd: cmd, arrived: arrived, subject: m.Subject(), msgID: id, size: len(cmds)})
		}
		c.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return c
}

// decodeChecks decodes a CHECKS message: a batch (on a batch subject) or a
// single command. It returns the commands and the message's ID.
func decodeChecks(subject string, h nats.Header, data []byte) ([]events.CheckCommand, string, error) {
	if events.IsCheckBatchSubject(subject) {
		var b events.CheckBatch
		if _, err := events.Decode(h, data, &b); err != nil {
			return nil, "", err
		}
		return b.Commands, b.ID, nil
	}
	var cmd events.CheckCommand
	if _, err := events.Decode(h, data, &cmd); err != nil {
		return nil, "", err
	}
	return []events.CheckCommand{cmd}, cmd.ID, nil
}

// all returns what arrived so far, optionally only for one site.
func (c *collector) all(site string) []received {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []received
	for _, r := range c.cmds {
		if site == "" || r.cmd.SiteID == site {
			out = append(out, r)
		}
	}
	return out
}

// waitFor polls cond every 50ms until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %s", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// running is a scheduler running in the background.
type running struct {
	s      *scheduler.Scheduler
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func startScheduler(t testing.TB, js jetstream.JetStream, opts ...scheduler.Option) *running {
	t.Helper()
	opts = append([]scheduler.Option{
		scheduler.WithLeaseTTL(ttl),
		scheduler.WithRegions("local", "eu"),
		scheduler.WithLogger(logger()),
	}, opts...)
	s, err := scheduler.New(js, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{s: s, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *running) stop(t testing.TB) {
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil && err != context.Canceled {
				t.Errorf("scheduler Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("scheduler did not stop")
		}
	})
}

// published records, per scheduler, the (site, due) pairs it had acknowledged.
type published struct {
	mu    sync.Mutex
	pairs map[string]pub
}

type pub struct {
	due       time.Time
	site      string
	duplicate bool
}

func newPublished() *published { return &published{pairs: map[string]pub{}} }

func (p *published) hook(cmd events.CheckCommand, dup bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := cmd.SiteID + "@" + cmd.DueAt.Format(time.RFC3339Nano) + "/" + string(cmd.Purpose)
	p.pairs[k] = pub{due: cmd.DueAt, site: cmd.SiteID, duplicate: dup}
}

func (p *published) snapshot() map[string]pub {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]pub, len(p.pairs))
	for k, v := range p.pairs {
		out[k] = v
	}
	return out
}

// percentile returns the q-quantile of ds.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}
