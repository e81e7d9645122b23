// Command cpusplit splits a CPU profile of a bench run by owner, the way
// BENCHMARKS.md's "Where a check's CPU goes" table is made: each sample goes
// to the first owner (a rule over its stack) that matches, so the rows add up
// to the whole profile; a second table counts function families
// cumulatively (they overlap).
//
//	go run ./cmd/cpusplit --checks 500542 cpu.prof
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/google/pprof/profile"
)

// owner is a row of the partition: the first rule matching a stack wins.
type owner struct {
	name  string
	match func(stack []string) bool
}

func has(sub ...string) func([]string) bool {
	return func(stack []string) bool {
		for _, f := range stack {
			for _, s := range sub {
				if strings.Contains(f, s) {
					return true
				}
			}
		}
		return false
	}
}

func both(a, b func([]string) bool) func([]string) bool {
	return func(s []string) bool { return a(s) && b(s) }
}

var worker = has("checker.(*pool).work")

var owners = []owner{
	{"checker worker: HTTP check (httpcheck.Check)", both(worker, has("httpcheck.(*Checker).Check"))},
	{"checker worker: publish observation + ack", both(worker, has("checker.(*Checker).publishAndAck"))},
	{"checker worker: decode command (events.Decode)", both(worker, has("events.Decode"))},
	{"checker worker: logger.With", both(worker, has("slog.(*Logger).With"))},
	{"checker worker: other", worker},
	{"checker dispatcher and pool control", has("checker.(*Checker).dispatch", "checker.(*Checker).control")},
	{"HTTP client transport goroutines", has("net/http.(*Transport).dialConnFor", "net/http.(*persistConn).readLoop", "net/http.(*persistConn).writeLoop", "startDialConnForLocked")},
	{"scheduler", has("services/scheduler.")},
	// Run's ticks flush through tick (freshness or rollups), Flush is the
	// full flush called directly and on stop.
	{"projector: freshness flush (SQL)", has("freshness.(*Applier).Flush", "freshness.(*Applier).tick", "freshness.(*Applier).flush")},
	{"projector: freshness follow (read, decode, batch)", has("projections/freshness.")},
	{"projector: events and other", has("projections/", "services/readmodels.")},
	{"state machine: region watch", has("statemachine.(*regionWatch)")},
	{"state machine: observations", has("services/statemachine.")},
	{"nats-server: consumer state file writes", has("consumerFileStore).flushLoop")},
	{"nats-server: stream store (internalLoop)", has("server.(*stream).internalLoop")},
	{"nats-server: consumer delivery", has("server.(*consumer).loopAndGatherMsgs")},
	{"nats-server: acks", has("server.(*consumer).processInboundAcks")},
	{"nats-server: client read (parse, route)", has("server.(*client).readLoop")},
	{"nats-server: other", has("nats-server")},
	{"nats.go client", has("nats.go", "nats%2ego")},
	{"GC background marking", has("runtime.gcBgMarkWorker")},
	{"Go scheduler, idle", func(s []string) bool {
		for _, f := range s {
			switch f {
			case "runtime.schedule", "runtime.findRunnable", "runtime.mcall", "runtime.park_m":
				return true
			}
		}
		return false
	}},
	{"bench harness", has("tools/bench.")},
}

var families = []owner{
	{"net/http", has("net/http.")},
	{"syscalls", has("syscall.")},
	{"GC (marking, assists, sweeping)", has("runtime.gc", "gcAssist", "runtime.scan", "gcDrain", "runtime.sweep")},
	{"runtime.mallocgc", has("runtime.mallocgc")},
	{"events.Decode", has("vigil/events.Decode")},
	{"events.Marshal", has("vigil/events.Marshal")},
	{"encoding/json", has("encoding/json.")},
	{"CloudEvents SDK", has("cloudevents")},
	{"context.With*", has("context.With")},
	{"log/slog", has("log/slog.")},
	{"prometheus", has("prometheus")},
}

func main() {
	checks := flag.Float64("checks", 0, "checks in the profiled window, for µs per check")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: cpusplit [--checks N] cpu.prof")
		os.Exit(2)
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "cpusplit:", err)
		os.Exit(1)
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cpusplit:", err)
		os.Exit(1)
	}
	if err := split(os.Stdout, p, *checks); err != nil {
		fmt.Fprintln(os.Stderr, "cpusplit:", err)
		os.Exit(1)
	}
}

// split writes the two tables for p.
func split(w io.Writer, p *profile.Profile, checks float64) error {
	vi := -1
	for i, st := range p.SampleType {
		if st.Type == "cpu" {
			vi = i
		}
	}
	if vi < 0 {
		return fmt.Errorf("not a CPU profile (sample types %v)", p.SampleType)
	}
	part := make([]int64, len(owners)+1)
	fam := make([]int64, len(families))
	var total int64
	for _, s := range p.Sample {
		v := s.Value[vi]
		total += v
		var stack []string
		for _, loc := range s.Location {
			for _, ln := range loc.Line {
				if ln.Function != nil {
					stack = append(stack, ln.Function.Name)
				}
			}
		}
		k := len(owners)
		for i, o := range owners {
			if o.match(stack) {
				k = i
				break
			}
		}
		part[k] += v
		for i, fm := range families {
			if fm.match(stack) {
				fam[i] += v
			}
		}
	}
	if total == 0 {
		return fmt.Errorf("the profile has no samples")
	}
	row := func(name string, v int64) {
		sec := float64(v) / 1e9
		fmt.Fprintf(w, "%-50s %9.2f s %6.1f%%", name, sec, 100*float64(v)/float64(total))
		if checks > 0 {
			fmt.Fprintf(w, " %9.1f µs/check", sec/checks*1e6)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "total %.2f s of CPU samples", float64(total)/1e9)
	if checks > 0 {
		fmt.Fprintf(w, ", %.0f checks, %.1f µs per check", checks, float64(total)/1e9/checks*1e6)
	}
	fmt.Fprintln(w, "\n\nby owner (a partition):")
	names := append(func() []string {
		out := make([]string, len(owners))
		for i, o := range owners {
			out[i] = o.name
		}
		return out
	}(), "other")
	order := make([]int, len(part))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return part[order[a]] > part[order[b]] })
	for _, i := range order {
		row(names[i], part[i])
	}
	fmt.Fprintln(w, "\nby function family (cumulative, overlapping):")
	order = order[:len(fam)]
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return fam[order[a]] > fam[order[b]] })
	for _, i := range order {
		row(families[i].name, fam[i])
	}
	return nil
}
