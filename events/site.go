package events

import "time"

// Site is a site's monitoring configuration. The same fields, with the same
// names, are used in YAML site files, in the HTTP API and on the SITES stream.
// Zero values mean "the default"; the registry fills defaults in before a
// configuration is stored, so a stored Site is complete.
type Site struct {
	// ID is client-chosen ([A-Za-z0-9_-]{1,64}) or a ULID assigned by Vigil.
	ID  string `json:"id" yaml:"id,omitempty"`
	URL string `json:"url" yaml:"url"`
	// Interval between scheduled checks, 10s to 24h.
	Interval Duration `json:"interval,omitempty" yaml:"interval,omitempty"`
	// Timeout of one check; must be below Interval.
	Timeout Duration `json:"timeout,omitempty" yaml:"timeout,omitempty"`
	// Method is HEAD or GET. Keywords need GET.
	Method  string            `json:"method,omitempty" yaml:"method,omitempty"`
	Headers map[string]string `json:"headers,omitempty" yaml:"headers,omitempty"`
	// ExpectStatus lists the status codes that count as up. Empty means any
	// status below 400.
	ExpectStatus      []int    `json:"expect_status,omitempty" yaml:"expect_status,omitempty"`
	Keywords          []string `json:"keywords,omitempty" yaml:"keywords,omitempty"`
	ForbiddenKeywords []string `json:"forbidden_keywords,omitempty" yaml:"forbidden_keywords,omitempty"`
	// Redirects is follow (up to 10 hops), fail, or alert (follow, but flag a
	// change of the redirect chain).
	Redirects RedirectPolicy `json:"redirects,omitempty" yaml:"redirects,omitempty"`
	// TLSVerify turns certificate verification off when false. Nil means true.
	TLSVerify *bool `json:"tls_verify,omitempty" yaml:"tls_verify,omitempty"`
	// RetryInterval is the check cadence while an incident is open.
	RetryInterval Duration `json:"retry_interval,omitempty" yaml:"retry_interval,omitempty"`
	// ConfirmAfter consecutive local failures send verification to other regions.
	ConfirmAfter int `json:"confirm_after,omitempty" yaml:"confirm_after,omitempty"`
	// RecoverAfter consecutive successes close a confirmed incident.
	RecoverAfter int `json:"recover_after,omitempty" yaml:"recover_after,omitempty"`
	// Quorum is how many regions other than the primary must confirm a failure.
	Quorum int `json:"quorum,omitempty" yaml:"quorum,omitempty"`
	// Regions to verify from; empty means every region.
	Regions     []string            `json:"regions,omitempty" yaml:"regions,omitempty"`
	Maintenance []MaintenanceWindow `json:"maintenance,omitempty" yaml:"maintenance,omitempty"`
	Labels      map[string]string   `json:"labels,omitempty" yaml:"labels,omitempty"`
}

// Defaults of a site's configuration: what a zero field of Site means. The
// registry fills them in before it stores a configuration; the services apply
// them again, so a zero can never mean "confirm after 0 failures".
const (
	DefaultInterval      = 5 * time.Minute
	DefaultCheckTimeout  = 10 * time.Second
	DefaultMethod        = "GET"
	DefaultRetryInterval = 30 * time.Second
	DefaultConfirmAfter  = 3
	DefaultRecoverAfter  = 2
	DefaultQuorum        = 2
)

// CheckSpec returns what a checker needs to check the site once. Zero fields
// take their defaults (GET, DefaultCheckTimeout, follow redirects, verify
// TLS); a stored configuration is already complete. Slices and maps are
// shared with s.
func (s Site) CheckSpec() CheckSpec {
	spec := CheckSpec{
		URL:               s.URL,
		Method:            s.Method,
		Timeout:           s.Timeout,
		Headers:           s.Headers,
		ExpectStatus:      s.ExpectStatus,
		Keywords:          s.Keywords,
		ForbiddenKeywords: s.ForbiddenKeywords,
		Redirects:         s.Redirects,
		TLSVerify:         s.TLSVerify == nil || *s.TLSVerify,
	}
	if spec.Method == "" {
		spec.Method = DefaultMethod
	}
	if spec.Timeout <= 0 {
		spec.Timeout = Duration(DefaultCheckTimeout)
	}
	if spec.Redirects == "" {
		spec.Redirects = RedirectFollow
	}
	return spec
}

// RedirectPolicy says what a check does with HTTP redirects.
type RedirectPolicy string

// Redirect policies.
const (
	RedirectFollow RedirectPolicy = "follow"
	RedirectFail   RedirectPolicy = "fail"
	RedirectAlert  RedirectPolicy = "alert"
)

// MaintenanceWindow is a period in which incidents are recorded but flagged, so
// notifications are suppressed and the time is reported apart from downtime.
// Either Start (one-off) or Cron (recurring, five fields, UTC) is set.
type MaintenanceWindow struct {
	Start    *time.Time `json:"start,omitempty" yaml:"start,omitempty"`
	Cron     string     `json:"cron,omitempty" yaml:"cron,omitempty"`
	Duration Duration   `json:"duration" yaml:"duration"`
}

// SiteChange is a configuration change on SITES. Every change carries the
// site's complete configuration after it, so the last message on a site's
// subject is its current configuration and the earlier ones are its history.
type SiteChange struct {
	// ID is the change's own ULID (also the Nats-Msg-Id).
	ID     string     `json:"id"`
	Change ChangeKind `json:"change"`
	At     time.Time  `json:"at"`
	// Actor says who made the change ("cli", "api:<key>", "apply:<file>").
	Actor string `json:"actor,omitempty"`
	// Paused is the site's paused flag after the change.
	Paused bool `json:"paused"`
	Site   Site `json:"site"`
}

// ChangeKind names a configuration change.
type ChangeKind string

// Configuration changes.
const (
	ChangeCreated ChangeKind = "created"
	ChangeUpdated ChangeKind = "updated"
	ChangePaused  ChangeKind = "paused"
	ChangeResumed ChangeKind = "resumed"
	ChangeDeleted ChangeKind = "deleted"
)

// Type returns the CloudEvents type of the change, or "" for an unknown kind.
func (k ChangeKind) Type() string {
	switch k {
	case ChangeCreated:
		return TypeSiteCreated
	case ChangeUpdated:
		return TypeSiteUpdated
	case ChangePaused:
		return TypeSitePaused
	case ChangeResumed:
		return TypeSiteResumed
	case ChangeDeleted:
		return TypeSiteDeleted
	}
	return ""
}

// Envelope implements Message.
func (c *SiteChange) Envelope() Envelope {
	return Envelope{
		ID:          c.ID,
		Type:        c.Change.Type(),
		Source:      SourceRegistry,
		Subject:     c.Site.ID,
		Time:        c.At,
		NATSSubject: SiteSubject(c.Site.ID),
	}
}
