package uptime

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/events"
)

var h0 = time.Date(2026, 5, 28, 10, 0, 0, 0, time.UTC)

func m(min float64) time.Time   { return h0.Add(time.Duration(min * float64(time.Minute))) }
func tp(t time.Time) *time.Time { return &t }

func TestAccountAcceptanceValue(t *testing.T) {
	sp := Span{Started: m(10), Confirmed: tp(m(12)), Closed: tp(m(16)), Resolution: events.ReasonRecovered}
	ivs := append(sp.Intervals(m(60)), Interval{m(30), m(32), Unknown})
	s := Account(h0, m(60), ivs)
	want := Seconds{Up: 3120, Down: 360, Unknown: 120}
	if s != want {
		t.Fatalf("got %+v, want %+v", s, want)
	}
	if got := fmt.Sprintf("%.3f", s.Percent()); got != "89.655" {
		t.Fatalf("percent %s", got)
	}
}

func TestSpanRules(t *testing.T) {
	cases := []struct {
		name string
		sp   Span
		want Seconds
	}{
		{"probe cleared counts as up", Span{Started: m(10), Closed: tp(m(11)), Resolution: events.ReasonProbeCleared}, Seconds{Up: 3600}},
		{"false alarm counts as up", Span{Started: m(10), Closed: tp(m(14)), Resolution: events.ReasonFalseAlarm}, Seconds{Up: 3600}},
		{"closed by hand unconfirmed is seems_down", Span{Started: m(10), Closed: tp(m(15)), Resolution: events.ReasonManual}, Seconds{Up: 3300, SeemsDown: 300}},
		{"open unconfirmed runs until now as seems_down", Span{Started: m(50)}, Seconds{Up: 3000, SeemsDown: 600}},
		{"open confirmed is down from the first failure", Span{Started: m(50), Confirmed: tp(m(55))}, Seconds{Up: 3000, Down: 600}},
		{"maintenance window before confirmation", Span{Started: m(0), Confirmed: tp(m(10)), Closed: tp(m(30)), MaintOpen: true}, Seconds{Up: 1800, Maintenance: 600, Down: 1200}},
		{"maintenance throughout", Span{Started: m(0), Confirmed: tp(m(10)), Closed: tp(m(30)), MaintOpen: true, MaintConfirmed: true}, Seconds{Up: 1800, Maintenance: 1800}},
		{"spans the period", Span{Started: m(-30), Confirmed: tp(m(-20)), Closed: tp(m(90))}, Seconds{Down: 3600}},
	}
	for _, c := range cases {
		got := Account(h0, m(60), c.sp.Intervals(m(60)))
		if got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestAccountPrecedenceAndRounding(t *testing.T) {
	ivs := []Interval{
		{m(0), m(20), Unknown},
		{m(10), m(30), Down},
		{m(25), m(35), Maintenance},
		{m(40), m(40.5), SeemsDown},
	}
	got := Account(h0, m(60), ivs)
	want := Seconds{Unknown: 600, Down: 900, Maintenance: 600, SeemsDown: 30, Up: 1470}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if got.Total() != 3600 {
		t.Fatal(got.Total())
	}
	// Parts always add up, whatever the milliseconds.
	odd := Account(h0, h0.Add(59*time.Minute+59999*time.Millisecond), []Interval{{h0.Add(1499 * time.Millisecond), h0.Add(2 * time.Second), Down}})
	if odd.Total() != 3600 || odd.Down != 1 {
		t.Fatalf("rounding: %+v", odd)
	}
	if !math.IsNaN((Seconds{Unknown: 5}).Percent()) {
		t.Fatal("no known time must give NaN")
	}
}

func TestPeriods(t *testing.T) {
	from := time.Date(2026, 5, 28, 22, 30, 0, 0, time.UTC)
	to := from.Add(3 * time.Hour)
	if got := Hourly.Starts(from, to); len(got) != 4 || !got[0].Equal(from.Truncate(time.Hour)) {
		t.Fatalf("hours %v", got)
	}
	if got := Daily.Starts(from, to); len(got) != 2 || got[1].Day() != 29 {
		t.Fatalf("days %v", got)
	}
}
