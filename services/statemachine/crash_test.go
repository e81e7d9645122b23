package statemachine_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/statemachine"
)

// TestStateMachineProcess is the child of TestKill9: a state machine process
// against the server named by VIGIL_SM_CHILD_URL, run until it is killed.
func TestStateMachineProcess(t *testing.T) {
	url := os.Getenv("VIGIL_SM_CHILD_URL")
	if url == "" {
		t.Skip("the child process of TestKill9")
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	sm, err := statemachine.New(js, statemachine.WithRegions("local"), statemachine.WithSingleRegionAllowance(true),
		statemachine.WithLeaseTTL(2*time.Second), statemachine.WithInstanceID(os.Getenv("VIGIL_SM_CHILD_ID")),
		statemachine.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	_ = sm.Run(context.Background()) // until SIGKILL
}

// TestKill9 kills the state machine with SIGKILL again and again while it works
// through a scripted run, restarting it each time. The EVENTS stream must end
// up exactly as an uninterrupted run makes it: no event lost, none duplicated,
// the same IDs and bytes in the same order per site. An uninterrupted run is
// the Replayer: stored observations fed through a fresh state machine.
func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts a process for several seconds")
	}
	h := newHarness(t)
	rng := rand.New(rand.NewPCG(7, 9))
	var siteList []events.Site
	for i := range 12 {
		siteList = append(siteList, h.site("crash-"+string(rune('a'+i)), nil))
	}
	// Each site flaps through outages of random length.
	for step := range 60 {
		for _, s := range siteList {
			class := events.ClassOK
			if rng.IntN(3) == 0 {
				class = events.ClassHTTPStatus
			}
			h.observe(s, "local", events.PurposeScheduled, class, at(30*step), "")
		}
	}

	// The uninterrupted run.
	want := h.replayed(siteList)
	total := 0
	for _, evs := range want {
		total += len(evs)
	}
	if total < 20 {
		t.Fatalf("the script yields only %d events", total)
	}

	// The run that is killed.
	kills := 0
	for round := 0; ; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestStateMachineProcess$")
		cmd.Env = append(os.Environ(), "VIGIL_SM_CHILD_URL="+h.srv.URL(), "VIGIL_SM_CHILD_ID=kill9-child")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Let it work a random while, then kill it without warning.
		time.Sleep(time.Duration(300+rng.IntN(1200)) * time.Millisecond)
		done := h.allConsumed(siteList)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		t.Logf("kill %d: %d observations still unacknowledged", kills+1, h.pending(siteList))
		_ = cmd.Wait()
		kills++
		if done {
			break
		}
		if round > 60 {
			t.Fatal("the observations were not consumed after 60 restarts")
		}
	}
	t.Logf("killed the state machine %d times", kills)

	h.sameAsReplay(siteList, want)
}

// replayed returns the events an uninterrupted, failure-free single-region
// run derives from the stored observations of siteList, by site: the
// Replayer feeding them through a fresh state machine.
func (h *harness) replayed(siteList []events.Site) map[string][]events.SiteEvent {
	h.t.Helper()
	bySite := map[string]events.Site{}
	for _, s := range siteList {
		bySite[s.ID] = s
	}
	rep := &statemachine.Replayer{
		Env: statemachine.Env{Regions: []string{"local"}, AllowSingleRegion: true, VerifyTimeout: 90 * time.Second},
		Site: func(_ context.Context, id string) (events.Site, bool, error) {
			s, ok := bySite[id]
			return s, ok, nil
		},
	}
	want := map[string][]events.SiteEvent{}
	if err := rep.Replay(context.Background(), h.srv.JS, 1, 0, -1, func(_ events.Observation, out statemachine.Output) error {
		for _, ev := range out.Events {
			want[ev.SiteID] = append(want[ev.SiteID], ev)
		}
		return nil
	}); err != nil {
		h.t.Fatal(err)
	}
	return want
}

// sameAsReplay checks that EVENTS holds, for each site of siteList, exactly
// the events of want (replayed), byte for byte and in order.
func (h *harness) sameAsReplay(siteList []events.Site, want map[string][]events.SiteEvent) {
	h.t.Helper()
	for _, s := range siteList {
		got := h.allSiteEvents(s.ID)
		exp := want[s.ID]
		if len(got) != len(exp) {
			h.t.Errorf("site %s: %d events %s, want %d %s", s.ID, len(got), kinds(got), len(exp), kinds(exp))
			continue
		}
		for i := range exp {
			a, _ := events.Marshal(&got[i])
			b, _ := events.Marshal(&exp[i])
			if got[i].ID != exp[i].ID || !bytes.Equal(a.Data, b.Data) {
				h.t.Errorf("site %s event %d differs:\n got %s\nwant %s", s.ID, i, a.Data, b.Data)
			}
		}
	}
}

// pending counts the observations of siteList's buckets not yet acknowledged.
func (h *harness) pending(siteList []events.Site) uint64 {
	var n uint64
	seen := map[int]bool{}
	for _, s := range siteList {
		b := events.Bucket(s.ID)
		if seen[b] {
			continue
		}
		seen[b] = true
		c, err := h.srv.JS.Consumer(context.Background(), events.StreamObservations, statemachine.ConsumerName(b))
		if err != nil {
			n++ // not created yet: nothing of the bucket is consumed
			continue
		}
		info, err := c.Info(context.Background())
		if err != nil {
			n++ // unknown counts as not done
			continue
		}
		n += info.NumPending + uint64(info.NumAckPending)
	}
	return n
}

// allConsumed reports whether every site's bucket consumer has acknowledged
// all its observations.
func (h *harness) allConsumed(siteList []events.Site) bool { return h.pending(siteList) == 0 }
