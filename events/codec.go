package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"
)

// This file is the one codec between Vigil's message types and NATS messages.
// Every message is a CloudEvent 1.0 in binary content mode: the attributes are
// NATS headers named ce-<attribute> (datacontenttype is content-type), with
// values percent-encoded as the CloudEvents protocol bindings require, and the
// payload is the JSON data. Messages in structured mode
// (content-type: application/cloudevents+json) are read too.
//
// Marshal and Decode write and read Vigil's own messages without the SDK's
// binding machinery (fastcodec.go), and hand everything else to the SDK paths
// here (marshalSDK, decodeSDK); NewEvent, WriteEvent and ReadEvent are the SDK
// API for other CloudEvents clients.

// Header names outside the ce- set.
const (
	headerContentType = "content-type"
	headerPrefix      = "ce-"
	// HeaderMsgID is JetStream's deduplication header; Vigil sets it to the
	// CloudEvent ID.
	HeaderMsgID = nats.MsgIdHdr
)

// specs maps CloudEvents attribute names to NATS header names. It is built once
// and only read afterwards.
var specs = spec.WithPrefixMatchExact(
	func(name string) string {
		if name == "datacontenttype" {
			return headerContentType
		}
		return headerPrefix + name
	},
	headerPrefix,
)

// Envelope holds the CloudEvents attributes of a message and the NATS subject it
// is published on.
type Envelope struct {
	ID     string
	Type   string
	Source string
	// Subject is the CloudEvents subject: the site ID (or the region, for
	// region events).
	Subject     string
	Time        time.Time
	NATSSubject string
}

// Message is implemented by every Vigil message type. The message itself is
// the CloudEvent's data.
type Message interface {
	Envelope() Envelope
}

// NewEvent builds the CloudEvent for m.
func NewEvent(m Message) (*event.Event, error) {
	env := m.Envelope()
	if env.ID == "" || env.Type == "" || env.NATSSubject == "" {
		return nil, fmt.Errorf("build cloudevent for %T: id, type and subject are required (id=%q type=%q subject=%q)", m, env.ID, env.Type, env.NATSSubject)
	}
	data, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s data: %w", env.Type, err)
	}
	e := event.New()
	e.SetID(env.ID)
	e.SetType(env.Type)
	e.SetSource(env.Source)
	e.SetSubject(env.Subject)
	e.SetTime(env.Time)
	e.SetDataContentType(event.ApplicationJSON)
	e.DataEncoded = data
	if err := e.Validate(); err != nil {
		return nil, fmt.Errorf("build cloudevent %s %s: %w", env.Type, env.ID, err)
	}
	return &e, nil
}

// Marshal returns the NATS message for m: its CloudEvent in binary content mode
// on m's subject, with Nats-Msg-Id set to the event ID so JetStream drops a
// re-published copy.
//
// Vigil's own envelopes are written directly (marshalFast, fastcodec.go), byte
// for byte as the SDK would write them; an envelope the SDK would canonicalise
// or refuse goes through the SDK (marshalSDK), so the two never disagree.
func Marshal(m Message) (*nats.Msg, error) {
	env := m.Envelope()
	if plainEnvelope(&env) {
		return marshalFast(m, &env)
	}
	return marshalSDK(m)
}

// marshalSDK is Marshal through the CloudEvents SDK: NewEvent, then WriteEvent.
// It is the reference the fast path is tested against.
func marshalSDK(m Message) (*nats.Msg, error) {
	e, err := NewEvent(m)
	if err != nil {
		return nil, err
	}
	msg := &nats.Msg{Subject: m.Envelope().NATSSubject, Header: make(nats.Header, 9)}
	if err := WriteEvent(context.Background(), e, msg); err != nil {
		return nil, err
	}
	return msg, nil
}

// WriteEvent writes e into msg in binary content mode, replacing msg.Data and
// setting Nats-Msg-Id to the event ID.
func WriteEvent(ctx context.Context, e *event.Event, msg *nats.Msg) error {
	if msg.Header == nil {
		msg.Header = make(nats.Header, 9)
	}
	w := &headerWriter{msg: msg}
	if _, err := binding.Write(binding.WithForceBinary(ctx), binding.ToMessage(e), nil, w); err != nil {
		return fmt.Errorf("write cloudevent %s: %w", e.ID(), err)
	}
	msg.Header[HeaderMsgID] = []string{e.ID()}
	return nil
}

// ReadEvent decodes the CloudEvent carried by a NATS message's headers and
// payload, in binary or structured content mode.
func ReadEvent(h nats.Header, data []byte) (*event.Event, error) {
	e, err := binding.ToEvent(context.Background(), &natsMessage{header: h, data: data})
	if err != nil {
		return nil, fmt.Errorf("read cloudevent: %w", err)
	}
	return e, nil
}

// ErrTypeMismatch is returned by Decode when a message's data does not belong
// to its CloudEvents type or ID.
var ErrTypeMismatch = errors.New("cloudevent attributes do not match its data")

// Decode reads the CloudEvent in a NATS message into v, and checks that the
// event's type and ID agree with the decoded data, so a message whose headers
// and payload disagree is refused (and can be quarantined) rather than acted on.
//
// A binary-mode message with Vigil's plain header set is read directly
// (readPlainBinary, fastcodec.go), into the same event and the same v the SDK
// would give; anything else (structured mode, extensions, another content
// type, missing attributes, malformed values) goes through the SDK
// (decodeSDK), so Decode accepts and refuses exactly what it did before. The
// returned event's data may share data's memory.
func Decode(h nats.Header, data []byte, v Message) (*event.Event, error) {
	if p, ok := readPlainBinary(h); ok {
		return p.decode(data, v)
	}
	return decodeSDK(h, data, v)
}

// decodeSDK is Decode through the CloudEvents SDK: ReadEvent, then the data.
// It is the reference the fast path is tested against.
func decodeSDK(h nats.Header, data []byte, v Message) (*event.Event, error) {
	e, err := ReadEvent(h, data)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(e.Data(), v); err != nil {
		return e, fmt.Errorf("decode %s %s data: %w", e.Type(), e.ID(), err)
	}
	env := v.Envelope()
	if env.Type != e.Type() || env.ID != e.ID() {
		return e, fmt.Errorf("%w: event %s of type %s carries data for %s %s", ErrTypeMismatch, e.ID(), e.Type(), env.Type, env.ID)
	}
	return e, nil
}

// headerWriter is a binding.BinaryWriter onto a NATS message.
type headerWriter struct {
	msg *nats.Msg
}

func (w *headerWriter) Start(context.Context) error { return nil }
func (w *headerWriter) End(context.Context) error   { return nil }

func (w *headerWriter) SetData(r io.Reader) error {
	if b, ok := r.(*bytes.Reader); ok {
		data := make([]byte, b.Len())
		_, err := b.Read(data)
		w.msg.Data = data
		return err
	}
	data, err := io.ReadAll(r)
	w.msg.Data = data
	return err
}

func (w *headerWriter) SetAttribute(attr spec.Attribute, value any) error {
	// The SDK passes attributes of its unprefixed spec, so map the name here.
	if attr.Kind() == spec.DataContentType {
		return w.set(headerContentType, value)
	}
	return w.set(headerPrefix+attr.Name(), value)
}

func (w *headerWriter) SetExtension(name string, value any) error {
	return w.set(headerPrefix+name, value)
}

func (w *headerWriter) set(key string, value any) error {
	if value == nil {
		delete(w.msg.Header, key)
		return nil
	}
	s, err := types.Format(value)
	if err != nil {
		return fmt.Errorf("format header %s: %w", key, err)
	}
	w.msg.Header[key] = []string{percentEncode(s)}
	return nil
}

// natsMessage is a binding.MessageReader over a NATS message's headers and data.
type natsMessage struct {
	header nats.Header
	data   []byte
}

// get returns the first value of a header, matching the name without regard to
// case: NATS keeps header names as sent, and other clients may capitalise them.
func (m *natsMessage) get(name string) (string, bool) {
	if v, ok := m.header[name]; ok && len(v) > 0 {
		return v[0], true
	}
	for k, v := range m.header {
		if len(v) > 0 && strings.EqualFold(k, name) {
			return v[0], true
		}
	}
	return "", false
}

func (m *natsMessage) ReadEncoding() binding.Encoding {
	if _, ok := m.get(specs.PrefixedSpecVersionName()); ok {
		return binding.EncodingBinary
	}
	if ct, ok := m.get(headerContentType); ok && format.IsFormat(ct) {
		return binding.EncodingStructured
	}
	return binding.EncodingUnknown
}

func (m *natsMessage) ReadStructured(ctx context.Context, w binding.StructuredWriter) error {
	ct, _ := m.get(headerContentType)
	f := format.Lookup(ct)
	if f == nil {
		return binding.ErrNotStructured
	}
	return w.SetStructuredEvent(ctx, f, bytes.NewReader(m.data))
}

func (m *natsMessage) ReadBinary(_ context.Context, w binding.BinaryWriter) error {
	sv, ok := m.get(specs.PrefixedSpecVersionName())
	if !ok {
		return binding.ErrNotBinary
	}
	version := specs.Version(sv)
	if version == nil {
		return fmt.Errorf("unsupported cloudevents specversion %q", sv)
	}
	for k, vs := range m.header {
		if len(vs) == 0 {
			continue
		}
		name := strings.ToLower(k)
		value, err := percentDecode(vs[0])
		if err != nil {
			return fmt.Errorf("header %s: %w", k, err)
		}
		if attr := version.Attribute(name); attr != nil {
			if err := w.SetAttribute(attr, value); err != nil {
				return fmt.Errorf("header %s: %w", k, err)
			}
		} else if strings.HasPrefix(name, headerPrefix) {
			if err := w.SetExtension(name[len(headerPrefix):], value); err != nil {
				return fmt.Errorf("header %s: %w", k, err)
			}
		}
	}
	if len(m.data) > 0 {
		return w.SetData(bytes.NewReader(m.data))
	}
	return nil
}

func (m *natsMessage) GetAttribute(k spec.Kind) (spec.Attribute, any) {
	sv, _ := m.get(specs.PrefixedSpecVersionName())
	version := specs.Version(sv)
	if version == nil {
		return nil, nil
	}
	attr := version.AttributeFromKind(k)
	if attr == nil {
		return nil, nil
	}
	if v, ok := m.get(attr.PrefixedName()); ok {
		if d, err := percentDecode(v); err == nil {
			return attr, d
		}
	}
	return attr, nil
}

func (m *natsMessage) GetExtension(name string) any {
	if v, ok := m.get(headerPrefix + name); ok {
		if d, err := percentDecode(v); err == nil {
			return d
		}
	}
	return nil
}

func (m *natsMessage) Finish(error) error { return nil }

// percentEncode encodes a header value as the CloudEvents bindings require:
// space, '"', '%' and every byte outside printable ASCII become %XX of their
// UTF-8 bytes.
func percentEncode(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if mustEncode(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if mustEncode(c) {
			b = append(b, '%', hex[c>>4], hex[c&0xF])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

func mustEncode(c byte) bool {
	return c <= ' ' || c >= 0x7F || c == '"' || c == '%'
}

// percentDecode reverses percentEncode; it accepts any %XX sequence.
func percentDecode(s string) (string, error) {
	if strings.IndexByte(s, '%') < 0 {
		return s, nil
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b = append(b, s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("truncated percent-encoding in %q", s)
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", fmt.Errorf("bad percent-encoding %q in %q", s[i:i+3], s)
		}
		b = append(b, hi<<4|lo)
		i += 2
	}
	return string(b), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
