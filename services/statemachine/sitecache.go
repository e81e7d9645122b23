package statemachine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/sites"
)

// siteConfig is a site's current configuration as the state machine uses it.
type siteConfig struct {
	site        events.Site
	maintenance sites.Windows
	paused      bool
	deleted     bool
	seq         uint64
}

// siteCache holds the current configuration of the sites the state machine
// has seen. A site is read from SITES on first use; after that a live consumer
// keeps it current, so a healthy observation costs no read.
type siteCache struct {
	stream   jetstream.Stream
	logger   *slog.Logger
	onChange func(siteConfig, events.SiteChange)

	mu    sync.Mutex
	sites map[string]*siteConfig
}

func newSiteCache(stream jetstream.Stream, logger *slog.Logger, onChange func(siteConfig, events.SiteChange)) *siteCache {
	return &siteCache{stream: stream, logger: logger, onChange: onChange, sites: map[string]*siteConfig{}}
}

// get returns the site's configuration; ok is false for a site that does not
// exist or was deleted.
func (c *siteCache) get(ctx context.Context, siteID string) (siteConfig, bool, error) {
	c.mu.Lock()
	sc, found := c.sites[siteID]
	c.mu.Unlock()
	if found {
		return *sc, !sc.deleted, nil
	}
	raw, err := c.stream.GetLastMsgForSubject(ctx, events.SiteSubject(siteID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return siteConfig{}, false, nil
	}
	if err != nil {
		return siteConfig{}, false, fmt.Errorf("read configuration of site %s: %w", siteID, err)
	}
	sc, _, err = c.store(raw.Header, raw.Data, raw.Sequence)
	if err != nil {
		return siteConfig{}, false, err
	}
	return *sc, !sc.deleted, nil
}

// store decodes a SITES message and keeps it unless a newer one is held.
func (c *siteCache) store(h map[string][]string, data []byte, seq uint64) (*siteConfig, *events.SiteChange, error) {
	var ch events.SiteChange
	if _, err := events.Decode(h, data, &ch); err != nil {
		return nil, nil, fmt.Errorf("decode site change at seq %d: %w", seq, err)
	}
	windows, err := sites.CompileWindows(ch.Site.Maintenance)
	if err != nil {
		// The registry validates windows before publishing; a bad one here
		// only loses the maintenance flag, never the site.
		c.logger.Warn("site has invalid maintenance windows", "site", ch.Site.ID, "err", err)
		windows = nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.sites[ch.Site.ID]; ok && cur.seq >= seq {
		return cur, nil, nil
	}
	sc := &siteConfig{site: ch.Site, maintenance: windows, paused: ch.Paused, deleted: ch.Change == events.ChangeDeleted, seq: seq}
	c.sites[ch.Site.ID] = sc
	return sc, &ch, nil
}

// follow keeps the cache current from the live SITES stream, starting after
// its current end, until ctx is done.
func (c *siteCache) follow(ctx context.Context, js jetstream.JetStream) (jetstream.ConsumeContext, error) {
	info, err := c.stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read %s info: %w", events.StreamSites, err)
	}
	oc, err := js.OrderedConsumer(ctx, events.StreamSites, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SitesAll},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    info.State.LastSeq + 1,
	})
	if err != nil {
		return nil, fmt.Errorf("follow %s: %w", events.StreamSites, err)
	}
	return oc.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			return
		}
		sc, ch, err := c.store(m.Headers(), m.Data(), md.Sequence.Stream)
		if err != nil {
			c.logger.Warn("unreadable site change", "subject", m.Subject(), "seq", md.Sequence.Stream, "err", err)
			return
		}
		if ch != nil && c.onChange != nil {
			c.onChange(*sc, *ch)
		}
	})
}
