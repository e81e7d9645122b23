// Package uptime is the uptime projection: a ledger of each incident's
// intervals and of the periods the monitor itself could not tell, and rollups
// per site and hour / day computed from it.
//
// # Rules
//
//   - Time is split into up, seems_down, down, unknown and maintenance. Where
//     they overlap, maintenance > down > seems_down > unknown > up.
//   - Once an incident is confirmed Down, its downtime runs from started_at,
//     the first failure, not from the confirmation.
//   - An incident closed unconfirmed as probe_cleared or false_alarm counts as
//     up. One still open and unconfirmed counts as seems_down; so does one
//     closed unconfirmed for another reason (manual, paused, deleted).
//   - Time in a maintenance window (the Seems Down or the Down carried
//     Maintenance) is maintenance, reported apart from downtime.
//   - Unknown time is the monitor's own trouble: while the primary region
//     (Config.PrimaryRegion; any region if unset) is impaired, every site's
//     time is unknown, unless the site's own incident covers it.
//   - Uptime % = up / (up + seems_down + down): unknown and maintenance time
//     are excluded. In an hour with an incident from :10, confirmed at :12,
//     recovered at :16, and 2 minutes of unknown elsewhere: 52/58 = 89.655 %.
//
// # Tables
//
// uptime_incidents and uptime_unknown are the ledger. uptime_hourly and
// uptime_daily hold, per (site, period), the seconds of each class for the
// periods in which the site had an incident (accounted = 1); a site-period
// without such a row was up apart from the fleet-wide unknown seconds in
// uptime_unknown_hourly / uptime_unknown_daily. A period is accounted when
// an incident in it closes, and re-accounted when an impairment covering it
// ends; open incidents and impairments are added by the query layer. The
// same rows carry checks, failures and response-time percentiles, written by
// the freshness applier from OBSERVATIONS and carried over by a rebuild.
//
// Retention: hourly rows 30 days, daily rows and the ledger 2 years
// (Config). Rows older than that are not written by a replay and are deleted
// by Maintain.
package uptime

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/projections/projector"
	"github.com/vigil-dev/vigil/projections/store"
)

// Name is the projection's name and checkpoint.
const Name = "uptime"

// Tables.
const (
	TableIncidents     = "uptime_incidents"
	TableUnknown       = "uptime_unknown"
	TableHourly        = "uptime_hourly"
	TableDaily         = "uptime_daily"
	TableUnknownHourly = "uptime_unknown_hourly"
	TableUnknownDaily  = "uptime_unknown_daily"
)

// Table returns the rollup table of a period.
func (p Period) Table() string {
	if p == Daily {
		return TableDaily
	}
	return TableHourly
}

// UnknownTable returns the fleet-wide unknown table of a period.
func (p Period) UnknownTable() string {
	if p == Daily {
		return TableUnknownDaily
	}
	return TableUnknownHourly
}

// ObservationColumns are the rollup columns that come from OBSERVATIONS.
var ObservationColumns = []string{"checks", "failures", "rt_p50_ms", "rt_p95_ms", "rt_p99_ms", "rt_hist"}

// Config tunes the projection.
type Config struct {
	// PrimaryRegion is the region whose impairment makes every site's time
	// unknown (the first of VIGIL_REGIONS). Empty: any region's.
	PrimaryRegion string
	// HourlyRetention and DailyRetention bound the rollups (30 days and 2
	// years by default). The ledger is kept as long as the daily rollups.
	HourlyRetention time.Duration
	DailyRetention  time.Duration
	// Now is the clock used for retention (default time.Now).
	Now func() time.Time
}

// Projection is the uptime projection.
type Projection struct {
	cfg Config
}

// deferred is the work a batch leaves to its end (in projector.Tx.Local):
// site ranges to re-account, and impairment ranges whose fleet-wide unknown
// time changed.
type deferred struct {
	dirty   map[string][]span
	unknown []span
}

func (p *Projection) deferred(tx *projector.Tx) *deferred {
	return tx.Local(p, func() any { return &deferred{dirty: map[string][]span{}} }).(*deferred)
}

type span struct{ from, to time.Time }

// New returns the projection.
func New(cfg Config) *Projection {
	if cfg.HourlyRetention <= 0 {
		cfg.HourlyRetention = 30 * 24 * time.Hour
	}
	if cfg.DailyRetention <= 0 {
		cfg.DailyRetention = 2 * 365 * 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Projection{cfg: cfg}
}

// Name implements projector.Projection.
func (*Projection) Name() string { return Name }

// Tables implements projector.Projection.
func (*Projection) Tables() []string {
	return []string{TableIncidents, TableUnknown, TableHourly, TableDaily, TableUnknownHourly, TableUnknownDaily}
}

// Apply implements projector.Projection.
func (p *Projection) Apply(ctx context.Context, tx *projector.Tx, seq uint64, ev *projector.Event) error {
	if ev.Region != nil {
		return p.applyRegion(ctx, tx, seq, ev.Region, ev.Type())
	}
	se := ev.Site
	if se == nil {
		return nil
	}
	d := tx.D
	t := tx.T(TableIncidents)
	started := se.At
	if se.StartedAt != nil {
		started = *se.StartedAt
	}
	key := []string{"incident_id"}
	// Ledger rows are queued and written at the end of the batch, one
	// multi-row statement per kind in the order an incident's events come.
	switch se.Kind {
	case events.KindSeemsDown:
		cols := []string{"incident_id", "site_id", "started_at", "maint_open", projector.SeqColumn}
		tx.Queue(0, t, key, cols, []string{projector.Guarded(d, "started_at", ""), projector.Guarded(d, "maint_open", ""), projector.GuardSeq(d)},
			se.IncidentID, se.SiteID, d.Time(started), boolInt(se.Maintenance), int64(seq))
		return nil
	case events.KindDown:
		cols := []string{"incident_id", "site_id", "started_at", "confirmed_at", "maint_confirmed", projector.SeqColumn}
		tx.Queue(1, t, key, cols, []string{projector.Guarded(d, "confirmed_at", ""), projector.Guarded(d, "maint_confirmed", ""), projector.GuardSeq(d)},
			se.IncidentID, se.SiteID, d.Time(started), d.Time(se.At), boolInt(se.Maintenance), int64(seq))
		return nil
	case events.KindRecovered:
		cols := []string{"incident_id", "site_id", "started_at", "closed_at", "resolution", projector.SeqColumn}
		tx.Queue(2, t, key, cols, []string{projector.Guarded(d, "closed_at", ""), projector.Guarded(d, "resolution", ""), projector.GuardSeq(d)},
			se.IncidentID, se.SiteID, d.Time(started), d.Time(se.At), string(se.Reason), int64(seq))
		if se.StartedAt == nil {
			// The ledger may know an earlier start (from the Seems Down).
			if err := tx.FlushQueued(ctx); err != nil {
				return err
			}
			var st store.Time
			if err := tx.QueryRowContext(ctx, "SELECT started_at FROM "+t+" WHERE incident_id = ?", se.IncidentID).Scan(&st); err != nil {
				return err
			}
			started = st.Time
		}
		p.deferred(tx).markSite(se.SiteID, started, se.At)
		return nil
	}
	return nil
}

func (p *Projection) applyRegion(ctx context.Context, tx *projector.Tx, seq uint64, re *events.RegionEvent, typ string) error {
	d := tx.D
	t := tx.T(TableUnknown)
	switch typ {
	case events.TypeRegionImpaired:
		var open int
		if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+t+" WHERE region = ? AND ended_at IS NULL", re.Region).Scan(&open); err != nil {
			return err
		}
		if open > 0 {
			return nil
		}
		counts := p.cfg.PrimaryRegion == "" || p.cfg.PrimaryRegion == re.Region
		_, err := tx.ExecContext(ctx, d.InsertIgnore()+" INTO "+t+" (impairment_id, region, counts, started_at, "+projector.SeqColumn+") VALUES (?, ?, ?, ?, ?)",
			re.ID, re.Region, boolInt(counts), d.Time(re.At), int64(seq))
		return err
	case events.TypeRegionRecovered:
		var id string
		var started store.Time
		var counts int
		err := tx.QueryRowContext(ctx, "SELECT impairment_id, started_at, counts FROM "+t+" WHERE region = ? AND ended_at IS NULL ORDER BY started_at LIMIT 1", re.Region).Scan(&id, &started, &counts)
		if err != nil {
			if isNoRows(err) {
				return nil // a recovery with no impairment on record: nothing to close
			}
			return err
		}
		end := re.At
		if end.Before(started.Time) {
			end = started.Time
		}
		if _, err := tx.ExecContext(ctx, "UPDATE "+t+" SET ended_at = ?, recovered_event_id = ?, "+projector.SeqColumn+" = ? WHERE impairment_id = ? AND "+projector.SeqColumn+" < ?",
			d.Time(end), re.ID, int64(seq), id, int64(seq)); err != nil {
			return err
		}
		if counts != 0 {
			w := p.deferred(tx)
			w.unknown = append(w.unknown, span{started.Time, end})
		}
		return nil
	}
	return nil
}

// cutoff is the start of the oldest period a rollup keeps.
func (p *Projection) cutoff(per Period) time.Time {
	keep := p.cfg.HourlyRetention
	if per == Daily {
		keep = p.cfg.DailyRetention
	}
	return per.Start(p.cfg.Now().Add(-keep))
}

func (w *deferred) markSite(site string, from, to time.Time) {
	if to.Before(from) {
		to = from
	}
	w.dirty[site] = append(w.dirty[site], span{from, to})
}

// EndBatch implements projector.BatchEnder. It re-accounts, once per batch,
// every site-period touched by an incident that closed in the batch, and for
// every impairment that ended in it the fleet-wide unknown seconds and every
// accounted site-period it covers, all from the ledger as the batch left it
// (so the order of the batch's events does not matter).
func (p *Projection) EndBatch(ctx context.Context, tx *projector.Tx) error {
	w := p.deferred(tx)
	if len(w.dirty) == 0 && len(w.unknown) == 0 {
		return nil
	}
	d := tx.D
	// The range every period touched lies in, to read the impairments once.
	var lo, hi time.Time
	widen := func(sp span) {
		f, t := Daily.Start(sp.from), Daily.Next(Daily.Start(sp.to))
		if lo.IsZero() || f.Before(lo) {
			lo = f
		}
		if t.After(hi) {
			hi = t
		}
	}
	for _, sp := range w.unknown {
		widen(sp)
	}
	for _, spans := range w.dirty {
		for _, sp := range spans {
			widen(sp)
		}
	}
	unknown, err := LoadUnknown(ctx, tx, d, tx.T(TableUnknown), lo, hi, time.Time{})
	if err != nil {
		return err
	}
	// Site-periods to account, by period kind.
	todo := map[Period]map[string]map[time.Time]bool{Hourly: {}, Daily: {}}
	add := func(per Period, site string, start time.Time) {
		if start.Before(p.cutoff(per)) {
			return
		}
		m := todo[per][site]
		if m == nil {
			m = map[time.Time]bool{}
			todo[per][site] = m
		}
		m[start] = true
	}
	for _, per := range []Period{Hourly, Daily} {
		seen := map[time.Time]bool{}
		for _, sp := range w.unknown {
			for _, s := range per.Starts(sp.from, sp.to) {
				if seen[s] || s.Before(p.cutoff(per)) {
					continue
				}
				seen[s] = true
				secs := Account(s, per.Next(s), unknown).Unknown
				q := projector.Upsert(d, tx.T(per.UnknownTable()), []string{"period_start"}, []string{"period_start", "seconds"}, "seconds = "+d.Excluded("seconds"))
				if _, err := tx.ExecContext(ctx, q, d.Time(s), secs); err != nil {
					return err
				}
				sites, err := accountedSites(ctx, tx, per, s)
				if err != nil {
					return err
				}
				for _, site := range sites {
					add(per, site, s)
				}
			}
		}
		for site, spans := range w.dirty {
			for _, sp := range spans {
				for _, s := range per.Starts(sp.from, sp.to) {
					add(per, site, s)
				}
			}
		}
	}
	for _, per := range []Period{Hourly, Daily} {
		if err := p.account(ctx, tx, per, todo[per], unknown); err != nil {
			return err
		}
	}
	return nil
}

func accountedSites(ctx context.Context, tx *projector.Tx, per Period, start time.Time) ([]string, error) {
	rows, err := tx.QueryContext(ctx, "SELECT site_id FROM "+tx.T(per.Table())+" WHERE period_start = ? AND accounted = 1", tx.D.Time(start))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var sites []string
	for rows.Next() {
		var site string
		if err := rows.Scan(&site); err != nil {
			return nil, err
		}
		sites = append(sites, site)
	}
	return sites, rows.Err()
}

var secondsCols = []string{"seconds_up", "seconds_seems_down", "seconds_down", "seconds_unknown", "seconds_maintenance"}

const chunk = 200

// account computes the given site-periods from the ledger's closed incidents
// and the given closed impairments, and writes them in multi-row upserts.
func (p *Projection) account(ctx context.Context, tx *projector.Tx, per Period, todo map[string]map[time.Time]bool, unknown []Interval) error {
	if len(todo) == 0 {
		return nil
	}
	d := tx.D
	sites := make([]string, 0, len(todo))
	for s := range todo {
		sites = append(sites, s)
	}
	slices.Sort(sites)
	cols := append([]string{"site_id", "period_start", "accounted"}, secondsCols...)
	assigns := []string{"accounted = 1"}
	for _, c := range secondsCols {
		assigns = append(assigns, c+" = "+d.Excluded(c))
	}
	var args []any
	rowsPending := 0
	flush := func() error {
		if rowsPending == 0 {
			return nil
		}
		q := "INSERT INTO " + tx.T(per.Table()) + " (" + strings.Join(cols, ", ") + ") VALUES " +
			strings.TrimSuffix(strings.Repeat("(?, ?, 1, ?, ?, ?, ?, ?), ", rowsPending), ", ") + " " +
			d.OnConflict("site_id", "period_start") + " " + strings.Join(assigns, ", ")
		_, err := tx.ExecContext(ctx, q, args...)
		args, rowsPending = args[:0], 0
		return err
	}
	for i := 0; i < len(sites); i += chunk {
		group := sites[i:min(i+chunk, len(sites))]
		var lo, hi time.Time
		for _, site := range group {
			for s := range todo[site] {
				if lo.IsZero() || s.Before(lo) {
					lo = s
				}
				if e := per.Next(s); e.After(hi) {
					hi = e
				}
			}
		}
		spans, err := loadClosedSpans(ctx, tx, group, lo, hi)
		if err != nil {
			return err
		}
		for _, site := range group {
			starts := make([]time.Time, 0, len(todo[site]))
			for s := range todo[site] {
				starts = append(starts, s)
			}
			slices.SortFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
			for _, s := range starts {
				end := per.Next(s)
				ivs := append([]Interval(nil), unknown...)
				for _, sp := range spans[site] {
					ivs = append(ivs, sp.Intervals(end)...)
				}
				x := Account(s, end, ivs)
				args = append(args, site, d.Time(s), x.Up, x.SeemsDown, x.Down, x.Unknown, x.Maintenance)
				rowsPending++
				if rowsPending == chunk {
					if err := flush(); err != nil {
						return err
					}
				}
			}
		}
	}
	return flush()
}

// loadClosedSpans reads the closed incidents of several sites overlapping
// [from, to) from the ledger.
func loadClosedSpans(ctx context.Context, tx *projector.Tx, sites []string, from, to time.Time) (map[string][]Span, error) {
	d := tx.D
	args := make([]any, 0, len(sites)+2)
	for _, s := range sites {
		args = append(args, s)
	}
	args = append(args, d.Time(to), d.Time(from))
	rows, err := tx.QueryContext(ctx, "SELECT site_id, incident_id, started_at, confirmed_at, closed_at, resolution, maint_open, maint_confirmed FROM "+
		tx.T(TableIncidents)+" WHERE site_id IN ("+strings.TrimSuffix(strings.Repeat("?, ", len(sites)), ", ")+
		") AND started_at < ? AND closed_at IS NOT NULL AND closed_at > ?", args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]Span{}
	for rows.Next() {
		sp, err := scanSpan(rows)
		if err != nil {
			return nil, err
		}
		out[sp.SiteID] = append(out[sp.SiteID], sp)
	}
	return out, rows.Err()
}

func scanSpan(rows *sql.Rows) (Span, error) {
	var sp Span
	var st, cf, cl store.Time
	var res sql.NullString
	var mo, mc int
	if err := rows.Scan(&sp.SiteID, &sp.IncidentID, &st, &cf, &cl, &res, &mo, &mc); err != nil {
		return sp, err
	}
	sp.Started, sp.Confirmed, sp.Closed = st.Time, cf.Ptr(), cl.Ptr()
	sp.Resolution = events.Reason(res.String)
	sp.MaintOpen, sp.MaintConfirmed = mo != 0, mc != 0
	return sp, nil
}

// LoadSpans reads a site's incidents overlapping [from, to) from the ledger
// table. With closedOnly, open incidents are left out.
func LoadSpans(ctx context.Context, q store.Querier, d store.Dialect, table, site string, from, to time.Time, closedOnly bool) ([]Span, error) {
	query := "SELECT site_id, incident_id, started_at, confirmed_at, closed_at, resolution, maint_open, maint_confirmed FROM " + table +
		" WHERE site_id = ? AND started_at < ? AND "
	if closedOnly {
		query += "closed_at IS NOT NULL AND closed_at > ?"
	} else {
		query += "(closed_at IS NULL OR closed_at > ?)"
	}
	query += " ORDER BY started_at"
	rows, err := q.QueryContext(ctx, query, site, d.Time(to), d.Time(from))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Span
	for rows.Next() {
		sp, err := scanSpan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, sp)
	}
	return out, rows.Err()
}

// LoadUnknown reads the counted impairments overlapping [from, to) as unknown
// intervals. With a zero now only closed ones are read; otherwise open ones
// run until now.
func LoadUnknown(ctx context.Context, q store.Querier, d store.Dialect, table string, from, to, now time.Time) ([]Interval, error) {
	query := "SELECT started_at, ended_at FROM " + table + " WHERE counts = 1 AND started_at < ? AND "
	if now.IsZero() {
		query += "ended_at IS NOT NULL AND ended_at > ?"
	} else {
		query += "(ended_at IS NULL OR ended_at > ?)"
	}
	rows, err := q.QueryContext(ctx, query, d.Time(to), d.Time(from))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Interval
	for rows.Next() {
		var st, en store.Time
		if err := rows.Scan(&st, &en); err != nil {
			return nil, err
		}
		end := now
		if en.Valid {
			end = en.Time
		}
		if end.After(st.Time) {
			out = append(out, Interval{st.Time, end, Unknown})
		}
	}
	return out, rows.Err()
}

// CarryOver implements projector.CarryOver: the observation columns of the
// live rollups are copied into the rebuilt ones.
func (p *Projection) CarryOver(ctx context.Context, tx *projector.Tx) error {
	d := tx.D
	for _, per := range []Period{Hourly, Daily} {
		cols := "site_id, period_start"
		set := ""
		for i, c := range ObservationColumns {
			cols += ", " + c
			if i > 0 {
				set += ", "
			}
			set += c + " = " + d.Excluded(c)
		}
		q := "INSERT INTO " + tx.T(per.Table()) + " (" + cols + ") SELECT " + cols + " FROM " + tx.Live(per.Table()) +
			" WHERE checks > 0 " + d.OnConflict("site_id", "period_start") + " " + set
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("carry over %s: %w", per.Table(), err)
		}
	}
	return nil
}

// Maintain implements projector.Maintainer: it deletes rollup rows and ledger
// entries older than their retention (by Config.Now), in batches.
func (p *Projection) Maintain(ctx context.Context, db *store.DB) error {
	d := db.D
	now := p.cfg.Now()
	hourCut := d.Time(Hourly.Start(now.Add(-p.cfg.HourlyRetention)))
	dayCut := d.Time(Daily.Start(now.Add(-p.cfg.DailyRetention)))
	jobs := []struct {
		table, where string
		arg          any
	}{
		{TableHourly, "period_start < ?", hourCut},
		{TableUnknownHourly, "period_start < ?", hourCut},
		{TableDaily, "period_start < ?", dayCut},
		{TableUnknownDaily, "period_start < ?", dayCut},
		{TableIncidents, "closed_at < ?", dayCut},
		{TableUnknown, "ended_at < ?", dayCut},
	}
	const batch = 5000
	for _, j := range jobs {
		for {
			res, err := db.W.ExecContext(ctx, d.DeleteBatch(j.table, j.where, batch), j.arg)
			if err != nil {
				return fmt.Errorf("retention %s: %w", j.table, err)
			}
			n, _ := res.RowsAffected()
			if n < batch {
				break
			}
		}
	}
	return nil
}

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
