package projector

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/vigil-dev/vigil/events"
)

// ErrUnknownType is returned by Decode for a CloudEvents type the projections
// do not know (a newer schema version, or a stray publisher).
var ErrUnknownType = errors.New("unknown event type")

// Decode reads one EVENTS message. An error means the message is poison: it
// does not decode, its attributes and data disagree, or it lacks what every
// projection needs.
func Decode(seq uint64, subject string, h nats.Header, data []byte) (*Event, error) {
	ce, err := events.ReadEvent(h, data)
	if err != nil {
		return nil, err
	}
	ev := &Event{Seq: seq, Subject: subject, CE: ce}
	switch ce.Type() {
	case events.TypeSeemsDown, events.TypeDown, events.TypeRecovered,
		events.TypeTLSExpiring, events.TypeTLSExpired, events.TypeTLSRenewed:
		var se events.SiteEvent
		if err := json.Unmarshal(ce.Data(), &se); err != nil {
			return nil, fmt.Errorf("decode %s data: %w", ce.Type(), err)
		}
		if err := checkEnvelope(&se, ce.Type(), ce.ID()); err != nil {
			return nil, err
		}
		if err := events.ValidateSiteID(se.SiteID); err != nil {
			return nil, err
		}
		if se.At.IsZero() {
			return nil, errors.New("site event without a time")
		}
		switch se.Kind {
		case events.KindSeemsDown, events.KindDown, events.KindRecovered:
			if se.IncidentID == "" {
				return nil, fmt.Errorf("%s event without an incident id", se.Kind)
			}
		}
		ev.Site = &se
	case events.TypeRegionImpaired, events.TypeRegionRecovered:
		var re events.RegionEvent
		if err := json.Unmarshal(ce.Data(), &re); err != nil {
			return nil, fmt.Errorf("decode %s data: %w", ce.Type(), err)
		}
		if err := checkEnvelope(&re, ce.Type(), ce.ID()); err != nil {
			return nil, err
		}
		if re.Region == "" || re.At.IsZero() {
			return nil, errors.New("region event without a region or a time")
		}
		ev.Region = &re
	default:
		return nil, fmt.Errorf("%w %q", ErrUnknownType, ce.Type())
	}
	return ev, nil
}

func checkEnvelope(m events.Message, typ, id string) error {
	env := m.Envelope()
	if env.Type != typ || env.ID != id {
		return fmt.Errorf("%w: event %s of type %s carries data for %s %s", events.ErrTypeMismatch, id, typ, env.Type, env.ID)
	}
	return nil
}
