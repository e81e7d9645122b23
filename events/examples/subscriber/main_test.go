package main

import (
	"strings"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/events"
)

func TestDescribe(t *testing.T) {
	at := time.Date(2026, 11, 23, 4, 0, 0, 0, time.UTC)
	ev := &events.SiteEvent{ID: events.DeriveID(at, "x"), Kind: events.KindDown, SiteID: "shop", At: at,
		State: events.StateDown, Severity: events.SeverityDown, IncidentID: "01INC", FailureClass: events.ClassHTTPStatus, FailureStatus: 503,
		ObservationIDs: []string{"o"}}
	msg, err := events.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	got := describe(msg.Header, msg.Data)
	for _, want := range []string{"site=shop", "down", "severity=4", "incident=01INC", "failure=http_status/503", "2026-11-23T04:00:00Z"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
	if got := describe(nil, []byte("x")); !strings.HasPrefix(got, "undecodable") {
		t.Errorf("garbage described as %q", got)
	}
}
