package scheduler

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
)

// followSites starts the consumer of live configuration changes: one ordered
// consumer on every site subject, starting just after the stream's current
// last message. (An explicit start sequence rather than DeliverNew: if the
// ordered consumer has to be recreated before its first message, it resumes
// from the same point instead of from the then-current end.)
func (s *Scheduler) followSites(ctx context.Context) (jetstream.ConsumeContext, error) {
	stream, err := s.js.Stream(ctx, events.StreamSites)
	if err != nil {
		return nil, fmt.Errorf("scheduler: look up stream %s: %w", events.StreamSites, err)
	}
	start := stream.CachedInfo().State.LastSeq + 1
	oc, err := s.js.OrderedConsumer(ctx, events.StreamSites, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{events.SitesAll},
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       start,
		InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("scheduler: create live consumer on %s: %w", events.StreamSites, err)
	}
	cc, err := oc.Consume(func(msg jetstream.Msg) {
		md, err := msg.Metadata()
		if err != nil {
			s.logger.Warn("site change without metadata", "subject", msg.Subject(), "err", err)
			return
		}
		s.applyMsg(msg, md.Sequence.Stream, 0, 0)
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if ctx.Err() == nil {
			s.logger.Warn("live site consumer", "err", err)
		}
	}))
	if err != nil {
		return nil, fmt.Errorf("scheduler: consume %s: %w", events.StreamSites, err)
	}
	return cc, nil
}

// loadBucket loads the current configurations of bucket b, retrying while the
// bucket is still owned in epoch.
func (s *Scheduler) loadBucket(ctx context.Context, b int, epoch uint64, lookback time.Duration) {
	wait := time.Second
	for {
		start := time.Now()
		n, err := s.loadOnce(ctx, b, epoch, lookback)
		if err == nil {
			s.logger.Debug("bucket loaded", "bucket", b, "sites", n, "took", time.Since(start).Round(time.Millisecond))
			return
		}
		if ctx.Err() != nil || !s.stillOwned(b, epoch) {
			return
		}
		s.logger.Warn("bucket load failed; retrying", "bucket", b, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// loadOnce reads the last configuration of every site of bucket b, until the
// consumer reports nothing pending. It returns how many it read.
func (s *Scheduler) loadOnce(ctx context.Context, b int, epoch uint64, lookback time.Duration) (int, error) {
	filter := events.SitesBucketFilter(b)
	oc, err := s.js.OrderedConsumer(ctx, events.StreamSites, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{filter},
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return 0, fmt.Errorf("load bucket %d: create consumer on %s: %w", b, filter, err)
	}
	defer func() {
		// Best effort: the server also removes it once inactive.
		if info := oc.CachedInfo(); info != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = s.js.DeleteConsumer(dctx, events.StreamSites, info.Name)
			cancel()
		}
	}()
	info := oc.CachedInfo()
	if info == nil || info.NumPending == 0 {
		return 0, nil
	}
	it, err := oc.Messages()
	if err != nil {
		return 0, fmt.Errorf("load bucket %d: read %s: %w", b, filter, err)
	}
	defer it.Stop()
	n := 0
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return n, fmt.Errorf("load bucket %d: read %s after %d sites: %w", b, filter, n, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return n, fmt.Errorf("load bucket %d: message metadata: %w", b, err)
		}
		n++
		s.applyMsg(msg, md.Sequence.Stream, epoch, lookback)
		if md.NumPending == 0 {
			return n, nil
		}
		if n%256 == 0 && !s.stillOwned(b, epoch) {
			return n, nil // lost meanwhile: nothing more to do
		}
	}
}

// applyMsg decodes a SITES message and applies it. epoch is non-zero for a
// bucket load; lookback is how far before now a loaded site's first slot may
// lie.
func (s *Scheduler) applyMsg(msg jetstream.Msg, seq uint64, epoch uint64, lookback time.Duration) {
	subject := msg.Subject()
	id, b, ok := events.ParseSiteSubject(subject)
	if !ok {
		s.logger.Warn("site change on an unexpected subject; ignored", "subject", subject, "seq", seq)
		return
	}
	// Cheap filter first: most live changes belong to other instances.
	s.mu.Lock()
	owned := s.st.owned[b]
	s.mu.Unlock()
	if !owned {
		return
	}
	var sc events.SiteChange
	if _, err := events.Decode(msg.Headers(), msg.Data(), &sc); err != nil {
		s.logger.Warn("undecodable site change; ignored", "subject", subject, "seq", seq, "site", id, "bucket", b, "err", err)
		return
	}
	if sc.Site.ID != id {
		s.logger.Warn("site change whose site ID does not match its subject; ignored", "subject", subject, "seq", seq, "site", sc.Site.ID, "bucket", b)
		return
	}
	now := s.o.now()
	nowMs := now.UnixMilli()
	u := siteUpdate{
		id:     id,
		seq:    seq,
		stop:   sc.Change == events.ChangeDeleted || sc.Paused,
		site:   sc.Site,
		epoch:  epoch,
		fromMs: nowMs - lookback.Milliseconds(),
	}
	s.mu.Lock()
	s.st.applySite(u, nowMs)
	active := s.st.active
	s.mu.Unlock()
	s.m.targets.Set(float64(active))
	if epoch == 0 {
		s.logger.Debug("site change applied", "site", id, "bucket", b, "seq", seq, "change", sc.Change, "paused", sc.Paused)
	}
}
