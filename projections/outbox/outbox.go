// Package outbox is the notification outbox projection: for every event that
// matches a subscription it writes one row, keyed by (event ID, subscription
// ID), holding the payload frozen as a structured CloudEvent (JSON), status
// pending, no attempts yet and next_attempt_at set to when it was projected.
// The notifier delivers the rows; the projector never sends anything.
//
// The outbox keeps its own checkpoint and is never rebuilt: its rows are side
// effects (a replay would notify again), so Rebuild refuses it. A crash or a
// replay inside its checkpoint cannot duplicate a row: the key makes the
// insert a no-op.
//
// # Matching
//
// A subscription matches an event when it is enabled and
//
//   - the event's kind is in event_kinds (empty: seems_down, down,
//     recovered); region events only when listed as "region.impaired" or
//     "region.recovered", and only for subscriptions without site or label
//     filters;
//   - the site is in site_filter (empty: every site);
//   - the site's labels contain label_filter (empty: no condition). Labels
//     live on SITES, not in events: Config.Labels supplies them, and without
//     it a subscription with a label filter matches nothing;
//   - the event's severity is at least min_severity (default 4, Down). A
//     Recovered matches when the subscription was notified of the same
//     incident's Seems Down or Down, so nobody hears of a recovery from an
//     incident they were never told about;
//   - the event is not flagged Maintenance, if suppress_in_maintenance.
package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/projections/projector"
	"github.com/vigil-dev/vigil/projections/store"
)

// Name is the projection's name and checkpoint.
const Name = "notification_outbox"

// Tables.
const (
	Table              = "notification_outbox"
	TableSubscriptions = "subscriptions"
)

// Row statuses. The projection writes pending; the notifier moves rows on.
const (
	StatusPending   = "pending"
	StatusDelivered = "delivered"
	StatusFailed    = "failed"
	StatusAbandoned = "abandoned"
)

// Destination kinds.
const (
	DestWebhook   = "webhook"
	DestSlack     = "slack"
	DestEmail     = "email"
	DestPagerDuty = "pagerduty"
)

// Region kinds as subscriptions name them.
const (
	KindRegionImpaired  = "region.impaired"
	KindRegionRecovered = "region.recovered"
)

// DefaultKinds are the kinds of a subscription that lists none.
var DefaultKinds = []string{string(events.KindSeemsDown), string(events.KindDown), string(events.KindRecovered)}

var validKinds = []string{
	string(events.KindSeemsDown), string(events.KindDown), string(events.KindRecovered),
	string(events.KindTLSExpiring), string(events.KindTLSExpired), string(events.KindTLSRenewed),
	KindRegionImpaired, KindRegionRecovered,
}

// Config tunes the projection.
type Config struct {
	// Now is the clock for created_at and next_attempt_at (default time.Now).
	Now func() time.Time
	// Labels returns a site's labels, for subscriptions with a label filter.
	Labels func(ctx context.Context, siteID string) (map[string]string, error)
}

// Projection is the outbox projection.
type Projection struct {
	cfg Config
}

// batch is what a batch reads once (in projector.Tx.Local).
type batch struct {
	subs   []Subscription
	labels map[string]map[string]string
}

func (p *Projection) batch(tx *projector.Tx) *batch {
	return tx.Local(p, func() any { return &batch{labels: map[string]map[string]string{}} }).(*batch)
}

// New returns the projection.
func New(cfg Config) *Projection {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Projection{cfg: cfg}
}

// Name implements projector.Projection.
func (*Projection) Name() string { return Name }

// Tables implements projector.Projection.
func (*Projection) Tables() []string { return []string{Table} }

// NeverRebuilt implements projector.NeverRebuilt.
func (*Projection) NeverRebuilt() {}

// BeginBatch implements projector.BatchStarter: the enabled subscriptions are
// read once per batch, inside its transaction.
func (p *Projection) BeginBatch(ctx context.Context, tx *projector.Tx) error {
	subs, err := list(ctx, tx, true)
	if err != nil {
		return err
	}
	p.batch(tx).subs = subs
	return nil
}

// Apply implements projector.Projection.
func (p *Projection) Apply(ctx context.Context, tx *projector.Tx, seq uint64, ev *projector.Event) error {
	b := p.batch(tx)
	if len(b.subs) == 0 {
		return nil
	}
	var payload []byte
	for i := range b.subs {
		s := &b.subs[i]
		ok, err := p.matches(ctx, tx, b, s, ev)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if payload == nil {
			if payload, err = json.Marshal(ev.CE); err != nil {
				return projector.Poison(fmt.Errorf("freeze payload: %w", err))
			}
		}
		if err := p.insert(ctx, tx, seq, ev, s, payload); err != nil {
			return err
		}
	}
	return nil
}

func (p *Projection) insert(ctx context.Context, tx *projector.Tx, seq uint64, ev *projector.Event, s *Subscription, payload []byte) error {
	d := tx.D
	now := d.Time(p.cfg.Now())
	var site, incident any
	kind, sev := "", 0
	if se := ev.Site; se != nil {
		site, kind, sev = se.SiteID, string(se.Kind), int(severity(se))
		if se.IncidentID != "" {
			incident = se.IncidentID
		}
	} else {
		kind = "region." + string(ev.Region.Kind)
	}
	_, err := tx.ExecContext(ctx, d.InsertIgnore()+" INTO "+tx.T(Table)+` (event_id, subscription_id, event_seq, event_type, event_kind,
		site_id, incident_id, severity, destination_kind, destination, payload, status, attempts, next_attempt_at, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)`,
		ev.ID(), s.ID, int64(seq), ev.Type(), kind, site, incident, sev, s.DestinationKind, s.Destination,
		string(payload), StatusPending, now, now)
	return err
}

// severity is an event's severity, defaulting for incident kinds that do not
// carry one.
func severity(se *events.SiteEvent) events.Severity {
	if se.Severity != 0 {
		return se.Severity
	}
	switch se.Kind {
	case events.KindSeemsDown:
		return events.SeveritySeemsDown
	case events.KindDown:
		return events.SeverityDown
	}
	return se.Severity
}

func (p *Projection) matches(ctx context.Context, tx *projector.Tx, b *batch, s *Subscription, ev *projector.Event) (bool, error) {
	kinds := s.Kinds
	if len(kinds) == 0 {
		kinds = DefaultKinds
	}
	if re := ev.Region; re != nil {
		return len(s.Sites) == 0 && len(s.Labels) == 0 && slices.Contains(kinds, "region."+string(re.Kind)), nil
	}
	se := ev.Site
	if !slices.Contains(kinds, string(se.Kind)) {
		return false, nil
	}
	if len(s.Sites) > 0 && !slices.Contains(s.Sites, se.SiteID) {
		return false, nil
	}
	if s.SuppressInMaintenance && se.Maintenance {
		return false, nil
	}
	if len(s.Labels) > 0 {
		if p.cfg.Labels == nil {
			return false, nil
		}
		labels, ok := b.labels[se.SiteID]
		if !ok {
			l, err := p.cfg.Labels(ctx, se.SiteID)
			if err != nil {
				return false, fmt.Errorf("labels of %s: %w", se.SiteID, err)
			}
			b.labels[se.SiteID], labels = l, l
		}
		for k, v := range s.Labels {
			if labels[k] != v {
				return false, nil
			}
		}
	}
	if se.Kind == events.KindRecovered {
		var n int
		err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+tx.T(Table)+" WHERE subscription_id = ? AND incident_id = ?", s.ID, se.IncidentID).Scan(&n)
		return n > 0, err
	}
	return severity(se) >= s.MinSeverity, nil
}

// Subscription says who is told about what.
type Subscription struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	// DestinationKind is webhook, slack, email or pagerduty; Destination is
	// its URL, address or routing key.
	DestinationKind string            `json:"destination_kind"`
	Destination     string            `json:"destination"`
	Sites           []string          `json:"sites,omitempty"`
	Labels          map[string]string `json:"labels,omitempty"`
	// MinSeverity gates Seems Down (3), Down (4) and TLS advisories.
	MinSeverity events.Severity `json:"min_severity"`
	// Kinds are event kinds (seems_down, down, recovered, tls_expiring,
	// tls_expired, tls_renewed, region.impaired, region.recovered).
	Kinds                 []string `json:"kinds,omitempty"`
	SuppressInMaintenance bool     `json:"suppress_in_maintenance"`
	Enabled               bool     `json:"enabled"`
}

// Validate checks a subscription.
func (s *Subscription) Validate() error {
	if s.ID == "" || len(s.ID) > 64 {
		return errors.New("subscription id must be 1 to 64 characters")
	}
	switch s.DestinationKind {
	case DestWebhook, DestSlack, DestEmail, DestPagerDuty:
	default:
		return fmt.Errorf("destination kind %q: want webhook, slack, email or pagerduty", s.DestinationKind)
	}
	if s.Destination == "" || len(s.Destination) > 2048 {
		return errors.New("destination must be 1 to 2048 characters")
	}
	for _, k := range s.Kinds {
		if !slices.Contains(validKinds, k) {
			return fmt.Errorf("event kind %q: want one of %v", k, validKinds)
		}
	}
	for _, site := range s.Sites {
		if err := events.ValidateSiteID(site); err != nil {
			return err
		}
	}
	if s.MinSeverity < events.SeverityUp || s.MinSeverity > events.SeverityDown {
		return fmt.Errorf("min severity %d: want 0 to 4", s.MinSeverity)
	}
	return nil
}

// Put creates or replaces a subscription. It affects events projected from
// then on; rows already in the outbox keep the destination they were frozen
// with.
func Put(ctx context.Context, db *store.DB, s Subscription) error {
	if err := s.Validate(); err != nil {
		return err
	}
	d := db.D
	sites, labels, kinds := jsonOrNil(s.Sites), jsonOrNil(s.Labels), jsonOrNil(s.Kinds)
	now := d.Time(time.Now())
	cols := []string{"subscription_id", "name", "destination_kind", "destination", "site_filter", "label_filter",
		"min_severity", "event_kinds", "suppress_in_maintenance", "enabled", "created_at", "updated_at"}
	var assigns []string
	for _, c := range cols[1:] {
		if c != "created_at" {
			assigns = append(assigns, c+" = "+d.Excluded(c))
		}
	}
	_, err := db.W.ExecContext(ctx, projector.Upsert(d, TableSubscriptions, []string{"subscription_id"}, cols, assigns...),
		s.ID, s.Name, s.DestinationKind, s.Destination, sites, labels, int(s.MinSeverity), kinds,
		boolInt(s.SuppressInMaintenance), boolInt(s.Enabled), now, now)
	return err
}

// Delete removes a subscription. Its pending rows stay for the notifier to
// decide on.
func Delete(ctx context.Context, db *store.DB, id string) error {
	_, err := db.W.ExecContext(ctx, "DELETE FROM "+TableSubscriptions+" WHERE subscription_id = ?", id)
	return err
}

// List returns every subscription, by ID.
func List(ctx context.Context, db *store.DB) ([]Subscription, error) {
	return list(ctx, db.R, false)
}

func list(ctx context.Context, q store.Querier, enabledOnly bool) ([]Subscription, error) {
	query := `SELECT subscription_id, name, destination_kind, destination, site_filter, label_filter, min_severity,
		event_kinds, suppress_in_maintenance, enabled FROM ` + TableSubscriptions
	if enabledOnly {
		query += " WHERE enabled = 1"
	}
	rows, err := q.QueryContext(ctx, query+" ORDER BY subscription_id")
	if err != nil {
		return nil, fmt.Errorf("read subscriptions: %w", err)
	}
	defer rows.Close()
	var out []Subscription
	for rows.Next() {
		var s Subscription
		var sites, labels, kinds *string
		var sev, sup, en int
		if err := rows.Scan(&s.ID, &s.Name, &s.DestinationKind, &s.Destination, &sites, &labels, &sev, &kinds, &sup, &en); err != nil {
			return nil, err
		}
		s.MinSeverity, s.SuppressInMaintenance, s.Enabled = events.Severity(sev), sup != 0, en != 0
		if err := unmarshalOpt(sites, &s.Sites); err != nil {
			return nil, fmt.Errorf("subscription %s site_filter: %w", s.ID, err)
		}
		if err := unmarshalOpt(labels, &s.Labels); err != nil {
			return nil, fmt.Errorf("subscription %s label_filter: %w", s.ID, err)
		}
		if err := unmarshalOpt(kinds, &s.Kinds); err != nil {
			return nil, fmt.Errorf("subscription %s event_kinds: %w", s.ID, err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func jsonOrNil(v any) any {
	switch x := v.(type) {
	case []string:
		if len(x) == 0 {
			return nil
		}
	case map[string]string:
		if len(x) == 0 {
			return nil
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return string(b)
}

func unmarshalOpt(s *string, v any) error {
	if s == nil || *s == "" {
		return nil
	}
	return json.Unmarshal([]byte(*s), v)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
