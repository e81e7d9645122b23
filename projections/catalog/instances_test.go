package catalog_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/vigil-dev/vigil/projections/internal/scenario"
	"github.com/vigil-dev/vigil/projections/internal/testenv"
	"github.com/vigil-dev/vigil/projections/outbox"
	"github.com/vigil-dev/vigil/projections/projector"
)

// Two instances running at once (a lease that failed) do not apply anything
// twice: the checkpoint compare-and-set rolls the loser's batch back.
func TestTwoInstances(t *testing.T) {
	for _, s := range testenv.Stores(t) {
		t.Run(s.Name, func(t *testing.T) {
			n := testenv.StartNATS(t)
			g := scenario.Generate(scenario.Options{Sites: 12, IncidentsPerSite: 6, Seed: 3, Impairments: 3, TLS: true})
			n.Publish(t, g.Messages...)
			ref := fresh(t, s.Name)
			subscribe(t, ref)
			catchUp(t, ref, n, projections(), projector.Options{})

			db := s.DB
			subscribe(t, db)
			quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
			var runners []*projector.Runner
			for i := 0; i < 2; i++ {
				r, err := projector.New(db, n.JS, projections(), projector.Options{BatchSize: 3 + i*4, Logger: quiet, RetryDelay: 1})
				if err != nil {
					t.Fatal(err)
				}
				runners = append(runners, r)
			}
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			for _, r := range runners {
				wg.Go(func() { r.Run(ctx) })
			}
			waitLag(t, runners[0])
			waitLag(t, runners[1])
			cancel()
			wg.Wait()
			for i, r := range runners {
				if r.Stats().Batches == 0 {
					t.Logf("instance %d applied no batch", i)
				}
			}
			tables := append(rebuildable(projections()), outbox.Table)
			compare(t, "two instances vs one", snapshots(t, ref, tables), snapshots(t, db, tables))
		})
	}
}
