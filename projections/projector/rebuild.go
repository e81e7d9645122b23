package projector

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/projections/store"
)

// RebuildOptions tune a rebuild.
type RebuildOptions struct {
	// Options tune the replay's runner. BatchSize defaults to 1000 here.
	Options
	// Pause stops whatever live runner applies the projections being
	// rebuilt, for the final catch-up and the swap, and returns the
	// function that starts it again; the live runner must then reload its
	// checkpoints (Runner.Pause does both for a runner in this process; a
	// separate process is paused by taking its lease). Nil means no live
	// runner is active.
	Pause func(ctx context.Context) (resume func(), err error)
}

// RebuildResult reports one rebuild.
type RebuildResult struct {
	Projections []string
	// Seq is the stream sequence the rebuilt tables are at.
	Seq uint64
	// Events is how many stream messages were replayed.
	Events   uint64
	Duration time.Duration
}

// Selected returns the projections a rebuild of name ("all" or "") covers.
func Selected(projs []Projection, name string) ([]Projection, error) {
	var out []Projection
	for _, p := range projs {
		_, never := p.(NeverRebuilt)
		switch {
		case name == "" || name == "all":
			if !never {
				out = append(out, p)
			}
		case p.Name() == name:
			if never {
				return nil, fmt.Errorf("%s: %w", name, ErrNotRebuildable)
			}
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no rebuildable projection named %q", name)
	}
	return out, nil
}

// Rebuild replays EVENTS from its first sequence into shadow copies of the
// tables of the projection called name (or of every rebuildable one, for
// "all"), while the live tables keep serving reads and, until the final
// catch-up, keep being updated. It then pauses the live runner (opts.Pause),
// catches the shadows up to the end of the stream, copies the columns that
// do not come from EVENTS (CarryOver), swaps the shadows in atomically and
// hands their checkpoints over to the live names. The outbox (NeverRebuilt)
// is refused.
//
// An interrupted rebuild leaves the live tables untouched, apart from the
// MySQL window between RENAME TABLE and the checkpoint hand-over, in which a
// crash leaves the new tables with the old (lower) checkpoint: the live runner
// then re-applies some events, which the rows' last_event_seq guards make
// no-ops. Leftover shadows are replaced by the next rebuild.
func Rebuild(ctx context.Context, db *store.DB, js jetstream.JetStream, projs []Projection, name string, opts RebuildOptions) (RebuildResult, error) {
	started := time.Now()
	targets, err := Selected(projs, name)
	if err != nil {
		return RebuildResult{}, err
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 1000
	}
	opts.MaintainEvery = -1
	res := RebuildResult{}
	var pairs [][2]string
	for _, p := range targets {
		res.Projections = append(res.Projections, p.Name())
		for _, t := range p.Tables() {
			if err := db.D.CreateShadow(ctx, db.W, t, t+shadowSuffix); err != nil {
				return res, fmt.Errorf("rebuild %s: %w", p.Name(), err)
			}
			pairs = append(pairs, [2]string{t, t + shadowSuffix})
		}
		if _, err := db.W.ExecContext(ctx, "DELETE FROM projection_checkpoints WHERE name = ?", p.Name()+shadowSuffix); err != nil {
			return res, err
		}
	}
	r, err := New(db, js, targets, opts.Options)
	if err != nil {
		return res, err
	}
	r.suffix = shadowSuffix
	replay := func() error {
		until, err := streamLastSeq(ctx, js, r.opts.Stream)
		if err != nil {
			return err
		}
		if until == 0 {
			return ensureCheckpoints(ctx, db, r.names())
		}
		r.until = until
		if err := r.Run(ctx); err != nil {
			return err
		}
		return ctx.Err()
	}
	// Bulk replay while the live runner goes on.
	if err := replay(); err != nil {
		return res, fmt.Errorf("rebuild replay: %w", err)
	}
	if opts.Pause != nil {
		resume, err := opts.Pause(ctx)
		if err != nil {
			return res, fmt.Errorf("rebuild: pause the live projector: %w", err)
		}
		defer resume()
	}
	// Final catch-up with the live runner stopped.
	if err := replay(); err != nil {
		return res, fmt.Errorf("rebuild catch-up: %w", err)
	}
	cps, err := Checkpoints(ctx, db.W, r.names()...)
	if err != nil {
		return res, err
	}
	now := r.opts.Now()
	before := func(tx *sql.Tx) error {
		ptx := &Tx{Tx: tx, D: db.D, suffix: shadowSuffix}
		for _, p := range targets {
			if c, ok := p.(CarryOver); ok {
				if err := c.CarryOver(ctx, ptx); err != nil {
					return fmt.Errorf("%s: carry over: %w", p.Name(), err)
				}
			}
		}
		return nil
	}
	after := func(tx *sql.Tx) error {
		for _, p := range targets {
			seq := cps[p.Name()+shadowSuffix]
			res.Seq = max(res.Seq, seq)
			if _, err := tx.ExecContext(ctx, db.D.InsertIgnore()+" INTO projection_checkpoints (name, last_seq) VALUES (?, 0)", p.Name()); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, "UPDATE projection_checkpoints SET last_seq = ?, updated_at = ? WHERE name = ?", int64(seq), db.D.Time(now), p.Name()); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, "DELETE FROM projection_checkpoints WHERE name = ?", p.Name()+shadowSuffix); err != nil {
				return err
			}
		}
		return nil
	}
	if err := db.D.Swap(ctx, db.W, pairs, before, after); err != nil {
		return res, fmt.Errorf("rebuild swap: %w", err)
	}
	res.Events = r.batchesEvents()
	res.Duration = time.Since(started)
	return res, nil
}

// batchesEvents is the number of stream messages a rebuild runner read.
func (r *Runner) batchesEvents() uint64 { return r.read.Load() }
