package scheduler

import (
	"time"

	"github.com/vigil-dev/vigil/events"
)

// state is the scheduler's view of its targets. It is guarded by
// Scheduler.mu; every method expects the lock held. The lock is held only for
// map and heap operations, never across network calls.
type state struct {
	region string

	owned [events.Buckets]bool
	// epoch counts acquisitions and losses of each bucket, so a bucket load
	// that finishes after its bucket was lost (or lost and re-acquired)
	// cannot apply stale results.
	epoch [events.Buckets]uint64
	// sites holds the known sites of each owned bucket, including paused
	// and deleted ones (inactive), whose stream sequence must be kept so a
	// late, older configuration cannot resurrect them.
	sites [events.Buckets]map[string]*target
	heap  dueHeap
	gen   uint64
	// active counts the targets being scheduled.
	active int
	// cadences holds every standing override in KVCadence, owned bucket or
	// not (there are few: one per open incident), so a bucket acquired
	// later starts with its overrides applied.
	cadences map[string]events.Cadence
}

// target is one site of an owned bucket.
type target struct {
	id     string
	bucket int
	// seq is the SITES stream sequence of the configuration held.
	seq    uint64
	active bool
	// interval is the site's own interval in ms.
	interval int64
	spec     events.CheckSpec
	// override is the cadence override in force, if any.
	override *events.Cadence
	// gen identifies the target's current slot in the heap; 0 means none.
	gen uint64
	// next is the due instant of the current slot (ms), retry whether it is
	// a retry slot of the override.
	next  int64
	retry bool
	// lastDue is the due instant of the last slot taken off the heap (sent
	// or missed): an unsent command due before it is superseded.
	lastDue int64
}

func newState(region string) *state {
	return &state{region: region, cadences: map[string]events.Cadence{}}
}

// lookup returns the target of siteID if its bucket is owned and it is known.
func (s *state) lookup(siteID string) *target {
	return s.sites[events.Bucket(siteID)][siteID]
}

// stale reports whether a command that could not be sent yet should be
// dropped: its site is no longer scheduled here, or a later slot of the site
// has come due since (one check, not a burst of missed slots).
func (s *state) stale(c *events.CheckCommand) bool {
	t := s.lookup(c.SiteID)
	return t == nil || !t.active || t.lastDue > c.DueAt.UnixMilli()
}

// acquire starts owning bucket b and returns its new epoch.
func (s *state) acquire(b int) uint64 {
	s.owned[b] = true
	s.epoch[b]++
	s.sites[b] = map[string]*target{}
	return s.epoch[b]
}

// lose stops owning bucket b and forgets its sites at once; their heap slots
// become stale and are discarded as they come due.
func (s *state) lose(b int) {
	s.owned[b] = false
	s.epoch[b]++
	for _, t := range s.sites[b] {
		if t.active {
			s.active--
		}
		t.active = false
		t.gen = 0
	}
	s.sites[b] = nil
	s.maybeCompact()
}

// siteUpdate is a configuration read from SITES.
type siteUpdate struct {
	id     string
	seq    uint64
	stop   bool // deleted or paused
	site   events.Site
	epoch  uint64 // non-zero for a bucket load: apply only in that epoch
	fromMs int64  // earliest due instant for a newly scheduled target
}

// applySite applies a configuration if its bucket is owned and it is newer
// than what is held for the site. nowMs is the current time.
func (s *state) applySite(u siteUpdate, nowMs int64) {
	b := events.Bucket(u.id)
	if !s.owned[b] || (u.epoch != 0 && u.epoch != s.epoch[b]) {
		return
	}
	t := s.sites[b][u.id]
	if t != nil && u.seq <= t.seq {
		return
	}
	if t == nil {
		t = &target{id: u.id, bucket: b}
		s.sites[b][u.id] = t
	}
	t.seq = u.seq
	if u.stop {
		if t.active {
			s.active--
		}
		t.active, t.gen, t.override, t.spec = false, 0, nil, events.CheckSpec{}
		return
	}
	iv := intervalMs(u.site.Interval.Std())
	t.spec = u.site.CheckSpec()
	if !t.active {
		t.active = true
		s.active++
		t.interval = iv
		t.override = s.standingOverride(u.id, nowMs)
		s.plan(t, max(u.fromMs, nowMs-windowMs(iv)+1))
		return
	}
	if iv != t.interval {
		// A new interval is a new phase slot; the old slot is stale.
		t.interval = iv
		if !t.retry {
			s.plan(t, nowMs)
		}
	}
}

// standingOverride returns the override of siteID if one stands at nowMs.
func (s *state) standingOverride(siteID string, nowMs int64) *events.Cadence {
	c, ok := s.cadences[siteID]
	if !ok || c.Interval <= 0 || c.Until.UnixMilli() <= nowMs {
		return nil
	}
	return &c
}

// setCadence records an override (c non-nil) or its removal (nil) for siteID
// and reschedules the site if it is an active target.
func (s *state) setCadence(siteID string, c *events.Cadence, nowMs int64) {
	if c == nil {
		delete(s.cadences, siteID)
	} else {
		s.cadences[siteID] = *c
	}
	t := s.lookup(siteID)
	if t == nil || !t.active {
		return
	}
	old, ov := t.override, s.standingOverride(siteID, nowMs)
	t.override = ov
	switch {
	case old == nil && ov == nil:
	case old == nil || ov == nil || old.Interval != ov.Interval:
		// Entering or leaving fast retries, or a new retry interval.
		s.plan(t, nowMs)
	case t.retry && t.next >= ov.Until.UnixMilli():
		// The override now ends before the slot planned under it.
		s.plan(t, nowMs)
	}
}

// plan schedules t's next slot at or after fromMs: a retry slot while its
// override stands, else a slot of its own interval. It makes any earlier slot
// of t stale.
func (s *state) plan(t *target, fromMs int64) {
	next, retry := t.slotFrom(fromMs)
	s.gen++
	t.gen, t.next, t.retry = s.gen, next, retry
	s.heap.push(slot{due: next, gen: t.gen, t: t})
}

// slotFrom returns t's first slot at or after fromMs and whether it is a
// retry slot. An override whose next retry slot would fall at or after its
// Until has ended: the target returns to its own slots from Until on (and
// the override is dropped).
func (t *target) slotFrom(fromMs int64) (int64, bool) {
	if ov := t.override; ov != nil {
		until := ov.Until.UnixMilli()
		if civ := intervalMs(ov.Interval.Std()); fromMs < until {
			if n := slotAtOrAfter(t.id, civ, fromMs); n < until {
				return n, true
			}
		}
		t.override = nil
		fromMs = max(fromMs, until)
	}
	return slotAtOrAfter(t.id, t.interval, fromMs), false
}

// mode returns the purpose and interval (ms) of t's current slot.
func (t *target) mode() (events.Purpose, int64) {
	if t.retry && t.override != nil {
		return events.PurposeRetry, intervalMs(t.override.Interval.Std())
	}
	return events.PurposeScheduled, t.interval
}

// popDue removes the slots due at nowMs, up to limit commands, schedules each
// target's following slot and returns the commands to publish. Slots whose
// deadline has already passed (the scheduler was stalled) are not returned
// but counted in missed; so are the slots skipped to get back on schedule.
func (s *state) popDue(nowMs int64, limit int) (cmds []*events.CheckCommand, missed int) {
	for len(cmds) < limit && len(s.heap) > 0 && s.heap.peek() <= nowMs {
		sl := s.heap.pop()
		t := sl.t
		if sl.gen != t.gen || !t.active {
			continue
		}
		t.lastDue = sl.due
		purpose, ivMs := t.mode()
		win := windowMs(ivMs)
		if nowMs >= sl.due+win {
			missed++
		} else {
			cmds = append(cmds, t.command(s.region, purpose, sl.due, win))
		}
		// The following slot is exactly one interval on (no drift), unless
		// its deadline has passed too: then skip to the first slot still
		// worth sending, counting the skipped ones.
		from := max(sl.due+1, nowMs-win+1)
		s.plan(t, from)
		if p, iv := t.mode(); p == purpose && t.next > sl.due+ivMs {
			missed += int((t.next - sl.due - ivMs) / iv)
		}
	}
	s.maybeCompact()
	return cmds, missed
}

// command builds the check command for t's slot due at dueMs.
func (t *target) command(region string, purpose events.Purpose, dueMs, winMs int64) *events.CheckCommand {
	due := time.UnixMilli(dueMs).UTC()
	c := &events.CheckCommand{
		ID:        events.CommandID(t.id, region, purpose, due),
		SiteID:    t.id,
		Bucket:    t.bucket,
		Region:    region,
		Purpose:   purpose,
		DueAt:     due,
		Deadline:  due.Add(time.Duration(winMs) * time.Millisecond),
		ConfigSeq: t.seq,
		Check:     t.spec,
	}
	if purpose == events.PurposeRetry {
		c.IncidentID = t.override.IncidentID
	}
	return c
}

// maybeCompact rebuilds the heap from the live targets when stale slots
// (from reschedules and lost buckets) outnumber live ones, so memory stays
// proportional to the fleet. Its cost is amortised over the reschedules that
// made the slots stale.
func (s *state) maybeCompact() {
	if len(s.heap) <= 2*s.active+1024 {
		return
	}
	live := make(dueHeap, 0, s.active)
	for _, sl := range s.heap {
		if sl.gen == sl.t.gen && sl.t.active {
			live = append(live, sl)
		}
	}
	clear(s.heap)
	live.heapify()
	s.heap = live
}
