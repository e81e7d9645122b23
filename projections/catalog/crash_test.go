package catalog_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/projections/internal/scenario"
	"github.com/vigil-dev/vigil/projections/internal/testenv"
	"github.com/vigil-dev/vigil/projections/outbox"
	"github.com/vigil-dev/vigil/projections/projector"
)

var errCrash = errors.New("simulated crash")

// The projector is stopped at random points, many times during a run: by
// cancelling its context (mid-transaction or between batches), by failing
// just before a commit, and by failing just after a commit before it moves
// on. Restarted each time, it ends with the same tables as an uninterrupted
// run, and never a duplicated outbox row.
func TestCrashRecovery(t *testing.T) {
	for _, s := range testenv.Stores(t) {
		t.Run(s.Name, func(t *testing.T) {
			ctx := context.Background()
			n := testenv.StartNATS(t)
			g := scenario.Generate(scenario.Options{Sites: 16, IncidentsPerSite: 6, Seed: 99, Impairments: 4, TLS: true})
			n.Publish(t, g.Messages[:len(g.Messages)/3]...)
			n.PublishRaw(t, poison())
			n.Publish(t, g.Messages[len(g.Messages)/3:]...)
			last := uint64(len(g.Messages) + 1)

			ref := fresh(t, s.Name)
			subscribe(t, ref)
			catchUp(t, ref, n, projections(), projector.Options{BatchSize: 500})

			db := s.DB
			subscribe(t, db)
			projs := projections()
			rng := rand.New(rand.NewPCG(1, 2))
			var mu sync.Mutex
			chance := func(p float64) bool {
				mu.Lock()
				defer mu.Unlock()
				return rng.Float64() < p
			}
			quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
			stops, before, after := 0, 0, 0
			for round := 0; ; round++ {
				cps, err := projector.Checkpoints(ctx, db.W, "site_status", "incidents", "uptime", outbox.Name)
				if err != nil {
					t.Fatal(err)
				}
				done := true
				for _, cp := range cps {
					done = done && cp == last
				}
				if done {
					break
				}
				if round > 2000 {
					t.Fatalf("no progress after %d rounds: %v", round, cps)
				}
				mu.Lock()
				batch := 1 + rng.IntN(8)
				life := time.Duration(5+rng.IntN(80)) * time.Millisecond
				lifeBatches := 1 + rng.IntN(4)
				mu.Unlock()
				committed := 0
				rctx, cancel := context.WithTimeout(ctx, life)
				crashed := make(chan struct{})
				var once sync.Once
				crash := func() error {
					once.Do(func() { close(crashed) })
					return errCrash
				}
				r, err := projector.New(db, n.JS, projs, projector.Options{
					BatchSize: batch, RetryDelay: time.Millisecond, Logger: quiet, MaintainEvery: -1,
					BeforeCommit: func(uint64) error {
						if chance(0.1) {
							before++
							return crash()
						}
						return nil
					},
					AfterCommit: func(uint64) error {
						committed++
						if committed >= lifeBatches {
							after++
							return crash()
						}
						return nil
					},
				})
				if err != nil {
					t.Fatal(err)
				}
				go func() {
					select {
					case <-crashed: // a "crashed" process does not retry: stop it
						cancel()
					case <-rctx.Done():
					}
				}()
				if err := r.Run(rctx); err != nil {
					t.Fatal(err)
				}
				cancel()
				stops++
			}
			t.Logf("%d stops: %d before a commit, %d after one, the rest by cancellation", stops, before, after)
			if stops < 20 || before == 0 || after == 0 {
				t.Fatalf("only %d stops: the test did not interrupt the projector enough", stops)
			}
			tables := append(rebuildable(projs), outbox.Table)
			compare(t, "crashed vs uninterrupted", snapshots(t, ref, tables), snapshots(t, db, tables))
			var dup int
			if err := db.W.QueryRowContext(ctx, "SELECT COUNT(*) FROM (SELECT event_id, subscription_id FROM notification_outbox GROUP BY event_id, subscription_id HAVING COUNT(*) > 1) x").Scan(&dup); err != nil || dup != 0 {
				t.Fatalf("duplicated outbox rows: %d, %v", dup, err)
			}
			q := testenv.Snapshot(t, db, "projection_quarantine", "quarantined_at")
			if len(q) != 4 {
				t.Fatalf("quarantine: %v", q)
			}
		})
	}
}
