// Package incidents is the incidents projection: one row per incident, opened
// by Seems Down (opened_at is the incident's started_at, the first failure),
// confirmed by Down and closed by Recovered with its resolution reason.
//
// Columns: state (seems_down, down, closed), opened_at, detected_at (when
// Seems Down was derived), confirmed_at, closed_at, resolution, the worst
// severity reached, the first failure's class and HTTP status, the region
// votes of the confirmation (JSON), whether a single region confirmed it, and
// whether any of its events fell in a maintenance window.
package incidents

import (
	"context"
	"encoding/json"

	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/projections/projector"
)

// Name is the projection's name and checkpoint.
const Name = "incidents"

// Table is the projection's table.
const Table = "incidents"

// States of an incident row.
const (
	StateSeemsDown = "seems_down"
	StateDown      = "down"
	StateClosed    = "closed"
)

// Projection is the incidents projection.
type Projection struct{}

// New returns the projection.
func New() *Projection { return &Projection{} }

// Name implements projector.Projection.
func (*Projection) Name() string { return Name }

// Tables implements projector.Projection.
func (*Projection) Tables() []string { return []string{Table} }

// Apply implements projector.Projection. Every statement is an upsert guarded
// by last_event_seq, so an incident whose opening is missing from the stream
// (history trimmed, a poison Seems Down) still gets a row, and a replayed
// event changes nothing. Rows are queued and written at the end of the batch
// as one multi-row statement per kind, in the order Seems Down, Down,
// Recovered: the order in which one incident's events come.
func (p *Projection) Apply(ctx context.Context, tx *projector.Tx, seq uint64, ev *projector.Event) error {
	se := ev.Site
	if se == nil {
		return nil
	}
	d := tx.D
	t := tx.T(Table)
	started := se.At
	if se.StartedAt != nil {
		started = *se.StartedAt
	}
	key := []string{"incident_id"}
	worst := projector.Guarded(d, "worst_severity", d.Greatest("worst_severity", d.Excluded("worst_severity")))
	maint := projector.Guarded(d, "maintenance", d.Greatest("maintenance", d.Excluded("maintenance")))
	switch se.Kind {
	case events.KindSeemsDown:
		sev := se.Severity
		if sev == 0 {
			sev = events.SeveritySeemsDown
		}
		cols := []string{"incident_id", "site_id", "state", "opened_at", "detected_at", "worst_severity",
			"failure_class", "failure_status", "maintenance", "opened_event_id", projector.SeqColumn}
		// A Seems Down never moves a confirmed or closed incident back.
		state := projector.Guarded(d, "state", "CASE WHEN state = '"+StateSeemsDown+"' THEN "+d.Excluded("state")+" ELSE state END")
		assigns := []string{
			state,
			projector.Guarded(d, "opened_at", ""),
			projector.Guarded(d, "detected_at", ""),
			worst,
			projector.Guarded(d, "failure_class", ""),
			projector.Guarded(d, "failure_status", ""),
			maint,
			projector.Guarded(d, "opened_event_id", ""),
			projector.GuardSeq(d),
		}
		tx.Queue(0, t, key, cols, assigns, se.IncidentID, se.SiteID, StateSeemsDown, d.Time(started), d.Time(se.At), int(sev),
			nullStr(string(se.FailureClass)), nullInt(se.FailureStatus), boolInt(se.Maintenance), se.ID, int64(seq))
		return nil
	case events.KindDown:
		sev := se.Severity
		if sev == 0 {
			sev = events.SeverityDown
		}
		var votes any
		if len(se.Votes) > 0 {
			b, err := json.Marshal(se.Votes)
			if err != nil {
				return projector.Poison(err)
			}
			votes = string(b)
		}
		cols := []string{"incident_id", "site_id", "state", "opened_at", "confirmed_at", "worst_severity",
			"failure_class", "failure_status", "region_votes", "single_region", "maintenance", "confirmed_event_id", projector.SeqColumn}
		state := projector.Guarded(d, "state", "CASE WHEN state = '"+StateClosed+"' THEN state ELSE "+d.Excluded("state")+" END")
		assigns := []string{
			state,
			projector.Guarded(d, "confirmed_at", ""),
			worst,
			projector.Guarded(d, "failure_class", "COALESCE(failure_class, "+d.Excluded("failure_class")+")"),
			projector.Guarded(d, "failure_status", "COALESCE(failure_status, "+d.Excluded("failure_status")+")"),
			projector.Guarded(d, "region_votes", ""),
			projector.Guarded(d, "single_region", ""),
			maint,
			projector.Guarded(d, "confirmed_event_id", ""),
			projector.GuardSeq(d),
		}
		tx.Queue(1, t, key, cols, assigns, se.IncidentID, se.SiteID, StateDown, d.Time(started), d.Time(se.At), int(sev),
			nullStr(string(se.FailureClass)), nullInt(se.FailureStatus), votes, boolInt(se.SingleRegion), boolInt(se.Maintenance), se.ID, int64(seq))
		return nil
	case events.KindRecovered:
		cols := []string{"incident_id", "site_id", "state", "opened_at", "closed_at", "resolution", "worst_severity",
			"maintenance", "closed_event_id", projector.SeqColumn}
		assigns := []string{
			projector.Guarded(d, "state", ""),
			projector.Guarded(d, "closed_at", ""),
			projector.Guarded(d, "resolution", ""),
			maint,
			projector.Guarded(d, "closed_event_id", ""),
			projector.GuardSeq(d),
		}
		tx.Queue(2, t, key, cols, assigns, se.IncidentID, se.SiteID, StateClosed, d.Time(started), d.Time(se.At),
			nullStr(string(se.Reason)), 0, boolInt(se.Maintenance), se.ID, int64(seq))
		return nil
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullInt(n int) any {
	if n == 0 {
		return nil
	}
	return n
}
