package statemachine

import (
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/events"
)

// TestUneventful checks the property the worker's shortcut rests on: an
// observation Uneventful accepts, applied to a site with no state, yields no
// output and leaves nothing worth keeping, whatever the purpose, region,
// certificate, region health or maintenance.
func TestUneventful(t *testing.T) {
	classes := []events.Class{
		events.ClassOK, events.ClassDNSNXDomain, events.ClassConnectRefused, events.ClassConnectTimeout,
		events.ClassTimeout, events.ClassTLSHandshake, events.ClassTLSExpired, events.ClassTLSUntrusted,
		events.ClassHTTPStatus, events.ClassKeywordMissing, events.ClassKeywordForbidden,
		events.ClassRedirectPolicy, events.ClassRedirectLoop, events.ClassBodyRead,
		events.ClassMonitorResolver, events.ClassMonitorNetwork, events.ClassCommandExpired,
		events.ClassMonitorOverload, events.ClassTargetRefused,
	}
	purposes := []events.Purpose{events.PurposeScheduled, events.PurposeRetry, events.PurposeVerify}
	regions := []string{"eu", "us", "ap", "elsewhere"}
	rng := rand.New(rand.NewPCG(1, 2))
	site := baseSite()
	var accepted, eventful int
	for i := range 20000 {
		at := t0.Add(time.Duration(rng.IntN(86400)) * time.Second)
		obs := events.Observation{
			ID: "obs" + string(rune('a'+i%26)), SiteID: site.ID, Bucket: events.Bucket(site.ID),
			Region: regions[rng.IntN(len(regions))], Purpose: purposes[rng.IntN(len(purposes))],
			Class: classes[rng.IntN(len(classes))], StartedAt: at,
		}
		if rng.IntN(2) == 0 {
			obs.Class = events.ClassOK
		}
		if rng.IntN(2) == 0 {
			// Around every advisory threshold, to the nanosecond.
			notAfter := at.Add(time.Duration(rng.Int64N(int64(70*24*time.Hour))) - 5*24*time.Hour)
			obs.TLS = &events.TLSInfo{NotAfter: notAfter}
		}
		impaired, maintenance := rng.IntN(2) == 0, rng.IntN(2) == 0
		env := Env{
			Regions:           []string{"eu", "us", "ap"}[:1+rng.IntN(3)],
			AllowSingleRegion: rng.IntN(2) == 0,
			VerifyTimeout:     90 * time.Second,
			Impaired:          func(string, time.Time) bool { return impaired },
			InMaintenance:     func(events.Site, time.Time) bool { return maintenance },
		}
		st := &SiteState{}
		out := st.Observe(site, obs, env)
		empty := reflect.DeepEqual(out, Output{}) && trivial(st)
		if Uneventful(obs.Summary()) {
			accepted++
			if !empty {
				t.Fatalf("Uneventful(%+v) but Observe gave %+v, state %+v", obs, out, st)
			}
		} else if !empty {
			eventful++
		}
	}
	// Not vacuous: both kinds were drawn plenty.
	if accepted < 1000 || eventful < 1000 {
		t.Fatalf("drew %d uneventful and %d eventful observations", accepted, eventful)
	}
}
