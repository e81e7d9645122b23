package events

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
)

// MaxSiteIDLen is the longest site ID accepted.
const MaxSiteIDLen = 64

// ValidateSiteID reports whether id can name a site: 1 to 64 characters from
// [A-Za-z0-9_-]. Such an ID is a safe NATS subject token (no '.', '*', '>' or
// white space), so it can stand in subjects as it is. Client-chosen IDs (an
// existing blog ID, say) and Vigil's own ULIDs both fit.
func ValidateSiteID(id string) error {
	if id == "" {
		return fmt.Errorf("site id is empty")
	}
	if len(id) > MaxSiteIDLen {
		return fmt.Errorf("site id is %d characters long, the limit is %d", len(id), MaxSiteIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return fmt.Errorf("site id %q has %q at position %d: only A-Z, a-z, 0-9, '_' and '-' are allowed", id, c, i)
		}
	}
	return nil
}

// MaxRegionLen is the longest region name accepted.
const MaxRegionLen = 32

// ValidateRegion reports whether name can name a checker region: 1 to 32
// characters from [a-z0-9_-]. Regions are subject tokens and part of durable
// consumer names, so they are kept to a conservative alphabet.
func ValidateRegion(name string) error {
	if name == "" || len(name) > MaxRegionLen {
		return fmt.Errorf("region %q must be 1 to %d characters", name, MaxRegionLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("region %q may hold only a-z, 0-9, '_' and '-'", name)
		}
	}
	return nil
}

// ValidateRegions checks a deployment's region list: at least one region,
// each valid (ValidateRegion), none twice. The first is the primary.
func ValidateRegions(regions []string) error {
	if len(regions) == 0 {
		return fmt.Errorf("at least one region is required")
	}
	seen := make(map[string]bool, len(regions))
	for _, r := range regions {
		if err := ValidateRegion(r); err != nil {
			return err
		}
		if seen[r] {
			return fmt.Errorf("region %q is listed twice", r)
		}
		seen[r] = true
	}
	return nil
}

// DeriveID returns the ID of a derived fact: a ULID whose time part is t (the
// time of the observation that caused the fact) and whose entropy is a hash of
// parts, the fields that identify the fact. Deriving the same fact twice, in
// any process, yields the same ID, which is why the ID can serve as the
// Nats-Msg-Id and as a primary key downstream. Never use a random ULID for a
// derived fact.
//
// Each part is length-prefixed before hashing, so ("ab","c") and ("a","bc")
// differ.
func DeriveID(t time.Time, parts ...string) string {
	h := sha256.New()
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write([]byte(p))
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	var id ulid.ULID
	if err := id.SetTime(ulidTime(t)); err != nil {
		// Only times before 1970 or after the year 10889 get here.
		panic(fmt.Sprintf("events: time %v cannot be a ULID time: %v", t, err))
	}
	copy(id[6:], sum[:10])
	return id.String()
}

// IDTime returns the time part of a ULID, as milliseconds since the epoch.
func IDTime(id string) (time.Time, error) {
	u, err := ulid.ParseStrict(id)
	if err != nil {
		return time.Time{}, fmt.Errorf("parse ulid %q: %w", id, err)
	}
	return ulid.Time(u.Time()), nil
}

// IDSource makes fresh ULIDs for facts that are not derived from others:
// observations (made by a checker), configuration changes, site IDs assigned by
// Vigil. IDs from one source are strictly increasing within a millisecond. It is
// safe for concurrent use.
type IDSource struct {
	mu      sync.Mutex
	entropy *ulid.MonotonicEntropy
}

// NewIDSource returns a source drawing entropy from r (crypto/rand.Reader in
// production, a seeded reader in tests).
func NewIDSource(r io.Reader) *IDSource {
	return &IDSource{entropy: ulid.Monotonic(r, 0)}
}

// New returns a new ULID with time part t.
func (s *IDSource) New(t time.Time) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, err := ulid.New(ulidTime(t), s.entropy)
	if err != nil {
		return "", fmt.Errorf("make ulid: %w", err)
	}
	return id.String(), nil
}

func ulidTime(t time.Time) uint64 {
	ms := t.UnixMilli()
	if ms < 0 {
		ms = 0
	}
	return uint64(ms)
}
