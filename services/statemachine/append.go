package statemachine

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
)

// ErrConflict means another writer appended to a site's events since this
// instance last read them: its view of the site is stale. The bucket must be
// reloaded (usually it has lost its lease).
var ErrConflict = errors.New("statemachine: another writer changed the site's events")

// appender appends events with optimistic concurrency on a subject filter: a
// site's event subjects (vigil.events.<bucket>.<site>.*) or a region's, so two
// instances can never interleave one history, whatever the leases say.
//
// It remembers the last sequence it saw per filter; a filter it has not seen
// is read from the stream once.
type appender struct {
	js      jetstream.JetStream
	stream  jetstream.Stream
	lastSeq map[string]uint64
}

func newAppender(js jetstream.JetStream, stream jetstream.Stream) *appender {
	return &appender{js: js, stream: stream, lastSeq: map[string]uint64{}}
}

// forget drops what the appender remembers of a filter (the site's state
// became trivial: it may be long before it has another event).
func (a *appender) forget(filter string) { delete(a.lastSeq, filter) }

// appendSite appends a site event after the site's last event.
func (a *appender) appendSite(ctx context.Context, ev *events.SiteEvent) (uint64, error) {
	return a.append(ctx, ev, events.SiteEventsFilter(ev.SiteID))
}

// append writes ev after the site's last event. Appending an event that is
// already the site's last event is a success: that is a retry (after a crash
// or a lost ack) of a write that happened. The server answers such a retry
// with a duplicate ack when the Msg-Id check comes first (clustered JetStream)
// or with "wrong last sequence" (10071/10164) when the sequence check comes
// first (a standalone server); both are handled.
func (a *appender) append(ctx context.Context, m events.Message, filter string) (uint64, error) {
	env := m.Envelope()
	last, ok := a.lastSeq[filter]
	if !ok {
		seq, id, err := a.readLast(ctx, filter)
		if err != nil {
			return 0, err
		}
		if id == env.ID {
			a.lastSeq[filter] = seq
			return seq, nil
		}
		last = seq
	}
	msg, err := events.Marshal(m)
	if err != nil {
		return 0, err
	}
	ack, err := a.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequenceForSubject(last, filter))
	if err == nil {
		a.lastSeq[filter] = ack.Sequence
		return ack.Sequence, nil
	}
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || (apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence && apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return 0, fmt.Errorf("append %s %s on %s: %w", env.Type, env.ID, filter, err)
	}
	// Someone wrote after what we knew. If it is this very event, the write
	// already happened.
	seq, id, rerr := a.readLast(ctx, filter)
	if rerr != nil {
		return 0, rerr
	}
	a.lastSeq[filter] = seq
	if id == env.ID {
		return seq, nil
	}
	return 0, fmt.Errorf("%w: %s: last event is %s at seq %d, expected seq %d before %s", ErrConflict, filter, id, seq, last, env.ID)
}

// readLast returns the sequence and ID of the last event on filter; 0 and ""
// when the site has none.
func (a *appender) readLast(ctx context.Context, filter string) (uint64, string, error) {
	raw, err := a.stream.GetLastMsgForSubject(ctx, filter)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("read last event of %s: %w", filter, err)
	}
	return raw.Sequence, raw.Header.Get(events.HeaderMsgID), nil
}
