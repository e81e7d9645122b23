package events

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"
)

// This file is the fast path of the codec (BENCHMARKS.md finding 5): Vigil's
// own binary-mode messages are written and read without the SDK's binding
// machinery, and give the same bytes, the same event and the same errors as
// marshalSDK and decodeSDK (codec.go). Each side takes the fast path only when
// it can show the SDK would do nothing more than the fast path does; anything
// else is left to the SDK. The differential tests and FuzzDecode
// (fastcodec_test.go) hold the two paths together.

// Marshal.

// plainEnvelope reports whether the SDK would write env's attributes as they
// are: the SDK trims the ID, type and subject, parses and re-prints the source
// as a URI reference, and refuses an empty ID, type or source, so an envelope
// where any of that would change or refuse something goes through the SDK.
func plainEnvelope(env *Envelope) bool {
	return env.ID != "" && env.Type != "" && env.NATSSubject != "" &&
		isTrimmed(env.ID) && isTrimmed(env.Type) && isTrimmed(env.Subject) &&
		plainSource(env.Source)
}

func isTrimmed(s string) bool { return strings.TrimSpace(s) == s }

// plainSource reports whether s is an absolute path of unreserved characters,
// which url.Parse accepts and URL.String prints back unchanged (Vigil's
// sources: /vigil/<component>[/<region>]).
func plainSource(s string) bool {
	if len(s) == 0 || s[0] != '/' || strings.HasPrefix(s, "//") {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '/') {
			return false
		}
	}
	return true
}

// fastMsg holds a message and its header values, so that they are allocated
// together.
type fastMsg struct {
	msg  nats.Msg
	vals [8]string
}

// put sets header k to the single value v, backed by b.vals[i].
func (b *fastMsg) put(i int, k, v string) {
	b.vals[i] = v
	b.msg.Header[k] = b.vals[i : i+1 : i+1]
}

// marshalFast writes m, whose envelope env passed plainEnvelope, as the SDK's
// binary-mode writer does: the attributes that are set, each formatted as
// types.Format does and percent-encoded, content-type, Nats-Msg-Id (not
// encoded), and the JSON data.
func marshalFast(m Message, env *Envelope) (*nats.Msg, error) {
	data, err := marshalData(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s data: %w", env.Type, err)
	}
	b := &fastMsg{msg: nats.Msg{Subject: env.NATSSubject, Header: make(nats.Header, 9), Data: data}}
	b.put(0, headerPrefix+"specversion", event.CloudEventsVersionV1)
	b.put(1, headerPrefix+"id", percentEncode(env.ID))
	b.put(2, headerPrefix+"source", percentEncode(env.Source))
	b.put(3, headerPrefix+"type", percentEncode(env.Type))
	b.put(4, headerContentType, event.ApplicationJSON)
	i := 5
	if env.Subject != "" {
		b.put(i, headerPrefix+"subject", percentEncode(env.Subject))
		i++
	}
	if !env.Time.IsZero() {
		b.put(i, headerPrefix+"time", percentEncode(formatTime(env.Time)))
		i++
	}
	b.put(i, HeaderMsgID, env.ID)
	return &b.msg, nil
}

// marshalData returns json.Marshal(m): from the fast JSON path
// (marshalJSONFast, fastjson.go) for the messages it writes, byte for byte as
// json.Marshal does, and from json.Marshal itself for the rest and for the
// values json.Marshal refuses, so that its error comes out.
func marshalData(m Message) ([]byte, error) {
	if data, ok := marshalJSONFast(m); ok {
		return data, nil
	}
	return json.Marshal(m)
}

// formatTime formats a time attribute as the SDK does (types.FormatTime):
// RFC 3339 with nanoseconds, trailing zeros dropped, in UTC.
func formatTime(t time.Time) string {
	return t.UTC().Format(time.RFC3339Nano)
}

// Decode.

// The CloudEvents headers the fast path reads, as indexes into
// plainHeaders.raw.
const (
	slotSpecVersion = iota
	slotID
	slotSource
	slotType
	slotSubject
	slotTime
	slotContentType
	nSlots

	// slotOther is a header outside the CloudEvents set: the SDK ignores it
	// once its value percent-decodes.
	slotOther
	// slotUnusual is a header the fast path leaves to the SDK: an extension,
	// dataschema, or a name with non-ASCII bytes (whose case folding
	// strings.ToLower and strings.EqualFold do not agree on).
	slotUnusual
)

// ceNames are the attribute names after "ce-", by slot.
var ceNames = [slotContentType]string{"specversion", "id", "source", "type", "subject", "time"}

const requiredSlots = 1<<slotSpecVersion | 1<<slotID | 1<<slotSource | 1<<slotType

// headerSlot classifies a header name as the SDK reader does (natsMessage:
// lower-cased name, exact match against the ce- attribute names and
// content-type, any other ce- name an extension).
func headerSlot(k string) int {
	switch k { // Vigil's own spelling, without folding
	case "ce-specversion":
		return slotSpecVersion
	case "ce-id":
		return slotID
	case "ce-source":
		return slotSource
	case "ce-type":
		return slotType
	case "ce-subject":
		return slotSubject
	case "ce-time":
		return slotTime
	case headerContentType:
		return slotContentType
	case HeaderMsgID:
		return slotOther
	}
	for i := 0; i < len(k); i++ {
		if k[i] >= utf8.RuneSelf {
			return slotUnusual
		}
	}
	// ASCII only from here, where EqualFold is lower-casing both sides.
	if len(k) >= len(headerPrefix) && strings.EqualFold(k[:len(headerPrefix)], headerPrefix) {
		name := k[len(headerPrefix):]
		for slot, n := range ceNames {
			if strings.EqualFold(name, n) {
				return slot
			}
		}
		return slotUnusual
	}
	if strings.EqualFold(k, headerContentType) {
		return slotContentType
	}
	return slotOther
}

// plainEvent is the event Decode returns from the fast path, allocated in one
// piece with the attribute values it points to.
type plainEvent struct {
	e           event.Event
	ctx         event.EventContextV1
	subject     string
	contentType string
	time        types.Timestamp
}

// readPlainBinary reads the attributes of a binary-mode message whose headers
// are Vigil's plain set: ce-specversion 1.0, ce-id, ce-source and ce-type,
// optionally ce-subject, ce-time and content-type application/json, each once,
// plus any non-CloudEvents headers. It builds the event the SDK would build,
// and reports false for anything else, or any value the SDK would refuse, for
// the caller to use the SDK.
//
// The SDK's reader (ToEvent over natsMessage) does not validate the event, so
// a binary message without ce-source or ce-type is not refused by it; such a
// message is left to the SDK rather than refused here, so that Decode's
// verdicts do not change.
func readPlainBinary(h nats.Header) (*plainEvent, bool) {
	var raw [nSlots]string
	var seen uint
	for k, vs := range h {
		if len(vs) == 0 {
			continue // the SDK reader skips a header without values
		}
		slot := headerSlot(k)
		switch slot {
		case slotOther:
			// The SDK percent-decodes every header and fails on a bad one.
			if !validPercent(vs[0]) {
				return nil, false
			}
			continue
		case slotUnusual:
			return nil, false
		}
		if seen&(1<<slot) != 0 {
			// Two spellings of one header: which one the SDK reads depends
			// on map order.
			return nil, false
		}
		seen |= 1 << slot
		raw[slot] = vs[0]
	}
	if seen&requiredSlots != requiredSlots || raw[slotSpecVersion] != event.CloudEventsVersionV1 {
		return nil, false
	}
	p := &plainEvent{}
	if seen&(1<<slotContentType) != 0 {
		// Only JSON: a structured format (application/cloudevents+json)
		// makes the SDK read the payload as the whole event.
		if raw[slotContentType] != event.ApplicationJSON || format.Lookup(raw[slotContentType]) != nil {
			return nil, false
		}
		p.contentType = raw[slotContentType]
		p.ctx.DataContentType = &p.contentType
	}
	var vals [nSlots]string
	for slot := range nSlots {
		if seen&(1<<slot) == 0 {
			continue
		}
		v, err := percentDecode(raw[slot])
		if err != nil {
			return nil, false
		}
		vals[slot] = v
	}
	// As EventContextV1's setters: ID, type and subject trimmed, an empty ID
	// refused, an empty subject absent.
	if p.ctx.ID = strings.TrimSpace(vals[slotID]); p.ctx.ID == "" {
		return nil, false
	}
	p.ctx.Type = strings.TrimSpace(vals[slotType])
	if src := vals[slotSource]; plainSource(src) {
		// What url.Parse makes of such a path, without its allocations:
		// every observation's reader decodes one.
		p.ctx.Source.URL = url.URL{Path: src}
	} else {
		u, err := url.Parse(src)
		if err != nil {
			return nil, false
		}
		p.ctx.Source.URL = *u
	}
	if p.subject = strings.TrimSpace(vals[slotSubject]); p.subject != "" {
		p.ctx.Subject = &p.subject
	}
	if seen&(1<<slotTime) != 0 {
		t, err := time.Parse(time.RFC3339Nano, vals[slotTime])
		if err != nil {
			return nil, false
		}
		if !t.IsZero() {
			p.time.Time = t
			p.ctx.Time = &p.time
		}
	}
	p.e.Context = &p.ctx
	return p, true
}

// decode finishes Decode on the fast path: the data straight into v, then the
// type and ID check, with decodeSDK's errors. The data is read by the fast
// JSON path (decodeFast, fastjson.go) when it can give exactly what
// json.Unmarshal gives, and by json.Unmarshal otherwise.
func (p *plainEvent) decode(data []byte, v Message) (*event.Event, error) {
	if len(data) > 0 {
		p.e.DataEncoded = data[:len(data):len(data)]
	}
	if !decodeFast(data, v) {
		if err := json.Unmarshal(data, v); err != nil {
			return &p.e, fmt.Errorf("decode %s %s data: %w", p.ctx.Type, p.ctx.ID, err)
		}
	}
	env := v.Envelope()
	if env.Type != p.ctx.Type || env.ID != p.ctx.ID {
		return &p.e, fmt.Errorf("%w: event %s of type %s carries data for %s %s", ErrTypeMismatch, p.ctx.ID, p.ctx.Type, env.Type, env.ID)
	}
	return &p.e, nil
}

// validPercent reports whether percentDecode accepts s.
func validPercent(s string) bool {
	for i := strings.IndexByte(s, '%'); i >= 0 && i < len(s); i++ {
		if s[i] != '%' {
			continue
		}
		if i+2 >= len(s) {
			return false
		}
		if _, ok := unhex(s[i+1]); !ok {
			return false
		}
		if _, ok := unhex(s[i+2]); !ok {
			return false
		}
		i += 2
	}
	return true
}
