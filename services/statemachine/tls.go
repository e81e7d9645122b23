package statemachine

import (
	"time"

	"github.com/vigil-dev/vigil/events"
)

// TLS advisory stages, from mildest to most severe. CertState.Stage holds the
// most severe one issued for the current certificate.
const (
	stageNone = iota
	stage30
	stage14
	stage7
	stageExpired
)

type tlsAdvisory struct {
	kind     events.EventKind
	severity events.Severity
	tag      string // part of the event ID
}

var tlsAdvisories = [...]tlsAdvisory{
	stage30:      {events.KindTLSExpiring, events.SeverityWarning, "30"},
	stage14:      {events.KindTLSExpiring, events.SeverityWarning, "14"},
	stage7:       {events.KindTLSExpiring, events.SeverityDegraded, "7"},
	stageExpired: {events.KindTLSExpired, events.SeverityDegraded, "expired"},
}

// daysLeft is floor((notAfter - at) / 24h), negative once the certificate has
// expired (an hour past NotAfter is day -1).
func daysLeft(notAfter, at time.Time) int {
	d := notAfter.Sub(at)
	days := int(d / (24 * time.Hour))
	if d < 0 && d%(24*time.Hour) != 0 {
		days--
	}
	return days
}

func stageFor(days int) int {
	switch {
	case days < 0:
		return stageExpired
	case days <= 7:
		return stage7
	case days <= 14:
		return stage14
	case days <= 30:
		return stage30
	}
	return stageNone
}

// tls issues certificate advisories from a primary-region observation's TLS
// info. It never touches the incident.
//
// A certificate is identified by its NotAfter. Each advisory is issued at most
// once per certificate: the most severe stage reached is recorded, and a
// certificate first seen at, say, 5 days left gets only the 7-day advisory, not
// the 30- and 14-day ones as well. A certificate with a later NotAfter replaces
// the tracked one (tls_renewed if any advisory had been issued for the old one)
// and is then evaluated afresh. A certificate with an earlier NotAfter than the
// tracked one (an old certificate still served by part of a load-balanced
// fleet) is ignored, so two certificates served in turn cannot make the
// advisories flap.
func (st *SiteState) tls(site events.Site, obs events.Observation, env Env, out *Output) {
	if obs.TLS == nil || obs.TLS.NotAfter.IsZero() {
		return
	}
	at := obs.StartedAt.UTC()
	notAfter := obs.TLS.NotAfter.UTC()
	days := daysLeft(notAfter, at)
	switch c := st.TLS; {
	case c == nil:
		st.TLS = &CertState{NotAfter: notAfter}
	case notAfter.Equal(c.NotAfter):
	case notAfter.After(c.NotAfter):
		if c.Stage > stageNone {
			out.Events = append(out.Events, st.tlsEvent(site, obs, env, events.KindTLSRenewed, events.SeverityUp, "renewed", notAfter, days))
		}
		st.TLS = &CertState{NotAfter: notAfter}
	default:
		return
	}
	if s := stageFor(days); s > st.TLS.Stage {
		a := tlsAdvisories[s]
		out.Events = append(out.Events, st.tlsEvent(site, obs, env, a.kind, a.severity, a.tag, notAfter, days))
		st.TLS.Stage = s
	}
}

// tlsEvent builds a TLS advisory. Its ID is derived from the site, the kind,
// the certificate (NotAfter) and the threshold, with the triggering
// observation's time as its time part. Its State is the site's current
// downtime state, which the advisory does not change.
func (st *SiteState) tlsEvent(site events.Site, obs events.Observation, env Env, kind events.EventKind, sev events.Severity, tag string, notAfter time.Time, days int) events.SiteEvent {
	at := obs.StartedAt.UTC()
	state := events.StateUp
	if st.Incident != nil {
		state = st.Incident.State
	}
	na := notAfter
	d := days
	return events.SiteEvent{
		ID:             events.DeriveID(at, site.ID, string(kind), notAfter.Format(time.RFC3339Nano), tag),
		Kind:           kind,
		SiteID:         site.ID,
		Bucket:         events.Bucket(site.ID),
		At:             at,
		State:          state,
		Severity:       sev,
		ObservationIDs: []string{obs.ID},
		Maintenance:    env.inMaintenance(site, at),
		CertNotAfter:   &na,
		CertDaysLeft:   &d,
	}
}
