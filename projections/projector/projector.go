// Package projector applies the EVENTS stream to SQL read models.
//
// A Projection turns events into rows. A Runner reads EVENTS with an ordered
// consumer from the projections' checkpoints and applies each batch of events
// in one SQL transaction that also advances every checkpoint, so a crash at
// any point leaves the tables and the checkpoints agreeing: the batch is
// either wholly applied and recorded or not at all, and the next start
// resumes after the last recorded sequence. Checkpoints advance by
// compare-and-set, so a second instance (a lease that failed) or a rebuild
// that swapped the tables makes the stale writer's transaction roll back
// instead of writing twice.
//
// A message that cannot be decoded, or that a projection refuses (Poison), is
// recorded in projection_quarantine with the reason and skipped: bad input
// never blocks a projection.
//
// Rebuild replays EVENTS from the first sequence into shadow tables while the
// live tables keep serving reads, then swaps them in atomically and hands the
// checkpoint over. Projections that are side effects (the notification outbox)
// declare NeverRebuilt and are refused.
//
// Leases (one active instance per projection) are the caller's business; a
// Runner can be stopped (cancel its context) and started again at any point.
package projector

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/projections/store"
)

// Projection is a read model built from EVENTS. A projection value must be
// safe for use by several runners at once: per-batch state belongs in
// Tx.Local.
type Projection interface {
	// Name identifies the projection and its checkpoint. Stable for life.
	Name() string
	// Tables lists the tables the projection owns and Rebuild replaces.
	Tables() []string
	// Apply applies one event inside the batch's transaction. seq is the
	// event's stream sequence; rows it writes should remember it so that a
	// replay changes nothing. Apply must write through tx.T(table) names.
	// Returning an error made with Poison quarantines the event (Apply must
	// then not have written anything); any other error aborts the batch,
	// which is retried.
	Apply(ctx context.Context, tx *Tx, seq uint64, ev *Event) error
}

// NeverRebuilt marks a projection whose rows are side effects (the
// notification outbox): Rebuild refuses it.
type NeverRebuilt interface {
	NeverRebuilt()
}

// BatchStarter is implemented by projections that prepare something once per
// batch (the outbox loads the subscriptions).
type BatchStarter interface {
	BeginBatch(ctx context.Context, tx *Tx) error
}

// CarryOver is implemented by projections whose tables also hold columns that
// do not come from EVENTS (site_status freshness, rollup check counts). Rebuild
// calls it just before the swap to copy those columns from the live tables
// (tx.Live(t)) into the shadow ones (tx.T(t)).
type CarryOver interface {
	CarryOver(ctx context.Context, tx *Tx) error
}

// Maintainer is implemented by projections with periodic upkeep (retention),
// which they do by their own clock. The live Runner calls it when it starts
// and then every Options.MaintainEvery.
type Maintainer interface {
	Maintain(ctx context.Context, db *store.DB) error
}

// BatchEnder is implemented by projections that defer work to the end of a
// batch (the uptime projection re-accounts each touched site-period once per
// batch, not once per event). EndBatch runs inside the batch's transaction,
// before the checkpoints advance.
type BatchEnder interface {
	EndBatch(ctx context.Context, tx *Tx) error
}

// Tx is a batch's transaction, as seen by a projection. Its Exec and Query
// methods reuse prepared statements where the store benefits from it.
type Tx struct {
	*sql.Tx
	// D is the store's dialect, for upserts and times.
	D      store.Dialect
	suffix string
	stmts  *stmtCache
	local  map[any]any
	queue  *queue
}

// Queue adds one row to a multi-row upsert that runs at the end of the batch
// (before BatchEnder.EndBatch): INSERT INTO table (cols) VALUES (...), (...)
// with the upsert assignments on a conflict on key. Rows with the same
// statement are written in the order they were queued, each seeing the rows
// before it, and statements run in ascending order, then in the order their
// first row was queued. A projection uses it for rows whose final value does
// not depend on interleaving with its other statements (guarded upserts on
// one key whose event kinds come in a fixed order), and so turns a statement
// per event into a statement per few hundred rows.
func (tx *Tx) Queue(order int, table string, key, cols []string, assigns []string, args ...any) {
	if len(args) != len(cols) {
		panic(fmt.Sprintf("projector: Queue %s: %d args for %d columns", table, len(args), len(cols)))
	}
	if tx.queue == nil {
		tx.queue = &queue{groups: map[string]*group{}}
	}
	k := strconv.Itoa(order) + "\x00" + table + "\x00" + strings.Join(cols, ",") + "\x00" + strings.Join(assigns, ",")
	g := tx.queue.groups[k]
	if g == nil {
		g = &group{order: order, first: len(tx.queue.groups), table: table, key: key, cols: cols, assigns: assigns}
		tx.queue.groups[k] = g
	}
	g.args = append(g.args, args...)
	g.rows++
}

// FlushQueued writes the queued rows now, for a projection that must read
// what it queued.
func (tx *Tx) FlushQueued(ctx context.Context) error {
	q := tx.queue
	if q == nil || len(q.groups) == 0 {
		return nil
	}
	tx.queue = nil
	gs := make([]*group, 0, len(q.groups))
	for _, g := range q.groups {
		gs = append(gs, g)
	}
	sort.Slice(gs, func(i, j int) bool {
		if gs[i].order != gs[j].order {
			return gs[i].order < gs[j].order
		}
		return gs[i].first < gs[j].first
	})
	for _, g := range gs {
		n := len(g.cols)
		per := max(1, min(rowsPerStatement, maxArgs/n))
		for i := 0; i < g.rows; i += per {
			k := min(per, g.rows-i)
			q := Upsert(tx.D, g.table, g.key, g.cols, g.assigns...)
			if k > 1 {
				one := "(?" + strings.Repeat(", ?", n-1) + ")"
				q = strings.Replace(q, one, one+strings.Repeat(", "+one, k-1), 1)
			}
			if _, err := tx.ExecContext(ctx, q, g.args[i*n:(i+k)*n]...); err != nil {
				return fmt.Errorf("%s: %w", g.table, err)
			}
		}
	}
	return nil
}

const (
	rowsPerStatement = 250
	maxArgs          = 30000 // under SQLite's 32766 variables
)

type queue struct {
	groups map[string]*group
}

type group struct {
	order, first int
	table        string
	key, cols    []string
	assigns      []string
	args         []any
	rows         int
}

// Local returns the value kept under key for this batch, making it with mk on
// first use. Projections keep per-batch state here, never in themselves: one
// projection value may serve several runners at once (a live runner and a
// rebuild).
func (tx *Tx) Local(key any, mk func() any) any {
	if v, ok := tx.local[key]; ok {
		return v
	}
	if tx.local == nil {
		tx.local = map[any]any{}
	}
	v := mk()
	tx.local[key] = v
	return v
}

// ExecContext executes a statement in the transaction.
func (tx *Tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := tx.stmts.get(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return tx.Tx.ExecContext(ctx, query, args...)
}

// QueryContext runs a query in the transaction.
func (tx *Tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := tx.stmts.get(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return tx.Tx.QueryContext(ctx, query, args...)
}

// QueryRowContext runs a query expected to return at most one row.
func (tx *Tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := tx.stmts.get(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return tx.Tx.QueryRowContext(ctx, query, args...)
}

// stmtCache holds the statements prepared in one batch's transaction, by
// text; the transaction's end closes them.
type stmtCache struct {
	tx *sql.Tx
	m  map[string]*sql.Stmt
}

// get returns the prepared statement for query, or nil to run it unprepared.
func (c *stmtCache) get(ctx context.Context, query string) *sql.Stmt {
	if c == nil {
		return nil
	}
	if st, ok := c.m[query]; ok {
		return st
	}
	if len(c.m) >= 512 {
		return nil
	}
	st, err := c.tx.PrepareContext(ctx, query)
	if err != nil {
		return nil // let the unprepared call report the error
	}
	c.m[query] = st
	return st
}

// T returns the name to write table under: the table itself, or its shadow
// during a rebuild.
func (tx *Tx) T(table string) string { return table + tx.suffix }

// Live returns the live name of a table, whatever mode tx is in.
func (tx *Tx) Live(table string) string { return table }

// Rebuilding reports whether tx writes into shadow tables.
func (tx *Tx) Rebuilding() bool { return tx.suffix != "" }

// Event is one decoded message of EVENTS.
type Event struct {
	// Seq is the stream sequence.
	Seq     uint64
	Subject string
	// CE is the CloudEvent as read from the message.
	CE *event.Event
	// Site is set for site events (Seems Down, Down, Recovered, TLS).
	Site *events.SiteEvent
	// Region is set for region events (impaired, recovered).
	Region *events.RegionEvent
}

// ID returns the event's ID.
func (e *Event) ID() string { return e.CE.ID() }

// Type returns the event's CloudEvents type.
func (e *Event) Type() string { return e.CE.Type() }

// PoisonError marks an event a projection refuses: it is quarantined and
// skipped.
type PoisonError struct{ Err error }

func (e *PoisonError) Error() string { return "poison: " + e.Err.Error() }
func (e *PoisonError) Unwrap() error { return e.Err }

// Poison wraps err so the runner quarantines the event instead of failing.
func Poison(err error) error { return &PoisonError{Err: err} }

// IsPoison reports whether err was made by Poison.
func IsPoison(err error) bool {
	var p *PoisonError
	return errors.As(err, &p)
}

// ErrNotRebuildable is returned by Rebuild for a NeverRebuilt projection.
var ErrNotRebuildable = errors.New("projection is never rebuilt")

// shadowSuffix is appended to table and checkpoint names during a rebuild.
const shadowSuffix = "__rebuild"
