// Package query reads the projections: the status list with filters and
// cursor pagination, one site's status, a site's incidents, and uptime over a
// window with MTTR and MTBF. It only reads (store.DB.R).
package query

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-dev/vigil/projections/store"
	"github.com/vigil-dev/vigil/projections/uptime"
)

// ErrNotFound is returned for a site or incident with no row.
var ErrNotFound = errors.New("not found")

// ErrBadCursor is returned for a cursor this package did not make.
var ErrBadCursor = errors.New("bad cursor")

// Reader answers queries.
type Reader struct {
	db  *store.DB
	now func() time.Time
}

// Options tune a Reader.
type Options struct {
	// Now is the clock that open incidents run until (default time.Now).
	Now func() time.Time
}

// New returns a Reader.
func New(db *store.DB, opts Options) *Reader {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Reader{db: db, now: opts.Now}
}

// SiteStatus is one row of site_status.
type SiteStatus struct {
	SiteID      string     `json:"site_id"`
	State       string     `json:"state"`
	Severity    int        `json:"severity"`
	Since       *time.Time `json:"since,omitempty"`
	IncidentID  string     `json:"incident_id,omitempty"`
	Maintenance bool       `json:"maintenance"`

	TLSKind     string     `json:"tls_kind,omitempty"`
	TLSSeverity int        `json:"tls_severity,omitempty"`
	TLSAt       *time.Time `json:"tls_at,omitempty"`
	TLSNotAfter *time.Time `json:"tls_not_after,omitempty"`

	LastEventID   string     `json:"last_event_id,omitempty"`
	LastEventKind string     `json:"last_event_kind,omitempty"`
	LastEventAt   *time.Time `json:"last_event_at,omitempty"`
	LastEventSeq  uint64     `json:"last_event_seq"`

	LastCheckedAt  *time.Time `json:"last_checked_at,omitempty"`
	LastClass      string     `json:"last_class,omitempty"`
	LastStatusCode int        `json:"last_status_code,omitempty"`
	LastResponseMs int        `json:"last_response_ms,omitempty"`
	LastRegion     string     `json:"last_region,omitempty"`
	CertNotAfter   *time.Time `json:"cert_not_after,omitempty"`
}

const statusCols = `site_id, state, severity, since, incident_id, maintenance, tls_kind, tls_severity, tls_at, tls_not_after,
	last_event_id, last_event_kind, last_event_at, last_event_seq,
	last_checked_at, last_class, last_status_code, last_response_ms, last_region, cert_not_after`

func scanStatus(sc interface{ Scan(...any) error }) (SiteStatus, error) {
	var s SiteStatus
	var since, tlsAt, tlsNA, evAt, checked, cert store.Time
	var incident, tlsKind, evID, evKind, class, region sql.NullString
	var code, resp sql.NullInt64
	var maint int
	var seq int64
	err := sc.Scan(&s.SiteID, &s.State, &s.Severity, &since, &incident, &maint, &tlsKind, &s.TLSSeverity, &tlsAt, &tlsNA,
		&evID, &evKind, &evAt, &seq, &checked, &class, &code, &resp, &region, &cert)
	if err != nil {
		return s, err
	}
	s.Since, s.IncidentID, s.Maintenance = since.Ptr(), incident.String, maint != 0
	s.TLSKind, s.TLSAt, s.TLSNotAfter = tlsKind.String, tlsAt.Ptr(), tlsNA.Ptr()
	s.LastEventID, s.LastEventKind, s.LastEventAt, s.LastEventSeq = evID.String, evKind.String, evAt.Ptr(), uint64(seq)
	s.LastCheckedAt, s.LastClass, s.LastStatusCode, s.LastResponseMs = checked.Ptr(), class.String, int(code.Int64), int(resp.Int64)
	s.LastRegion, s.CertNotAfter = region.String, cert.Ptr()
	return s, nil
}

// StatusFilter selects and orders the status list.
type StatusFilter struct {
	// States keeps the sites in one of these states (empty: all).
	States []string
	// MinSeverity keeps the sites at or above a severity.
	MinSeverity int
	// WorstFirst orders by severity, highest first, then site ID; otherwise
	// by site ID.
	WorstFirst bool
	// Limit is the page size (default 100, at most 1000).
	Limit int
	// Cursor continues a previous page (StatusPage.Next).
	Cursor string
}

// StatusPage is one page of the status list.
type StatusPage struct {
	Items []SiteStatus `json:"items"`
	// Next is the cursor of the next page; empty on the last one.
	Next string `json:"next,omitempty"`
}

// ListStatus lists site statuses. Site labels are not in EVENTS, so the list
// filters by state and severity only; a caller that knows labels filters by
// site ID.
func (r *Reader) ListStatus(ctx context.Context, f StatusFilter) (StatusPage, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	var where []string
	var args []any
	if len(f.States) > 0 {
		where = append(where, "state IN (?"+strings.Repeat(", ?", len(f.States)-1)+")")
		for _, s := range f.States {
			args = append(args, s)
		}
	}
	if f.MinSeverity > 0 {
		where = append(where, "severity >= ?")
		args = append(args, f.MinSeverity)
	}
	if f.Cursor != "" {
		sev, site, err := decodeCursor(f.Cursor)
		if err != nil {
			return StatusPage{}, err
		}
		if f.WorstFirst {
			n, err := strconv.Atoi(sev)
			if err != nil {
				return StatusPage{}, ErrBadCursor
			}
			where = append(where, "(severity < ? OR (severity = ? AND site_id > ?))")
			args = append(args, n, n, site)
		} else {
			where = append(where, "site_id > ?")
			args = append(args, site)
		}
	}
	q := "SELECT " + statusCols + " FROM site_status"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	if f.WorstFirst {
		q += " ORDER BY severity DESC, site_id"
	} else {
		q += " ORDER BY site_id"
	}
	q += " LIMIT ?"
	args = append(args, limit+1)
	rows, err := r.db.R.QueryContext(ctx, q, args...)
	if err != nil {
		return StatusPage{}, err
	}
	defer rows.Close()
	var page StatusPage
	for rows.Next() {
		s, err := scanStatus(rows)
		if err != nil {
			return StatusPage{}, err
		}
		page.Items = append(page.Items, s)
	}
	if err := rows.Err(); err != nil {
		return StatusPage{}, err
	}
	if len(page.Items) > limit {
		page.Items = page.Items[:limit]
		last := page.Items[limit-1]
		page.Next = encodeCursor(strconv.Itoa(last.Severity), last.SiteID)
	}
	return page, nil
}

// Status returns one site's status.
func (r *Reader) Status(ctx context.Context, siteID string) (SiteStatus, error) {
	s, err := scanStatus(r.db.R.QueryRowContext(ctx, "SELECT "+statusCols+" FROM site_status WHERE site_id = ?", siteID))
	if errors.Is(err, sql.ErrNoRows) {
		return s, fmt.Errorf("site %s: %w", siteID, ErrNotFound)
	}
	return s, err
}

// Incident is one row of incidents.
type Incident struct {
	IncidentID    string     `json:"incident_id"`
	SiteID        string     `json:"site_id"`
	State         string     `json:"state"`
	OpenedAt      time.Time  `json:"opened_at"`
	DetectedAt    *time.Time `json:"detected_at,omitempty"`
	ConfirmedAt   *time.Time `json:"confirmed_at,omitempty"`
	ClosedAt      *time.Time `json:"closed_at,omitempty"`
	Resolution    string     `json:"resolution,omitempty"`
	WorstSeverity int        `json:"worst_severity"`
	FailureClass  string     `json:"failure_class,omitempty"`
	FailureStatus int        `json:"failure_status,omitempty"`
	// RegionVotes is the JSON array of the confirmation's votes.
	RegionVotes  string `json:"region_votes,omitempty"`
	SingleRegion bool   `json:"single_region"`
	Maintenance  bool   `json:"maintenance"`
}

// Duration is how long the incident lasted (until now if open).
func (i Incident) Duration(now time.Time) time.Duration {
	if i.ClosedAt != nil {
		return i.ClosedAt.Sub(i.OpenedAt)
	}
	return now.Sub(i.OpenedAt)
}

// IncidentFilter selects a site's incidents.
type IncidentFilter struct {
	// From and To bound opened_at (zero: unbounded).
	From, To time.Time
	// OpenOnly keeps incidents not closed yet.
	OpenOnly bool
	Limit    int
	Cursor   string
}

// IncidentPage is one page of incidents, newest first.
type IncidentPage struct {
	Items []Incident `json:"items"`
	Next  string     `json:"next,omitempty"`
}

// Incidents lists a site's incidents, newest first.
func (r *Reader) Incidents(ctx context.Context, siteID string, f IncidentFilter) (IncidentPage, error) {
	d := r.db.D
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, 1000)
	where := []string{"site_id = ?"}
	args := []any{siteID}
	if !f.From.IsZero() {
		where = append(where, "opened_at >= ?")
		args = append(args, d.Time(f.From))
	}
	if !f.To.IsZero() {
		where = append(where, "opened_at < ?")
		args = append(args, d.Time(f.To))
	}
	if f.OpenOnly {
		where = append(where, "closed_at IS NULL")
	}
	if f.Cursor != "" {
		at, id, err := decodeCursor(f.Cursor)
		if err != nil {
			return IncidentPage{}, err
		}
		t, err := time.Parse(time.RFC3339Nano, at)
		if err != nil {
			return IncidentPage{}, ErrBadCursor
		}
		where = append(where, "(opened_at < ? OR (opened_at = ? AND incident_id < ?))")
		args = append(args, d.Time(t), d.Time(t), id)
	}
	q := `SELECT incident_id, site_id, state, opened_at, detected_at, confirmed_at, closed_at, resolution, worst_severity,
		failure_class, failure_status, region_votes, single_region, maintenance FROM incidents WHERE ` +
		strings.Join(where, " AND ") + " ORDER BY opened_at DESC, incident_id DESC LIMIT ?"
	args = append(args, limit+1)
	rows, err := r.db.R.QueryContext(ctx, q, args...)
	if err != nil {
		return IncidentPage{}, err
	}
	defer rows.Close()
	var page IncidentPage
	for rows.Next() {
		var i Incident
		var opened, detected, confirmed, closed store.Time
		var res, class, votes sql.NullString
		var status sql.NullInt64
		var single, maint int
		if err := rows.Scan(&i.IncidentID, &i.SiteID, &i.State, &opened, &detected, &confirmed, &closed, &res, &i.WorstSeverity,
			&class, &status, &votes, &single, &maint); err != nil {
			return IncidentPage{}, err
		}
		i.OpenedAt, i.DetectedAt, i.ConfirmedAt, i.ClosedAt = opened.Time, detected.Ptr(), confirmed.Ptr(), closed.Ptr()
		i.Resolution, i.FailureClass, i.FailureStatus, i.RegionVotes = res.String, class.String, int(status.Int64), votes.String
		i.SingleRegion, i.Maintenance = single != 0, maint != 0
		page.Items = append(page.Items, i)
	}
	if err := rows.Err(); err != nil {
		return IncidentPage{}, err
	}
	if len(page.Items) > limit {
		page.Items = page.Items[:limit]
		last := page.Items[limit-1]
		page.Next = encodeCursor(last.OpenedAt.UTC().Format(time.RFC3339Nano), last.IncidentID)
	}
	return page, nil
}

// UptimeReport is a site's uptime over a window.
type UptimeReport struct {
	SiteID string    `json:"site_id"`
	From   time.Time `json:"from"`
	// To is the window's end, cut at now.
	To      time.Time      `json:"to"`
	Seconds uptime.Seconds `json:"seconds"`
	// Percent is up / (up + seems_down + down) × 100; nil when no time in
	// the window is known.
	Percent *float64 `json:"percent,omitempty"`
	// Incidents counts the confirmed (Down) incidents that started in the
	// window.
	Incidents int `json:"incidents"`
	// MTTR is the mean time from first failure to recovery of the confirmed
	// incidents that closed in the window; MTBF is the up time divided by
	// Incidents. Zero when there is nothing to average.
	MTTR time.Duration `json:"mttr"`
	MTBF time.Duration `json:"mtbf"`
	// Checks and Failures sum the rollups of the periods starting in the
	// window (hourly for windows up to the hourly retention, else daily).
	Checks   int64 `json:"checks"`
	Failures int64 `json:"failures"`
}

// Uptime computes a site's uptime over [from, to) from the uptime ledger, with
// open incidents and impairments running until now, by the rules of package
// uptime.
func (r *Reader) Uptime(ctx context.Context, siteID string, from, to time.Time) (UptimeReport, error) {
	now := r.now()
	if to.After(now) {
		to = now
	}
	rep := UptimeReport{SiteID: siteID, From: from, To: to}
	if !to.After(from) {
		return rep, nil
	}
	d := r.db.D
	spans, err := uptime.LoadSpans(ctx, r.db.R, d, uptime.TableIncidents, siteID, from, to, false)
	if err != nil {
		return rep, err
	}
	ivs, err := uptime.LoadUnknown(ctx, r.db.R, d, uptime.TableUnknown, from, to, now)
	if err != nil {
		return rep, err
	}
	var repair time.Duration
	var repaired int
	for _, sp := range spans {
		ivs = append(ivs, sp.Intervals(now)...)
		if sp.Confirmed == nil {
			continue
		}
		if !sp.Started.Before(from) && sp.Started.Before(to) {
			rep.Incidents++
		}
		if sp.Closed != nil && !sp.Closed.Before(from) && sp.Closed.Before(to) {
			repair += sp.Closed.Sub(sp.Started)
			repaired++
		}
	}
	rep.Seconds = uptime.Account(from, to, ivs)
	if rep.Seconds.Known() > 0 {
		p := rep.Seconds.Percent()
		rep.Percent = &p
	}
	if repaired > 0 {
		rep.MTTR = repair / time.Duration(repaired)
	}
	if rep.Incidents > 0 {
		rep.MTBF = time.Duration(rep.Seconds.Up) * time.Second / time.Duration(rep.Incidents)
	}
	table := uptime.TableHourly
	if to.Sub(from) > 31*24*time.Hour {
		table = uptime.TableDaily
	}
	var checks, failures sql.NullInt64
	if err := r.db.R.QueryRowContext(ctx, "SELECT SUM(checks), SUM(failures) FROM "+table+" WHERE site_id = ? AND period_start >= ? AND period_start < ?",
		siteID, d.Time(from), d.Time(to)).Scan(&checks, &failures); err != nil {
		return rep, err
	}
	rep.Checks, rep.Failures = checks.Int64, failures.Int64
	return rep, nil
}

// Rollup is one period of a site's rollups.
type Rollup struct {
	PeriodStart time.Time `json:"period_start"`
	// Accounted is true when the site had an incident in the period; the
	// seconds of other periods are the fleet-wide unknown time, the rest up.
	Accounted bool           `json:"accounted"`
	Seconds   uptime.Seconds `json:"seconds"`
	Checks    int64          `json:"checks"`
	Failures  int64          `json:"failures"`
	P50Ms     *int64         `json:"p50_ms,omitempty"`
	P95Ms     *int64         `json:"p95_ms,omitempty"`
	P99Ms     *int64         `json:"p99_ms,omitempty"`
}

// Rollups returns a site's rollups for every period overlapping [from, to),
// filling periods without a row (up apart from fleet-wide unknown time).
// Incidents still open are not in rollups; Uptime includes them.
func (r *Reader) Rollups(ctx context.Context, siteID string, per uptime.Period, from, to time.Time) ([]Rollup, error) {
	d := r.db.D
	starts := per.Starts(from, to)
	if len(starts) == 0 {
		return nil, nil
	}
	if len(starts) > 24*400 {
		return nil, fmt.Errorf("window too long: %d periods", len(starts))
	}
	lo, hi := starts[0], per.Next(starts[len(starts)-1])
	got := map[int64]Rollup{}
	rows, err := r.db.R.QueryContext(ctx, `SELECT period_start, accounted, seconds_up, seconds_seems_down, seconds_down, seconds_unknown,
		seconds_maintenance, checks, failures, rt_p50_ms, rt_p95_ms, rt_p99_ms FROM `+per.Table()+
		` WHERE site_id = ? AND period_start >= ? AND period_start < ?`, siteID, d.Time(lo), d.Time(hi))
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var x Rollup
		var ps store.Time
		var acc int
		var p50, p95, p99 sql.NullInt64
		s := &x.Seconds
		if err := rows.Scan(&ps, &acc, &s.Up, &s.SeemsDown, &s.Down, &s.Unknown, &s.Maintenance, &x.Checks, &x.Failures, &p50, &p95, &p99); err != nil {
			rows.Close()
			return nil, err
		}
		x.PeriodStart, x.Accounted = ps.Time, acc != 0
		x.P50Ms, x.P95Ms, x.P99Ms = ptr(p50), ptr(p95), ptr(p99)
		got[x.PeriodStart.Unix()] = x
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	unknown := map[int64]int64{}
	rows, err = r.db.R.QueryContext(ctx, "SELECT period_start, seconds FROM "+per.UnknownTable()+" WHERE period_start >= ? AND period_start < ?", d.Time(lo), d.Time(hi))
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var ps store.Time
		var secs int64
		if err := rows.Scan(&ps, &secs); err != nil {
			rows.Close()
			return nil, err
		}
		unknown[ps.Time.Unix()] = secs
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]Rollup, 0, len(starts))
	for _, s := range starts {
		x, ok := got[s.Unix()]
		if !ok {
			x.PeriodStart = s
		}
		if !x.Accounted {
			total := int64(per.Next(s).Sub(s) / time.Second)
			x.Seconds = uptime.Seconds{Unknown: unknown[s.Unix()]}
			x.Seconds.Up = total - x.Seconds.Unknown
		}
		out = append(out, x)
	}
	return out, nil
}

func ptr(n sql.NullInt64) *int64 {
	if !n.Valid {
		return nil
	}
	v := n.Int64
	return &v
}

func encodeCursor(a, b string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(a + "\x00" + b))
}

func decodeCursor(c string) (string, string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return "", "", ErrBadCursor
	}
	a, b, ok := strings.Cut(string(raw), "\x00")
	if !ok {
		return "", "", ErrBadCursor
	}
	return a, b, nil
}
