// Package freshness writes what checks saw into the tables without a write
// per check. The Applier is fed observations (Observe), keeps the latest one
// per site and per-site check counts and response-time histograms per hour
// and day in memory, and every interval (default 60 s) flushes them in one
// transaction of batched multi-row statements: at most one write per site per
// table per interval, whatever the check rate. A healthy check of an up site
// costs no SQL of its own.
//
// It writes the freshness columns of site_status (last_checked_at,
// last_class, last_status_code, last_response_ms, last_region,
// cert_not_after) and the observation columns of uptime_hourly and
// uptime_daily (checks, failures, rt_p50_ms, rt_p95_ms, rt_p99_ms, rt_hist).
// The flush also stores the OBSERVATIONS sequence it has reached as the
// "freshness" checkpoint, so Follow resumes after a restart exactly where the
// last flush ended: counts are neither lost nor doubled.
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
	// Interval between flushes (default 60s).
	Interval time.Duration
	// RowsPerStatement bounds a multi-row statement (default 500).
	RowsPerStatement int
	Logger           *slog.Logger
}

// Applier coalesces observations into periodic batched writes.
type Applier struct {
	db  *store.DB
	cfg Config

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
	if cfg.RowsPerStatement <= 0 {
		cfg.RowsPerStatement = 500
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Applier{db: db, cfg: cfg, pending: newBatch()}
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

// Pending returns how many observations wait for the next flush.
func (a *Applier) Pending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pending.n
}

// Flush writes what has been observed since the last flush in one
// transaction. On failure the observations are kept for the next flush.
func (a *Applier) Flush(ctx context.Context) error {
	a.mu.Lock()
	b := a.pending
	a.pending = newBatch()
	a.mu.Unlock()
	if b.n == 0 {
		return nil
	}
	err := a.db.InTx(ctx, func(tx *sql.Tx) error { return a.write(ctx, tx, b) })
	if err != nil {
		a.mu.Lock()
		a.pending = merge(b, a.pending)
		a.mu.Unlock()
		return fmt.Errorf("freshness flush: %w", err)
	}
	return nil
}

// merge folds newer into older and returns it.
func merge(older, newer *batch) *batch {
	older.n += newer.n
	older.seq = max(older.seq, newer.seq)
	for site, l := range newer.latest {
		if cur, ok := older.latest[site]; !ok || !l.at.Before(cur.at) {
			if l.certAfter == nil && ok {
				l.certAfter = cur.certAfter
			}
			older.latest[site] = l
		}
	}
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

func (a *Applier) write(ctx context.Context, tx *sql.Tx, b *batch) error {
	d := a.db.D
	stmts := stmtCache{tx: tx}
	defer stmts.close()
	// site_status: freshness columns, never moving last_checked_at back.
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
	sites := make([]string, 0, len(b.latest))
	for s := range b.latest {
		sites = append(sites, s)
	}
	sort.Strings(sites)
	for chunk := range chunks(sites, a.cfg.RowsPerStatement) {
		args := make([]any, 0, 7*len(chunk))
		for _, s := range chunk {
			l := b.latest[s]
			args = append(args, s, d.Time(l.at), l.class, nullInt(l.status), l.responseMs, l.region, d.TimePtr(l.certAfter))
		}
		q := "INSERT INTO site_status (site_id, last_checked_at, last_class, last_status_code, last_response_ms, last_region, cert_not_after) VALUES " +
			placeholders(len(chunk), 7) + statusTail
		if _, err := stmts.exec(ctx, q, args...); err != nil {
			return fmt.Errorf("site_status: %w", err)
		}
	}
	// Rollups: read the stored histograms of the touched site-periods, merge,
	// and write the sums and percentiles back.
	groups := map[[2]any][]periodKey{}
	for k := range b.periods {
		g := [2]any{k.per, k.start}
		groups[g] = append(groups[g], k)
	}
	gkeys := make([][2]any, 0, len(groups))
	for g := range groups {
		gkeys = append(gkeys, g)
	}
	sort.Slice(gkeys, func(i, j int) bool {
		if gkeys[i][0] != gkeys[j][0] {
			return gkeys[i][0].(uptime.Period) < gkeys[j][0].(uptime.Period)
		}
		return gkeys[i][1].(time.Time).Before(gkeys[j][1].(time.Time))
	})
	for _, g := range gkeys {
		per, start := g[0].(uptime.Period), g[1].(time.Time)
		keys := groups[g]
		sort.Slice(keys, func(i, j int) bool { return keys[i].site < keys[j].site })
		table := per.Table()
		upsertTail := " " + d.OnConflict("site_id", "period_start") + " checks = checks + " + d.Excluded("checks") +
			", failures = failures + " + d.Excluded("failures") +
			", rt_p50_ms = " + d.Excluded("rt_p50_ms") + ", rt_p95_ms = " + d.Excluded("rt_p95_ms") +
			", rt_p99_ms = " + d.Excluded("rt_p99_ms") + ", rt_hist = " + d.Excluded("rt_hist")
		for chunk := range chunks(keys, a.cfg.RowsPerStatement) {
			stored := map[string]Hist{}
			args := []any{d.Time(start)}
			for _, k := range chunk {
				args = append(args, k.site)
			}
			rows, err := stmts.query(ctx, "SELECT site_id, rt_hist FROM "+table+" WHERE period_start = ? AND site_id IN ("+
				strings.TrimSuffix(strings.Repeat("?, ", len(chunk)), ", ")+") AND rt_hist IS NOT NULL", args...)
			if err != nil {
				return fmt.Errorf("%s: %w", table, err)
			}
			for rows.Next() {
				var site, h string
				if err := rows.Scan(&site, &h); err != nil {
					rows.Close()
					return err
				}
				stored[site] = ParseHist(h)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			args = make([]any, 0, 8*len(chunk))
			for _, k := range chunk {
				c := b.periods[k]
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
				args = append(args, k.site, d.Time(start), c.checks, c.failures, p50, p95, p99, hs)
			}
			q := "INSERT INTO " + table + " (site_id, period_start, checks, failures, rt_p50_ms, rt_p95_ms, rt_p99_ms, rt_hist) VALUES " +
				placeholders(len(chunk), 8) + upsertTail
			if _, err := stmts.exec(ctx, q, args...); err != nil {
				return fmt.Errorf("%s: %w", table, err)
			}
		}
	}
	if b.seq > 0 {
		if _, err := tx.ExecContext(ctx, d.InsertIgnore()+" INTO projection_checkpoints (name, last_seq) VALUES (?, 0)", CheckpointName); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "UPDATE projection_checkpoints SET last_seq = ?, updated_at = ? WHERE name = ? AND last_seq < ?",
			int64(b.seq), d.Time(time.Now()), CheckpointName, int64(b.seq)); err != nil {
			return err
		}
	}
	return nil
}

// Run flushes every interval until ctx is cancelled, then flushes once more
// (with a short grace period of its own) and returns.
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
			if err := a.Flush(ctx); err != nil && ctx.Err() == nil {
				a.cfg.Logger.Error("freshness flush failed; keeping the observations for the next one", "err", err)
			}
		}
	}
}

// Checkpoint returns the OBSERVATIONS sequence the last flush reached.
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
// the freshness checkpoint + 1, and flushes every interval, until ctx is
// cancelled. Undecodable observations are skipped (and counted in the log).
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
