package checker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/services/internal/natstest"
)

// publishDurable against a real server: a message stored once is
// acknowledged, so is its duplicate, and what the server refuses comes out as
// the error jetstream.PublishMsg gives.
func TestPublishDurable(t *testing.T) {
	srv := natstest.Start(t, false)
	ctx := context.Background()
	for _, cfg := range []jetstream.StreamConfig{
		{Name: "ONE", Subjects: []string{"one.>"}},
		{Name: "TWO", Subjects: []string{"two.>"}},
	} {
		if _, err := srv.JS.CreateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	msg := func(subject, id string) *nats.Msg {
		m := nats.NewMsg(subject)
		m.Header.Set(nats.MsgIdHdr, id)
		m.Data = []byte(`{}`)
		return m
	}
	if err := publishDurable(srv.NC, msg("one.a", "a"), "ONE", 5*time.Second); err != nil {
		t.Fatalf("first publish: %v", err)
	}
	if err := publishDurable(srv.NC, msg("one.a", "a"), "ONE", 5*time.Second); err != nil {
		t.Fatalf("duplicate publish: %v", err)
	}
	st, err := srv.JS.Stream(ctx, "ONE")
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 1 {
		t.Fatalf("ONE holds %d messages, want 1", n)
	}

	// A subject of another stream: the server refuses it, as it refuses
	// jetstream.PublishMsg with WithExpectStream.
	err = publishDurable(srv.NC, msg("two.a", "b"), "ONE", 5*time.Second)
	_, want := srv.JS.PublishMsg(ctx, msg("two.a", "c"), jetstream.WithExpectStream("ONE"))
	var apiErr, wantAPI *jetstream.APIError
	if !errors.As(err, &apiErr) || !errors.As(want, &wantAPI) || apiErr.ErrorCode != wantAPI.ErrorCode {
		t.Fatalf("publish to another stream's subject: %v, want the API error of jetstream.PublishMsg (%v)", err, want)
	}
	if err := publishDurable(srv.NC, msg("nowhere.a", "d"), "ONE", 5*time.Second); !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Fatalf("publish to no stream: %v, want %v", err, jetstream.ErrNoStreamResponse)
	}
}

func TestCheckPubAck(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		ok         bool
	}{
		{"stored", `{"stream":"ONE", "seq":7}`, true},
		{"with domain", `{"stream":"ONE","domain":"hub","seq":7}`, true},
		{"duplicate", `{"stream":"ONE", "seq":7,"duplicate": true}`, true},
		{"fields in another order", `{"seq":7,"stream":"ONE"}`, true},
		{"another stream", `{"stream":"ONEMORE", "seq":7}`, false},
		{"error", `{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}`, false},
		{"error after the stream", `{"stream":"ONE","error":{"code":400,"err_code":10060,"description":"expected stream does not match"}}`, false},
		{"not JSON", `+OK`, false},
		{"empty", ``, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkPubAck([]byte(tc.data), "ONE")
			if (err == nil) != tc.ok {
				t.Fatalf("checkPubAck(%s) = %v, want ok %v", tc.data, err, tc.ok)
			}
		})
	}
}
