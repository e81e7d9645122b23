package scheduler_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/internal/natstest"
	"github.com/vigil-dev/vigil/services/scheduler"
)

// ackedIDs counts, per command ID, the acknowledgements OnPublished reported
// and how many of them were duplicates.
type ackedIDs struct {
	mu   sync.Mutex
	n    map[string]int
	dups int
}

func (a *ackedIDs) hook(cmd events.CheckCommand, dup bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n == nil {
		a.n = map[string]int{}
	}
	a.n[cmd.ID]++
	if dup {
		a.dups++
	}
}

func (a *ackedIDs) snapshot() (map[string]int, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]int, len(a.n))
	for k, v := range a.n {
		out[k] = v
	}
	return out, a.dups
}

// histogram returns the sample count and sum of a histogram metric.
func histogram(t *testing.T, reg *prometheus.Registry, name string) (uint64, float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0, 0
}

// runFleet schedules sites due every 2s with 1s ticks (so about half the
// fleet comes due in each tick) until at least want commands were
// acknowledged, stops the scheduler and waits until the collector has every
// acknowledged command. It returns what arrived and what was acknowledged.
func runFleet(t *testing.T, n, want int, opts ...scheduler.Option) ([]received, map[string]int, *prometheus.Registry) {
	t.Helper()
	srv := natstest.Start(t, true)
	checks := collect(t, srv.JS)
	publishSites(t, srv.JS, fleet(n, "batch", 2*time.Second))
	reg := prometheus.NewRegistry()
	a := &ackedIDs{}
	r := startScheduler(t, srv.JS, append([]scheduler.Option{
		scheduler.WithRegisterer(reg), scheduler.WithTick(time.Second), scheduler.OnPublished(a.hook),
	}, opts...)...)
	waitFor(t, 20*time.Second, "commands acknowledged", func() bool { acks, _ := a.snapshot(); return len(acks) >= want })
	r.stop(t)
	acks, dups := a.snapshot()
	if dups > 0 {
		t.Errorf("%d acknowledgements were duplicates", dups)
	}
	waitFor(t, 10*time.Second, "collector has every acknowledged command", func() bool { return len(checks.all("")) >= len(acks) })
	got := checks.all("")

	seen := map[string]int{}
	for _, rc := range got {
		c := rc.cmd
		seen[c.ID]++
		if c.Region != "local" || c.ID != events.CommandID(c.SiteID, "local", c.Purpose, c.DueAt) {
			t.Errorf("command %s: region %s, ID not its own (site %s due %v)", c.ID, c.Region, c.SiteID, c.DueAt)
		}
	}
	for id, k := range seen {
		if k != 1 || acks[id] != 1 {
			t.Errorf("command %s arrived %d times, acknowledged %d times", id, k, acks[id])
		}
	}
	if len(seen) != len(acks) {
		t.Errorf("%d distinct commands arrived, %d acknowledged", len(seen), len(acks))
	}
	return got, acks, reg
}

// messages groups received commands by the message they arrived in, in
// arrival order within each.
func messages(rs []received) map[string][]received {
	out := map[string][]received{}
	for _, r := range rs {
		out[r.msgID] = append(out[r.msgID], r)
	}
	return out
}

// TestBatchesOneRegion: many sites due in the same tick go out in batches of
// at most BatchSize on batch subjects, and every command arrives exactly once
// with its own ID.
func TestBatchesOneRegion(t *testing.T) {
	t.Parallel()
	const size = 7
	got, acks, reg := runFleet(t, 300, 600, scheduler.WithBatchSize(size))

	msgs := messages(got)
	full, batches := 0, 0
	for id, rs := range msgs {
		m := rs[0]
		if len(rs) != m.size {
			t.Errorf("message %s: %d commands recorded, %d in it", id, len(rs), m.size)
		}
		if m.size == 1 {
			c := m.cmd
			if events.IsCheckBatchSubject(m.subject) || m.subject != events.CheckSubject("local", c.SiteID) || id != c.ID {
				t.Errorf("single command %s on %s with ID %s", c.ID, m.subject, id)
			}
			continue
		}
		batches++
		if m.size > size {
			t.Errorf("batch %s of %d commands, more than %d", id, m.size, size)
		}
		if m.size == size {
			full++
		}
		cmds := make([]events.CheckCommand, len(rs))
		for i, r := range rs {
			cmds[i] = r.cmd
		}
		earliest := slices.MinFunc(cmds, func(a, b events.CheckCommand) int { return a.DueAt.Compare(b.DueAt) }).DueAt
		if want := events.BatchID("local", earliest, cmds); id != want {
			t.Errorf("batch ID %s, want %s", id, want)
		}
		if !events.IsCheckBatchSubject(m.subject) || m.subject != events.CheckBatchSubject("local", id) {
			t.Errorf("batch %s on %s", id, m.subject)
		}
		if !slices.IsSortedFunc(cmds, func(a, b events.CheckCommand) int { return a.DueAt.Compare(b.DueAt) }) {
			t.Errorf("batch %s not in order of due instant", id)
		}
	}
	t.Logf("%d commands in %d messages: %d batches, %d of them full", len(got), len(msgs), batches, full)
	// About 150 commands come due per tick: nearly every message is a
	// full batch.
	if full == 0 || len(msgs) > len(got)/4 {
		t.Errorf("%d commands went out in %d messages (%d full batches of %d)", len(got), len(msgs), full, size)
	}
	count, sum := histogram(t, reg, "vigil_scheduler_commands_per_message")
	if int(count) != len(msgs) || int(sum) != len(acks) {
		t.Errorf("commands per message: %d messages, %v commands; want %d, %d", count, sum, len(msgs), len(acks))
	}
}

// TestBatchSizeOne: WithBatchSize(1) sends every command alone on its site's
// subject, as before batching.
func TestBatchSizeOne(t *testing.T) {
	t.Parallel()
	got, acks, reg := runFleet(t, 100, 200, scheduler.WithBatchSize(1))
	for _, r := range got {
		if r.size != 1 || events.IsCheckBatchSubject(r.subject) || r.subject != events.CheckSubject("local", r.cmd.SiteID) || r.msgID != r.cmd.ID {
			t.Errorf("command %s arrived on %s in a message %s of %d", r.cmd.ID, r.subject, r.msgID, r.size)
		}
	}
	count, sum := histogram(t, reg, "vigil_scheduler_commands_per_message")
	if int(count) != len(acks) || int(sum) != len(acks) {
		t.Errorf("commands per message: %d messages, %v commands; want %d of one", count, sum, len(acks))
	}
}
