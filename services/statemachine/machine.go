package statemachine

import (
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/vigil-dev/vigil/events"
)

// Defaults, used when a Site or Env leaves a setting zero. The registry fills
// the Site's in before storing a configuration; the machine applies them again
// so a zero value can never mean "confirm after 0 failures".
const (
	DefaultConfirmAfter  = events.DefaultConfirmAfter
	DefaultRecoverAfter  = events.DefaultRecoverAfter
	DefaultQuorum        = events.DefaultQuorum
	DefaultRetryInterval = events.DefaultRetryInterval
	DefaultVerifyTimeout = 90 * time.Second

	// MinQuorum is the fewest down votes that confirm an incident. A single
	// region must never be able to confirm downtime alone; only a single-region
	// deployment with Env.AllowSingleRegion confirms without votes.
	MinQuorum = 2

	// CadenceBound bounds a fast-retry override after the incident's start: a
	// safety net so that a lost removal cannot keep a site on fast retries
	// forever. Incidents longer than this fall back to the site's interval.
	CadenceBound = 24 * time.Hour

	// MaxObservationIDs bounds the observation ID lists kept in state and
	// carried on events.
	MaxObservationIDs = 16
)

// ID tags for events no single observation caused.
const (
	tagVerifyDeadline = "verify_deadline"
	tagClose          = "close"
)

// SiteState is everything the machine knows about one site. It is plain data:
// it serialises to JSON (the service checkpoints it to KV) and a state read
// back from JSON continues exactly as the original would. The zero value is a
// site that is up with no history.
type SiteState struct {
	// SiteID is the site the state belongs to (set on first use).
	SiteID string `json:"site_id,omitempty"`
	// LastObsAt and LastObsID are the last primary-region lifecycle
	// observation applied (scheduled or retry). A later one whose time is
	// not after LastObsAt is a duplicate or out of order and is ignored.
	LastObsAt time.Time `json:"last_obs_at,omitzero"`
	LastObsID string    `json:"last_obs_id,omitempty"`
	// Incident is the open incident, nil when the site is up.
	Incident *Incident `json:"incident,omitempty"`
	// TLS tracks advisories for the newest certificate seen.
	TLS *CertState `json:"tls,omitempty"`
}

// Incident is an open incident: Seems Down until confirmed, then Down.
type Incident struct {
	ID    string       `json:"id"`
	State events.State `json:"state"` // seems_down or down
	// StartedAt is the first failure's time, the honest start of impact.
	StartedAt time.Time `json:"started_at"`
	// OpenedBy is the observation that opened the incident.
	OpenedBy      string       `json:"opened_by"`
	FailureClass  events.Class `json:"failure_class"`
	FailureStatus int          `json:"failure_status,omitempty"`
	// Maintenance: the incident started in a maintenance window, so every
	// one of its events is flagged.
	Maintenance bool `json:"maintenance,omitempty"`
	// Failures counts the local site-side failures since the incident opened
	// (monitor-side results do not count); FailureIDs are the most recent of
	// them, at most MaxObservationIDs.
	Failures   int      `json:"failures"`
	FailureIDs []string `json:"failure_ids,omitempty"`
	// Successes counts consecutive local successes while Down; a local
	// failure resets it. SuccessIDs are those successes.
	Successes  int      `json:"successes,omitempty"`
	SuccessIDs []string `json:"success_ids,omitempty"`
	// Verification is set once confirm_after local failures were seen in a
	// multi-region deployment.
	Verification *Verification `json:"verification,omitempty"`
}

// Verification is the state of one round of verification by other regions.
type Verification struct {
	// RequestedAt is the time of the observation that reached confirm_after:
	// the commands' DueAt. Deadline is RequestedAt + Env.VerifyTimeout.
	RequestedAt time.Time `json:"requested_at"`
	Deadline    time.Time `json:"deadline,omitzero"`
	// Regions are the regions asked (sorted): every deployed region but the
	// primary, restricted to Site.Regions when that is set.
	Regions []string `json:"regions,omitempty"`
	// Quorum is the effective quorum: max(Site.Quorum, MinQuorum).
	Quorum int `json:"quorum"`
	// Votes are the answers received, one per region (the first answer
	// counts), sorted by region.
	Votes []events.RegionVote `json:"votes,omitempty"`
	// Unconfirmable is set when fewer regions are eligible than the quorum
	// needs (none at all, or e.g. a two-region deployment with quorum 2): no
	// commands are sent, Down can never be confirmed and the incident stays
	// Seems Down until it clears locally (probe_cleared) or is closed.
	Unconfirmable bool `json:"unconfirmable,omitempty"`
}

// CertState tracks TLS advisories for one certificate, identified by its
// NotAfter.
type CertState struct {
	NotAfter time.Time `json:"not_after"`
	// Stage is the most severe advisory issued for this certificate: 0 none,
	// 1 expiring within 30 days, 2 within 14, 3 within 7, 4 expired. Issuing
	// one marks the milder ones as issued, so each is issued at most once.
	Stage int `json:"stage,omitempty"`
}

// Env is the deployment around the machine.
type Env struct {
	// Regions are all regions of the deployment; Regions[0] is the primary.
	// With no regions the machine ignores every observation.
	Regions []string
	// AllowSingleRegion lets a single-region deployment confirm Down locally.
	AllowSingleRegion bool
	// VerifyTimeout is the verification deadline after the request
	// (DefaultVerifyTimeout when zero).
	VerifyTimeout time.Duration
	// Impaired reports whether a region was impaired at a time; nil = never.
	Impaired func(region string, at time.Time) bool
	// InMaintenance reports whether a time falls in one of the site's
	// maintenance windows; nil = never.
	InMaintenance func(site events.Site, at time.Time) bool
}

// Output is what one input makes the machine do.
type Output struct {
	// Events to append, in order.
	Events []events.SiteEvent
	// Verify are verification commands for other regions.
	Verify []events.CheckCommand
	// Cadence, when non-nil, is the fast-retry override to set (it replaces
	// any override already there).
	Cadence *events.Cadence
	// ClearCadence: the incident closed, remove the override. Never set
	// together with Cadence: when one input closes an incident and opens the
	// next, Cadence (the new incident's override) replaces the old one.
	ClearCadence bool
}

func (e Env) primary() (string, bool) {
	if len(e.Regions) == 0 {
		return "", false
	}
	return e.Regions[0], true
}

func (e Env) impaired(region string, at time.Time) bool {
	return e.Impaired != nil && e.Impaired(region, at)
}

func (e Env) inMaintenance(site events.Site, at time.Time) bool {
	return e.InMaintenance != nil && e.InMaintenance(site, at)
}

func (e Env) verifyTimeout() time.Duration {
	if e.VerifyTimeout > 0 {
		return e.VerifyTimeout
	}
	return DefaultVerifyTimeout
}

func confirmAfter(s events.Site) int {
	if s.ConfirmAfter > 0 {
		return s.ConfirmAfter
	}
	return DefaultConfirmAfter
}

func recoverAfter(s events.Site) int {
	if s.RecoverAfter > 0 {
		return s.RecoverAfter
	}
	return DefaultRecoverAfter
}

// quorum is the effective quorum: the site's (default 2), never below
// MinQuorum.
func quorum(s events.Site) int {
	q := s.Quorum
	if q <= 0 {
		q = DefaultQuorum
	}
	return max(q, MinQuorum)
}

func retryInterval(s events.Site) time.Duration {
	if s.RetryInterval > 0 {
		return s.RetryInterval.Std()
	}
	return DefaultRetryInterval
}

// Observe applies one observation of site.
//
// First, if a verification deadline is pending and the observation's time is
// after it, the verification expires (Recovered false_alarm at the deadline).
// Then:
//   - a verify observation is a vote, counted only for the open incident it
//     names, from a region that was asked and has not answered yet;
//   - a scheduled or retry observation from the primary region drives the
//     lifecycle, unless its time is not after the last one applied
//     (duplicate or out of order); its TLS info feeds the advisories;
//   - anything else (another site, a non-primary scheduled check, an unknown
//     purpose) is ignored.
//
// The time guard (LastObsAt) orders the primary's own observations only.
// Votes come from other regions, concurrently with the local retries: a vote
// that started before the last local retry but arrived after it is still a
// valid answer, so votes are guarded instead by the incident they name and by
// one vote per region. Conversely, a primary retry observation is evidence of
// the site's state whatever incident its command was issued for (a retry
// issued just before the previous incident closed can open the next one).
func (st *SiteState) Observe(site events.Site, obs events.Observation, env Env) Output {
	var out Output
	primary, ok := env.primary()
	if !ok || obs.SiteID != site.ID {
		return out
	}
	st.SiteID = site.ID
	at := obs.StartedAt.UTC()
	st.expire(site, at, env, &out)

	switch {
	case obs.Purpose == events.PurposeVerify:
		st.vote(site, obs, env, &out)
	case obs.Region == primary && (obs.Purpose == events.PurposeScheduled || obs.Purpose == events.PurposeRetry):
		if !at.After(st.LastObsAt) {
			return out
		}
		st.LastObsAt, st.LastObsID = at, obs.ID
		st.local(site, obs, env, &out)
		st.tls(site, obs, env, &out)
	}
	return out
}

// Uneventful reports whether obs changes nothing when applied to a site with
// no state: a result that is not a site-side failure (ok, or the monitor's
// own trouble such as an expired command) whose certificate, if any, is more
// than 30 days from expiry. Observe then opens nothing, issues no advisory
// and leaves a trivial state, whatever the site's configuration or the
// regions' health (an impaired region only ever turns a failure into
// "unknown"). The state machine acknowledges such observations without
// reading the site's configuration.
func Uneventful(obs *events.ObservationSummary) bool {
	if obs.Class.Side() == events.SideSite {
		return false
	}
	if obs.TLS == nil || obs.TLS.NotAfter.IsZero() {
		return true
	}
	return stageFor(daysLeft(obs.TLS.NotAfter.UTC(), obs.StartedAt.UTC())) == stageNone
}

// Expire applies the passing of time: if the open incident's verification
// deadline is before now (strictly: a check may still start at the deadline
// itself) with no quorum, it closes as false_alarm at the deadline. The event is
// the same whether Expire or a later observation finds the deadline passed.
func (st *SiteState) Expire(site events.Site, now time.Time, env Env) Output {
	var out Output
	if _, ok := env.primary(); !ok {
		return out
	}
	st.expire(site, now.UTC(), env, &out)
	return out
}

// Close closes the open incident for an operator's or the registry's reason
// (manual, paused or deleted) at time at: event Recovered with that reason.
// Without an open incident, or with another reason, it does nothing. A
// verification deadline passed before at is applied first, so the history is
// the same whether or not Expire ran before the close.
func (st *SiteState) Close(site events.Site, reason events.Reason, at time.Time, env Env) Output {
	var out Output
	switch reason {
	case events.ReasonManual, events.ReasonPaused, events.ReasonDeleted:
	default:
		return out
	}
	if _, ok := env.primary(); !ok {
		return out
	}
	at = at.UTC()
	st.expire(site, at, env, &out)
	inc := st.Incident
	if inc == nil {
		return out
	}
	st.closeIncident(site, env, &out, closing{
		reason: reason, at: at, tag: tagClose + ":" + string(reason),
		obsIDs: []string{inc.OpenedBy},
	})
	return out
}

// local applies a primary-region scheduled or retry observation to the
// lifecycle.
func (st *SiteState) local(site events.Site, obs events.Observation, env Env, out *Output) {
	at := obs.StartedAt.UTC()
	side := obs.Class.Side()
	if env.impaired(obs.Region, at) {
		side = events.SideMonitor
	}
	switch side {
	case events.SideSite:
		st.localFailure(site, obs, env, out)
	case events.SideOK:
		st.localSuccess(site, obs, env, out)
	}
	// SideMonitor: unknown is not downtime; nothing opens, advances or resets.
}

func (st *SiteState) localFailure(site events.Site, obs events.Observation, env Env, out *Output) {
	at := obs.StartedAt.UTC()
	inc := st.Incident
	if inc == nil {
		st.open(site, obs, env, out)
		inc = st.Incident
	} else {
		inc.Failures++
		inc.FailureIDs = appendBounded(inc.FailureIDs, obs.ID)
		if inc.State == events.StateDown {
			inc.Successes, inc.SuccessIDs = 0, nil
			return
		}
	}
	if inc.State == events.StateSeemsDown && inc.Verification == nil && inc.Failures >= confirmAfter(site) {
		st.escalate(site, obs.ID, obs.ConfigSeq, at, env, out)
	}
}

func (st *SiteState) localSuccess(site events.Site, obs events.Observation, env Env, out *Output) {
	inc := st.Incident
	if inc == nil {
		return // healthy: no event, no output
	}
	at := obs.StartedAt.UTC()
	switch inc.State {
	case events.StateSeemsDown:
		st.closeIncident(site, env, out, closing{
			reason: events.ReasonProbeCleared, at: at, tag: obs.ID,
			obsIDs: []string{obs.ID},
		})
	case events.StateDown:
		inc.Successes++
		inc.SuccessIDs = appendBounded(inc.SuccessIDs, obs.ID)
		if inc.Successes >= recoverAfter(site) {
			st.closeIncident(site, env, out, closing{
				reason: events.ReasonRecovered, at: at, tag: obs.ID,
				obsIDs: slices.Clone(inc.SuccessIDs),
			})
		}
	}
}

// open opens an incident on the first site-side failure.
func (st *SiteState) open(site events.Site, obs events.Observation, env Env, out *Output) {
	at := obs.StartedAt.UTC()
	inc := &Incident{
		ID:            events.DeriveID(at, site.ID, obs.ID, "incident"),
		State:         events.StateSeemsDown,
		StartedAt:     at,
		OpenedBy:      obs.ID,
		FailureClass:  obs.Class,
		FailureStatus: obs.StatusCode,
		Maintenance:   env.inMaintenance(site, at),
		Failures:      1,
		FailureIDs:    []string{obs.ID},
	}
	st.Incident = inc
	out.Events = append(out.Events, st.incidentEvent(site, env, events.KindSeemsDown, at, obs.ID, []string{obs.ID}))
	out.Cadence = &events.Cadence{
		SiteID:     site.ID,
		Interval:   events.Duration(retryInterval(site)),
		IncidentID: inc.ID,
		Until:      at.Add(CadenceBound),
	}
	out.ClearCadence = false // the new override replaces the old one
}

// escalate runs when the local failures reach confirm_after: confirm locally
// (single-region deployment that allows it) or ask the other regions.
func (st *SiteState) escalate(site events.Site, obsID string, configSeq uint64, at time.Time, env Env, out *Output) {
	inc := st.Incident
	if len(env.Regions) == 1 && env.AllowSingleRegion {
		inc.State = events.StateDown
		ev := st.incidentEvent(site, env, events.KindDown, at, obsID, slices.Clone(inc.FailureIDs))
		ev.SingleRegion = true
		out.Events = append(out.Events, ev)
		return
	}
	// Every eligible region is asked, impaired or not: an impaired region's
	// answer is recorded as VoteNone and counts as answered.
	v := &Verification{
		RequestedAt: at,
		Regions:     verifierRegions(site, env),
		Quorum:      quorum(site),
	}
	inc.Verification = v
	if len(v.Regions) < v.Quorum {
		// The quorum can never be reached (no eligible region at all, or
		// fewer than the quorum, e.g. a two-region deployment): Down can
		// never be confirmed, so no commands are sent and the incident stays
		// Seems Down until a local success (probe_cleared) or a Close.
		v.Unconfirmable = true
		return
	}
	v.Deadline = at.Add(env.verifyTimeout())
	spec := site.CheckSpec()
	for _, r := range v.Regions {
		out.Verify = append(out.Verify, events.CheckCommand{
			ID:         events.CommandID(site.ID, r, events.PurposeVerify, at),
			SiteID:     site.ID,
			Bucket:     events.Bucket(site.ID),
			Region:     r,
			Purpose:    events.PurposeVerify,
			DueAt:      at,
			Deadline:   v.Deadline,
			IncidentID: inc.ID,
			// The configuration the triggering observation was checked
			// with; the service may overwrite it with the sequence of the
			// Site it passed in.
			ConfigSeq: configSeq,
			Check:     cloneSpec(spec),
		})
	}
}

// vote applies a verify observation.
func (st *SiteState) vote(site events.Site, obs events.Observation, env Env, out *Output) {
	inc := st.Incident
	if inc == nil || obs.IncidentID != inc.ID || inc.State != events.StateSeemsDown {
		return // stale: for a closed or another incident, or already confirmed
	}
	v := inc.Verification
	if v == nil || v.Unconfirmable || !slices.Contains(v.Regions, obs.Region) {
		return // nobody asked this region
	}
	if _, answered := v.vote(obs.Region); answered {
		return // one vote per region: the first answer counts
	}
	at := obs.StartedAt.UTC()
	rv := events.RegionVote{
		Region:        obs.Region,
		Class:         obs.Class,
		StatusCode:    obs.StatusCode,
		ObservationID: obs.ID,
	}
	switch {
	case env.impaired(obs.Region, at):
		rv.Vote = events.VoteNone
	case obs.Class.Side() == events.SideSite:
		rv.Vote = events.VoteDown
	case obs.Class.Side() == events.SideOK:
		rv.Vote = events.VoteUp
	default:
		rv.Vote = events.VoteUnknown
	}
	i, _ := slices.BinarySearchFunc(v.Votes, rv.Region, func(a events.RegionVote, r string) int {
		return strings.Compare(a.Region, r)
	})
	v.Votes = slices.Insert(v.Votes, i, rv)

	down := v.downIDs()
	pending := len(v.Regions) - len(v.Votes)
	switch {
	case len(down) >= v.Quorum:
		inc.State = events.StateDown
		inc.Successes, inc.SuccessIDs = 0, nil
		ev := st.incidentEvent(site, env, events.KindDown, at, obs.ID, down)
		ev.Votes = v.allVotes()
		out.Events = append(out.Events, ev)
	case len(down)+pending < v.Quorum:
		// Confirmation has become impossible: the verifiers disagree.
		st.closeIncident(site, env, out, closing{
			reason: events.ReasonFalseAlarm, at: at, tag: obs.ID,
			obsIDs: v.answeredIDs(), votes: v.allVotes(),
		})
	}
}

// expire closes the incident as false_alarm when its verification deadline is
// before at. The quorum cannot have been met (Down would have been emitted
// when it was), so a passed deadline always means false_alarm; the regions
// that did not answer are recorded as VoteNone.
func (st *SiteState) expire(site events.Site, at time.Time, env Env, out *Output) {
	inc := st.Incident
	if inc == nil || inc.State != events.StateSeemsDown {
		return
	}
	v := inc.Verification
	if v == nil || v.Unconfirmable || !at.After(v.Deadline) {
		return
	}
	ids := v.answeredIDs()
	if len(ids) == 0 {
		ids = []string{inc.OpenedBy}
	}
	st.closeIncident(site, env, out, closing{
		reason: events.ReasonFalseAlarm, at: v.Deadline, tag: tagVerifyDeadline,
		obsIDs: ids, votes: v.allVotes(),
	})
}

type closing struct {
	reason events.Reason
	at     time.Time
	tag    string // the triggering observation's ID, or a fixed tag
	obsIDs []string
	votes  []events.RegionVote
}

func (st *SiteState) closeIncident(site events.Site, env Env, out *Output, c closing) {
	ev := st.incidentEvent(site, env, events.KindRecovered, c.at, c.tag, c.obsIDs)
	ev.State = events.StateUp
	ev.Severity = events.SeverityUp
	ev.Reason = c.reason
	ev.Votes = c.votes
	out.Events = append(out.Events, ev)
	st.Incident = nil
	out.Cadence = nil
	out.ClearCadence = true
}

// incidentEvent builds an event of the open incident. Its ID is derived from
// the event's time, the site, the incident, the kind and tag (the triggering
// observation's ID, or a fixed tag for events no observation caused).
func (st *SiteState) incidentEvent(site events.Site, env Env, kind events.EventKind, at time.Time, tag string, obsIDs []string) events.SiteEvent {
	inc := st.Incident
	started := inc.StartedAt
	ev := events.SiteEvent{
		ID:             events.DeriveID(at, site.ID, inc.ID, string(kind), tag),
		Kind:           kind,
		SiteID:         site.ID,
		Bucket:         events.Bucket(site.ID),
		At:             at,
		State:          inc.State,
		Severity:       severityOf(inc.State),
		IncidentID:     inc.ID,
		StartedAt:      &started,
		FailureClass:   inc.FailureClass,
		FailureStatus:  inc.FailureStatus,
		ObservationIDs: nonNil(obsIDs),
		// The whole incident is flagged if it started in a window; any
		// event that itself falls in a window is flagged too.
		Maintenance: inc.Maintenance || env.inMaintenance(site, at),
	}
	return ev
}

func severityOf(s events.State) events.Severity {
	switch s {
	case events.StateDown:
		return events.SeverityDown
	case events.StateSeemsDown:
		return events.SeveritySeemsDown
	}
	return events.SeverityUp
}

func (v *Verification) vote(region string) (events.RegionVote, bool) {
	for _, rv := range v.Votes {
		if rv.Region == region {
			return rv, true
		}
	}
	return events.RegionVote{}, false
}

// allVotes lists every requested region's vote, sorted by region; a region
// that has not answered is VoteNone.
func (v *Verification) allVotes() []events.RegionVote {
	out := make([]events.RegionVote, 0, len(v.Regions))
	for _, r := range v.Regions {
		rv, ok := v.vote(r)
		if !ok {
			rv = events.RegionVote{Region: r, Vote: events.VoteNone}
		}
		out = append(out, rv)
	}
	return out
}

func (v *Verification) downIDs() []string {
	ids := []string{}
	for _, rv := range v.Votes {
		if rv.Vote == events.VoteDown {
			ids = append(ids, rv.ObservationID)
		}
	}
	return ids
}

func (v *Verification) answeredIDs() []string {
	ids := []string{}
	for _, rv := range v.Votes {
		if rv.ObservationID != "" {
			ids = append(ids, rv.ObservationID)
		}
	}
	return ids
}

// verifierRegions lists the regions to verify from, sorted: every deployed
// region but the primary, restricted to site.Regions when that is set.
func verifierRegions(site events.Site, env Env) []string {
	primary := env.Regions[0]
	var rs []string
	for _, r := range env.Regions[1:] {
		if r == primary || slices.Contains(rs, r) {
			continue
		}
		if len(site.Regions) > 0 && !slices.Contains(site.Regions, r) {
			continue
		}
		rs = append(rs, r)
	}
	slices.Sort(rs)
	return rs
}

// cloneSpec copies the spec's maps and slices, so commands never alias the
// caller's Site.
func cloneSpec(s events.CheckSpec) events.CheckSpec {
	s.Headers = maps.Clone(s.Headers)
	s.ExpectStatus = slices.Clone(s.ExpectStatus)
	s.Keywords = slices.Clone(s.Keywords)
	s.ForbiddenKeywords = slices.Clone(s.ForbiddenKeywords)
	return s
}

func appendBounded(ids []string, id string) []string {
	ids = append(ids, id)
	if len(ids) > MaxObservationIDs {
		ids = slices.Clone(ids[len(ids)-MaxObservationIDs:])
	}
	return ids
}

func nonNil(ids []string) []string {
	if ids == nil {
		return []string{}
	}
	return ids
}
