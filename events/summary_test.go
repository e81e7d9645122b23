package events

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// Every field of the summary reads a field of Observation: same JSON name.
func TestObservationSummaryTags(t *testing.T) {
	obsTags := map[string]bool{}
	ot := reflect.TypeFor[Observation]()
	for i := range ot.NumField() {
		obsTags[strings.Split(ot.Field(i).Tag.Get("json"), ",")[0]] = true
	}
	st := reflect.TypeFor[ObservationSummary]()
	for i := range st.NumField() {
		name := strings.Split(st.Field(i).Tag.Get("json"), ",")[0]
		if !obsTags[name] {
			t.Errorf("ObservationSummary.%s reads %q, which Observation does not have", st.Field(i).Name, name)
		}
	}
	if tag := reflect.TypeFor[CertExpiry]().Field(0).Tag.Get("json"); tag != "not_after" {
		t.Errorf("CertExpiry reads %q", tag)
	}
}

// A summary decoded from a real encoded observation holds its fields.
func TestObservationSummaryDecodes(t *testing.T) {
	at := time.Date(2026, 11, 23, 10, 0, 1, 500, time.UTC)
	full := Observation{
		ID: "01JOBSERVATION000000000000", SiteID: "shop", Bucket: Bucket("shop"), Region: "eu",
		CheckerID: "c1", CommandID: "cmd", Purpose: PurposeRetry, DueAt: at, StartedAt: at,
		Class: ClassHTTPStatus, StatusCode: 503, RedirectChain: []string{"https://a/"},
		Timings: Timings{DNSMs: 1, ConnectMs: 2, TLSMs: 3, TTFBMs: 4, TotalMs: 10.5},
		TLS:     &TLSInfo{Issuer: "CA", NotAfter: at.Add(90 * 24 * time.Hour)}, Error: "503",
	}
	msg, err := Marshal(&full)
	if err != nil {
		t.Fatal(err)
	}
	var sum ObservationSummary
	if _, err := Decode(msg.Header, msg.Data, &sum); err != nil {
		t.Fatal(err)
	}
	if want := full.Summary(); !reflect.DeepEqual(&sum, want) {
		t.Fatalf("summary decoded as\n%+v\nwant\n%+v", &sum, want)
	}
	// The type check still applies: a site event is not an observation.
	ev := SiteEvent{ID: "01JEVENT00000000000000000", Kind: KindSeemsDown, SiteID: "shop", At: at}
	if emsg, err := Marshal(&ev); err != nil {
		t.Fatal(err)
	} else if _, err := Decode(emsg.Header, emsg.Data, &sum); err == nil {
		t.Fatal("a site event decoded as an observation summary")
	}
}
