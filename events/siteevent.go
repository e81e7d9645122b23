package events

import "time"

// EventKind is the last token of an event's subject and names what happened.
type EventKind string

// Site event kinds.
const (
	KindSeemsDown   EventKind = "seems_down"
	KindDown        EventKind = "down"
	KindRecovered   EventKind = "recovered"
	KindTLSExpiring EventKind = "tls_expiring"
	KindTLSExpired  EventKind = "tls_expired"
	KindTLSRenewed  EventKind = "tls_renewed"
)

// Region event kinds.
const (
	KindRegionImpaired  EventKind = "impaired"
	KindRegionRecovered EventKind = "recovered"
)

// State is a site's state for one check kind.
type State string

// Site states. Paused and maintenance are modifiers reported beside these.
const (
	StateUp        State = "up"
	StateSeemsDown State = "seems_down"
	StateDown      State = "down"
	StateUnknown   State = "unknown"
)

// Severity orders states for alert gates and sorting, independently of their
// names: 0 up, 1 warning, 2 degraded, 3 seems down, 4 down.
type Severity int

// Severities.
const (
	SeverityUp        Severity = 0
	SeverityWarning   Severity = 1
	SeverityDegraded  Severity = 2
	SeveritySeemsDown Severity = 3
	SeverityDown      Severity = 4
)

// Reason says why an incident closed.
type Reason string

// Resolution reasons.
const (
	// ReasonProbeCleared: a local success before the failure was confirmed.
	ReasonProbeCleared Reason = "probe_cleared"
	// ReasonFalseAlarm: the verifying regions did not confirm the failure.
	ReasonFalseAlarm Reason = "false_alarm"
	// ReasonRecovered: recover_after consecutive successes after Down.
	ReasonRecovered Reason = "recovered"
	ReasonManual    Reason = "manual"
	ReasonPaused    Reason = "paused"
	ReasonDeleted   Reason = "deleted"
)

// Vote is one region's answer to a verification request.
type Vote string

// Votes.
const (
	VoteDown Vote = "down"
	VoteUp   Vote = "up"
	// VoteUnknown: the region answered with a monitor-side class.
	VoteUnknown Vote = "unknown"
	// VoteNone: the region did not answer before the verification deadline,
	// or is impaired. It never counts as a vote.
	VoteNone Vote = "none"
)

// RegionVote is one region's part in confirming an incident.
type RegionVote struct {
	Region        string `json:"region"`
	Vote          Vote   `json:"vote"`
	Class         Class  `json:"class,omitempty"`
	StatusCode    int    `json:"status_code,omitempty"`
	ObservationID string `json:"observation_id,omitempty"`
}

// SiteEvent is a derived fact about one site, appended to EVENTS by the state
// machine: an incident opening (Seems Down), being confirmed (Down) or closing
// (Recovered), or a TLS certificate advisory, which never enters the downtime
// path. Its ID is derived from the facts that caused it (DeriveID), so the same
// observations always yield the same event.
type SiteEvent struct {
	ID     string    `json:"id"`
	Kind   EventKind `json:"kind"`
	SiteID string    `json:"site_id"`
	Bucket int       `json:"bucket"`
	// At is the time of the observation that caused the event.
	At       time.Time `json:"at"`
	State    State     `json:"state"`
	Severity Severity  `json:"severity"`
	// IncidentID is set on incident events (Seems Down, Down, Recovered).
	IncidentID string `json:"incident_id,omitempty"`
	// StartedAt is the incident's honest start: the first failure's time.
	StartedAt    *time.Time `json:"started_at,omitempty"`
	Reason       Reason     `json:"reason,omitempty"`
	FailureClass Class      `json:"failure_class,omitempty"`
	// FailureStatus is the HTTP status of the first failure, if it had one.
	FailureStatus int `json:"failure_status,omitempty"`
	// ObservationIDs are the observations that caused the event.
	ObservationIDs []string     `json:"observation_ids"`
	Votes          []RegionVote `json:"votes,omitempty"`
	// SingleRegion is set on a Down confirmed without other regions, which
	// only a single-region deployment that allows it does.
	SingleRegion bool `json:"single_region,omitempty"`
	// Maintenance is set when the event fell in a maintenance window:
	// notifications are suppressed and the time is reported apart.
	Maintenance bool `json:"maintenance,omitempty"`
	// TLS advisories.
	CertNotAfter *time.Time `json:"cert_not_after,omitempty"`
	CertDaysLeft *int       `json:"cert_days_left,omitempty"`
}

// Type returns the CloudEvents type for the event's kind.
func (e *SiteEvent) Type() string {
	switch e.Kind {
	case KindSeemsDown:
		return TypeSeemsDown
	case KindDown:
		return TypeDown
	case KindRecovered:
		return TypeRecovered
	case KindTLSExpiring:
		return TypeTLSExpiring
	case KindTLSExpired:
		return TypeTLSExpired
	case KindTLSRenewed:
		return TypeTLSRenewed
	}
	return ""
}

// Envelope implements Message.
func (e *SiteEvent) Envelope() Envelope {
	return Envelope{
		ID:          e.ID,
		Type:        e.Type(),
		Source:      SourceStateMachine,
		Subject:     e.SiteID,
		Time:        e.At,
		NATSSubject: SiteEventSubject(e.SiteID, e.Kind),
	}
}

// RegionEvent says a checker region became impaired (most of its checks failing
// across many sites at once, so its failures are the monitor's own) or
// recovered. While a region is impaired its failures open no incidents and its
// votes do not count.
type RegionEvent struct {
	ID     string    `json:"id"`
	Kind   EventKind `json:"kind"`
	Region string    `json:"region"`
	At     time.Time `json:"at"`
	// Window is the period the figures below cover.
	Window Duration `json:"window"`
	// Checks is how many checks the region ran in the window.
	Checks int `json:"checks"`
	// Failures is how many of them failed with a connect, timeout or DNS class.
	Failures int `json:"failures"`
	// Sites is how many distinct sites those failures were spread over.
	Sites int `json:"sites"`
}

// Type returns the CloudEvents type for the event's kind.
func (e *RegionEvent) Type() string {
	switch e.Kind {
	case KindRegionImpaired:
		return TypeRegionImpaired
	case KindRegionRecovered:
		return TypeRegionRecovered
	}
	return ""
}

// Envelope implements Message.
func (e *RegionEvent) Envelope() Envelope {
	return Envelope{
		ID:          e.ID,
		Type:        e.Type(),
		Source:      SourceStateMachine,
		Subject:     e.Region,
		Time:        e.At,
		NATSSubject: RegionEventSubject(e.Region, e.Kind),
	}
}
