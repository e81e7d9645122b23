// Package topology declares Vigil's JetStream streams and KV buckets as code and
// applies them: `vigil streams apply` and the start of `vigil dev` create what
// is missing, update what drifted and report what cannot be changed in place.
//
// Why each stream is configured as it is: docs/streams.md.
package topology

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/config"
)

// Options are the tunable parts of the topology. The rest is fixed by design.
type Options struct {
	Replicas             int
	ObservationsMaxAge   time.Duration
	ObservationsMaxBytes int64
	ChecksMaxAge         time.Duration
	EventsDuplicates     time.Duration
	// DenyDelete makes SITES and EVENTS refuse message deletes and purges. The
	// server never lets it be turned off again.
	DenyDelete bool
	// LeaseTTL is the lease period of the VIGIL_LEASES bucket.
	LeaseTTL time.Duration
}

// FromConfig returns the topology options of a configuration.
func FromConfig(cfg *config.Config) Options {
	return Options{
		Replicas:             cfg.Streams.Replicas,
		ObservationsMaxAge:   cfg.Streams.ObservationsMaxAge,
		ObservationsMaxBytes: cfg.Streams.ObservationsMaxBytes,
		ChecksMaxAge:         cfg.Streams.ChecksMaxAge,
		EventsDuplicates:     cfg.Streams.EventsDuplicates,
		DenyDelete:           cfg.Streams.DenyDelete,
		LeaseTTL:             cfg.Lease.TTL,
	}
}

// Streams returns the desired configuration of every stream.
func Streams(o Options) []jetstream.StreamConfig {
	replicas := max(o.Replicas, 1)
	return []jetstream.StreamConfig{
		{
			Name:        events.StreamSites,
			Description: "Site configuration changes; the last message per site is its current configuration",
			Subjects:    []string{events.SitesAll},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
			Discard:     jetstream.DiscardOld,
			// Keep a long audit trail per site but bound it, so a runaway
			// automation loop cannot grow one site without limit.
			MaxMsgsPerSubject: 1000,
			MaxMsgs:           -1,
			MaxBytes:          -1,
			MaxMsgSize:        256 << 10,
			Duplicates:        2 * time.Minute,
			AllowDirect:       true,
			DenyDelete:        o.DenyDelete,
			DenyPurge:         o.DenyDelete,
		},
		{
			Name:        events.StreamChecks,
			Description: "Check commands; one pending command per site and region, consumed by the region's checkers",
			Subjects:    []string{events.ChecksAll},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
			// A newer command for a site replaces a pending one: a stale
			// command is dropped, never queued behind the fresh one.
			Discard:           jetstream.DiscardOld,
			MaxMsgsPerSubject: 1,
			MaxMsgs:           -1,
			MaxBytes:          -1,
			MaxMsgSize:        256 << 10,
			MaxAge:            o.ChecksMaxAge,
			Duplicates:        2 * time.Minute,
			// A batch of commands (events.CheckBatch) has a subject of its
			// own, which no newer batch replaces; the scheduler gives it a
			// TTL instead, up to its commands' last deadline, so a backlog
			// of batches lasts no longer than their commands are worth
			// running.
			AllowMsgTTL: true,
		},
		{
			Name:        events.StreamObservations,
			Description: "Raw check observations, bounded in age and bytes",
			Subjects:    []string{events.ObservationsAll},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
			Discard:     jetstream.DiscardOld,
			MaxAge:      o.ObservationsMaxAge,
			MaxBytes:    o.ObservationsMaxBytes,
			MaxMsgs:     -1,
			// Per-site history stays available for replays until age or bytes
			// retire it.
			MaxMsgsPerSubject: -1,
			MaxMsgSize:        256 << 10,
			// The observation ID is the Msg-Id; the window only has to cover a
			// checker's publish retries, and every ID in it costs memory.
			Duplicates:  30 * time.Second,
			AllowDirect: true,
		},
		{
			Name:              events.StreamEvents,
			Description:       "Derived site and region events: the system of record, kept forever",
			Subjects:          []string{events.EventsAll},
			Retention:         jetstream.LimitsPolicy,
			Storage:           jetstream.FileStorage,
			Replicas:          replicas,
			Discard:           jetstream.DiscardOld,
			MaxAge:            0,
			MaxMsgs:           -1,
			MaxBytes:          -1,
			MaxMsgsPerSubject: -1,
			MaxMsgSize:        1 << 20,
			// Events are rare, so a long window is cheap and catches a
			// restarted instance re-deriving what it already wrote.
			Duplicates:  o.EventsDuplicates,
			AllowDirect: true,
			DenyDelete:  o.DenyDelete,
			DenyPurge:   o.DenyDelete,
		},
	}
}

// KeyValues returns the desired configuration of every KV bucket.
func KeyValues(o Options) []jetstream.KeyValueConfig {
	return []jetstream.KeyValueConfig{{
		Bucket:      events.KVLeases,
		Description: "Leases by which service instances split buckets",
		History:     1,
		TTL:         o.LeaseTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    max(o.Replicas, 1),
	}, {
		Bucket:      events.KVCadence,
		Description: "Per-site cadence overrides (fast retries while an incident is open)",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    max(o.Replicas, 1),
	}, {
		Bucket:      events.KVStateMachine,
		Description: "State machine per-site state of sites with an open incident or a TLS advisory",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    max(o.Replicas, 1),
	}, {
		Bucket:      events.KVRedirects,
		Description: "Accepted redirect chain per site and region of sites with redirects: alert",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    max(o.Replicas, 1),
	}}
}

// Action is what Apply did to one stream or bucket.
type Action string

// Actions.
const (
	Created   Action = "created"
	Updated   Action = "updated"
	Unchanged Action = "unchanged"
)

// Result reports what Apply did to one stream or KV bucket.
type Result struct {
	Name   string
	Action Action
	// Changed lists the fields that were updated.
	Changed []string
	// Drift lists the fields that differ from the desired topology but
	// cannot be changed in place (storage type, work-queue retention, lifting
	// deny-delete). Fixing them takes a migration: back up, recreate, restore.
	Drift []string
}

// Apply creates or updates every stream and KV bucket. It is idempotent: a
// second call changes nothing and reports every stream unchanged. Fields that
// cannot be changed in place are reported as Drift and left as they are.
func Apply(ctx context.Context, js jetstream.JetStream, o Options) ([]Result, error) {
	var results []Result
	for _, want := range Streams(o) {
		r, err := applyStream(ctx, js, want)
		if err != nil {
			return results, err
		}
		results = append(results, r)
	}
	for _, want := range KeyValues(o) {
		r, err := applyKV(ctx, js, want)
		if err != nil {
			return results, err
		}
		results = append(results, r)
	}
	return results, nil
}

func applyStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) (Result, error) {
	res := Result{Name: want.Name}
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := js.CreateStream(ctx, want); err != nil {
			return res, fmt.Errorf("create stream %s: %w", want.Name, err)
		}
		res.Action = Created
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("look up stream %s: %w", want.Name, err)
	}
	have := s.CachedInfo().Config
	next := have
	for _, f := range managedStreamFields() {
		if f.equal(&have, &want) {
			continue
		}
		if reason := f.immutable(&have, &want); reason != "" {
			res.Drift = append(res.Drift, fmt.Sprintf("%s: is %v, want %v (%s)", f.name, f.get(&have), f.get(&want), reason))
			continue
		}
		f.set(&next, &want)
		res.Changed = append(res.Changed, fmt.Sprintf("%s: %v -> %v", f.name, f.get(&have), f.get(&want)))
	}
	if len(res.Changed) == 0 {
		res.Action = Unchanged
		return res, nil
	}
	if _, err := js.UpdateStream(ctx, next); err != nil {
		return res, fmt.Errorf("update stream %s (%v): %w", want.Name, res.Changed, err)
	}
	res.Action = Updated
	return res, nil
}

func applyKV(ctx context.Context, js jetstream.JetStream, want jetstream.KeyValueConfig) (Result, error) {
	res := Result{Name: "KV " + want.Bucket}
	kv, err := js.KeyValue(ctx, want.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if _, err := js.CreateKeyValue(ctx, want); err != nil {
			return res, fmt.Errorf("create kv %s: %w", want.Bucket, err)
		}
		res.Action = Created
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("look up kv %s: %w", want.Bucket, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return res, fmt.Errorf("kv %s status: %w", want.Bucket, err)
	}
	if st.TTL() == want.TTL && st.History() == int64(want.History) {
		res.Action = Unchanged
		return res, nil
	}
	if st.TTL() != want.TTL {
		res.Changed = append(res.Changed, fmt.Sprintf("TTL: %s -> %s", st.TTL(), want.TTL))
	}
	if st.History() != int64(want.History) {
		res.Changed = append(res.Changed, fmt.Sprintf("History: %d -> %d", st.History(), want.History))
	}
	if _, err := js.UpdateKeyValue(ctx, want); err != nil {
		return res, fmt.Errorf("update kv %s: %w", want.Bucket, err)
	}
	res.Action = Updated
	return res, nil
}

// streamField is one stream setting Apply manages. Settings it does not manage
// (placement, sources, metadata an operator added) are left as they are.
type streamField struct {
	name      string
	get       func(*jetstream.StreamConfig) any
	set       func(dst, src *jetstream.StreamConfig)
	immutable func(have, want *jetstream.StreamConfig) string
}

func (f streamField) equal(a, b *jetstream.StreamConfig) bool {
	return reflect.DeepEqual(f.get(a), f.get(b))
}

func mutable(_, _ *jetstream.StreamConfig) string { return "" }

// managedStreamFields lists the settings Apply manages.
func managedStreamFields() []streamField {
	return []streamField{
		{"Description", func(c *jetstream.StreamConfig) any { return c.Description }, func(d, s *jetstream.StreamConfig) { d.Description = s.Description }, mutable},
		{"Subjects", func(c *jetstream.StreamConfig) any { return slices.Clone(c.Subjects) }, func(d, s *jetstream.StreamConfig) { d.Subjects = s.Subjects }, mutable},
		{"Retention", func(c *jetstream.StreamConfig) any { return c.Retention }, func(d, s *jetstream.StreamConfig) { d.Retention = s.Retention },
			func(h, w *jetstream.StreamConfig) string {
				if h.Retention == jetstream.WorkQueuePolicy || w.Retention == jetstream.WorkQueuePolicy {
					return "retention cannot change to or from work-queue"
				}
				return ""
			}},
		{"Storage", func(c *jetstream.StreamConfig) any { return c.Storage }, func(d, s *jetstream.StreamConfig) { d.Storage = s.Storage },
			func(_, _ *jetstream.StreamConfig) string { return "storage type cannot change" }},
		{"Replicas", func(c *jetstream.StreamConfig) any { return c.Replicas }, func(d, s *jetstream.StreamConfig) { d.Replicas = s.Replicas }, mutable},
		{"Discard", func(c *jetstream.StreamConfig) any { return c.Discard }, func(d, s *jetstream.StreamConfig) { d.Discard = s.Discard }, mutable},
		{"MaxAge", func(c *jetstream.StreamConfig) any { return c.MaxAge }, func(d, s *jetstream.StreamConfig) { d.MaxAge = s.MaxAge }, mutable},
		{"MaxBytes", func(c *jetstream.StreamConfig) any { return c.MaxBytes }, func(d, s *jetstream.StreamConfig) { d.MaxBytes = s.MaxBytes }, mutable},
		{"MaxMsgs", func(c *jetstream.StreamConfig) any { return c.MaxMsgs }, func(d, s *jetstream.StreamConfig) { d.MaxMsgs = s.MaxMsgs }, mutable},
		{"MaxMsgsPerSubject", func(c *jetstream.StreamConfig) any { return c.MaxMsgsPerSubject }, func(d, s *jetstream.StreamConfig) { d.MaxMsgsPerSubject = s.MaxMsgsPerSubject }, mutable},
		{"MaxMsgSize", func(c *jetstream.StreamConfig) any { return c.MaxMsgSize }, func(d, s *jetstream.StreamConfig) { d.MaxMsgSize = s.MaxMsgSize }, mutable},
		{"Duplicates", func(c *jetstream.StreamConfig) any { return c.Duplicates }, func(d, s *jetstream.StreamConfig) { d.Duplicates = s.Duplicates }, mutable},
		{"AllowDirect", func(c *jetstream.StreamConfig) any { return c.AllowDirect }, func(d, s *jetstream.StreamConfig) { d.AllowDirect = s.AllowDirect }, mutable},
		{"AllowMsgTTL", func(c *jetstream.StreamConfig) any { return c.AllowMsgTTL }, func(d, s *jetstream.StreamConfig) { d.AllowMsgTTL = s.AllowMsgTTL },
			func(h, w *jetstream.StreamConfig) string {
				if h.AllowMsgTTL && !w.AllowMsgTTL {
					return "the server never turns message TTLs off"
				}
				return ""
			}},
		{"DenyDelete", func(c *jetstream.StreamConfig) any { return c.DenyDelete }, func(d, s *jetstream.StreamConfig) { d.DenyDelete = s.DenyDelete }, denyCannotBeLifted},
		{"DenyPurge", func(c *jetstream.StreamConfig) any { return c.DenyPurge }, func(d, s *jetstream.StreamConfig) { d.DenyPurge = s.DenyPurge }, denyCannotBeLifted},
	}
}

func denyCannotBeLifted(h, w *jetstream.StreamConfig) string {
	if (h.DenyDelete && !w.DenyDelete) || (h.DenyPurge && !w.DenyPurge) {
		return "the server never lifts deny-delete or deny-purge"
	}
	return ""
}

// StreamStatus is a stream's size and activity, as `vigil streams status` prints it.
type StreamStatus struct {
	Name      string
	Messages  uint64
	Bytes     uint64
	Subjects  uint64
	Consumers int
	FirstSeq  uint64
	LastSeq   uint64
	Exists    bool
}

// Status reports every stream of the topology, including missing ones.
func Status(ctx context.Context, js jetstream.JetStream) ([]StreamStatus, error) {
	var out []StreamStatus
	for _, name := range []string{events.StreamSites, events.StreamChecks, events.StreamObservations, events.StreamEvents} {
		st := StreamStatus{Name: name}
		s, err := js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			out = append(out, st)
			continue
		}
		if err != nil {
			return out, fmt.Errorf("stream %s: %w", name, err)
		}
		info := s.CachedInfo()
		st.Exists = true
		st.Messages, st.Bytes = info.State.Msgs, info.State.Bytes
		st.Subjects = info.State.NumSubjects
		st.Consumers = info.State.Consumers
		st.FirstSeq, st.LastSeq = info.State.FirstSeq, info.State.LastSeq
		out = append(out, st)
	}
	return out, nil
}
