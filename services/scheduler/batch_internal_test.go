package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/internal/natstest"
)

// acked records what OnPublished reported, by command ID.
type acked struct {
	mu  sync.Mutex
	dup map[string][]bool
}

func (a *acked) hook(cmd events.CheckCommand, duplicate bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.dup == nil {
		a.dup = map[string][]bool{}
	}
	a.dup[cmd.ID] = append(a.dup[cmd.ID], duplicate)
}

func (a *acked) get(id string) []bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.dup[id])
}

// newPublisher returns a scheduler that is not run: the tests call publish
// (or tick) themselves and wait for the acknowledgements.
func newPublisher(t *testing.T, js jetstream.JetStream, opts ...Option) (*Scheduler, *acked) {
	t.Helper()
	a := &acked{}
	s, err := New(js, append([]Option{WithLogger(slog.New(slog.DiscardHandler)), OnPublished(a.hook)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return s, a
}

// publishNow publishes cmds and waits for their acknowledgements.
func (s *Scheduler) publishNow(cmds []*events.CheckCommand) {
	s.publish(cmds)
	s.acks.Wait()
}

// testCommand returns a command for site in region due at due.
func testCommand(site, region string, due time.Time) *events.CheckCommand {
	due = due.UTC().Truncate(time.Millisecond)
	return &events.CheckCommand{
		ID:       events.CommandID(site, region, events.PurposeScheduled, due),
		SiteID:   site,
		Bucket:   events.Bucket(site),
		Region:   region,
		Purpose:  events.PurposeScheduled,
		DueAt:    due,
		Deadline: due.Add(5 * time.Second),
		Check:    events.CheckSpec{URL: "https://" + site + ".example", Method: "GET", Timeout: events.Duration(10 * time.Second)},
	}
}

func testCommands(n int, prefix, region string, due time.Time) []*events.CheckCommand {
	cmds := make([]*events.CheckCommand, n)
	for i := range cmds {
		cmds[i] = testCommand(fmt.Sprintf("%s-%03d", prefix, i), region, due.Add(time.Duration(i)*time.Millisecond))
	}
	return cmds
}

// stored is a message held in CHECKS.
type stored struct {
	subject string
	msgID   string // Nats-Msg-Id
	id      string // the batch's or command's ID
	cmds    []events.CheckCommand
	bytes   int
	ttl     string // Nats-TTL
}

// storedChecks reads every message held in CHECKS, in stream order.
func storedChecks(t *testing.T, js jetstream.JetStream) []stored {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, events.StreamChecks)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []stored
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		s := stored{subject: m.Subject, msgID: m.Header.Get(jetstream.MsgIDHeader), bytes: len(m.Data), ttl: m.Header.Get(jetstream.MsgTTLHeader)}
		if events.IsCheckBatchSubject(m.Subject) {
			var b events.CheckBatch
			if _, err := events.Decode(m.Header, m.Data, &b); err != nil {
				t.Fatalf("batch on %s: %v", m.Subject, err)
			}
			s.id, s.cmds = b.ID, b.Commands
		} else {
			var c events.CheckCommand
			if _, err := events.Decode(m.Header, m.Data, &c); err != nil {
				t.Fatalf("command on %s: %v", m.Subject, err)
			}
			s.id, s.cmds = c.ID, []events.CheckCommand{c}
		}
		out = append(out, s)
	}
	return out
}

// checkMessage asserts that a stored message is well formed: a single command
// on its site's subject, or a batch of one region's commands on the batch
// subject its derived ID names.
func checkMessage(t *testing.T, m stored) {
	t.Helper()
	if m.msgID != m.id {
		t.Errorf("message %s on %s has Nats-Msg-Id %s", m.id, m.subject, m.msgID)
	}
	if len(m.cmds) == 1 {
		c := m.cmds[0]
		if want := events.CheckSubject(c.Region, c.SiteID); m.subject != want {
			t.Errorf("single command on %s, want %s", m.subject, want)
		}
		if m.ttl != "" {
			t.Errorf("single command %s has a TTL (%s): a newer command replaces it", c.ID, m.ttl)
		}
		return
	}
	if ttl, err := time.ParseDuration(m.ttl); err != nil || ttl < time.Second {
		t.Errorf("batch %s has TTL %q (%v), want at least a second", m.id, m.ttl, err)
	}
	region := m.cmds[0].Region
	cmds := make([]events.CheckCommand, len(m.cmds))
	earliest := m.cmds[0].DueAt
	for i, c := range m.cmds {
		if c.Region != region {
			t.Errorf("batch %s mixes regions %s and %s", m.id, region, c.Region)
		}
		if c.DueAt.Before(earliest) {
			earliest = c.DueAt
		}
		cmds[i] = c
	}
	if want := events.BatchID(region, earliest, cmds); m.id != want {
		t.Errorf("batch ID %s, want %s", m.id, want)
	}
	if want := events.CheckBatchSubject(region, m.id); m.subject != want {
		t.Errorf("batch on %s, want %s", m.subject, want)
	}
}

func ids(cmds []events.CheckCommand) []string {
	out := make([]string, len(cmds))
	for i, c := range cmds {
		out[i] = c.ID
	}
	return out
}

func ptrIDs(cmds []*events.CheckCommand) []string {
	out := make([]string, len(cmds))
	for i, c := range cmds {
		out[i] = c.ID
	}
	return out
}

// TestBatchNeverMixesRegions publishes the interleaved commands of two
// regions: each region's commands go out in batches of their own, of at most
// BatchSize, in their order, on the region's subjects.
func TestBatchNeverMixesRegions(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, true)
	s, _ := newPublisher(t, srv.JS, WithRegions("local", "eu"), WithBatchSize(4))
	due := time.Now()
	local := testCommands(7, "loc", "local", due)
	eu := testCommands(6, "eu", "eu", due)
	var mixed []*events.CheckCommand
	for i := range max(len(local), len(eu)) {
		if i < len(local) {
			mixed = append(mixed, local[i])
		}
		if i < len(eu) {
			mixed = append(mixed, eu[i])
		}
	}
	s.publishNow(mixed)

	got := map[string][]string{}
	sizes := map[string][]int{}
	for _, m := range storedChecks(t, srv.JS) {
		checkMessage(t, m)
		region := m.cmds[0].Region
		if !strings.HasPrefix(m.subject, "vigil.checks."+region+".") {
			t.Errorf("commands of %s on %s", region, m.subject)
		}
		got[region] = append(got[region], ids(m.cmds)...)
		sizes[region] = append(sizes[region], len(m.cmds))
	}
	if want := ptrIDs(local); !slices.Equal(got["local"], want) {
		t.Errorf("local commands stored %v, want %v", got["local"], want)
	}
	if want := ptrIDs(eu); !slices.Equal(got["eu"], want) {
		t.Errorf("eu commands stored %v, want %v", got["eu"], want)
	}
	if !slices.Equal(sizes["local"], []int{4, 3}) || !slices.Equal(sizes["eu"], []int{4, 2}) {
		t.Errorf("batch sizes local %v eu %v, want [4 3] and [4 2]", sizes["local"], sizes["eu"])
	}
}

// TestBatchResentIsDuplicate sends the same commands again as the re-send
// path does after a lost acknowledgement: carried over (in map order) and
// published by the next tick. The batch gets the same ID and the stream drops
// it as a duplicate; other company makes another batch.
func TestBatchResentIsDuplicate(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, true)
	now := time.Now()
	s, a := newPublisher(t, srv.JS, WithNow(func() time.Time { return now }))
	cmds := testCommands(12, "dup", "local", now.Add(-time.Second))
	// The sites are scheduled here, so their carried commands are not stale.
	s.mu.Lock()
	for _, c := range cmds {
		if !s.st.owned[c.Bucket] {
			s.st.acquire(c.Bucket)
		}
		s.st.sites[c.Bucket][c.SiteID] = &target{id: c.SiteID, bucket: c.Bucket, active: true}
	}
	s.mu.Unlock()

	resend := func() {
		t.Helper()
		shuffled := slices.Clone(cmds)
		rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if n := s.carryOver(shuffled); n != 0 {
			t.Fatalf("carryOver dropped %d", n)
		}
		s.tick()
		s.acks.Wait()
	}
	resend()
	first := storedChecks(t, srv.JS)
	if len(first) != 1 || len(first[0].cmds) != len(cmds) {
		t.Fatalf("first send stored %d messages, want one batch of %d", len(first), len(cmds))
	}
	checkMessage(t, first[0])
	for _, c := range cmds {
		if d := a.get(c.ID); !slices.Equal(d, []bool{false}) {
			t.Fatalf("command %s acknowledged %v after the first send", c.ID, d)
		}
	}

	resend()
	if again := storedChecks(t, srv.JS); len(again) != 1 || again[0].id != first[0].id {
		t.Fatalf("after the re-send CHECKS holds %d messages, want the first batch alone", len(again))
	}
	for _, c := range cmds {
		if d := a.get(c.ID); !slices.Equal(d, []bool{false, true}) {
			t.Errorf("command %s acknowledged %v, want new then duplicate", c.ID, d)
		}
	}

	// Fewer commands (one dropped as past its deadline, say) make another
	// batch, which the stream keeps.
	s.publishNow(slices.Clone(cmds[1:]))
	if after := storedChecks(t, srv.JS); len(after) != 2 || after[1].id == first[0].id {
		t.Errorf("a batch of other commands: CHECKS holds %d messages", len(after))
	}
}

// TestBatchSplitByBytes publishes commands whose specs are so large that
// BatchSize of them would exceed CHECKS's maximum message size: they go out
// in several batches, each under the byte bound, and none is lost.
func TestBatchSplitByBytes(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, true)
	s, a := newPublisher(t, srv.JS)
	cmds := testCommands(DefaultBatchSize, "big", "local", time.Now())
	for i, c := range cmds {
		c.Check.Headers = map[string]string{"X-Padding": strings.Repeat(fmt.Sprint(i%10), 3000)}
		c.Check.Keywords = []string{strings.Repeat("k", 3000)}
	}
	s.publishNow(cmds)

	msgs := storedChecks(t, srv.JS)
	var got []string
	for _, m := range msgs {
		checkMessage(t, m)
		if m.bytes > maxBatchBytes {
			t.Errorf("message of %d commands is %d bytes, over the bound of %d", len(m.cmds), m.bytes, maxBatchBytes)
		}
		got = append(got, ids(m.cmds)...)
	}
	if want := ptrIDs(cmds); !slices.Equal(got, want) {
		t.Errorf("stored %d commands, want all %d in order", len(got), len(want))
	}
	if len(msgs) < 2 || len(msgs) > 4 {
		t.Errorf("%d commands of ~6 KiB went out in %d messages, want 2 to 4 batches", len(cmds), len(msgs))
	}
	if n := testutil.ToFloat64(s.m.errors); n != 0 {
		t.Errorf("%v publish errors", n)
	}
	for _, c := range cmds {
		if d := a.get(c.ID); len(d) != 1 {
			t.Errorf("command %s acknowledged %d times", c.ID, len(d))
		}
	}

	// With a far lower bound, the halving goes on down to single commands.
	srv2 := natstest.Start(t, true)
	s2, _ := newPublisher(t, srv2.JS)
	s2.maxBatchBytes = 8 << 10
	few := testCommands(5, "mid", "local", time.Now())
	for _, c := range few {
		c.Check.Keywords = []string{strings.Repeat("k", 3000)}
	}
	s2.publishNow(few)
	msgs = storedChecks(t, srv2.JS)
	got = nil
	for _, m := range msgs {
		checkMessage(t, m)
		if len(m.cmds) > 1 && m.bytes > s2.maxBatchBytes {
			t.Errorf("batch of %d is %d bytes, over the bound %d", len(m.cmds), m.bytes, s2.maxBatchBytes)
		}
		got = append(got, ids(m.cmds)...)
	}
	if !slices.Equal(got, ptrIDs(few)) {
		t.Errorf("stored %v, want %v", got, ptrIDs(few))
	}
	// 5 → 2 + 3 → 2 + (1 + 2): batches of two fit 8 KiB, of three do not.
	var sizes []int
	for _, m := range msgs {
		sizes = append(sizes, len(m.cmds))
	}
	if !slices.Equal(sizes, []int{2, 1, 2}) {
		t.Errorf("message sizes %v, want [2 1 2]", sizes)
	}
}

// TestBatchEncodeErrorKeepsOthers: a command that cannot be encoded (a
// deadline beyond year 9999) makes its batch unencodable; the other commands
// still go out, one by one, and the bad one is counted as an error.
func TestBatchEncodeErrorKeepsOthers(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, true)
	s, _ := newPublisher(t, srv.JS)
	cmds := testCommands(5, "enc", "local", time.Now())
	cmds[2].Deadline = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	s.publishNow(cmds)

	var got []string
	for _, m := range storedChecks(t, srv.JS) {
		checkMessage(t, m)
		got = append(got, ids(m.cmds)...)
	}
	want := ptrIDs(slices.Delete(slices.Clone(cmds), 2, 3))
	if !slices.Equal(got, want) {
		t.Errorf("stored %v, want the four good commands %v", got, want)
	}
	if n := testutil.ToFloat64(s.m.errors); n != 1 {
		t.Errorf("publish errors %v, want 1", n)
	}
}

func TestBatchSizeValidated(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, false)
	for _, n := range []int{0, -1} {
		if _, err := New(srv.JS, WithBatchSize(n)); err == nil {
			t.Errorf("New accepted batch size %d", n)
		}
	}
	s, err := New(srv.JS)
	if err != nil {
		t.Fatal(err)
	}
	if s.o.batchSize != DefaultBatchSize {
		t.Errorf("default batch size %d", s.o.batchSize)
	}
}

// A batch is kept until the last of its commands' deadlines, in whole
// seconds, and at least a second.
func TestBatchTTL(t *testing.T) {
	now := time.Date(2026, 11, 23, 4, 0, 0, 0, time.UTC)
	cmd := func(deadline time.Duration) *events.CheckCommand {
		return &events.CheckCommand{Deadline: now.Add(deadline)}
	}
	for _, c := range []struct {
		deadlines []time.Duration
		want      time.Duration
	}{
		{[]time.Duration{30 * time.Second, 10 * time.Second}, 31 * time.Second},
		{[]time.Duration{1500 * time.Millisecond}, 2 * time.Second},
		{[]time.Duration{-time.Minute}, time.Second},
		{[]time.Duration{0}, time.Second},
	} {
		var cmds []*events.CheckCommand
		for _, d := range c.deadlines {
			cmds = append(cmds, cmd(d))
		}
		if got := batchTTL(cmds, now); got != c.want {
			t.Errorf("deadlines %v: TTL %s, want %s", c.deadlines, got, c.want)
		}
	}
}
