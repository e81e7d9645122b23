package events

import "time"

// Purpose says why a check runs.
type Purpose string

// Check purposes.
const (
	// PurposeScheduled is the site's normal cadence.
	PurposeScheduled Purpose = "scheduled"
	// PurposeRetry is a fast local re-check while an incident is open.
	PurposeRetry Purpose = "retry"
	// PurposeVerify asks another region to confirm a failure.
	PurposeVerify Purpose = "verify"
)

// CheckSpec is what a checker needs to run one check. It travels inside every
// command, so checkers are stateless: they never read SITES.
type CheckSpec struct {
	URL               string            `json:"url"`
	Method            string            `json:"method"`
	Timeout           Duration          `json:"timeout"`
	Headers           map[string]string `json:"headers,omitempty"`
	ExpectStatus      []int             `json:"expect_status,omitempty"`
	Keywords          []string          `json:"keywords,omitempty"`
	ForbiddenKeywords []string          `json:"forbidden_keywords,omitempty"`
	Redirects         RedirectPolicy    `json:"redirects"`
	TLSVerify         bool              `json:"tls_verify"`
	// LastRedirectChain is the chain seen by the last check, for the "alert"
	// redirect policy, which flags a change of chain.
	LastRedirectChain []string `json:"last_redirect_chain,omitempty"`
}

// Cadence is a cadence override in KVCadence: the state machine's request that
// the scheduler check a site faster (retries) while an incident is open.
type Cadence struct {
	SiteID string `json:"site_id"`
	// Interval replaces the site's interval while the override stands.
	Interval Duration `json:"interval"`
	// IncidentID is carried into the retry commands and their observations.
	IncidentID string `json:"incident_id"`
	// Until bounds the override: after it the scheduler returns to the site's
	// own interval even if nobody removed the key (a safety net, not the
	// normal way an override ends).
	Until time.Time `json:"until"`
}

// CheckCommand asks the checkers of one region to check a site once.
type CheckCommand struct {
	// ID is derived from site, region, purpose and due time, so a tick re-sent
	// after a scheduler failover is dropped as a duplicate by the stream.
	ID      string  `json:"id"`
	SiteID  string  `json:"site_id"`
	Bucket  int     `json:"bucket"`
	Region  string  `json:"region"`
	Purpose Purpose `json:"purpose"`
	// DueAt is when the check should start; lateness is measured from it.
	DueAt time.Time `json:"due_at"`
	// Deadline is the time after which a checker drops the command unrun
	// (counted as command_expired): a late check is worse than none.
	Deadline time.Time `json:"deadline"`
	// IncidentID is set on retry and verify commands.
	IncidentID string `json:"incident_id,omitempty"`
	// ConfigSeq is the SITES sequence of the configuration the command was
	// built from.
	ConfigSeq uint64    `json:"config_seq"`
	Check     CheckSpec `json:"check"`
}

// Envelope implements Message.
func (c *CheckCommand) Envelope() Envelope {
	return Envelope{
		ID:          c.ID,
		Type:        TypeCheckCommand,
		Source:      SourceScheduler,
		Subject:     c.SiteID,
		Time:        c.DueAt,
		NATSSubject: CheckSubject(c.Region, c.SiteID),
	}
}

// CommandID derives a check command's ID.
func CommandID(siteID, region string, purpose Purpose, due time.Time) string {
	return DeriveID(due, "command", siteID, region, string(purpose), due.UTC().Format(time.RFC3339Nano))
}

// Class classifies the result of a check. Every class is on exactly one side:
// ok, the site's fault, or the monitor's.
type Class string

// The result classes.
const (
	ClassOK Class = "ok"

	// Site-side failures: evidence that the site is down.
	ClassDNSNXDomain      Class = "dns_nxdomain"
	ClassConnectRefused   Class = "connect_refused"
	ClassConnectTimeout   Class = "connect_timeout"
	ClassTimeout          Class = "timeout"
	ClassTLSHandshake     Class = "tls_handshake"
	ClassTLSExpired       Class = "tls_expired"
	ClassTLSUntrusted     Class = "tls_untrusted"
	ClassHTTPStatus       Class = "http_status"
	ClassKeywordMissing   Class = "keyword_missing"
	ClassKeywordForbidden Class = "keyword_forbidden"
	ClassRedirectPolicy   Class = "redirect_policy"
	ClassRedirectLoop     Class = "redirect_loop"
	ClassBodyRead         Class = "body_read"

	// Monitor-side problems: the monitor cannot tell. Never downtime.
	ClassMonitorResolver Class = "monitor_resolver"
	ClassMonitorNetwork  Class = "monitor_network"
	ClassCommandExpired  Class = "command_expired"
	ClassMonitorOverload Class = "monitor_overload"
	// ClassTargetRefused is a target the checker's policy forbids (a private
	// address in production mode): a configuration problem, not downtime.
	ClassTargetRefused Class = "target_refused"
)

// Side is which party a result class blames.
type Side string

// Sides.
const (
	SideOK      Side = "ok"
	SideSite    Side = "site"
	SideMonitor Side = "monitor"
)

// Side returns which party c blames. Unknown classes are the monitor's: a
// result the monitor cannot interpret must never count as downtime.
func (c Class) Side() Side {
	switch c {
	case ClassOK:
		return SideOK
	case ClassDNSNXDomain, ClassConnectRefused, ClassConnectTimeout, ClassTimeout,
		ClassTLSHandshake, ClassTLSExpired, ClassTLSUntrusted, ClassHTTPStatus,
		ClassKeywordMissing, ClassKeywordForbidden, ClassRedirectPolicy,
		ClassRedirectLoop, ClassBodyRead:
		return SideSite
	}
	return SideMonitor
}

// Timings are the phases of one check, in milliseconds. A phase that did not
// happen (no DNS for an IP literal, no TLS for http) is zero.
type Timings struct {
	DNSMs     float64 `json:"dns_ms"`
	ConnectMs float64 `json:"connect_ms"`
	TLSMs     float64 `json:"tls_ms"`
	TTFBMs    float64 `json:"ttfb_ms"`
	TotalMs   float64 `json:"total_ms"`
}

// TLSInfo describes the certificate a site presented.
type TLSInfo struct {
	Version   string    `json:"version"`
	Issuer    string    `json:"issuer"`
	Subject   string    `json:"subject"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// ChainValid is whether the chain verified against the checker's roots
	// for the site's host name, whatever the site's tls_verify setting.
	ChainValid  bool   `json:"chain_valid"`
	VerifyError string `json:"verify_error,omitempty"`
}

// Observation is what a checker saw when it ran one command.
type Observation struct {
	// ID is a fresh ULID made by the checker; also the Nats-Msg-Id.
	ID         string    `json:"id"`
	SiteID     string    `json:"site_id"`
	Bucket     int       `json:"bucket"`
	Region     string    `json:"region"`
	CheckerID  string    `json:"checker_id"`
	CommandID  string    `json:"command_id"`
	Purpose    Purpose   `json:"purpose"`
	IncidentID string    `json:"incident_id,omitempty"`
	ConfigSeq  uint64    `json:"config_seq"`
	DueAt      time.Time `json:"due_at"`
	StartedAt  time.Time `json:"started_at"`
	Class      Class     `json:"class"`
	StatusCode int       `json:"status_code,omitempty"`
	Timings    Timings   `json:"timings"`
	FinalURL   string    `json:"final_url,omitempty"`
	// RedirectChain lists the URLs redirected to, in order, excluding the first.
	RedirectChain []string `json:"redirect_chain,omitempty"`
	TLS           *TLSInfo `json:"tls,omitempty"`
	Error         string   `json:"error,omitempty"`
}

// ObservationSummary is the part of an Observation that consumers reading
// every observation need: what happened to which site, when, from where.
// Decoding an observation into it (events.Decode) skips the IDs, the redirect
// chain, the error text and most of the TLS facts, which most observations'
// readers never look at. It is not a message of its own: it reads the
// Observation's JSON.
type ObservationSummary struct {
	ID         string    `json:"id"`
	SiteID     string    `json:"site_id"`
	Region     string    `json:"region"`
	Purpose    Purpose   `json:"purpose"`
	StartedAt  time.Time `json:"started_at"`
	Class      Class     `json:"class"`
	StatusCode int       `json:"status_code,omitempty"`
	Timings    Timings   `json:"timings"`
	// TLS is set when the site presented a certificate.
	TLS *CertExpiry `json:"tls,omitempty"`
}

// CertExpiry is the certificate's expiry of TLSInfo.
type CertExpiry struct {
	NotAfter time.Time `json:"not_after"`
}

// Envelope is enough of the observation's envelope for Decode to check the
// message's type and ID.
func (o *ObservationSummary) Envelope() Envelope {
	return Envelope{ID: o.ID, Type: TypeObservation}
}

// Summary returns the summarized fields of o: what decoding o's message
// into an ObservationSummary gives.
func (o *Observation) Summary() *ObservationSummary {
	sum := &ObservationSummary{
		ID: o.ID, SiteID: o.SiteID, Region: o.Region, Purpose: o.Purpose,
		StartedAt: o.StartedAt, Class: o.Class, StatusCode: o.StatusCode, Timings: o.Timings,
	}
	if o.TLS != nil {
		sum.TLS = &CertExpiry{NotAfter: o.TLS.NotAfter}
	}
	return sum
}

// Envelope implements Message.
func (o *Observation) Envelope() Envelope {
	return Envelope{
		ID:          o.ID,
		Type:        TypeObservation,
		Source:      SourceChecker(o.Region),
		Subject:     o.SiteID,
		Time:        o.StartedAt,
		NATSSubject: ObservationSubject(o.SiteID),
	}
}
