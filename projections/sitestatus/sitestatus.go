// Package sitestatus is the site_status projection: one row per site with its
// current state, severity, the time it entered that state and its open
// incident, from EVENTS. The same rows carry freshness columns
// (last_checked_at, last_status_code, last_response_ms, cert_not_after, ...)
// that the freshness applier writes from OBSERVATIONS; a rebuild carries them
// over from the live table.
package sitestatus

import (
	"context"

	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/projections/projector"
)

// Name is the projection's name and checkpoint.
const Name = "site_status"

// Table is the projection's table.
const Table = "site_status"

// FreshnessColumns are the columns of site_status that come from
// OBSERVATIONS, not from EVENTS.
var FreshnessColumns = []string{"last_checked_at", "last_class", "last_status_code", "last_response_ms", "last_region", "cert_not_after"}

// Projection is the site_status projection.
type Projection struct{}

// New returns the projection.
func New() *Projection { return &Projection{} }

// Name implements projector.Projection.
func (*Projection) Name() string { return Name }

// Tables implements projector.Projection.
func (*Projection) Tables() []string { return []string{Table} }

var (
	incidentCols = []string{"site_id", "state", "severity", "since", "incident_id", "maintenance",
		"last_event_id", "last_event_kind", "last_event_at", projector.SeqColumn}
	tlsCols = []string{"site_id", "tls_kind", "tls_severity", "tls_at", "tls_not_after",
		"last_event_id", "last_event_kind", "last_event_at", tlsSeq, projector.SeqColumn}
)

// tlsSeq guards the tls_* columns, so that TLS advisories and incident events
// of one batch can be written as two multi-row statements in either order.
const tlsSeq = "tls_event_seq"

// Write order of the queued statements: incident events (which all use one
// statement, so they keep their order), then TLS advisories.
const (
	orderIncident = iota
	orderTLS
)

// Apply implements projector.Projection. Region events do not change a
// site's row; TLS advisories set the tls_* columns and never the state.
func (p *Projection) Apply(ctx context.Context, tx *projector.Tx, seq uint64, ev *projector.Event) error {
	se := ev.Site
	if se == nil {
		return nil
	}
	d := tx.D
	switch se.Kind {
	case events.KindSeemsDown, events.KindDown, events.KindRecovered:
		state, sev := se.State, se.Severity
		since := se.At
		var incident any
		switch se.Kind {
		case events.KindSeemsDown, events.KindDown:
			if state == "" {
				state = events.State(se.Kind)
			}
			if sev == 0 {
				sev = events.SeveritySeemsDown
				if se.Kind == events.KindDown {
					sev = events.SeverityDown
				}
			}
			if se.StartedAt != nil {
				since = *se.StartedAt
			}
			incident = se.IncidentID
		case events.KindRecovered:
			if state == "" {
				state = events.StateUp
			}
		}
		tx.Queue(orderIncident, tx.T(Table), []string{"site_id"}, incidentCols,
			append(projector.GuardedAll(d, incidentCols[1:len(incidentCols)-1]...), projector.GuardSeq(d)),
			se.SiteID, string(state), int(sev), d.Time(since), incident, boolInt(se.Maintenance),
			se.ID, string(se.Kind), d.Time(se.At), int64(seq))
		return nil
	case events.KindTLSExpiring, events.KindTLSExpired, events.KindTLSRenewed:
		sev := int(se.Severity)
		var assigns []string
		for _, c := range []string{"tls_kind", "tls_severity", "tls_at", "tls_not_after"} {
			assigns = append(assigns, projector.GuardedBy(d, tlsSeq, c, ""))
		}
		assigns = append(assigns, projector.GuardedAll(d, "last_event_id", "last_event_kind", "last_event_at")...)
		assigns = append(assigns, tlsSeq+" = "+d.Greatest(tlsSeq, d.Excluded(tlsSeq)), projector.GuardSeq(d))
		tx.Queue(orderTLS, tx.T(Table), []string{"site_id"}, tlsCols, assigns,
			se.SiteID, string(se.Kind), sev, d.Time(se.At), d.TimePtr(se.CertNotAfter),
			se.ID, string(se.Kind), d.Time(se.At), int64(seq), int64(seq))
		return nil
	}
	return nil
}

// CarryOver implements projector.CarryOver: the freshness columns of the live
// rows are copied into the rebuilt table (creating rows for sites that had
// checks but no events).
func (p *Projection) CarryOver(ctx context.Context, tx *projector.Tx) error {
	d := tx.D
	cols := append([]string{"site_id"}, FreshnessColumns...)
	list := ""
	for i, c := range cols {
		if i > 0 {
			list += ", "
		}
		list += c
	}
	q := "INSERT INTO " + tx.T(Table) + " (" + list + ") SELECT " + list + " FROM " + tx.Live(Table) +
		" WHERE last_checked_at IS NOT NULL " + d.OnConflict("site_id") + " "
	for i, c := range FreshnessColumns {
		if i > 0 {
			q += ", "
		}
		q += c + " = " + d.Excluded(c)
	}
	_, err := tx.ExecContext(ctx, q)
	return err
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
