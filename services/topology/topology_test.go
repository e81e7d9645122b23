package topology_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/internal/natstest"
	"github.com/vigil-dev/vigil/services/topology"
)

func TestApplyIsIdempotent(t *testing.T) {
	s := natstest.Start(t, false)
	ctx := context.Background()
	o := natstest.Options()
	first, err := topology.Apply(ctx, s.JS, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 8 {
		t.Fatalf("results = %+v", first)
	}
	for _, r := range first {
		if r.Action != topology.Created {
			t.Errorf("%s: %s on an empty server", r.Name, r.Action)
		}
	}
	second, err := topology.Apply(ctx, s.JS, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range second {
		if r.Action != topology.Unchanged || len(r.Drift) > 0 {
			t.Errorf("second apply: %s %s changed=%v drift=%v", r.Name, r.Action, r.Changed, r.Drift)
		}
	}
	o.ObservationsMaxAge = 2 * time.Hour
	o.LeaseTTL = 5 * time.Second
	third, err := topology.Apply(ctx, s.JS, o)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]topology.Result{}
	for _, r := range third {
		byName[r.Name] = r
	}
	if r := byName[events.StreamObservations]; r.Action != topology.Updated || len(r.Changed) != 1 || !strings.HasPrefix(r.Changed[0], "MaxAge") {
		t.Errorf("OBSERVATIONS after a max-age change: %+v", r)
	}
	if r := byName["KV "+events.KVLeases]; r.Action != topology.Updated {
		t.Errorf("leases after a TTL change: %+v", r)
	}
	info, err := s.JS.Stream(ctx, events.StreamObservations)
	if err != nil {
		t.Fatal(err)
	}
	if info.CachedInfo().Config.MaxAge != 2*time.Hour {
		t.Errorf("max age on the server = %s", info.CachedInfo().Config.MaxAge)
	}
}

func TestApplyReportsImmutableDrift(t *testing.T) {
	s := natstest.Start(t, false)
	ctx := context.Background()
	// Someone created OBSERVATIONS in memory by hand.
	if _, err := s.JS.CreateStream(ctx, jetstream.StreamConfig{Name: events.StreamObservations, Subjects: []string{events.ObservationsAll}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	o := natstest.Options()
	o.ObservationsMaxBytes = 8 << 20 // within the test server's memory limit
	results, err := topology.Apply(ctx, s.JS, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if r.Name != events.StreamObservations {
			continue
		}
		if len(r.Drift) != 1 || !strings.Contains(r.Drift[0], "Storage") {
			t.Errorf("drift = %v, want the storage type reported", r.Drift)
		}
		if r.Action != topology.Updated {
			t.Errorf("the mutable fields were not brought in line: %+v", r)
		}
		return
	}
	t.Fatal("no result for OBSERVATIONS")
}

// The same event published twice is stored once: its ID is the Nats-Msg-Id.
func TestSameEventStoredOnce(t *testing.T) {
	s := natstest.Start(t, true)
	ctx := context.Background()
	at := time.Date(2026, 11, 23, 4, 0, 0, 0, time.UTC)
	ev := &events.SiteEvent{
		ID: events.DeriveID(at, "shop", "obs-1", "seems_down"), Kind: events.KindSeemsDown,
		SiteID: "shop", Bucket: events.Bucket("shop"), At: at, State: events.StateSeemsDown,
		Severity: events.SeveritySeemsDown, ObservationIDs: []string{"obs-1"},
	}
	var acks []*jetstream.PubAck
	for range 2 {
		msg, err := events.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		ack, err := s.JS.PublishMsg(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, ack)
	}
	if acks[0].Duplicate || !acks[1].Duplicate || acks[0].Sequence != acks[1].Sequence {
		t.Errorf("acks: %+v %+v", acks[0], acks[1])
	}
	st, err := s.JS.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 1 {
		t.Errorf("EVENTS holds %d messages, want 1", n)
	}
	raw, err := st.GetMsg(ctx, acks[0].Sequence)
	if err != nil {
		t.Fatal(err)
	}
	var back events.SiteEvent
	if _, err := events.Decode(raw.Header, raw.Data, &back); err != nil || back.ID != ev.ID {
		t.Errorf("stored event decodes to %+v, %v", back, err)
	}
}

// CHECKS keeps one pending command per site and region: a newer one replaces a
// stale one instead of queueing behind it.
func TestChecksKeepsOnePendingCommandPerSite(t *testing.T) {
	s := natstest.Start(t, true)
	ctx := context.Background()
	due := time.Date(2026, 11, 23, 4, 0, 0, 0, time.UTC)
	for i := range 3 {
		d := due.Add(time.Duration(i) * time.Minute)
		for _, region := range []string{"local", "eu"} {
			cmd := &events.CheckCommand{ID: events.CommandID("shop", region, events.PurposeScheduled, d), SiteID: "shop",
				Bucket: events.Bucket("shop"), Region: region, Purpose: events.PurposeScheduled, DueAt: d, Deadline: d.Add(time.Minute)}
			msg, err := events.Marshal(cmd)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.JS.PublishMsg(ctx, msg); err != nil {
				t.Fatal(err)
			}
		}
	}
	st, _ := s.JS.Stream(ctx, events.StreamChecks)
	if n := st.CachedInfo().State.Msgs; n != 2 {
		t.Fatalf("CHECKS holds %d commands, want 2 (one per region)", n)
	}
	raw, err := st.GetLastMsgForSubject(ctx, events.CheckSubject("eu", "shop"))
	if err != nil {
		t.Fatal(err)
	}
	var cmd events.CheckCommand
	if _, err := events.Decode(raw.Header, raw.Data, &cmd); err != nil {
		t.Fatal(err)
	}
	if !cmd.DueAt.Equal(due.Add(2 * time.Minute)) {
		t.Errorf("pending command is due %s, want the newest", cmd.DueAt)
	}
}

// A batch of commands has a subject of its own, which nothing replaces: it
// leaves CHECKS when its TTL (its commands' last deadline) runs out, while a
// single command without one stays until replaced or consumed.
func TestChecksBatchExpires(t *testing.T) {
	s := natstest.Start(t, true)
	ctx := context.Background()
	due := time.Now().UTC()
	b := &events.CheckBatch{Region: "local"}
	for _, site := range []string{"a", "b"} {
		b.Commands = append(b.Commands, events.CheckCommand{ID: events.CommandID(site, "local", events.PurposeScheduled, due),
			SiteID: site, Bucket: events.Bucket(site), Region: "local", Purpose: events.PurposeScheduled, DueAt: due, Deadline: due})
	}
	b.ID = events.BatchID(b.Region, due, b.Commands)
	msg, err := events.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.JS.PublishMsg(ctx, msg, jetstream.WithMsgTTL(time.Second)); err != nil {
		t.Fatalf("publish a batch with a TTL: %v", err)
	}
	single, err := events.Marshal(&b.Commands[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.JS.PublishMsg(ctx, single); err != nil {
		t.Fatal(err)
	}
	st, err := s.JS.Stream(ctx, events.StreamChecks)
	if err != nil {
		t.Fatal(err)
	}
	if !st.CachedInfo().Config.AllowMsgTTL {
		t.Fatal("CHECKS does not allow message TTLs")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CHECKS still holds %d messages 10s after the batch's 1s TTL", info.State.Msgs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := st.GetLastMsgForSubject(ctx, events.CheckSubject("local", "a")); err != nil {
		t.Errorf("the single command went too: %v", err)
	}
}

func TestStatus(t *testing.T) {
	s := natstest.Start(t, true)
	st, err := topology.Status(context.Background(), s.JS)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 4 {
		t.Fatalf("status of %d streams", len(st))
	}
	for _, x := range st {
		if !x.Exists || x.Messages != 0 {
			t.Errorf("%+v", x)
		}
	}
}
