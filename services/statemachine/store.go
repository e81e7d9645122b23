package statemachine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
)

// stateStore keeps per-site state in KV (events.KVStateMachine), one key per
// site that has state worth keeping. A site with no open incident and no TLS
// advisory has no key: healthy checks write nothing.
type stateStore struct {
	kv jetstream.KeyValue
}

// trivial reports whether st holds nothing a successor would need.
func trivial(st *SiteState) bool {
	return st.Incident == nil && (st.TLS == nil || st.TLS.Stage == 0)
}

// load returns the stored states of one bucket.
func (s *stateStore) load(ctx context.Context, bucket int) (map[string]*SiteState, error) {
	out := map[string]*SiteState{}
	lister, err := s.kv.ListKeysFiltered(ctx, events.SiteKeyBucketFilter(bucket))
	if err != nil {
		return nil, fmt.Errorf("list state keys of bucket %d: %w", bucket, err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		e, err := s.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read state %s: %w", k, err)
		}
		var st SiteState
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			// A state that cannot be read is dropped: the site starts afresh
			// rather than blocking its bucket.
			continue
		}
		site := k[strings.IndexByte(k, '.')+1:]
		st.SiteID = site
		out[site] = &st
	}
	return out, nil
}

// save writes st, or deletes the site's key when st is trivial.
func (s *stateStore) save(ctx context.Context, st *SiteState) error {
	key := events.SiteKey(st.SiteID)
	if trivial(st) {
		err := s.kv.Delete(ctx, key)
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("delete state of %s: %w", st.SiteID, err)
		}
		return nil
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode state of %s: %w", st.SiteID, err)
	}
	if _, err := s.kv.Put(ctx, key, b); err != nil {
		return fmt.Errorf("save state of %s: %w", st.SiteID, err)
	}
	return nil
}

// loadPosition returns the bucket's saved position: the OBSERVATIONS stream
// sequence up to which its observations are applied. Zero when none is saved.
func (s *stateStore) loadPosition(ctx context.Context, bucket int) (uint64, error) {
	e, err := s.kv.Get(ctx, events.PositionKey(bucket))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read position of bucket %d: %w", bucket, err)
	}
	seq, err := strconv.ParseUint(string(e.Value()), 10, 64)
	if err != nil {
		// An unreadable position only costs a longer replay: start from the
		// consumer's ack floor or the stream's beginning.
		return 0, nil
	}
	return seq, nil
}

// savePosition records the bucket's position. Callers pass only sequences
// whose effects are durable.
func (s *stateStore) savePosition(ctx context.Context, bucket int, seq uint64) error {
	if _, err := s.kv.Put(ctx, events.PositionKey(bucket), strconv.AppendUint(nil, seq, 10)); err != nil {
		return fmt.Errorf("save position of bucket %d: %w", bucket, err)
	}
	return nil
}
