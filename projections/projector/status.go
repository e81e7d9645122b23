package projector

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/projections/store"
)

// ProjectionStatus is where one projection stands.
type ProjectionStatus struct {
	Name string
	// Checkpoint is the stream sequence of the last event applied.
	Checkpoint uint64
	// StreamLastSeq is the stream's last sequence when the status was read.
	StreamLastSeq uint64
	// Lag is StreamLastSeq - Checkpoint (0 when ahead).
	Lag       uint64
	UpdatedAt *time.Time
	// Quarantined counts the messages the projection set aside.
	Quarantined int
	// Rebuildable is false for the outbox.
	Rebuildable bool
	// Rebuilding is set while a rebuild's shadow checkpoint exists (a rebuild
	// is running, or one was interrupted).
	Rebuilding bool
	// RebuildCheckpoint is the shadow's position while Rebuilding.
	RebuildCheckpoint uint64
}

// Status reports each projection's checkpoint and lag behind EVENTS.
func Status(ctx context.Context, db *store.DB, js jetstream.JetStream, projs []Projection) ([]ProjectionStatus, error) {
	last, err := streamLastSeq(ctx, js, events.StreamEvents)
	if err != nil {
		return nil, err
	}
	out := make([]ProjectionStatus, 0, len(projs))
	for _, p := range projs {
		st := ProjectionStatus{Name: p.Name(), StreamLastSeq: last}
		_, never := p.(NeverRebuilt)
		st.Rebuildable = !never
		rows, err := db.R.QueryContext(ctx, "SELECT name, last_seq, updated_at FROM projection_checkpoints WHERE name IN (?, ?)", p.Name(), p.Name()+shadowSuffix)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var name string
			var seq int64
			var at store.Time
			if err := rows.Scan(&name, &seq, &at); err != nil {
				rows.Close()
				return nil, err
			}
			if name == p.Name() {
				st.Checkpoint, st.UpdatedAt = uint64(seq), at.Ptr()
			} else {
				st.Rebuilding, st.RebuildCheckpoint = true, uint64(seq)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		if last > st.Checkpoint {
			st.Lag = last - st.Checkpoint
		}
		if err := db.R.QueryRowContext(ctx, "SELECT COUNT(*) FROM projection_quarantine WHERE projection = ?", p.Name()).Scan(&st.Quarantined); err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}
