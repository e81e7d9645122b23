// Package freshness writes what checks saw into the tables without a write
// per check. The Applier is fed observations (Observe), keeps the latest one
// per site and per-site check counts and response-time histograms per hour
// and day in memory, and flushes them in transactions of batched multi-row
// statements, on two clocks:
//
//   - every Interval (default 60 s), the freshness columns of site_status
//     (last_checked_at, last_class, last_status_code, last_response_ms,
//     last_region, cert_not_after): "last checked" is at most Interval old;
//   - every RollupInterval (default 5 min), the observation columns of
//     uptime_hourly and uptime_daily (checks, failures, rt_p50_ms,
//     rt_p95_ms, rt_p99_ms, rt_hist) and the freshness columns with them.
//
// At most one write per site per table per interval, whatever the check
// rate; a healthy check of an up site costs no SQL of its own. The rollups
// are most of a flush's cost (a read and an upsert per site and table), so
// writing them less often than the freshness columns makes a check cheaper,
// at the price of uptime rollups lagging by up to RollupInterval.
//
// A rollup flush also stores the OBSERVATIONS sequence it has reached as the
// "freshness" checkpoint: the checkpoint means "everything up to here is in
// the tables". A freshness-only flush never moves it, because rollup counts
// are added (replaying them would double them) while site_status writes are
// idempotent (they never move last_checked_at back). So Follow resumes after
// a restart from the last rollup flush: site_status is re-applied
// harmlessly, and rollup counts are neither lost nor doubled.
package freshness

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/projections/projector"
	"github.com/vigil-dev/vigil/projections/store"
	"github.com/vigil-dev/vigil/projections/uptime"
)

// CheckpointName is the freshness applier's row in projection_checkpoints.
const CheckpointName = "freshness"

// Config tunes the applier.
type Config struct {
	// Interval between flushes of the site_status freshness columns
	// (default 60s).
	Interval time.Duration
	// RollupInterval between flushes of the uptime rollups and the
	// checkpoint (default 5m). It is raised to Interval when shorter (equal
	// gives one full flush per Interval) and rounded up to a whole number of
	// Intervals: every so many ticks of Interval, the tick's flush is a
	// rollup flush.
	RollupInterval time.Duration
	// RowsPerStatement bounds a multi-row statement (default 500).
	RowsPerStatement int
	Logger           *slog.Logger
}

// DefaultRollupInterval is RollupInterval's default.
const DefaultRollupInterval = 5 * time.Minute

// Applier coalesces observations into periodic batched writes.
type Applier struct {
	db  *store.DB
	cfg Config
	// rollupEvery is how many ticks of Interval make a RollupInterval.
	rollupEvery int

	// flushMu serialises flushes, so that a rollup flush never stores a
	// checkpoint while an earlier flush of the same observations is still
	// in flight (and may yet fail and hand them back).
	flushMu sync.Mutex
	// sinceRollup counts the ticks since the last successful rollup flush
	// (guarded by flushMu).
	sinceRollup int

	mu      sync.Mutex
	pending *batch
}

type latest struct {
	at         time.Time
	class      string
	status     int
	responseMs int64
	region     string
	certAfter  *time.Time
}

type periodKey struct {
	site  string
	per   uptime.Period
	start time.Time
}

type counts struct {
	checks, failures int64
	// rt holds the histogram buckets (bucketOf) of the OK checks' response
	// times. A site has one or a few per flush, so a slice costs a fraction
	// of a Hist map: a 100,000-site batch is tens of megabytes smaller and
	// allocates far less.
	rt []uint16
}

// batch is what has been observed and not yet written. latest is emptied
// by every flush (site_status); periods, seq and n accumulate until a
// rollup flush writes the periods and stores seq as the checkpoint.
type batch struct {
	latest  map[string]latest
	periods map[periodKey]*counts
	seq     uint64
	n       int
}

func newBatch() *batch {
	return &batch{latest: map[string]latest{}, periods: map[periodKey]*counts{}}
}

// New returns an applier writing to db.
func New(db *store.DB, cfg Config) *Applier {
	if cfg.Interval <= 0 {
		cfg.Interval = 60 * time.Second
	}
	if cfg.RollupInterval <= 0 {
		cfg.RollupInterval = DefaultRollupInterval
	}
	every := max(1, int((cfg.RollupInterval+cfg.Interval-1)/cfg.Interval))
	cfg.RollupInterval = time.Duration(every) * cfg.Interval
	if cfg.RowsPerStatement <= 0 {
		cfg.RowsPerStatement = 500
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Applier{db: db, cfg: cfg, rollupEvery: every, pending: newBatch()}
}

// Observe takes one observation's summary (all the applier reads of it); seq
// is its OBSERVATIONS sequence (0 if it did not come from the stream).
// Nothing is written until the next flush.
func (a *Applier) Observe(seq uint64, o *events.ObservationSummary) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.pending
	b.n++
	b.seq = max(b.seq, seq)
	if o.SiteID == "" || o.StartedAt.IsZero() {
		return
	}
	at := o.StartedAt.UTC()
	if cur, ok := b.latest[o.SiteID]; !ok || !at.Before(cur.at) {
		l := latest{at: at, class: string(o.Class), status: o.StatusCode, responseMs: int64(o.Timings.TotalMs + 0.5), region: o.Region}
		if o.TLS != nil && !o.TLS.NotAfter.IsZero() {
			na := o.TLS.NotAfter.UTC()
			l.certAfter = &na
		} else if ok {
			l.certAfter = cur.certAfter
		}
		b.latest[o.SiteID] = l
	}
	for _, per := range []uptime.Period{uptime.Hourly, uptime.Daily} {
		k := periodKey{o.SiteID, per, per.Start(at)}
		c := b.periods[k]
		if c == nil {
			c = &counts{}
			b.periods[k] = c
		}
		c.checks++
		switch o.Class.Side() {
		case events.SideSite:
			c.failures++
		case events.SideOK:
			c.rt = append(c.rt, uint16(bucketOf(o.Timings.TotalMs)))
		}
	}
}

// Pending returns how many observations are not yet in the rollups: they
// wait for the next rollup flush (or Flush).
func (a *Applier) Pending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pending.n
}

// Flush writes everything observed and not yet written, the freshness
// columns and the rollups, in one transaction that also stores the
// checkpoint. Run's ticks do the same every RollupInterval, and Run calls
// it when it stops; callers that want everything in the tables (tests,
// commands) call it directly. On failure the observations are kept for the
// next flush.
func (a *Applier) Flush(ctx context.Context) error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	return a.flushAll(ctx)
}

// tick is what Run does every Interval: a freshness flush, or a rollup
// flush (Flush) once RollupInterval has passed since the last successful
// one. A failed rollup flush is retried at the next tick.
func (a *Applier) tick(ctx context.Context) error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	a.sinceRollup++
	if a.sinceRollup >= a.rollupEvery {
		return a.flushAll(ctx)
	}
	return a.flushFreshness(ctx)
}

// flushAll is Flush with flushMu held.
func (a *Applier) flushAll(ctx context.Context) error {
	a.mu.Lock()
	b := a.pending
	a.pending = newBatch()
	a.mu.Unlock()
	if b.n == 0 {
		a.sinceRollup = 0
		return nil
	}
	err := a.db.InTx(ctx, func(tx *sql.Tx) error { return a.writeAll(ctx, tx, b) })
	if err != nil {
		a.mu.Lock()
		a.pending = merge(b, a.pending)
		a.mu.Unlock()
		return fmt.Errorf("freshness rollup flush: %w", err)
	}
	a.sinceRollup = 0
	return nil
}

// flushFreshness writes the freshness columns of the sites observed since
// the last flush, with flushMu held, and nothing else: the period counts
// stay pending for the next rollup flush and the checkpoint does not move,
// since only the site_status writes are safe to repeat on a replay. On
// failure the latest observations are kept for the next flush.
func (a *Applier) flushFreshness(ctx context.Context) error {
	a.mu.Lock()
	l := a.pending.latest
	a.pending.latest = make(map[string]latest, len(l))
	a.mu.Unlock()
	if len(l) == 0 {
		return nil
	}
	err := a.db.InTx(ctx, func(tx *sql.Tx) error {
		stmts := stmtCache{tx: tx}
		defer stmts.close()
		return a.writeStatus(ctx, &stmts, l)
	})
	if err != nil {
		a.mu.Lock()
		a.pending.latest = mergeLatest(l, a.pending.latest)
		a.mu.Unlock()
		return fmt.Errorf("freshness flush: %w", err)
	}
	return nil
}

// merge folds newer into older and returns it.
func merge(older, newer *batch) *batch {
	older.n += newer.n
	older.seq = max(older.seq, newer.seq)
	older.latest = mergeLatest(older.latest, newer.latest)
	for k, c := range newer.periods {
		if cur := older.periods[k]; cur != nil {
			cur.checks += c.checks
			cur.failures += c.failures
			cur.rt = append(cur.rt, c.rt...)
		} else {
			older.periods[k] = c
		}
	}
	return older
}

// mergeLatest folds newer into older, keeping each site's latest
// observation (and the certificate expiry last seen), and returns older.
func mergeLatest(older, newer map[string]latest) map[string]latest {
	for site, l := range newer {
		if cur, ok := older[site]; !ok || !l.at.Before(cur.at) {
			if l.certAfter == nil && ok {
				l.certAfter = cur.certAfter
			}
			older[site] = l
		}
	}
	return older
}

// writeAll writes b in tx: the freshness columns, the rollups and the
// checkpoint.
func (a *Applier) writeAll(ctx context.Context, tx *sql.Tx, b *batch) error {
	stmts := stmtCache{tx: tx}
	defer stmts.close()
	if err := a.writeStatus(ctx, &stmts, b.latest); err != nil {
		return err
	}
	if err := a.writeRollups(ctx, &stmts, b.periods); err != nil {
		return err
	}
	return a.writeCheckpoint(ctx, tx, b.seq)
}

// writeStatus upserts the freshness columns of site_status, never moving
// last_checked_at back, so that writing the same observations twice is
// harmless.
func (a *Applier) writeStatus(ctx context.Context, stmts *stmtCache, last map[string]latest) error {
	d := a.db.D
	// last_checked_at is assigned last: MySQL evaluates the assignments in
	// order and the others compare against its old value.
	newer := "(last_checked_at IS NULL OR last_checked_at <= " + d.Excluded("last_checked_at") + ")"
	set := func(col, expr string) string {
		if expr == "" {
			expr = d.Excluded(col)
		}
		return col + " = CASE WHEN " + newer + " THEN " + expr + " ELSE " + col + " END"
	}
	statusTail := " " + d.OnConflict("site_id") + " " + strings.Join([]string{
		set("last_class", ""), set("last_status_code", ""), set("last_response_ms", ""), set("last_region", ""),
		set("cert_not_after", "COALESCE("+d.Excluded("cert_not_after")+", cert_not_after)"),
		set("last_checked_at", ""),
	}, ", ")
	sites := make([]string, 0, len(last))
	for s := range last {
		sites = append(sites, s)
	}
	sort.Strings(sites)
	for chunk := range chunks(sites, a.cfg.RowsPerStatement) {
		args := make([]any, 0, 7*len(chunk))
		for _, s := range chunk {
			l := last[s]
			args = append(args, s, d.Time(l.at), l.class, nullInt(l.status), l.responseMs, l.region, d.TimePtr(l.certAfter))
		}
		q := "INSERT INTO site_status (site_id, last_checked_at, last_class, last_status_code, last_response_ms, last_region, cert_not_after) VALUES " +
			placeholders(len(chunk), 7) + statusTail
		if _, err := stmts.exec(ctx, q, args...); err != nil {
			return fmt.Errorf("site_status: %w", err)
		}
	}
	return nil
}

// rollupGroup is one rollup table's period: its rows are read and written
// together.
type rollupGroup struct {
	per   uptime.Period
	start time.Time
}

// writeRollups adds the period counts to uptime_hourly and uptime_daily,
// one period at a time in order.
func (a *Applier) writeRollups(ctx context.Context, stmts *stmtCache, periods map[periodKey]*counts) error {
	groups := map[rollupGroup][]periodKey{}
	for k := range periods {
		g := rollupGroup{k.per, k.start}
		groups[g] = append(groups[g], k)
	}
	gkeys := make([]rollupGroup, 0, len(groups))
	for g := range groups {
		gkeys = append(gkeys, g)
	}
	sort.Slice(gkeys, func(i, j int) bool {
		if gkeys[i].per != gkeys[j].per {
			return gkeys[i].per < gkeys[j].per
		}
		return gkeys[i].start.Before(gkeys[j].start)
	})
	for _, g := range gkeys {
		keys := groups[g]
		sort.Slice(keys, func(i, j int) bool { return keys[i].site < keys[j].site })
		for chunk := range chunks(keys, a.cfg.RowsPerStatement) {
			if err := a.writeRollupChunk(ctx, stmts, g, chunk, periods); err != nil {
				return fmt.Errorf("%s: %w", g.per.Table(), err)
			}
		}
	}
	return nil
}

// writeRollupChunk reads the stored histograms of the chunk's site-periods,
// merges the new response times into them, and upserts the summed counts and
// the recomputed percentiles.
func (a *Applier) writeRollupChunk(ctx context.Context, stmts *stmtCache, g rollupGroup, chunk []periodKey, periods map[periodKey]*counts) error {
	d := a.db.D
	table := g.per.Table()
	stored, err := a.storedHists(ctx, stmts, table, g.start, chunk)
	if err != nil {
		return err
	}
	args := make([]any, 0, 8*len(chunk))
	for _, k := range chunk {
		c := periods[k]
		h := Hist{}
		h.Merge(stored[k.site])
		for _, bkt := range c.rt {
			h[int(bkt)]++
		}
		var p50, p95, p99, hs any
		if v, ok := h.Quantile(0.50); ok {
			p50 = v
			p95v, _ := h.Quantile(0.95)
			p99v, _ := h.Quantile(0.99)
			p95, p99, hs = p95v, p99v, h.String()
		}
		args = append(args, k.site, d.Time(g.start), c.checks, c.failures, p50, p95, p99, hs)
	}
	upsertTail := " " + d.OnConflict("site_id", "period_start") + " checks = checks + " + d.Excluded("checks") +
		", failures = failures + " + d.Excluded("failures") +
		", rt_p50_ms = " + d.Excluded("rt_p50_ms") + ", rt_p95_ms = " + d.Excluded("rt_p95_ms") +
		", rt_p99_ms = " + d.Excluded("rt_p99_ms") + ", rt_hist = " + d.Excluded("rt_hist")
	q := "INSERT INTO " + table + " (site_id, period_start, checks, failures, rt_p50_ms, rt_p95_ms, rt_p99_ms, rt_hist) VALUES " +
		placeholders(len(chunk), 8) + upsertTail
	_, err = stmts.exec(ctx, q, args...)
	return err
}

// storedHists reads the stored histograms of the chunk's sites for the
// period starting at start.
func (a *Applier) storedHists(ctx context.Context, stmts *stmtCache, table string, start time.Time, chunk []periodKey) (map[string]Hist, error) {
	args := make([]any, 0, 1+len(chunk))
	args = append(args, a.db.D.Time(start))
	for _, k := range chunk {
		args = append(args, k.site)
	}
	rows, err := stmts.query(ctx, "SELECT site_id, rt_hist FROM "+table+" WHERE period_start = ? AND site_id IN ("+
		strings.TrimSuffix(strings.Repeat("?, ", len(chunk)), ", ")+") AND rt_hist IS NOT NULL", args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	stored := map[string]Hist{}
	for rows.Next() {
		var site, h string
		if err := rows.Scan(&site, &h); err != nil {
			return nil, err
		}
		stored[site] = ParseHist(h)
	}
	return stored, rows.Err()
}

// writeCheckpoint stores seq as the freshness checkpoint, never moving it
// back. Only a rollup flush calls it: the checkpoint says everything up to
// seq is in the tables, rollup counts included.
func (a *Applier) writeCheckpoint(ctx context.Context, tx *sql.Tx, seq uint64) error {
	if seq == 0 {
		return nil
	}
	d := a.db.D
	if _, err := tx.ExecContext(ctx, d.InsertIgnore()+" INTO projection_checkpoints (name, last_seq) VALUES (?, 0)", CheckpointName); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if _, err := tx.ExecContext(ctx, "UPDATE projection_checkpoints SET last_seq = ?, updated_at = ? WHERE name = ? AND last_seq < ?",
		int64(seq), d.Time(time.Now()), CheckpointName, int64(seq)); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// Run flushes until ctx is cancelled: the freshness columns every Interval,
// everything (Flush) every RollupInterval. Then it flushes everything once
// more (with a short grace period of its own), so a clean stop leaves
// nothing observed unwritten, and returns.
func (a *Applier) Run(ctx context.Context) error {
	t := time.NewTicker(a.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			return a.Flush(fctx)
		case <-t.C:
			if err := a.tick(ctx); err != nil && ctx.Err() == nil {
				a.cfg.Logger.Error("freshness flush failed; keeping the observations for the next one", "err", err)
			}
		}
	}
}

// Checkpoint returns the OBSERVATIONS sequence the last rollup flush
// reached: everything up to it is in the tables.
func Checkpoint(ctx context.Context, db *store.DB) (uint64, error) {
	cps, err := projector.Checkpoints(ctx, db.W, CheckpointName)
	return cps[CheckpointName], err
}

// FollowOptions tune Follow.
type FollowOptions struct {
	// Stream and Subjects default to OBSERVATIONS, vigil.obs.>.
	Stream   string
	Subjects []string
	// StartBack is how far back a first start (no checkpoint yet) reads
	// (default one hour).
	StartBack time.Duration
}

// Follow feeds the applier from OBSERVATIONS with an ordered consumer, from
// the freshness checkpoint + 1 (the last rollup flush: observations after it
// whose freshness columns were already written are written again, which is
// harmless), and runs its flushes (Run) until ctx is cancelled. Undecodable
// observations are skipped (and counted in the log).
func Follow(ctx context.Context, js jetstream.JetStream, a *Applier, opts FollowOptions) error {
	if opts.Stream == "" {
		opts.Stream = events.StreamObservations
	}
	if len(opts.Subjects) == 0 {
		opts.Subjects = []string{events.ObservationsAll}
	}
	if opts.StartBack <= 0 {
		opts.StartBack = time.Hour
	}
	cp, err := Checkpoint(ctx, a.db)
	if err != nil {
		return err
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: opts.Subjects}
	if cp > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, cp+1
	} else {
		start := time.Now().Add(-opts.StartBack)
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	cons, err := js.OrderedConsumer(ctx, opts.Stream, cfg)
	if err != nil {
		return fmt.Errorf("ordered consumer on %s: %w", opts.Stream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1000))
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer it.Stop()
	var bad int
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return <-done
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return <-done
			}
			a.cfg.Logger.Warn("reading observations", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		md, err := m.Metadata()
		if err != nil {
			continue
		}
		// The summary is all the applier reads of an observation.
		var sum events.ObservationSummary
		if _, err := events.Decode(m.Headers(), m.Data(), &sum); err != nil {
			bad++
			a.cfg.Logger.Warn("undecodable observation skipped", "seq", md.Sequence.Stream, "err", err, "skipped", bad)
			// The sequence still counts as read.
			a.Observe(md.Sequence.Stream, &events.ObservationSummary{})
			continue
		}
		a.Observe(md.Sequence.Stream, &sum)
	}
}

// stmtCache prepares each statement of a flush once. A flush runs the same
// few multi-row statements hundreds of times (one per chunk of rows), and
// parsing a 500-row statement afresh each time was a sixth of the flush.
type stmtCache struct {
	tx    *sql.Tx
	stmts map[string]*sql.Stmt
}

func (c *stmtCache) prepare(ctx context.Context, q string) (*sql.Stmt, error) {
	if st, ok := c.stmts[q]; ok {
		return st, nil
	}
	st, err := c.tx.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	if c.stmts == nil {
		c.stmts = map[string]*sql.Stmt{}
	}
	c.stmts[q] = st
	return st, nil
}

func (c *stmtCache) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	st, err := c.prepare(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

func (c *stmtCache) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := c.prepare(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

func (c *stmtCache) close() {
	for _, st := range c.stmts {
		_ = st.Close()
	}
}

func placeholders(rows, cols int) string {
	one := "(" + strings.TrimSuffix(strings.Repeat("?, ", cols), ", ") + ")"
	return strings.TrimSuffix(strings.Repeat(one+", ", rows), ", ")
}

func chunks[T any](s []T, n int) func(func([]T) bool) {
	return func(yield func([]T) bool) {
		for len(s) > 0 {
			k := min(n, len(s))
			if !yield(s[:k]) {
				return
			}
			s = s[k:]
		}
	}
}

func nullInt(n int) any {
	if n == 0 {
		return nil
	}
	return n
}
