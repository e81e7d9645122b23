package main

import (
	"strings"
	"testing"

	"github.com/google/pprof/profile"
)

func TestSplit(t *testing.T) {
	fn := func(id uint64, name string) *profile.Function { return &profile.Function{ID: id, Name: name} }
	loc := func(id uint64, f *profile.Function) *profile.Location {
		return &profile.Location{ID: id, Line: []profile.Line{{Function: f}}}
	}
	work, check, gc := fn(1, "github.com/vigil-dev/vigil/services/checker.(*pool).work"), fn(2, "github.com/vigil-dev/vigil/services/checker/httpcheck.(*Checker).Check"), fn(3, "runtime.gcBgMarkWorker")
	lw, lc, lg := loc(1, work), loc(2, check), loc(3, gc)
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		Function:   []*profile.Function{work, check, gc},
		Location:   []*profile.Location{lw, lc, lg},
		Sample: []*profile.Sample{
			{Location: []*profile.Location{lc, lw}, Value: []int64{3, 3e9}},
			{Location: []*profile.Location{lw}, Value: []int64{1, 1e9}},
			{Location: []*profile.Location{lg}, Value: []int64{1, 1e9}},
		},
	}
	var out strings.Builder
	if err := split(&out, p, 1000); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{
		"total 5.00 s of CPU samples, 1000 checks, 5000.0 µs per check",
		"checker worker: HTTP check (httpcheck.Check)            3.00 s   60.0%",
		"checker worker: other                                   1.00 s   20.0%",
		"GC background marking                                   1.00 s   20.0%",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	if err := split(&out, &profile.Profile{SampleType: []*profile.ValueType{{Type: "alloc_space"}}}, 0); err == nil {
		t.Error("a heap profile was accepted")
	}
}
