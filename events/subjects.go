package events

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// Every NATS name Vigil uses lives in this file: streams, subjects, KV buckets.
// Subject constants come in pairs where useful: a wildcard form for consumers and
// a function that fills in the tokens for publishers.

// Buckets is the number of partitions work is split into. It is fixed for the
// life of a deployment: a site's bucket is part of every subject it appears on,
// so changing it would split each site's history across two subjects. Treat a
// change as a data migration, never as a setting.
const Buckets = 64

// Stream names.
const (
	StreamSites        = "SITES"
	StreamChecks       = "CHECKS"
	StreamObservations = "OBSERVATIONS"
	StreamEvents       = "EVENTS"
)

// Root is the first token of every Vigil subject.
const Root = "vigil"

// Subject filters, one per stream, as consumers and `nats sub` use them.
const (
	SitesAll        = "vigil.sites.>"
	ChecksAll       = "vigil.checks.>"
	ObservationsAll = "vigil.obs.>"
	EventsAll       = "vigil.events.>"
)

// KV buckets.
const (
	// KVLeases holds the leases by which instances of a service split the buckets
	// (scheduler, state machine) or elect a single active instance (projectors).
	KVLeases = "VIGIL_LEASES"
	// KVCadence holds per-site cadence overrides: while a site has an open
	// incident, the state machine puts a Cadence under CadenceKey(site) and the
	// scheduler checks the site at that faster interval until it is removed.
	// It lives in KV, not in any process's memory, so a crash of either side
	// loses no retry state.
	KVCadence = "VIGIL_CADENCE"
	// KVStateMachine holds the state machine's per-site state for sites that
	// have any (an open incident, a TLS advisory): what it needs to continue
	// after a crash or a change of owner. A healthy site has no key. It also
	// holds each bucket's position on OBSERVATIONS (PositionKey).
	KVStateMachine = "VIGIL_SM_STATE"
	// KVRedirects holds the accepted redirect chain of each site with
	// `redirects: alert`, per region (RedirectKey): the chain the checkers of
	// that region compare every check with. A checker records it after the
	// first successful check (or the first after the site's URL changed) and
	// never overwrites it; deleting the key (vigil sites accept-redirects)
	// accepts whatever chain the next successful check sees. Sites with any
	// other policy have no key.
	KVRedirects = "VIGIL_REDIRECTS"
)

// SiteKey is a site's key in the per-site KV buckets (KVCadence,
// KVStateMachine): <bucket>.<site>, so an instance can read or watch only the
// buckets it owns (SiteKeyBucketFilter).
func SiteKey(siteID string) string {
	return bucketToken(Bucket(siteID)) + "." + siteID
}

// SiteKeyBucketFilter selects one bucket's keys in a per-site KV bucket: <bucket>.>.
func SiteKeyBucketFilter(bucket int) string {
	return bucketToken(bucket) + ".>"
}

// PositionKey is where the state machine keeps a bucket's position in
// KVStateMachine: the stream sequence on OBSERVATIONS up to which the bucket's
// observations have been applied and made durable. It is outside every
// <bucket>.> filter, so it never reads as a site.
func PositionKey(bucket int) string {
	return "position." + bucketToken(bucket)
}

// CadenceKey is a site's key in KVCadence: <bucket>.<site>, so a scheduler can
// watch only the buckets it owns (CadenceBucketFilter).
func CadenceKey(siteID string) string {
	return bucketToken(Bucket(siteID)) + "." + siteID
}

// CadenceBucketFilter selects one bucket's keys in KVCadence: <bucket>.>.
func CadenceBucketFilter(bucket int) string {
	return bucketToken(bucket) + ".>"
}

// RedirectKey is a site's key in KVRedirects for one region:
// <bucket>.<site>.<region>. The chain is kept per region because a site may
// legitimately redirect each vantage point elsewhere (geo redirects).
func RedirectKey(siteID, region string) string {
	return SiteKey(siteID) + "." + region
}

// RedirectSiteFilter selects every region's key of one site in KVRedirects:
// <bucket>.<site>.*.
func RedirectSiteFilter(siteID string) string {
	return SiteKey(siteID) + ".*"
}

// Bucket returns the partition of a site: FNV-1a 32 over the site ID, modulo
// Buckets. It is byte for byte the server's {{partition(64,1)}} subject
// transform, so an external publisher can let the server compute it with a
// mapping such as "vigil.obs.*" -> "vigil.obs.{{partition(64,1)}}.{{wildcard(1)}}".
func Bucket(siteID string) int {
	h := fnv.New32a()
	h.Write([]byte(siteID))
	return int(h.Sum32() % Buckets)
}

// SiteSubject is where a site's configuration changes are stored on SITES:
// vigil.sites.<bucket>.<site>. The last message on it is the current config.
func SiteSubject(siteID string) string {
	return "vigil.sites." + bucketToken(Bucket(siteID)) + "." + siteID
}

// ParseSiteSubject returns the site of a SITES subject and its bucket; ok is
// false for a subject that is not vigil.sites.<bucket>.<site> with the site's
// own bucket (a message a publisher misplaced).
func ParseSiteSubject(subject string) (siteID string, bucket int, ok bool) {
	rest, ok := strings.CutPrefix(subject, "vigil.sites.")
	if !ok {
		return "", 0, false
	}
	bs, id, ok := strings.Cut(rest, ".")
	if !ok || ValidateSiteID(id) != nil {
		return "", 0, false
	}
	b, err := strconv.Atoi(bs)
	if err != nil || b < 0 || b >= Buckets || SiteSubject(id) != subject {
		return "", 0, false
	}
	return id, b, true
}

// SitesBucketFilter selects one bucket's sites: vigil.sites.<bucket>.>.
func SitesBucketFilter(bucket int) string {
	return "vigil.sites." + bucketToken(bucket) + ".>"
}

// CheckSubject is where a check command for a site is queued for the checkers
// of one region: vigil.checks.<region>.<bucket>.<site>. The region comes first so
// each region's checkers share one consumer with a literal-prefix filter; the
// stream keeps one pending command per subject, so a newer command for a site
// replaces a stale one instead of queueing behind it.
func CheckSubject(region, siteID string) string {
	return "vigil.checks." + region + "." + bucketToken(Bucket(siteID)) + "." + siteID
}

// ChecksRegionFilter selects the commands for one region: vigil.checks.<region>.>.
func ChecksRegionFilter(region string) string {
	return "vigil.checks." + region + ".>"
}

// ObservationSubject is where checkers publish what they saw:
// vigil.obs.<bucket>.<site>.
func ObservationSubject(siteID string) string {
	return "vigil.obs." + bucketToken(Bucket(siteID)) + "." + siteID
}

// ObservationsBucketFilter selects one bucket's observations: vigil.obs.<bucket>.>.
func ObservationsBucketFilter(bucket int) string {
	return "vigil.obs." + bucketToken(bucket) + ".>"
}

// SiteEventSubject is where the state machine appends a site's derived events:
// vigil.events.<bucket>.<site>.<kind>.
func SiteEventSubject(siteID string, kind EventKind) string {
	return "vigil.events." + bucketToken(Bucket(siteID)) + "." + siteID + "." + string(kind)
}

// SiteEventsFilter selects every event of one site, whatever its kind:
// vigil.events.<bucket>.<site>.*. Appends use it as the optimistic-concurrency
// subject, so two writers can never interleave one site's history.
func SiteEventsFilter(siteID string) string {
	return "vigil.events." + bucketToken(Bucket(siteID)) + "." + siteID + ".*"
}

// EventsBucketFilter selects one bucket's site events: vigil.events.<bucket>.>.
func EventsBucketFilter(bucket int) string {
	return "vigil.events." + bucketToken(bucket) + ".>"
}

// RegionEventSubject is where events about a whole checker region go (impaired,
// recovered): vigil.events.region.<region>.<kind>. The literal "region" stands
// where site events have their numeric bucket, so the two never collide.
func RegionEventSubject(region string, kind EventKind) string {
	return "vigil.events.region." + region + "." + string(kind)
}

// RegionEventsAll selects every region event: vigil.events.region.>.
const RegionEventsAll = "vigil.events.region.>"

// RegionEventsFilter selects one region's events, whatever their kind:
// vigil.events.region.<region>.*, the optimistic-concurrency subject of its
// history.
func RegionEventsFilter(region string) string {
	return "vigil.events.region." + region + ".*"
}

// LeaseKey names the lease for one bucket of one service in KVLeases, such as
// "scheduler.7".
func LeaseKey(service string, bucket int) string {
	return service + "." + bucketToken(bucket)
}

// bucketToken renders a bucket as a subject token. Buckets are written without
// padding ("7", not "07") because that is what the server's partition()
// transform produces.
func bucketToken(b int) string {
	if b < 0 || b >= Buckets {
		panic(fmt.Sprintf("events: bucket %d out of range [0,%d)", b, Buckets))
	}
	return strconv.Itoa(b)
}
