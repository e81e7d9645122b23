package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
)

// SetCadence asks the schedulers to check c.SiteID every c.Interval, with
// purpose retry and c.IncidentID, until ClearCadence or c.Until. kv is the
// VIGIL_CADENCE bucket. The override lives in KV, so neither a crash of the
// state machine nor of a scheduler loses it.
func SetCadence(ctx context.Context, kv jetstream.KeyValue, c events.Cadence) error {
	if err := events.ValidateSiteID(c.SiteID); err != nil {
		return fmt.Errorf("set cadence: %w", err)
	}
	if c.Interval.Std() < MinInterval {
		return fmt.Errorf("set cadence of site %s: interval %s is below the minimum %s", c.SiteID, c.Interval, events.Duration(MinInterval))
	}
	if c.Until.IsZero() {
		return fmt.Errorf("set cadence of site %s: until is required (the override's safety net)", c.SiteID)
	}
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("set cadence of site %s: encode: %w", c.SiteID, err)
	}
	if _, err := kv.Put(ctx, events.CadenceKey(c.SiteID), data); err != nil {
		return fmt.Errorf("set cadence of site %s: put %s: %w", c.SiteID, events.CadenceKey(c.SiteID), err)
	}
	return nil
}

// ClearCadence removes a site's cadence override: it returns to its own
// interval. Clearing a site without an override is not an error.
func ClearCadence(ctx context.Context, kv jetstream.KeyValue, siteID string) error {
	if err := events.ValidateSiteID(siteID); err != nil {
		return fmt.Errorf("clear cadence: %w", err)
	}
	if err := kv.Delete(ctx, events.CadenceKey(siteID)); err != nil {
		return fmt.Errorf("clear cadence of site %s: delete %s: %w", siteID, events.CadenceKey(siteID), err)
	}
	return nil
}

// followCadences watches every key of KVCadence and applies each override.
// (One watch on all keys rather than one per owned bucket: overrides are few,
// and holding those of unowned buckets too means a bucket acquired later
// needs no extra read.) The returned channel closes when the watch ends.
func (s *Scheduler) followCadences(ctx context.Context, kv jetstream.KeyValue) (<-chan struct{}, error) {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("scheduler: watch kv %s: %w", events.KVCadence, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil { // nil marks the end of the initial values
					s.applyCadence(e)
				}
			}
		}
	}()
	return done, nil
}

// applyCadence applies one KVCadence entry.
func (s *Scheduler) applyCadence(e jetstream.KeyValueEntry) {
	_, siteID, ok := strings.Cut(e.Key(), ".")
	if !ok || events.ValidateSiteID(siteID) != nil || events.CadenceKey(siteID) != e.Key() {
		s.logger.Warn("cadence override under an unexpected key; ignored", "key", e.Key())
		return
	}
	var c *events.Cadence
	if op := e.Operation(); op == jetstream.KeyValuePut {
		c = new(events.Cadence)
		if err := json.Unmarshal(e.Value(), c); err != nil {
			s.logger.Warn("undecodable cadence override; ignored", "site", siteID, "key", e.Key(), "revision", e.Revision(), "err", err)
			return
		}
		if c.SiteID == "" {
			c.SiteID = siteID
		}
		if c.SiteID != siteID {
			s.logger.Warn("cadence override for another site than its key; ignored", "site", c.SiteID, "key", e.Key())
			return
		}
	}
	now := s.o.now()
	s.mu.Lock()
	s.st.setCadence(siteID, c, now.UnixMilli())
	s.mu.Unlock()
	if c != nil {
		s.logger.Debug("cadence override", "site", siteID, "bucket", events.Bucket(siteID), "interval", c.Interval, "incident", c.IncidentID, "until", c.Until)
	} else {
		s.logger.Debug("cadence override removed", "site", siteID, "bucket", events.Bucket(siteID))
	}
}
