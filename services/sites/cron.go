package sites

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-dev/vigil/events"
)

// Cron is a parsed five-field cron expression, evaluated in UTC:
//
//	minute  hour  day-of-month  month  day-of-week
//	0-59    0-23  1-31          1-12   0-7 (0 and 7 are Sunday)
//
// Each field is '*', a number, a range "a-b", a list "a,b-c", or any of these
// with a step "/n" ("*/15", "0-30/10"; "a/n" means "a-max/n"). Months may be
// written JAN-DEC and days of the week SUN-SAT, in any case. As in Vixie cron,
// when both day-of-month and day-of-week are restricted (neither starts with
// '*'), a day matches if either does.
//
// Schedules are in UTC so that a window means the same instant to every
// checker region and every replay, whatever the host's time zone.
type Cron struct {
	expr   string
	minute uint64 // bit i set: minute i matches
	hour   uint64
	dom    uint64 // bits 1-31
	month  uint64 // bits 1-12
	dow    uint64 // bits 0-6, Sunday is 0
	// domStar and dowStar record whether the day fields started with '*',
	// which decides how they combine.
	domStar, dowStar bool
}

type cronField struct {
	name     string
	min, max int
	names    map[string]int
}

var (
	monthNames = map[string]int{"JAN": 1, "FEB": 2, "MAR": 3, "APR": 4, "MAY": 5, "JUN": 6, "JUL": 7, "AUG": 8, "SEP": 9, "OCT": 10, "NOV": 11, "DEC": 12}
	dayNames   = map[string]int{"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}

	cronFields = [5]cronField{
		{name: "minute", min: 0, max: 59},
		{name: "hour", min: 0, max: 23},
		{name: "day of month", min: 1, max: 31},
		{name: "month", min: 1, max: 12, names: monthNames},
		{name: "day of week", min: 0, max: 7, names: dayNames},
	}
)

// daysIn is the most days each month can have (February in a leap year).
var daysIn = [13]int{0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}

// ParseCron parses a five-field cron expression. It refuses an expression that
// can never match, such as "0 0 30 2 *", since a window that never opens is a
// mistake the operator wants to hear about.
func ParseCron(expr string) (*Cron, error) {
	fields := strings.Fields(expr)
	if len(fields) != 5 {
		return nil, fmt.Errorf("%q has %d fields, want 5: minute hour day-of-month month day-of-week (UTC)", expr, len(fields))
	}
	c := &Cron{expr: strings.Join(fields, " ")}
	sets := [5]*uint64{&c.minute, &c.hour, &c.dom, &c.month, &c.dow}
	for i, f := range fields {
		bits, err := parseCronField(f, cronFields[i])
		if err != nil {
			return nil, fmt.Errorf("%q: %s field %q: %w", c.expr, cronFields[i].name, f, err)
		}
		*sets[i] = bits
	}
	// Day of week 7 is Sunday, like 0.
	if c.dow&(1<<7) != 0 {
		c.dow = c.dow&^(1<<7) | 1
	}
	c.domStar = strings.HasPrefix(fields[2], "*")
	c.dowStar = strings.HasPrefix(fields[4], "*")
	if !c.dowStar && c.domStar {
		// Any weekday occurs in every month.
		return c, nil
	}
	if c.dowStar || c.domStar {
		// Day of month alone decides: it must fit in some selected month.
		for m := 1; m <= 12; m++ {
			if c.month&(1<<m) != 0 && c.dom&((1<<(daysIn[m]+1))-1) != 0 {
				return c, nil
			}
		}
		return nil, fmt.Errorf("%q never matches: no selected month has the selected days of month", c.expr)
	}
	return c, nil
}

// parseCronField returns the set of values a field selects, as a bit set.
func parseCronField(s string, f cronField) (uint64, error) {
	var bits uint64
	for part := range strings.SplitSeq(s, ",") {
		if part == "" {
			return 0, errors.New("empty list element")
		}
		rng, stepText, hasStep := strings.Cut(part, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepText)
			if err != nil || n < 1 {
				return 0, fmt.Errorf("step %q must be a positive number", stepText)
			}
			if n > f.max {
				return 0, fmt.Errorf("step %d is larger than the field's range %d-%d", n, f.min, f.max)
			}
			step = n
		}
		lo, hi := f.min, f.max
		switch {
		case rng == "*":
		case strings.Contains(rng, "-"):
			a, b, _ := strings.Cut(rng, "-")
			var err error
			if lo, err = cronValue(a, f); err != nil {
				return 0, err
			}
			if hi, err = cronValue(b, f); err != nil {
				return 0, err
			}
			if lo > hi {
				return 0, fmt.Errorf("range %s runs backwards", rng)
			}
		default:
			v, err := cronValue(rng, f)
			if err != nil {
				return 0, err
			}
			lo = v
			if !hasStep {
				hi = v
			}
		}
		for v := lo; v <= hi; v += step {
			bits |= 1 << v
		}
	}
	return bits, nil
}

func cronValue(s string, f cronField) (int, error) {
	if v, ok := f.names[strings.ToUpper(s)]; ok {
		return v, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		if f.names != nil {
			return 0, fmt.Errorf("%q is not a number or a name", s)
		}
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if v < f.min || v > f.max {
		return 0, fmt.Errorf("%d is out of range %d-%d", v, f.min, f.max)
	}
	return v, nil
}

// String returns the expression with its fields separated by single spaces.
func (c *Cron) String() string { return c.expr }

// cronHorizon bounds Next's search. Every expression ParseCron accepts
// matches at least once in any eight consecutive years (February 29 skips at
// most one leap year, as in 2100).
const cronHorizon = 9

// Next returns the first time after after (strictly) at which the expression
// matches: a whole minute, in UTC. It returns the zero Time only if there is
// no match within nine years, which ParseCron's checks rule out.
func (c *Cron) Next(after time.Time) time.Time {
	t := after.UTC().Truncate(time.Minute).Add(time.Minute)
	limit := t.Year() + cronHorizon
	for t.Year() <= limit {
		if c.month&(1<<int(t.Month())) == 0 {
			t = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
			continue
		}
		if !c.dayMatches(t) {
			t = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
			continue
		}
		if c.hour&(1<<t.Hour()) == 0 {
			t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour()+1, 0, 0, 0, time.UTC)
			continue
		}
		if c.minute&(1<<t.Minute()) == 0 {
			t = t.Add(time.Minute)
			continue
		}
		return t
	}
	return time.Time{}
}

func (c *Cron) dayMatches(t time.Time) bool {
	dom := c.dom&(1<<t.Day()) != 0
	dow := c.dow&(1<<int(t.Weekday())) != 0
	if c.domStar || c.dowStar {
		return dom && dow
	}
	return dom || dow
}

// Window is a compiled maintenance window: a one-off period, or a recurring
// one that opens at each match of a cron expression. Each period includes its
// start and excludes its end.
type Window struct {
	// Start is the start of a one-off window; zero for a recurring one.
	Start time.Time
	// Cron is the schedule of a recurring window; nil for a one-off one.
	Cron     *Cron
	Duration time.Duration
}

// NewWindow compiles a window of a site's configuration.
func NewWindow(w events.MaintenanceWindow) (Window, error) {
	switch {
	case w.Start != nil && w.Cron != "":
		return Window{}, errors.New("maintenance window sets both start and cron")
	case w.Start != nil:
		return Window{Start: w.Start.UTC(), Duration: w.Duration.Std()}, nil
	case w.Cron != "":
		c, err := ParseCron(w.Cron)
		if err != nil {
			return Window{}, err
		}
		return Window{Cron: c, Duration: w.Duration.Std()}, nil
	}
	return Window{}, errors.New("maintenance window sets neither start nor cron")
}

// Active reports whether t falls in the window: in [start, start+duration)
// for the one-off start or for some match of the cron expression.
func (w Window) Active(t time.Time) bool {
	if w.Duration <= 0 {
		return false
	}
	if w.Cron == nil {
		return !t.Before(w.Start) && t.Before(w.Start.Add(w.Duration))
	}
	// The first match after t-duration is the only candidate: an earlier one
	// has ended by t, and a later one has not begun.
	start := w.Cron.Next(t.Add(-w.Duration))
	return !start.IsZero() && !start.After(t)
}

// Next returns the start of the first period that begins after after, and
// false if there is none (a one-off window that has begun).
func (w Window) Next(after time.Time) (time.Time, bool) {
	if w.Cron == nil {
		return w.Start, w.Start.After(after)
	}
	t := w.Cron.Next(after)
	return t, !t.IsZero()
}

// Windows is a site's set of maintenance windows.
type Windows []Window

// CompileWindows compiles every window of a site's configuration.
func CompileWindows(in []events.MaintenanceWindow) (Windows, error) {
	out := make(Windows, 0, len(in))
	for i, w := range in {
		c, err := NewWindow(w)
		if err != nil {
			return nil, fmt.Errorf("maintenance[%d]: %w", i, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// Active reports whether t falls in any of the windows.
func (ws Windows) Active(t time.Time) bool {
	for _, w := range ws {
		if w.Active(t) {
			return true
		}
	}
	return false
}
