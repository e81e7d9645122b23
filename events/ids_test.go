package events

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
)

func TestValidateSiteID(t *testing.T) {
	good := []string{"a", "shop-eu", "blog_123", "01JD5Z8Q3T6V0Y3K7M2N4P6R8S", strings.Repeat("x", 64)}
	bad := []string{"", "a.b", "a b", "a*", "a>", "é", strings.Repeat("x", 65), "a/b"}
	for _, id := range good {
		if err := ValidateSiteID(id); err != nil {
			t.Errorf("ValidateSiteID(%q) = %v, want nil", id, err)
		}
	}
	for _, id := range bad {
		if err := ValidateSiteID(id); err == nil {
			t.Errorf("ValidateSiteID(%q) = nil, want an error", id)
		}
	}
}

func TestDeriveID(t *testing.T) {
	at := time.Date(2026, 11, 23, 4, 15, 0, 0, time.UTC)
	a := DeriveID(at, "site", "obs-1", "seems_down")
	if a != DeriveID(at, "site", "obs-1", "seems_down") {
		t.Fatal("same fact, different IDs")
	}
	for _, other := range []string{
		DeriveID(at, "site", "obs-1", "down"),
		DeriveID(at, "site", "obs-2", "seems_down"),
		DeriveID(at.Add(time.Millisecond), "site", "obs-1", "seems_down"),
		DeriveID(at, "siteo", "bs-1", "seems_down"), // parts are length-prefixed
	} {
		if other == a {
			t.Errorf("different facts share ID %s", a)
		}
	}
	u, err := ulid.ParseStrict(a)
	if err != nil {
		t.Fatalf("derived ID %q is not a ULID: %v", a, err)
	}
	if got := ulid.Time(u.Time()); !got.Equal(at) {
		t.Errorf("ID time = %v, want the observation time %v", got, at)
	}
	if got, _ := IDTime(a); !got.Equal(at) {
		t.Errorf("IDTime = %v", got)
	}
}

// The same fact derived in two fresh processes gets the same ID: the ID depends
// on nothing but its inputs (no process state, no clock, no randomness).
func TestDeriveIDAcrossProcesses(t *testing.T) {
	if os.Getenv("VIGIL_DERIVE_HELPER") == "1" {
		return
	}
	run := func() string {
		cmd := exec.Command(os.Args[0], "-test.run=^TestDeriveIDHelper$", "-test.v")
		cmd.Env = append(os.Environ(), "VIGIL_DERIVE_HELPER=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helper process: %v\n%s", err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if id, ok := strings.CutPrefix(line, "DERIVED "); ok {
				return id
			}
		}
		t.Fatalf("helper printed no ID:\n%s", out)
		return ""
	}
	first, second := run(), run()
	if first != second {
		t.Errorf("two processes derived %s and %s for the same observation", first, second)
	}
	if first != DeriveSeemsDownForTest() {
		t.Errorf("helper derived %s, this process %s", first, DeriveSeemsDownForTest())
	}
}

func TestDeriveIDHelper(t *testing.T) {
	if os.Getenv("VIGIL_DERIVE_HELPER") != "1" {
		t.Skip("run as a helper process by TestDeriveIDAcrossProcesses")
	}
	fmt.Printf("DERIVED %s\n", DeriveSeemsDownForTest())
}

// DeriveSeemsDownForTest derives a Seems Down event ID from a fixed observation,
// the way the state machine does.
func DeriveSeemsDownForTest() string {
	obs := sampleObservation()
	return DeriveID(obs.StartedAt, obs.SiteID, obs.ID, string(KindSeemsDown))
}

func TestIDSourceIsMonotonic(t *testing.T) {
	src := NewIDSource(bytes.NewReader(bytes.Repeat([]byte{7}, 1<<12)))
	at := time.Unix(1700000000, 0)
	prev := ""
	for i := 0; i < 100; i++ {
		id, err := src.New(at)
		if err != nil {
			t.Fatal(err)
		}
		if id <= prev {
			t.Fatalf("id %s not after %s", id, prev)
		}
		prev = id
	}
}

func TestBucketIsFNV1a(t *testing.T) {
	for _, id := range []string{"a", "shop-eu", "01JD5Z8Q3T6V0Y3K7M2N4P6R8S"} {
		h := fnv.New32a()
		h.Write([]byte(id))
		if got, want := Bucket(id), int(h.Sum32()%64); got != want {
			t.Errorf("Bucket(%q) = %d, want %d", id, got, want)
		}
	}
}

func TestSubjects(t *testing.T) {
	b := Bucket("shop-eu")
	for got, want := range map[string]string{
		SiteSubject("shop-eu"):                       fmt.Sprintf("vigil.sites.%d.shop-eu", b),
		CheckSubject("eu", "shop-eu"):                fmt.Sprintf("vigil.checks.eu.%d.shop-eu", b),
		ObservationSubject("shop-eu"):                fmt.Sprintf("vigil.obs.%d.shop-eu", b),
		SiteEventSubject("shop-eu", KindDown):        fmt.Sprintf("vigil.events.%d.shop-eu.down", b),
		SiteEventsFilter("shop-eu"):                  fmt.Sprintf("vigil.events.%d.shop-eu.*", b),
		RegionEventSubject("eu", KindRegionImpaired): "vigil.events.region.eu.impaired",
		LeaseKey("scheduler", 7):                     "scheduler.7",
	} {
		if got != want {
			t.Errorf("subject %q, want %q", got, want)
		}
	}
}

func TestDuration(t *testing.T) {
	for in, want := range map[string]string{"5m": "5m", "1h": "1h", "90s": "1m30s", "1h30m": "1h30m", "10s": "10s", "1h0m5s": "1h0m5s", "250ms": "250ms"} {
		var d Duration
		if err := d.UnmarshalText([]byte(in)); err != nil {
			t.Fatal(err)
		}
		if d.String() != want {
			t.Errorf("%s prints as %s, want %s", in, d, want)
		}
	}
	var d Duration
	if err := d.UnmarshalText([]byte("5 minutes")); err == nil {
		t.Error("accepted 5 minutes")
	}
}

func TestParseSiteSubject(t *testing.T) {
	id, b, ok := ParseSiteSubject(SiteSubject("shop-eu"))
	if !ok || id != "shop-eu" || b != Bucket("shop-eu") {
		t.Errorf("round trip: %q %d %v", id, b, ok)
	}
	wrong := (Bucket("shop-eu") + 1) % Buckets
	for _, s := range []string{"vigil.sites.shop-eu", fmt.Sprintf("vigil.sites.%d.shop-eu", wrong), "vigil.obs.1.x", "vigil.sites.x.shop", "vigil.sites.1.a.b"} {
		if _, _, ok := ParseSiteSubject(s); ok {
			t.Errorf("accepted %q", s)
		}
	}
	if RegionEventsFilter("eu") != "vigil.events.region.eu.*" {
		t.Error(RegionEventsFilter("eu"))
	}
}

func TestValidateRegions(t *testing.T) {
	if err := ValidateRegions([]string{"local", "eu"}); err != nil {
		t.Error(err)
	}
	for _, bad := range [][]string{nil, {"eu", "eu"}, {"EU"}, {"a.b"}} {
		if ValidateRegions(bad) == nil {
			t.Errorf("accepted %v", bad)
		}
	}
}
