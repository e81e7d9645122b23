package scheduler

import (
	"github.com/vigil-dev/vigil/events"
	"hash/fnv"
	"time"
)

// Schedule arithmetic is done in integer milliseconds since the Unix epoch:
// due instants must be identical in every scheduler instance (they are part of
// the command ID), and integers make that exact.

const (
	// MinInterval is the shortest interval the scheduler accepts; shorter
	// intervals (a misconfigured cadence override) are raised to it.
	MinInterval = time.Second
	// DefaultInterval is used for a stored site without an interval. The
	// registry fills defaults in before storing, so this is a safety net; it
	// matches the registry's default.
	DefaultInterval = events.DefaultInterval

	minDeadlineWindow = 5 * time.Second
	maxDeadlineWindow = 60 * time.Second
)

// intervalMs returns d in milliseconds, raised to MinInterval; zero means
// DefaultInterval.
func intervalMs(d time.Duration) int64 {
	if d == 0 {
		d = DefaultInterval
	}
	return max(d.Milliseconds(), MinInterval.Milliseconds())
}

// phaseMs is the site's phase within an interval of ivMs milliseconds:
// FNV-1a 64 of the site ID modulo the interval. It depends on the ID and the
// interval only, so every instance, before and after a restart, computes the
// same due instants, and a fleet's due instants are spread uniformly over the
// interval (a flat check rate instead of a burst at the top of each minute).
func phaseMs(siteID string, ivMs int64) int64 {
	h := fnv.New64a()
	h.Write([]byte(siteID))
	return int64(h.Sum64() % uint64(ivMs))
}

// slotAtOrAfter returns the first due instant ≥ fromMs of a site checked every
// ivMs: the instants t with (t − phase) mod interval == 0, counted from the
// Unix epoch.
func slotAtOrAfter(siteID string, ivMs, fromMs int64) int64 {
	r := (fromMs - phaseMs(siteID, ivMs)) % ivMs
	if r < 0 {
		r += ivMs
	}
	if r == 0 {
		return fromMs
	}
	return fromMs + ivMs - r
}

// windowMs is how long after its due instant a command is still worth
// running; see DeadlineWindow.
func windowMs(ivMs int64) int64 {
	return min(max(ivMs/2, minDeadlineWindow.Milliseconds()), maxDeadlineWindow.Milliseconds())
}

// Phase returns the offset within interval at which siteID's checks fall.
func Phase(siteID string, interval time.Duration) time.Duration {
	return time.Duration(phaseMs(siteID, intervalMs(interval))) * time.Millisecond
}

// NextDue returns the first due instant at or after t of a site checked every
// interval. The next one is always exactly one interval later (no drift).
func NextDue(siteID string, interval time.Duration, t time.Time) time.Time {
	return time.UnixMilli(slotAtOrAfter(siteID, intervalMs(interval), ceilMs(t))).UTC()
}

// DeadlineWindow returns how long after its due instant a check command
// expires: half the interval, clamped to [5s, 60s].
//
// Half the interval keeps a late command from running on top of the next one,
// and it bounds how stale a check may be relative to the cadence the operator
// asked for. The 5 s floor leaves the path from scheduler to checker (publish,
// queue, a busy checker picking it up) some slack even for short intervals
// and fast retries; where it exceeds half the interval, CHECKS keeps only the
// newest command per site, so commands still never queue up. The 60 s ceiling
// is because a check run minutes late no longer says anything about "now" for
// long intervals (an hourly site's check 30 minutes late is worse than none).
// A command is published only before its deadline: a stalled scheduler skips
// (and counts) what it could not send in time rather than bursting late.
func DeadlineWindow(interval time.Duration) time.Duration {
	return time.Duration(windowMs(intervalMs(interval))) * time.Millisecond
}

// ceilMs returns t in milliseconds since the epoch, rounded up.
func ceilMs(t time.Time) int64 {
	ms := t.UnixMilli()
	if time.UnixMilli(ms).Before(t) {
		ms++
	}
	return ms
}
