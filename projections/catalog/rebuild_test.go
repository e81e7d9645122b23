package catalog_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/projections/internal/scenario"
	"github.com/vigil-dev/vigil/projections/internal/testenv"
	"github.com/vigil-dev/vigil/projections/outbox"
	"github.com/vigil-dev/vigil/projections/projector"
)

func poison() *nats.Msg {
	m := nats.NewMsg("vigil.events.3.site-x.down")
	m.Header.Set("ce-specversion", "1.0")
	m.Header.Set("ce-id", "poison-1")
	m.Header.Set("ce-type", events.TypeDown)
	m.Header.Set("ce-source", events.SourceStateMachine)
	m.Header.Set("content-type", "application/json")
	m.Data = []byte(`{"id": "poison-1", "kind": "down", "site_id": 42}`)
	return m
}

// The scripted scenario (several incidents of every kind per site, region
// impairments of the primary and of another region, maintenance windows, TLS
// advisories, a poison message) projected live and then rebuilt gives the
// same tables row for row; so does a rebuild run while the live projector is
// running and events keep arriving, compared with an uninterrupted
// projection of the whole stream. The outbox is left alone.
func TestRebuildEquivalence(t *testing.T) {
	for _, s := range testenv.Stores(t) {
		t.Run(s.Name, func(t *testing.T) {
			ctx := context.Background()
			n := testenv.StartNATS(t)
			db := s.DB
			projs := projections()
			subscribe(t, db)
			g := scenario.Generate(scenario.Options{Sites: 24, IncidentsPerSite: 8, Seed: 7, Impairments: 6, TLS: true})
			half := len(g.Messages) / 2
			n.Publish(t, g.Messages[:half/2]...)
			n.PublishRaw(t, poison())
			n.Publish(t, g.Messages[half/2:half]...)
			observe(t, db, 12)
			catchUp(t, db, n, projs, projector.Options{BatchSize: 37})

			tables := rebuildable(projs)
			live := snapshots(t, db, tables)
			for _, tb := range []string{"site_status", "incidents", "uptime_incidents", "uptime_unknown", "uptime_hourly", "uptime_daily", "uptime_unknown_hourly"} {
				if len(live[tb]) == 0 {
					t.Fatalf("scenario left %s empty", tb)
				}
			}
			outboxBefore := testenv.Snapshot(t, db, outbox.Table)
			if len(outboxBefore) == 0 {
				t.Fatal("no outbox rows")
			}

			if _, err := projector.Rebuild(ctx, db, n.JS, projs, outbox.Name, projector.RebuildOptions{}); !errors.Is(err, projector.ErrNotRebuildable) {
				t.Fatalf("rebuild of the outbox: %v, want ErrNotRebuildable", err)
			}
			res, err := projector.Rebuild(ctx, db, n.JS, projs, "all", projector.RebuildOptions{Options: projector.Options{BatchSize: 53}})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Projections) != 3 || res.Events != uint64(half+1) {
				t.Fatalf("rebuild result %+v", res)
			}
			compare(t, "rebuild vs live", live, snapshots(t, db, tables))
			if d := testenv.Diff(outboxBefore, testenv.Snapshot(t, db, outbox.Table)); d != "" {
				t.Fatalf("rebuild touched the outbox:\n%s", d)
			}
			st, err := projector.Status(ctx, db, n.JS, projs)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range st {
				if x.Lag != 0 || x.Rebuilding || x.Checkpoint != uint64(half+1) {
					t.Errorf("status after rebuild: %+v", x)
				}
				if x.Quarantined != 1 {
					t.Errorf("%s: quarantined %d, want the poison message", x.Name, x.Quarantined)
				}
			}

			// Rebuild one projection while the live runner runs and events
			// keep arriving.
			r, err := projector.New(db, n.JS, projs, projector.Options{BatchSize: 11})
			if err != nil {
				t.Fatal(err)
			}
			rctx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- r.Run(rctx) }()
			pubDone := make(chan struct{})
			go func() {
				defer close(pubDone)
				rest := g.Messages[half:]
				for i := 0; i < len(rest); i += 25 {
					n.Publish(t, rest[i:min(i+25, len(rest))]...)
					time.Sleep(2 * time.Millisecond)
				}
			}()
			for _, name := range []string{"uptime", "all"} {
				if _, err := projector.Rebuild(ctx, db, n.JS, projs, name, projector.RebuildOptions{Options: projector.Options{BatchSize: 29}, Pause: r.Pause}); err != nil {
					t.Fatal(err)
				}
			}
			<-pubDone
			waitLag(t, r)
			stop()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			got := snapshots(t, db, tables)

			ref := fresh(t, s.Name)
			subscribe(t, ref)
			observe(t, ref, 12)
			catchUp(t, ref, n, projections(), projector.Options{BatchSize: 200})
			compare(t, "rebuild under load vs uninterrupted", snapshots(t, ref, tables), got)
			// The outbox was never rebuilt, so it matches an uninterrupted run.
			if d := testenv.Diff(testenv.Snapshot(t, ref, outbox.Table), testenv.Snapshot(t, db, outbox.Table)); d != "" {
				t.Fatalf("outbox differs from an uninterrupted run:\n%s", d)
			}
		})
	}
}
