package sites

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/events"
)

func utc(s string) time.Time {
	t, err := time.Parse("2006-01-02 15:04:05", s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestCronNext(t *testing.T) {
	tests := []struct {
		expr, after, want string
	}{
		// 2026-03-04 is a Wednesday; the next Sunday is the 8th.
		{"0 3 * * SUN", "2026-03-04 10:00:00", "2026-03-08 03:00:00"},
		{"0 3 * * sun", "2026-03-08 02:59:59", "2026-03-08 03:00:00"},
		{"0 3 * * SUN", "2026-03-08 03:00:00", "2026-03-15 03:00:00"},
		{"0 3 * * 7", "2026-03-04 10:00:00", "2026-03-08 03:00:00"},
		{"*/15 * * * *", "2026-03-04 10:07:30", "2026-03-04 10:15:00"},
		{"*/15 * * * *", "2026-03-04 10:15:00", "2026-03-04 10:30:00"},
		{"*/15 * * * *", "2026-12-31 23:50:00", "2027-01-01 00:00:00"},
		{"0 0 1 * *", "2026-01-31 12:00:00", "2026-02-01 00:00:00"},
		{"30 2 31 * *", "2026-04-01 00:00:00", "2026-05-31 02:30:00"},
		{"0 0 1 1 *", "2026-06-01 00:00:00", "2027-01-01 00:00:00"},
		{"0 0 29 2 *", "2026-03-01 00:00:00", "2028-02-29 00:00:00"},
		// Friday evening to Monday morning.
		{"0 9 * * MON-FRI", "2026-03-06 10:00:00", "2026-03-09 09:00:00"},
		// Both day fields restricted: either matches (Friday the 20th, then the 13th of April).
		{"0 0 13 * FRI", "2026-03-14 00:00:00", "2026-03-20 00:00:00"},
		{"0 0 13 * FRI", "2026-04-10 00:00:00", "2026-04-13 00:00:00"},
		{"5,10-12 8 * JAN,jul *", "2026-01-31 08:11:00", "2026-01-31 08:12:00"},
		{"5,10-12 8 * JAN,jul *", "2026-01-31 08:12:00", "2026-07-01 08:05:00"},
		{"0-30/10 */6 * * *", "2026-03-04 06:31:00", "2026-03-04 12:00:00"},
		{"15/20 * * * *", "2026-03-04 06:36:00", "2026-03-04 06:55:00"},
		{"0 0 * NOV-DEC *", "2026-03-01 00:00:00", "2026-11-01 00:00:00"},
	}
	for _, tt := range tests {
		c, err := ParseCron(tt.expr)
		if err != nil {
			t.Errorf("%q: %v", tt.expr, err)
			continue
		}
		if got := c.Next(utc(tt.after)); !got.Equal(utc(tt.want)) {
			t.Errorf("%q.Next(%s) = %s, want %s", tt.expr, tt.after, got.Format(time.DateTime), tt.want)
		}
	}
}

// Next agrees with a minute-by-minute search on random expressions.
func TestCronNextMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(lo, hi int) string {
		switch rng.IntN(5) {
		case 0:
			return "*"
		case 1:
			return "*/" + itoa(1+rng.IntN(hi-lo))
		case 2:
			a := lo + rng.IntN(hi-lo+1)
			b := a + rng.IntN(hi-a+1)
			return itoa(a) + "-" + itoa(b)
		case 3:
			return itoa(lo+rng.IntN(hi-lo+1)) + "," + itoa(lo+rng.IntN(hi-lo+1))
		}
		return itoa(lo + rng.IntN(hi-lo+1))
	}
	checked := 0
	for checked < 300 {
		expr := strings.Join([]string{pick(0, 59), pick(0, 23), pick(1, 31), pick(1, 12), pick(0, 6)}, " ")
		c, err := ParseCron(expr)
		if err != nil {
			continue // an impossible date such as 31 in February alone
		}
		after := time.Date(2026, time.Month(1+rng.IntN(12)), 1+rng.IntN(28), rng.IntN(24), rng.IntN(60), rng.IntN(60), 0, time.UTC)
		want := bruteNext(c, after, 3*366*24*60)
		if want.IsZero() {
			continue
		}
		if got := c.Next(after); !got.Equal(want) {
			t.Fatalf("%q.Next(%s) = %s, brute force says %s", expr, after, got, want)
		}
		checked++
	}
}

func bruteNext(c *Cron, after time.Time, limit int) time.Time {
	t := after.Truncate(time.Minute)
	for range limit {
		t = t.Add(time.Minute)
		if c.month&(1<<int(t.Month())) != 0 && c.dayMatches(t) && c.hour&(1<<t.Hour()) != 0 && c.minute&(1<<t.Minute()) != 0 {
			return t
		}
	}
	return time.Time{}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestCronNextIsUTC(t *testing.T) {
	c, _ := ParseCron("0 3 * * *")
	tokyo := time.FixedZone("JST", 9*3600)
	// 2026-03-04 11:00 JST is 02:00 UTC: the next 03:00 UTC is an hour later.
	got := c.Next(time.Date(2026, 3, 4, 11, 0, 0, 0, tokyo))
	if !got.Equal(utc("2026-03-04 03:00:00")) || got.Location() != time.UTC {
		t.Errorf("Next = %s", got)
	}
}

func TestCronRefusesBadExpressions(t *testing.T) {
	tests := []struct{ expr, want string }{
		{"", "has 0 fields, want 5"},
		{"* * * *", "has 4 fields"},
		{"* * * * * *", "has 6 fields"},
		{"60 * * * *", "minute field"},
		{"* 24 * * *", "hour field"},
		{"* * 0 * *", "day of month field"},
		{"* * 32 * *", "out of range 1-31"},
		{"* * * 13 *", "month field"},
		{"* * * * 8", "day of week field"},
		{"5-1 * * * *", "runs backwards"},
		{"0 0 * DEC-FEB *", "runs backwards"},
		{"*/0 * * * *", "step"},
		{"*/x * * * *", "step"},
		{"*/61 * * * *", "larger than"},
		{"a * * * *", `"a" is not a number`},
		{"* * * FOO *", `"FOO" is not a number or a name`},
		{"* * * * MON-FOO", "not a number or a name"},
		{"1,,2 * * * *", "empty list element"},
		{"0 0 30 2 *", "never matches"},
		{"0 0 31 4,6,9,11 *", "never matches"},
		{"- * * * *", "not a number"},
	}
	for _, tt := range tests {
		_, err := ParseCron(tt.expr)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseCron(%q) = %v, want an error containing %q", tt.expr, err, tt.want)
		}
	}
}

func TestWindowActive(t *testing.T) {
	start := utc("2026-12-01 02:00:00")
	oneOff, err := NewWindow(events.MaintenanceWindow{Start: &start, Duration: dur("1h")})
	if err != nil {
		t.Fatal(err)
	}
	weekly, err := NewWindow(events.MaintenanceWindow{Cron: "0 3 * * SUN", Duration: dur("30m")})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		w    Window
		at   string
		want bool
	}{
		{oneOff, "2026-12-01 01:59:59", false},
		{oneOff, "2026-12-01 02:00:00", true},
		{oneOff, "2026-12-01 02:59:59", true},
		{oneOff, "2026-12-01 03:00:00", false},
		{weekly, "2026-03-08 02:59:59", false},
		{weekly, "2026-03-08 03:00:00", true},
		{weekly, "2026-03-08 03:29:59", true},
		{weekly, "2026-03-08 03:30:00", false},
		{weekly, "2026-03-09 03:10:00", false}, // a Monday
	}
	for _, tt := range tests {
		if got := tt.w.Active(utc(tt.at)); got != tt.want {
			t.Errorf("window %+v Active(%s) = %v", tt.w, tt.at, got)
		}
	}
	// A window longer than its period is active throughout.
	daily, _ := NewWindow(events.MaintenanceWindow{Cron: "0 0 * * *", Duration: dur("48h")})
	if !daily.Active(utc("2026-03-08 23:59:00")) {
		t.Error("overlapping window inactive")
	}
	ws, err := CompileWindows([]events.MaintenanceWindow{{Start: &start, Duration: dur("1h")}, {Cron: "0 3 * * SUN", Duration: dur("30m")}})
	if err != nil {
		t.Fatal(err)
	}
	if !ws.Active(utc("2026-12-01 02:30:00")) || !ws.Active(utc("2026-03-08 03:05:00")) || ws.Active(utc("2026-03-08 04:00:00")) {
		t.Error("Windows.Active wrong")
	}
	if next, ok := weekly.Next(utc("2026-03-04 00:00:00")); !ok || !next.Equal(utc("2026-03-08 03:00:00")) {
		t.Errorf("weekly.Next = %s %v", next, ok)
	}
	if _, ok := oneOff.Next(utc("2026-12-01 02:00:00")); ok {
		t.Error("a one-off window that has begun has no next start")
	}
	if _, err := NewWindow(events.MaintenanceWindow{Cron: "bad", Duration: dur("1h")}); err == nil {
		t.Error("bad cron compiled")
	}
}
