package uptime

import (
	"math"
	"slices"
	"time"

	"github.com/vigil-dev/vigil/events"
)

// Class is what a stretch of time counts as. When stretches overlap, the
// higher class wins: maintenance > down > seems_down > unknown > up.
type Class int

// Classes, in precedence order.
const (
	Up Class = iota
	Unknown
	SeemsDown
	Down
	Maintenance
)

// Interval is a stretch of time of one class.
type Interval struct {
	Start, End time.Time
	Class      Class
}

// Seconds splits a period into what its time counted as.
type Seconds struct {
	Up, SeemsDown, Down, Unknown, Maintenance int64
}

// Total is the period's length.
func (s Seconds) Total() int64 { return s.Up + s.SeemsDown + s.Down + s.Unknown + s.Maintenance }

// Known is the time the uptime percentage is taken over: everything but
// unknown and maintenance time.
func (s Seconds) Known() int64 { return s.Up + s.SeemsDown + s.Down }

// Percent is the uptime percentage: up time over known time. It is NaN when no
// time is known.
func (s Seconds) Percent() float64 {
	if s.Known() == 0 {
		return math.NaN()
	}
	return 100 * float64(s.Up) / float64(s.Known())
}

// Add sums two splits.
func (s Seconds) Add(o Seconds) Seconds {
	return Seconds{s.Up + o.Up, s.SeemsDown + o.SeemsDown, s.Down + o.Down, s.Unknown + o.Unknown, s.Maintenance + o.Maintenance}
}

// Account splits [from, to) among the intervals by precedence; time no
// interval covers is up. Each class is rounded to whole seconds and up takes
// the remainder, so the parts always add up to the period.
func Account(from, to time.Time, ivs []Interval) Seconds {
	if !to.After(from) {
		return Seconds{}
	}
	points := []time.Time{from, to}
	for _, iv := range ivs {
		if iv.End.After(from) && iv.Start.Before(to) {
			if iv.Start.After(from) {
				points = append(points, iv.Start)
			}
			if iv.End.Before(to) {
				points = append(points, iv.End)
			}
		}
	}
	slices.SortFunc(points, func(a, b time.Time) int { return a.Compare(b) })
	points = slices.CompactFunc(points, func(a, b time.Time) bool { return a.Equal(b) })
	var ms [Maintenance + 1]int64
	for i := 0; i+1 < len(points); i++ {
		a, b := points[i], points[i+1]
		c := Up
		for _, iv := range ivs {
			if !iv.Start.After(a) && !iv.End.Before(b) && iv.Class > c {
				c = iv.Class
			}
		}
		ms[c] += b.Sub(a).Milliseconds()
	}
	total := (to.Sub(from).Milliseconds() + 500) / 1000
	round := func(v int64) int64 { return (v + 500) / 1000 }
	s := Seconds{
		SeemsDown:   round(ms[SeemsDown]),
		Down:        round(ms[Down]),
		Unknown:     round(ms[Unknown]),
		Maintenance: round(ms[Maintenance]),
	}
	s.Up = total - s.SeemsDown - s.Down - s.Unknown - s.Maintenance
	if s.Up < 0 {
		s.Up = 0
	}
	return s
}

// Span is an incident as the uptime ledger keeps it.
type Span struct {
	SiteID     string
	IncidentID string
	Started    time.Time
	Confirmed  *time.Time
	Closed     *time.Time
	Resolution events.Reason
	// MaintOpen and MaintConfirmed are the maintenance flags of the Seems
	// Down and of the Down.
	MaintOpen, MaintConfirmed bool
}

// ClearedAsUp reports whether a closed, never confirmed incident counts as up
// time: it was cleared by a local success (probe_cleared) or the verifying
// regions did not confirm it (false_alarm).
func (s Span) ClearedAsUp() bool {
	return s.Confirmed == nil && s.Closed != nil &&
		(s.Resolution == events.ReasonProbeCleared || s.Resolution == events.ReasonFalseAlarm)
}

// Intervals returns the incident's time by class, an open incident running
// until now:
//
//   - confirmed (Down): down from started_at (the first failure) to the close,
//     the part before confirmation as well;
//   - closed unconfirmed as probe_cleared or false_alarm: nothing (up);
//   - otherwise unconfirmed (still open, or closed manual, paused, deleted):
//     seems_down;
//   - the part before the confirmation is maintenance if the Seems Down fell
//     in a maintenance window, the part after it if the Down did.
func (s Span) Intervals(now time.Time) []Interval {
	end := now
	if s.Closed != nil {
		end = *s.Closed
	}
	if !end.After(s.Started) || s.ClearedAsUp() {
		return nil
	}
	class := func(maint bool, c Class) Class {
		if maint {
			return Maintenance
		}
		return c
	}
	if s.Confirmed == nil {
		return []Interval{{s.Started, end, class(s.MaintOpen, SeemsDown)}}
	}
	conf := *s.Confirmed
	if conf.Before(s.Started) {
		conf = s.Started
	}
	if conf.After(end) {
		conf = end
	}
	var out []Interval
	if conf.After(s.Started) {
		out = append(out, Interval{s.Started, conf, class(s.MaintOpen, Down)})
	}
	if end.After(conf) {
		out = append(out, Interval{conf, end, class(s.MaintConfirmed, Down)})
	}
	return out
}

// Period is a rollup granularity.
type Period string

// Periods.
const (
	Hourly Period = "hourly"
	Daily  Period = "daily"
)

// Start returns the start of the period containing t (UTC).
func (p Period) Start(t time.Time) time.Time {
	t = t.UTC()
	if p == Daily {
		return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	}
	return t.Truncate(time.Hour)
}

// Next returns the start of the period after the one starting at start.
func (p Period) Next(start time.Time) time.Time {
	if p == Daily {
		return start.AddDate(0, 0, 1)
	}
	return start.Add(time.Hour)
}

// Starts lists the starts of the periods overlapping [from, to).
func (p Period) Starts(from, to time.Time) []time.Time {
	var out []time.Time
	for s := p.Start(from); s.Before(to); s = p.Next(s) {
		out = append(out, s)
	}
	return out
}
