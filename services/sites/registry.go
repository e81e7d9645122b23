package sites

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
)

// Errors of the registry. They are wrapped with the site's ID and details;
// test for them with errors.Is.
var (
	// ErrNotFound: the site never existed, or its last change deleted it.
	ErrNotFound = errors.New("site not found")
	// ErrExists: Create was given the ID of a site that exists (and is not
	// deleted).
	ErrExists = errors.New("site already exists")
	// ErrConflict: the site changed between reading it and writing the
	// change (optimistic concurrency). Nothing was written; read the site
	// again and retry if the change still makes sense.
	ErrConflict = errors.New("site changed meanwhile")
	// ErrCorrupt: a message on SITES could not be decoded as a site change.
	ErrCorrupt = errors.New("unreadable message on SITES")
)

// Current is a site's current state: the last change on its subject.
type Current struct {
	// Site is the complete configuration after the last change.
	Site   events.Site `json:"site"`
	Paused bool        `json:"paused"`
	// Deleted is set when the last change deleted the site. Its Site is the
	// configuration it had when it was deleted.
	Deleted bool `json:"deleted,omitempty"`
	// Seq is the stream sequence of the last change: the version a change
	// based on this state must expect (optimistic concurrency).
	Seq    uint64            `json:"seq"`
	Change events.ChangeKind `json:"change"`
	At     time.Time         `json:"at"`
	Actor  string            `json:"actor,omitempty"`
}

// Registry reads and writes site configurations on the SITES stream. It holds
// no state of its own beyond a handle on the stream, so any number of
// registries (CLI invocations, API instances) can work on the same sites;
// optimistic concurrency keeps their writes from interleaving. It is safe for
// concurrent use.
type Registry struct {
	js    jetstream.JetStream
	now   func() time.Time
	ids   *events.IDSource
	actor string

	mu     sync.Mutex
	stream jetstream.Stream
}

// Option configures a Registry.
type Option func(*Registry)

// WithNow sets the clock that stamps changes (time.Now by default).
func WithNow(now func() time.Time) Option { return func(r *Registry) { r.now = now } }

// WithIDSource sets the source of change IDs and assigned site IDs (by
// default one drawing from crypto/rand).
func WithIDSource(ids *events.IDSource) Option { return func(r *Registry) { r.ids = ids } }

// WithActor sets who the registry's changes are recorded as made by, such as
// "cli" or "apply:sites.yaml".
func WithActor(actor string) Option { return func(r *Registry) { r.actor = actor } }

// NewRegistry returns a registry on js. The SITES stream must exist (vigil
// streams apply); it is looked up on first use.
func NewRegistry(js jetstream.JetStream, opts ...Option) *Registry {
	r := &Registry{js: js, now: time.Now}
	for _, o := range opts {
		o(r)
	}
	if r.ids == nil {
		r.ids = events.NewIDSource(rand.Reader)
	}
	return r
}

func (r *Registry) sites(ctx context.Context) (jetstream.Stream, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stream != nil {
		return r.stream, nil
	}
	s, err := r.js.Stream(ctx, events.StreamSites)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("stream %s does not exist; run vigil streams apply: %w", events.StreamSites, err)
	}
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", events.StreamSites, err)
	}
	r.stream = s
	return s, nil
}

// ListOption configures List.
type ListOption func(*listOpts)

type listOpts struct{ deleted bool }

// IncludeDeleted makes List return deleted sites too (with Deleted set).
func IncludeDeleted() ListOption { return func(o *listOpts) { o.deleted = true } }

// List returns every site's current state, sorted by ID; deleted sites are
// left out unless IncludeDeleted is given. It reads only the last message of
// each site's subject, with an ordered consumer, so its cost is one message
// per site however long the sites' histories are.
//
// A message that cannot be decoded does not hide the others: List returns the
// sites it could read together with an error wrapping ErrCorrupt that names
// the bad messages.
func (r *Registry) List(ctx context.Context, opts ...ListOption) ([]Current, error) {
	var o listOpts
	for _, opt := range opts {
		opt(&o)
	}
	st, err := r.sites(ctx)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s info: %w", events.StreamSites, err)
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SitesAll},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", events.StreamSites, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", events.StreamSites, err)
	}
	defer it.Stop()
	if ci := cons.CachedInfo(); ci != nil && ci.NumPending == 0 {
		return nil, nil
	}
	byID := make(map[string]Current, info.State.NumSubjects)
	var bad []error
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", events.StreamSites, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", events.StreamSites, err)
		}
		cur, err := decodeChange(msg.Subject(), msg.Headers(), msg.Data(), md.Sequence.Stream)
		if err != nil {
			bad = append(bad, err)
		} else if prev, ok := byID[cur.Site.ID]; !ok || cur.Seq > prev.Seq {
			// A change published while we read arrives after the site's
			// earlier last message; the later one wins.
			byID[cur.Site.ID] = cur
		}
		if md.NumPending == 0 {
			break
		}
	}
	out := make([]Current, 0, len(byID))
	for _, c := range byID {
		if c.Deleted && !o.deleted {
			continue
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Current) int { return strings.Compare(a.Site.ID, b.Site.ID) })
	if len(bad) > 0 {
		return out, errors.Join(bad...)
	}
	return out, nil
}

// Get returns a site's current state. It returns an error wrapping
// ErrNotFound if the site never existed or was deleted; for a deleted site the
// returned Current still holds its last state (Deleted set), so a caller can
// show when and by whom it was deleted.
func (r *Registry) Get(ctx context.Context, id string) (Current, error) {
	cur, err := r.load(ctx, id)
	if err != nil {
		return Current{}, err
	}
	if cur.Deleted {
		return cur, fmt.Errorf("%w: %s was deleted at %s", ErrNotFound, id, cur.At.Format(time.RFC3339))
	}
	return cur, nil
}

// load returns the last change of a site, deleted or not, and ErrNotFound
// only if there is none.
func (r *Registry) load(ctx context.Context, id string) (Current, error) {
	if err := events.ValidateSiteID(id); err != nil {
		return Current{}, &FieldError{Site: id, Index: -1, Field: "id", Reason: err.Error()}
	}
	st, err := r.sites(ctx)
	if err != nil {
		return Current{}, err
	}
	subject := events.SiteSubject(id)
	m, err := st.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Current{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Current{}, fmt.Errorf("get site %s: %w", id, err)
	}
	return decodeChange(subject, m.Header, m.Data, m.Sequence)
}

// History returns every change of a site still held by SITES, oldest first:
// its audit trail. The stream keeps the last 1000 changes per site.
func (r *Registry) History(ctx context.Context, id string) ([]Current, error) {
	last, err := r.load(ctx, id)
	if err != nil {
		return nil, err
	}
	st, err := r.sites(ctx)
	if err != nil {
		return nil, err
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SiteSubject(id)},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("read history of %s: %w", id, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("read history of %s: %w", id, err)
	}
	defer it.Stop()
	var out []Current
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("read history of %s: %w", id, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return nil, fmt.Errorf("read history of %s: %w", id, err)
		}
		cur, err := decodeChange(msg.Subject(), msg.Headers(), msg.Data(), md.Sequence.Stream)
		if err != nil {
			return out, err
		}
		out = append(out, cur)
		if md.Sequence.Stream >= last.Seq || md.NumPending == 0 {
			return out, nil
		}
	}
}

// decodeChange reads a site change and checks that it belongs on its subject,
// so a message published by hand on the wrong subject is reported rather than
// taken for another site's configuration.
func decodeChange(subject string, h nats.Header, data []byte, seq uint64) (Current, error) {
	var ch events.SiteChange
	if _, err := events.Decode(h, data, &ch); err != nil {
		return Current{}, fmt.Errorf("%w: %s sequence %d: %v", ErrCorrupt, subject, seq, err)
	}
	if events.ValidateSiteID(ch.Site.ID) != nil || events.SiteSubject(ch.Site.ID) != subject {
		return Current{}, fmt.Errorf("%w: %s sequence %d carries site %q, which belongs on another subject", ErrCorrupt, subject, seq, ch.Site.ID)
	}
	return Current{
		Site:    ch.Site,
		Paused:  ch.Paused,
		Deleted: ch.Change == events.ChangeDeleted,
		Seq:     seq,
		Change:  ch.Change,
		At:      ch.At,
		Actor:   ch.Actor,
	}, nil
}

// ChangeOption configures a single change.
type ChangeOption func(*changeOpts)

type changeOpts struct {
	ifSeq    uint64
	hasIfSeq bool
}

// IfSeq makes a change conditional on the site still being at sequence seq
// (Current.Seq of the state the caller showed or edited), the way an HTTP
// If-Match does: if it moved on, the change returns ErrConflict. Without it,
// a change is based on the state read when it is made.
func IfSeq(seq uint64) ChangeOption {
	return func(o *changeOpts) { o.ifSeq, o.hasIfSeq = seq, true }
}

// Create registers a new site and returns its state. The configuration is
// normalized first (invalid input returns *FieldError values and publishes
// nothing). A site without an ID gets a ULID. Creating the ID of a deleted
// site is allowed and starts it afresh (running, with a new "created"
// change); creating the ID of an existing site returns ErrExists.
func (r *Registry) Create(ctx context.Context, s events.Site) (Current, error) {
	n, err := Normalize(s)
	if err != nil {
		return Current{}, err
	}
	if n.ID == "" {
		if n.ID, err = r.ids.New(r.now()); err != nil {
			return Current{}, err
		}
	}
	cur, err := r.load(ctx, n.ID)
	var expect uint64
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return Current{}, err
	case !cur.Deleted:
		return cur, fmt.Errorf("%w: %s (use update to change it)", ErrExists, n.ID)
	default:
		expect = cur.Seq
	}
	return r.publish(ctx, events.ChangeCreated, n, false, expect)
}

// Update replaces a site's configuration with s (which must carry the ID)
// and returns the new state and whether anything was published: a
// configuration equal to the current one after normalization publishes
// nothing. The paused flag is kept. A missing or deleted site returns
// ErrNotFound.
func (r *Registry) Update(ctx context.Context, s events.Site, opts ...ChangeOption) (Current, bool, error) {
	if s.ID == "" {
		return Current{}, false, &FieldError{Index: -1, Field: "id", Reason: "is required to update a site"}
	}
	n, err := Normalize(s)
	if err != nil {
		return Current{}, false, err
	}
	cur, err := r.live(ctx, n.ID, opts)
	if err != nil {
		return cur, false, err
	}
	if SameConfig(cur.Site, n) {
		return cur, false, nil
	}
	next, err := r.publish(ctx, events.ChangeUpdated, n, cur.Paused, cur.Seq)
	return next, err == nil, err
}

// Pause stops scheduled checks of a site (its configuration is kept) and
// returns its state and whether anything was published: pausing a paused
// site changes nothing.
func (r *Registry) Pause(ctx context.Context, id string, opts ...ChangeOption) (Current, bool, error) {
	return r.setPaused(ctx, id, true, opts)
}

// Resume restarts the checks of a paused site; resuming a running site
// changes nothing.
func (r *Registry) Resume(ctx context.Context, id string, opts ...ChangeOption) (Current, bool, error) {
	return r.setPaused(ctx, id, false, opts)
}

func (r *Registry) setPaused(ctx context.Context, id string, paused bool, opts []ChangeOption) (Current, bool, error) {
	cur, err := r.live(ctx, id, opts)
	if err != nil {
		return cur, false, err
	}
	if cur.Paused == paused {
		return cur, false, nil
	}
	kind := events.ChangeResumed
	if paused {
		kind = events.ChangePaused
	}
	next, err := r.publish(ctx, kind, cur.Site, paused, cur.Seq)
	return next, err == nil, err
}

// Delete ends the monitoring of a site. Its history stays on SITES and the
// deleted change carries its last configuration. Deleting a deleted site
// changes nothing; deleting one that never existed returns ErrNotFound.
func (r *Registry) Delete(ctx context.Context, id string, opts ...ChangeOption) (Current, bool, error) {
	cur, err := r.load(ctx, id)
	if err != nil {
		return Current{}, false, err
	}
	if err := checkSeq(cur, opts); err != nil {
		return cur, false, err
	}
	if cur.Deleted {
		return cur, false, nil
	}
	next, err := r.publish(ctx, events.ChangeDeleted, cur.Site, cur.Paused, cur.Seq)
	return next, err == nil, err
}

// live loads a site that must exist and not be deleted, honouring IfSeq.
func (r *Registry) live(ctx context.Context, id string, opts []ChangeOption) (Current, error) {
	cur, err := r.Get(ctx, id)
	if err != nil {
		return Current{}, err
	}
	return cur, checkSeq(cur, opts)
}

func checkSeq(cur Current, opts []ChangeOption) error {
	var o changeOpts
	for _, opt := range opts {
		opt(&o)
	}
	if o.hasIfSeq && o.ifSeq != cur.Seq {
		return fmt.Errorf("%w: %s is at sequence %d, not %d", ErrConflict, cur.Site.ID, cur.Seq, o.ifSeq)
	}
	return nil
}

// publish appends one change of a site, expecting the site's subject to be at
// sequence expect (0: no message yet). The server enforces the expectation,
// so a concurrent writer that got there first makes this one fail with
// ErrConflict instead of overwriting its change.
func (r *Registry) publish(ctx context.Context, kind events.ChangeKind, s events.Site, paused bool, expect uint64) (Current, error) {
	at := r.now().UTC()
	id, err := r.ids.New(at)
	if err != nil {
		return Current{}, err
	}
	ch := &events.SiteChange{ID: id, Change: kind, At: at, Actor: r.actor, Paused: paused, Site: s}
	msg, err := events.Marshal(ch)
	if err != nil {
		return Current{}, fmt.Errorf("encode %s change of %s: %w", kind, s.ID, err)
	}
	ack, err := r.js.PublishMsg(ctx, msg,
		jetstream.WithMsgID(ch.ID),
		jetstream.WithExpectStream(events.StreamSites),
		jetstream.WithExpectLastSequenceForSubject(expect, msg.Subject),
	)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return Current{}, fmt.Errorf("%w: %s %s: the site is no longer at sequence %d; read it again and retry", ErrConflict, kind, s.ID, expect)
		}
		if errors.Is(err, jetstream.ErrNoStreamResponse) {
			return Current{}, fmt.Errorf("publish %s change of %s: no stream answered on %s; run vigil streams apply: %w", kind, s.ID, msg.Subject, err)
		}
		return Current{}, fmt.Errorf("publish %s change of %s: %w", kind, s.ID, err)
	}
	return Current{
		Site:    s,
		Paused:  paused,
		Deleted: kind == events.ChangeDeleted,
		Seq:     ack.Sequence,
		Change:  kind,
		At:      at,
		Actor:   r.actor,
	}, nil
}
