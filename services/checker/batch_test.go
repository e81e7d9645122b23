package checker

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/internal/natstest"
)

// newBatch returns a batch of cmds for testRegion, with its derived ID.
func newBatch(cmds ...*events.CheckCommand) *events.CheckBatch {
	b := &events.CheckBatch{Region: testRegion}
	for _, c := range cmds {
		b.Commands = append(b.Commands, *c)
	}
	b.ID = events.BatchID(b.Region, b.Envelope().Time, b.Commands)
	return b
}

func publishBatch(t *testing.T, js jetstream.JetStream, b *events.CheckBatch) uint64 {
	t.Helper()
	m, err := events.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if !events.IsCheckBatchSubject(m.Subject) {
		t.Fatalf("batch published on %s, not a batch subject", m.Subject)
	}
	ack, err := js.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatalf("publish batch: %v", err)
	}
	return ack.Sequence
}

// sitesCommands returns one command per site, sites named prefix-0, prefix-1, ...
func sitesCommands(prefix, url string, n int) []*events.CheckCommand {
	due := time.Now().Truncate(time.Millisecond)
	var cmds []*events.CheckCommand
	for i := range n {
		cmds = append(cmds, command(fmt.Sprintf("%s-%d", prefix, i), url, due.Add(time.Duration(i)*time.Millisecond)))
	}
	return cmds
}

// Every command of a batch is checked as if it came alone (an expired one
// is reported, not checked), each observation names its own command, and the
// batch is acknowledged once, after the last observation is durable.
func TestBatchChecksEveryCommandThenAcks(t *testing.T) {
	ns := natstest.Start(t, true)
	site := newServer(t, http.StatusOK, 0)
	c, reg := newTestChecker(t, ns.JS, engine(t))
	start(t, c)

	cmds := sitesCommands("batch", site.URL, 5)
	late := command("batch-late", site.URL, time.Now().Add(-2*time.Minute))
	late.Deadline = time.Now().Add(-time.Minute)
	cmds = append(cmds, late)
	seq := publishBatch(t, ns.JS, newBatch(cmds...))

	obs := waitObservations(t, ns.JS, len(cmds))
	waitAcked(t, ns.JS, seq)
	if len(obs) != len(cmds) {
		t.Fatalf("%d observations for a batch of %d commands", len(obs), len(cmds))
	}
	for _, cmd := range cmds {
		i := slices.IndexFunc(obs, func(o events.Observation) bool { return o.CommandID == cmd.ID })
		if i < 0 {
			t.Errorf("no observation for command %s (site %s)", cmd.ID, cmd.SiteID)
			continue
		}
		o := obs[i]
		want := events.ClassOK
		if cmd == late {
			want = events.ClassCommandExpired
		}
		if o.SiteID != cmd.SiteID || o.Bucket != cmd.Bucket || !o.DueAt.Equal(cmd.DueAt) || o.Class != want {
			t.Errorf("observation %+v does not match command %+v (want class %s)", o, cmd, want)
		}
	}
	if n := site.requests.Load(); n != 5 {
		t.Errorf("site got %d requests, want 5 (the expired command is not checked)", n)
	}
	if got := metric(t, reg, "vigil_checker_batches_total"); got != 1 {
		t.Errorf("batches_total = %v, want 1", got)
	}
	if got := metric(t, reg, "vigil_checker_checks_total"); got != float64(len(cmds)) {
		t.Errorf("checks_total = %v, want %d", got, len(cmds))
	}
	if info := consumerInfo(t, ns.JS); info.NumRedelivered != 0 {
		t.Errorf("%d redeliveries; the batch should have been acknowledged once", info.NumRedelivered)
	}
}

// A command of a batch that cannot be run is left out and counted, and the
// rest of the batch runs; a batch that is wholly bad is terminated and does
// not hold up what follows it.
func TestBatchPoison(t *testing.T) {
	ns := natstest.Start(t, true)
	site := newServer(t, http.StatusOK, 0)
	c, reg := newTestChecker(t, ns.JS, engine(t), WithMinWorkers(1), WithMaxWorkers(1))
	ctx := context.Background()

	// Garbage on a batch subject.
	if _, err := ns.JS.Publish(ctx, events.CheckBatchSubject(testRegion, "01JGARBAGE"), []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	// A batch of another region, queued on this region's subject.
	other := newBatch(sitesCommands("other", site.URL, 2)...)
	other.Region = "elsewhere"
	m, err := events.Marshal(other)
	if err != nil {
		t.Fatal(err)
	}
	m.Subject = events.CheckBatchSubject(testRegion, other.ID)
	if _, err := ns.JS.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	// A good batch with one bad command (its bucket is wrong).
	cmds := sitesCommands("mixed", site.URL, 3)
	cmds[1].Bucket = (cmds[1].Bucket + 1) % events.Buckets
	seq := publishBatch(t, ns.JS, newBatch(cmds...))

	start(t, c)
	obs := waitObservations(t, ns.JS, 2)
	waitAcked(t, ns.JS, seq)
	if len(obs) != 2 {
		t.Fatalf("%d observations, want 2: %+v", len(obs), obs)
	}
	for _, o := range obs {
		if o.CommandID == cmds[1].ID {
			t.Errorf("the bad command was checked: %+v", o)
		}
	}
	// Two terminated batches and one command left out.
	if got := metric(t, reg, "vigil_checker_poison_total"); got != 3 {
		t.Errorf("poison_total = %v, want 3", got)
	}
	if n := site.requests.Load(); n != 2 {
		t.Errorf("site got %d requests, want 2", n)
	}
}

// If an observation of a batch cannot be made durable, the batch is not
// acknowledged: it comes back and all of its commands are checked again.
func TestBatchPublishFailureRedeliversTheBatch(t *testing.T) {
	ns, site, reg := startWithoutObservations(t)
	cmds := sitesCommands("flaky", site.URL, 3)
	seq := publishBatch(t, ns.JS, newBatch(cmds...))
	waitFor(t, "publish errors for the whole batch", func() bool {
		return metric(t, reg, "vigil_checker_publish_errors_total") >= 3
	})
	if n := checksPending(t, ns.JS); n != 1 {
		t.Fatalf("CHECKS holds %d messages after failed publishes, want the unacknowledged batch", n)
	}

	restoreObservations(t, ns)
	obs := waitObservations(t, ns.JS, 3)
	waitAcked(t, ns.JS, seq)
	seen := map[string]bool{}
	for _, o := range obs {
		seen[o.CommandID] = true
	}
	for _, cmd := range cmds {
		if !seen[cmd.ID] {
			t.Errorf("no observation for %s after the batch came back", cmd.SiteID)
		}
	}
	if n := site.requests.Load(); n < 6 {
		t.Errorf("site got %d requests; every command should have been checked twice", n)
	}
}

// A checker stopped in the middle of a batch acknowledges nothing of it: the
// checks it started finish, and the batch goes back to the stream, so another
// checker checks every command of it at once.
func TestShutdownMidBatchHandsItBack(t *testing.T) {
	ns := natstest.Start(t, true)
	site := newServer(t, http.StatusOK, 300*time.Millisecond)
	first, _ := newTestChecker(t, ns.JS, engine(t), WithMinWorkers(1), WithMaxWorkers(1), WithInstanceID("first"))
	r := start(t, first)
	cmds := sitesCommands("queued", site.URL, 4)
	seq := publishBatch(t, ns.JS, newBatch(cmds...))
	waitFor(t, "first check in flight", func() bool { return site.requests.Load() >= 1 })
	r.stop(t)
	if n := len(observations(t, ns.JS)); n == len(cmds) {
		t.Skip("the first checker finished the whole batch before it was stopped")
	}
	if p := checksPending(t, ns.JS); p != 1 {
		t.Fatalf("CHECKS holds %d messages after a stop mid-batch, want the batch", p)
	}

	began := time.Now()
	second, _ := newTestChecker(t, ns.JS, engine(t), WithInstanceID("second"))
	start(t, second)
	waitAcked(t, ns.JS, seq)
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("the handed-back batch took %v to be checked", took)
	}
	checkedBy := map[string]map[string]bool{}
	for _, o := range observations(t, ns.JS) {
		if checkedBy[o.CheckerID] == nil {
			checkedBy[o.CheckerID] = map[string]bool{}
		}
		checkedBy[o.CheckerID][o.CommandID] = true
	}
	for _, cmd := range cmds {
		if !checkedBy["second"][cmd.ID] {
			t.Errorf("the second checker did not check %s", cmd.SiteID)
		}
	}
}

// A batch's observations come from concurrent workers, but the message is
// settled exactly once: with a failure anywhere it is negatively
// acknowledged, never also acknowledged.
func TestBatchSettlesOnce(t *testing.T) {
	for _, tc := range []struct {
		name      string
		fail      int // how many of the jobs fail
		acks, nak int64
	}{
		{"all durable", 0, 1, 0},
		{"one failed", 1, 0, 1},
		{"all failed", 8, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newTestChecker(t, &fakeJS{}, instantProber{})
			msg := &fakeMsg{}
			b := &batchMsg{c: c, msg: msg, id: "b", pending: 8, progress: startProgress(msg, time.Hour)}
			done := make(chan struct{})
			for i := range 8 {
				go func() {
					defer func() { done <- struct{}{} }()
					b.done(i >= tc.fail, time.Second)
				}()
			}
			for range 8 {
				<-done
			}
			if got := msg.acks.Load(); got != tc.acks {
				t.Errorf("acks %d, want %d", got, tc.acks)
			}
			if got := msg.naks.Load(); got != tc.nak {
				t.Errorf("naks %d, want %d", got, tc.nak)
			}
		})
	}
}
