package events

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
)

func sampleObservation() *Observation {
	t := time.Date(2026, 11, 23, 4, 15, 0, 123456789, time.UTC)
	return &Observation{
		ID: DeriveID(t, "test"), SiteID: "shop-eu", Bucket: Bucket("shop-eu"), Region: "eu",
		CheckerID: "checker-1", CommandID: CommandID("shop-eu", "eu", PurposeScheduled, t),
		Purpose: PurposeScheduled, DueAt: t.Add(-time.Second), StartedAt: t,
		Class: ClassHTTPStatus, StatusCode: 503, Timings: Timings{DNSMs: 1.5, TotalMs: 20},
		FinalURL: "https://shop.example.com/health", Error: "status 503",
	}
}

func TestMarshalDecodeRoundTrip(t *testing.T) {
	obs := sampleObservation()
	msg, err := Marshal(obs)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Subject != ObservationSubject("shop-eu") {
		t.Errorf("subject = %q", msg.Subject)
	}
	if got := msg.Header.Get(HeaderMsgID); got != obs.ID {
		t.Errorf("Nats-Msg-Id = %q, want %q", got, obs.ID)
	}
	for h, want := range map[string]string{
		"ce-specversion": "1.0", "ce-id": obs.ID, "ce-type": TypeObservation,
		"ce-source": "/vigil/checker/eu", "ce-subject": "shop-eu",
		"ce-time": "2026-11-23T04:15:00.123456789Z", "content-type": "application/json",
	} {
		if got := msg.Header.Get(h); got != want {
			t.Errorf("header %s = %q, want %q", h, got, want)
		}
	}
	var back Observation
	e, err := Decode(msg.Header, msg.Data, &back)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, obs) {
		t.Errorf("decoded %+v\nwant    %+v", back, *obs)
	}
	if e.Type() != TypeObservation || e.Subject() != "shop-eu" || !e.Time().Equal(obs.StartedAt) {
		t.Errorf("event attributes = %s %s %s", e.Type(), e.Subject(), e.Time())
	}
}

// A CloudEvent written by Vigil must decode, through the SDK's own binding
// machinery, into the same event, including attribute values that need
// percent-encoding (non-ASCII, space, quote, percent).
func TestCloudEventRoundTripWithSDK(t *testing.T) {
	in := event.New()
	in.SetID("01JD0000000000000000000000")
	in.SetType(TypeSeemsDown)
	in.SetSource("/vigil/statemachine")
	in.SetSubject(`Zürich café "50%" ☕`)
	in.SetTime(time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC))
	in.SetExtension("vigilnote", "naïve text")
	if err := in.SetData(event.ApplicationJSON, map[string]string{"k": "é"}); err != nil {
		t.Fatal(err)
	}
	msg := &nats.Msg{Subject: "x"}
	if err := WriteEvent(context.Background(), &in, msg); err != nil {
		t.Fatal(err)
	}
	raw := msg.Header.Get("ce-subject")
	if raw != "Z%C3%BCrich%20caf%C3%A9%20%2250%25%22%20%E2%98%95" {
		t.Errorf("ce-subject on the wire = %q: not percent-encoded as the binding asks", raw)
	}
	for k, vs := range msg.Header {
		for _, v := range vs {
			for i := 0; i < len(v); i++ {
				if v[i] < 0x21 || v[i] > 0x7E {
					t.Errorf("header %s has a raw byte %#x", k, v[i])
				}
			}
		}
	}
	out, err := binding.ToEvent(context.Background(), &natsMessage{header: msg.Header, data: msg.Data})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(eventJSON(t, &in), eventJSON(t, out)) {
		t.Errorf("round trip changed the event:\n in %s\nout %s", eventJSON(t, &in), eventJSON(t, out))
	}
}

func TestReadEventStructuredMode(t *testing.T) {
	in := event.New()
	in.SetID("abc")
	in.SetType(TypeDown)
	in.SetSource("/x")
	_ = in.SetData(event.ApplicationJSON, map[string]int{"n": 1})
	body, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	h := nats.Header{"Content-Type": []string{"application/cloudevents+json"}}
	out, err := ReadEvent(h, body)
	if err != nil {
		t.Fatal(err)
	}
	if out.ID() != "abc" || out.Type() != TypeDown || string(out.Data()) != `{"n":1}` {
		t.Errorf("structured event read as %s", eventJSON(t, out))
	}
}

func TestDecodeRefusesMismatchAndGarbage(t *testing.T) {
	obs := sampleObservation()
	msg, err := Marshal(obs)
	if err != nil {
		t.Fatal(err)
	}
	msg.Header.Set("ce-type", TypeDown)
	var back Observation
	if _, err := Decode(msg.Header, msg.Data, &back); !errors.Is(err, ErrTypeMismatch) {
		t.Errorf("type mismatch: err = %v, want ErrTypeMismatch", err)
	}
	if _, err := Decode(nats.Header{}, []byte("not json"), &back); err == nil {
		t.Error("a message without ce- headers decoded")
	}
	msg, _ = Marshal(obs)
	msg.Data = []byte(`{"id":`)
	if _, err := Decode(msg.Header, msg.Data, &back); err == nil {
		t.Error("truncated data decoded")
	}
	msg, _ = Marshal(obs)
	msg.Header.Set("ce-subject", "%G1")
	if _, err := ReadEvent(msg.Header, msg.Data); err == nil || !strings.Contains(err.Error(), "percent") {
		t.Errorf("bad percent-encoding: err = %v", err)
	}
}

func TestPercentEncoding(t *testing.T) {
	for _, s := range []string{"", "plain", "a b", `"q"`, "100%", "ü", "\x00\x7f", "日本語"} {
		enc := percentEncode(s)
		if strings.ContainsAny(enc, " \"") {
			t.Errorf("encode(%q) = %q kept a reserved character", s, enc)
		}
		dec, err := percentDecode(enc)
		if err != nil || dec != s {
			t.Errorf("decode(encode(%q)) = %q, %v", s, dec, err)
		}
	}
	if _, err := percentDecode("abc%4"); err == nil {
		t.Error("truncated escape accepted")
	}
}

func TestEveryMessageTypeEncodes(t *testing.T) {
	now := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	msgs := []Message{
		&SiteChange{ID: DeriveID(now, "c"), Change: ChangeCreated, At: now, Site: Site{ID: "s1", URL: "https://a.example"}},
		&CheckCommand{ID: CommandID("s1", "local", PurposeScheduled, now), SiteID: "s1", Region: "local", Purpose: PurposeScheduled, DueAt: now, Deadline: now.Add(time.Minute)},
		sampleObservation(),
		&SiteEvent{ID: DeriveID(now, "e"), Kind: KindSeemsDown, SiteID: "s1", At: now},
		&RegionEvent{ID: DeriveID(now, "r"), Kind: KindRegionImpaired, Region: "eu", At: now},
	}
	for _, m := range msgs {
		msg, err := Marshal(m)
		if err != nil {
			t.Errorf("%T: %v", m, err)
			continue
		}
		e, err := ReadEvent(msg.Header, msg.Data)
		if err != nil {
			t.Errorf("%T: %v", m, err)
			continue
		}
		if e.Type() != m.Envelope().Type || !strings.HasPrefix(e.Type(), "dev.vigil.") {
			t.Errorf("%T: type %q", m, e.Type())
		}
		if !strings.HasPrefix(msg.Subject, Root+".") {
			t.Errorf("%T: subject %q outside the vigil root", m, msg.Subject)
		}
	}
	if _, err := Marshal(&SiteEvent{ID: "x", Kind: "bogus", SiteID: "s1", At: now}); err == nil {
		t.Error("an event of unknown kind was marshalled")
	}
}

func eventJSON(t *testing.T, e *event.Event) string {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
