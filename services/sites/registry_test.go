package sites

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/internal/natstest"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// lastSeq returns the last sequence of SITES.
func lastSeq(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	st, err := js.Stream(context.Background(), events.StreamSites)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// subjectCount returns how many messages SITES holds on a site's subject.
func subjectCount(t *testing.T, js jetstream.JetStream, id string) uint64 {
	t.Helper()
	st, err := js.Stream(context.Background(), events.StreamSites)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background(), jetstream.WithSubjectFilter(events.SiteSubject(id)))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[events.SiteSubject(id)]
}

func TestRegistryRoundTrip(t *testing.T) {
	s := natstest.Start(t, true)
	ctx := testCtx(t)
	clock := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	reg := NewRegistry(s.JS, WithActor("test"), WithNow(func() time.Time { return clock }))

	if sites, err := reg.List(ctx); err != nil || len(sites) != 0 {
		t.Fatalf("List of an empty stream = %v, %v", sites, err)
	}
	if _, err := reg.Get(ctx, "shop-eu"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a missing site: %v", err)
	}

	created, err := reg.Create(ctx, events.Site{ID: "shop-eu", URL: "https://shop.example.com/health", Interval: dur("1m")})
	if err != nil {
		t.Fatal(err)
	}
	if created.Change != events.ChangeCreated || created.Paused || created.Seq == 0 || created.Site.Timeout != dur("10s") || created.Actor != "test" {
		t.Errorf("created = %+v", created)
	}
	got, err := reg.Get(ctx, "shop-eu")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, created) {
		t.Errorf("Get =\n%+v\nCreate returned\n%+v", got, created)
	}
	if _, err := reg.Create(ctx, events.Site{ID: "shop-eu", URL: "https://other.example/"}); !errors.Is(err, ErrExists) {
		t.Errorf("Create of an existing ID: %v", err)
	}

	// An ID is assigned when none is given.
	blog, err := reg.Create(ctx, events.Site{URL: "https://blog.example.com/"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.IDTime(blog.Site.ID); err != nil {
		t.Errorf("assigned ID %q is not a ULID: %v", blog.Site.ID, err)
	}

	clock = clock.Add(time.Minute)
	upd := created.Site
	upd.Interval = dur("2m")
	updated, changed, err := reg.Update(ctx, upd)
	if err != nil || !changed || updated.Change != events.ChangeUpdated || updated.Site.Interval != dur("2m") {
		t.Fatalf("Update = %+v, %v, %v", updated, changed, err)
	}
	// The same configuration again, spelled differently, publishes nothing.
	before := lastSeq(t, s.JS)
	upd.Method = "get"
	if _, changed, err := reg.Update(ctx, upd); err != nil || changed {
		t.Errorf("no-op Update: changed %v, %v", changed, err)
	}

	paused, changed, err := reg.Pause(ctx, "shop-eu")
	if err != nil || !changed || !paused.Paused || paused.Change != events.ChangePaused || paused.Site.Interval != dur("2m") {
		t.Fatalf("Pause = %+v, %v, %v", paused, changed, err)
	}
	if _, changed, err := reg.Pause(ctx, "shop-eu"); err != nil || changed {
		t.Errorf("second Pause: changed %v, %v", changed, err)
	}
	// Updates keep the paused flag.
	upd.Interval = dur("3m")
	if cur, _, err := reg.Update(ctx, upd); err != nil || !cur.Paused {
		t.Errorf("Update of a paused site = %+v, %v", cur, err)
	}
	resumed, changed, err := reg.Resume(ctx, "shop-eu")
	if err != nil || !changed || resumed.Paused || resumed.Change != events.ChangeResumed {
		t.Fatalf("Resume = %+v, %v, %v", resumed, changed, err)
	}
	if _, changed, err := reg.Resume(ctx, "shop-eu"); err != nil || changed {
		t.Errorf("second Resume: changed %v, %v", changed, err)
	}

	deleted, changed, err := reg.Delete(ctx, "shop-eu")
	if err != nil || !changed || !deleted.Deleted || deleted.Site.Interval != dur("3m") {
		t.Fatalf("Delete = %+v, %v, %v", deleted, changed, err)
	}
	if _, changed, err := reg.Delete(ctx, "shop-eu"); err != nil || changed {
		t.Errorf("second Delete: changed %v, %v", changed, err)
	}
	if cur, err := reg.Get(ctx, "shop-eu"); !errors.Is(err, ErrNotFound) || !cur.Deleted {
		t.Errorf("Get of a deleted site = %+v, %v", cur, err)
	}
	if _, _, err := reg.Pause(ctx, "shop-eu"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Pause of a deleted site: %v", err)
	}
	if _, _, err := reg.Delete(ctx, "never-was"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete of a missing site: %v", err)
	}

	// SITES holds the whole history; the last message is the current state.
	// created, updated, paused, updated, resumed, deleted:
	if n := subjectCount(t, s.JS, "shop-eu"); n != 6 {
		t.Errorf("%d messages on the subject, want 6", n)
	}
	hist, err := reg.History(ctx, "shop-eu")
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, h := range hist {
		kinds = append(kinds, string(h.Change))
	}
	if strings.Join(kinds, ",") != "created,updated,paused,updated,resumed,deleted" {
		t.Errorf("history %v", kinds)
	}
	if hist[len(hist)-1].Seq <= before {
		t.Error("history out of order")
	}

	list, err := reg.List(ctx)
	if err != nil || len(list) != 1 || list[0].Site.ID != blog.Site.ID {
		t.Errorf("List = %+v, %v; want only the blog", list, err)
	}
	all, err := reg.List(ctx, IncludeDeleted())
	if err != nil || len(all) != 2 || !all[1].Deleted && !all[0].Deleted {
		t.Errorf("List(IncludeDeleted) = %+v, %v", all, err)
	}

	// A deleted ID can be created again; it starts afresh.
	again, err := reg.Create(ctx, events.Site{ID: "shop-eu", URL: "https://shop.example.com/v2"})
	if err != nil || again.Change != events.ChangeCreated || again.Deleted || again.Paused {
		t.Fatalf("re-Create = %+v, %v", again, err)
	}
	if n := subjectCount(t, s.JS, "shop-eu"); n != 7 {
		t.Errorf("%d messages after re-creating, want 7", n)
	}

	// What is on the wire is a CloudEvent of the site's type, with the
	// change ID as Msg-Id.
	st, _ := s.JS.Stream(ctx, events.StreamSites)
	raw, err := st.GetLastMsgForSubject(ctx, events.SiteSubject("shop-eu"))
	if err != nil {
		t.Fatal(err)
	}
	var ch events.SiteChange
	ce, err := events.Decode(raw.Header, raw.Data, &ch)
	if err != nil {
		t.Fatal(err)
	}
	if ce.Type() != events.TypeSiteCreated || raw.Header.Get(nats.MsgIdHdr) != ch.ID || ch.Actor != "test" || !ch.At.Equal(clock) {
		t.Errorf("message: type %s msg-id %s change %+v", ce.Type(), raw.Header.Get(nats.MsgIdHdr), ch)
	}
}

func TestRegistryRefusesInvalidAndPublishesNothing(t *testing.T) {
	s := natstest.Start(t, true)
	ctx := testCtx(t)
	reg := NewRegistry(s.JS)
	_, err := reg.Create(ctx, events.Site{ID: "x", URL: "https://a.example/", Interval: dur("1s")})
	if !IsInvalid(err) || !strings.Contains(err.Error(), `site "x": interval`) {
		t.Errorf("Create: %v", err)
	}
	if _, err := reg.Get(ctx, "bad.id"); !IsInvalid(err) {
		t.Errorf("Get of an invalid ID: %v", err)
	}
	if _, _, err := reg.Update(ctx, events.Site{URL: "https://a.example/"}); !IsInvalid(err) {
		t.Errorf("Update without ID: %v", err)
	}
	if n := lastSeq(t, s.JS); n != 0 {
		t.Errorf("SITES at sequence %d", n)
	}
}

// Two writers working from the same state: the second is refused, by the
// server, instead of overwriting the first's change.
func TestRegistryOptimisticConcurrency(t *testing.T) {
	s := natstest.Start(t, true)
	ctx := testCtx(t)
	_, js2 := s.Connect(t, "second")
	a, b := NewRegistry(s.JS), NewRegistry(js2)
	if _, err := a.Create(ctx, events.Site{ID: "shop", URL: "https://shop.example/"}); err != nil {
		t.Fatal(err)
	}
	stateA, err := a.Get(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	stateB, err := b.Get(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}

	editA := stateA.Site
	editA.Interval = dur("1m")
	if _, _, err := a.Update(ctx, editA, IfSeq(stateA.Seq)); err != nil {
		t.Fatal(err)
	}
	editB := stateB.Site
	editB.Interval = dur("2m")
	if _, _, err := b.Update(ctx, editB, IfSeq(stateB.Seq)); !errors.Is(err, ErrConflict) {
		t.Fatalf("second Update from the stale state: %v, want ErrConflict", err)
	}
	// The server itself refuses a change based on a stale sequence, even if
	// the writer did not notice (the race between its read and its write).
	before := lastSeq(t, s.JS)
	if _, err := b.publish(ctx, events.ChangeUpdated, editB, false, stateB.Seq); !errors.Is(err, ErrConflict) {
		t.Fatalf("publish at a stale sequence: %v, want ErrConflict", err)
	}
	// And a create of a site that exists, based on "no message yet".
	if _, err := b.publish(ctx, events.ChangeCreated, editB, false, 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("publish of a create over an existing site: %v, want ErrConflict", err)
	}
	if lastSeq(t, s.JS) != before {
		t.Error("a refused change was stored")
	}
	cur, _ := a.Get(ctx, "shop")
	if cur.Site.Interval != dur("1m") {
		t.Errorf("interval %s; the first writer's change was lost", cur.Site.Interval)
	}
	if _, _, err := b.Pause(ctx, "shop", IfSeq(stateB.Seq)); !errors.Is(err, ErrConflict) {
		t.Errorf("Pause from the stale state: %v", err)
	}
}

// Many writers racing on one site: every change is either stored or refused
// with ErrConflict, and none is lost silently.
func TestRegistryConcurrentUpdates(t *testing.T) {
	s := natstest.Start(t, true)
	ctx := testCtx(t)
	reg := NewRegistry(s.JS)
	if _, err := reg.Create(ctx, events.Site{ID: "shop", URL: "https://shop.example/"}); err != nil {
		t.Fatal(err)
	}
	const writers = 8
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		stored    int
		conflicts int
	)
	for i := range writers {
		_, js := s.Connect(t, "writer")
		r := NewRegistry(js)
		wg.Add(1)
		go func() {
			defer wg.Done()
			site := events.Site{ID: "shop", URL: "https://shop.example/", Interval: events.Duration(time.Duration(i+1) * time.Minute)}
			_, changed, err := r.Update(ctx, site)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, ErrConflict):
				conflicts++
			case err != nil:
				t.Error(err)
			case changed:
				stored++
			}
		}()
	}
	wg.Wait()
	if got := subjectCount(t, s.JS, "shop"); got != uint64(1+stored) || stored+conflicts != writers {
		t.Errorf("%d stored, %d conflicts, %d messages", stored, conflicts, got)
	}
}

func TestRegistryListSkipsCorruptMessages(t *testing.T) {
	s := natstest.Start(t, true)
	ctx := testCtx(t)
	reg := NewRegistry(s.JS)
	for _, id := range []string{"a", "b"} {
		if _, err := reg.Create(ctx, events.Site{ID: id, URL: "https://" + id + ".example/"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.JS.Publish(ctx, events.SiteSubject("c"), []byte("not a cloudevent")); err != nil {
		t.Fatal(err)
	}
	list, err := reg.List(ctx)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), events.SiteSubject("c")) {
		t.Errorf("List error %v, want ErrCorrupt naming the subject", err)
	}
	if len(list) != 2 {
		t.Errorf("List = %+v; want the two readable sites", list)
	}
}

func TestRegistryWithoutStream(t *testing.T) {
	s := natstest.Start(t, false)
	reg := NewRegistry(s.JS)
	_, err := reg.List(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "vigil streams apply") {
		t.Errorf("List without SITES: %v", err)
	}
}

func TestPlanAndApply(t *testing.T) {
	s := natstest.Start(t, true)
	ctx := testCtx(t)
	reg := NewRegistry(s.JS, WithActor("apply:test"))
	file := []events.Site{
		{ID: "shop", URL: "https://shop.example/", Interval: dur("1m")},
		{URL: "https://blog.example/"},
		{ID: "api", URL: "https://api.example/health", Keywords: []string{"ok"}},
	}
	p, err := reg.Plan(ctx, file, false)
	if err != nil {
		t.Fatal(err)
	}
	if p.Count(ActionCreate) != 3 || p.Empty() {
		t.Fatalf("first plan: %+v", p)
	}
	res, err := reg.ApplyPlan(ctx, p)
	if err != nil || res.Created != 3 || len(res.Published) != 3 {
		t.Fatalf("apply: %+v, %v", res, err)
	}
	blogID := res.Published[1].Site.ID

	// The same file again: the ID-less site is matched by its URL and
	// nothing is published.
	seq := lastSeq(t, s.JS)
	p, err = reg.Plan(ctx, file, false)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Empty() || p.Count(ActionUnchanged) != 3 || !p.Steps[1].MatchedByURL || p.Steps[1].Site.ID != blogID {
		t.Fatalf("second plan: %+v", p)
	}
	if res, err := reg.ApplyPlan(ctx, p); err != nil || res.Unchanged != 3 || lastSeq(t, s.JS) != seq {
		t.Fatalf("second apply: %+v, %v", res, err)
	}

	// A paused site stays paused through an update.
	if _, _, err := reg.Pause(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	file[0].Interval = dur("2m")
	file[0].Labels = map[string]string{"team": "web"}
	p, err = reg.Plan(ctx, file[:2], true)
	if err != nil {
		t.Fatal(err)
	}
	if p.Count(ActionUpdate) != 1 || p.Count(ActionDelete) != 1 || p.Count(ActionUnchanged) != 1 {
		t.Fatalf("third plan: %+v", p)
	}
	if ch := p.Steps[0].Changed; !reflect.DeepEqual(ch, []string{"interval", "labels"}) {
		t.Errorf("changed fields %v", ch)
	}
	if del := p.Steps[2]; del.Action != ActionDelete || del.Site.ID != "api" {
		t.Errorf("delete step %+v", del)
	}
	res, err = reg.ApplyPlan(ctx, p)
	if err != nil || res.Updated != 1 || res.Deleted != 1 {
		t.Fatalf("third apply: %+v, %v", res, err)
	}
	if cur, _ := reg.Get(ctx, "shop"); !cur.Paused || cur.Site.Interval != dur("2m") {
		t.Errorf("shop after apply: %+v", cur)
	}
	if _, err := reg.Get(ctx, "api"); !errors.Is(err, ErrNotFound) {
		t.Errorf("api not deleted: %v", err)
	}

	// Naming the deleted site again re-creates it.
	p, err = reg.Plan(ctx, file, false)
	if err != nil {
		t.Fatal(err)
	}
	if st := p.Steps[2]; st.Action != ActionCreate || !st.Recreate || st.Seq == 0 {
		t.Errorf("re-create step %+v", st)
	}
}

func TestPlanRefusesWholeFile(t *testing.T) {
	s := natstest.Start(t, true)
	ctx := testCtx(t)
	reg := NewRegistry(s.JS)
	_, err := reg.Plan(ctx, []events.Site{
		{ID: "good", URL: "https://a.example/"},
		{ID: "bad", URL: "https://b.example/", Timeout: dur("2m")},
	}, true)
	if !IsInvalid(err) || !strings.Contains(err.Error(), `site "bad" (sites[1]): timeout`) {
		t.Errorf("Plan: %v", err)
	}

	// Two ID-less sites with one URL could never be matched again.
	_, err = reg.Plan(ctx, []events.Site{{URL: "https://a.example/"}, {URL: "https://a.example/"}}, false)
	if !IsInvalid(err) || !strings.Contains(err.Error(), "sites[1]: id:") {
		t.Errorf("Plan with two ID-less sites of one URL: %v", err)
	}

	// Nor can an ID-less site whose URL several existing sites share.
	for _, id := range []string{"one", "two"} {
		if _, err := reg.Create(ctx, events.Site{ID: id, URL: "https://same.example/"}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = reg.Plan(ctx, []events.Site{{URL: "https://same.example/"}}, false)
	if !IsInvalid(err) || !strings.Contains(err.Error(), "2 existing sites have this URL (one, two)") {
		t.Errorf("ambiguous URL: %v", err)
	}
	// Naming one of them by ID leaves the other to match.
	p, err := reg.Plan(ctx, []events.Site{{ID: "one", URL: "https://same.example/"}, {URL: "https://same.example/"}}, false)
	if err != nil || p.Steps[1].Site.ID != "two" || !p.Empty() {
		t.Errorf("plan %+v, %v", p, err)
	}
}

// A plan made from a state that changed before it was applied is refused.
func TestApplyPlanConflict(t *testing.T) {
	s := natstest.Start(t, true)
	ctx := testCtx(t)
	a, b := NewRegistry(s.JS), NewRegistry(s.JS)
	if _, err := a.Create(ctx, events.Site{ID: "shop", URL: "https://shop.example/"}); err != nil {
		t.Fatal(err)
	}
	pa, err := a.Plan(ctx, []events.Site{{ID: "shop", URL: "https://shop.example/", Interval: dur("1m")}}, false)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := b.Plan(ctx, []events.Site{{ID: "shop", URL: "https://shop.example/", Interval: dur("2m")}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ApplyPlan(ctx, pa); err != nil {
		t.Fatal(err)
	}
	if res, err := b.ApplyPlan(ctx, pb); !errors.Is(err, ErrConflict) || res.Updated != 0 {
		t.Errorf("stale plan: %+v, %v", res, err)
	}
}

// List reads one message per site however long the histories are, and sees
// every site's latest change.
func TestRegistryListManySites(t *testing.T) {
	s := natstest.Start(t, true)
	ctx := testCtx(t)
	reg := NewRegistry(s.JS)
	const n = 200
	for i := range n {
		id := fmt.Sprintf("site-%03d", i)
		if _, err := reg.Create(ctx, events.Site{ID: id, URL: "https://" + id + ".example/"}); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			for k := 1; k <= 3; k++ {
				site := events.Site{ID: id, URL: "https://" + id + ".example/", Interval: events.Duration(time.Duration(k) * time.Minute)}
				if _, _, err := reg.Update(ctx, site); err != nil {
					t.Fatal(err)
				}
			}
		}
		if i%10 == 0 {
			if _, _, err := reg.Delete(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
	}
	list, err := reg.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != n-n/10 {
		t.Fatalf("%d sites, want %d", len(list), n-n/10)
	}
	for i, cur := range list {
		if i > 0 && list[i-1].Site.ID >= cur.Site.ID {
			t.Fatal("not sorted by ID")
		}
		var num int
		fmt.Sscanf(cur.Site.ID, "site-%d", &num)
		want := dur("5m")
		if num%3 == 0 {
			want = dur("3m")
		}
		if cur.Site.Interval != want || cur.Deleted {
			t.Errorf("%s: interval %s deleted %v", cur.Site.ID, cur.Site.Interval, cur.Deleted)
		}
	}
	all, err := reg.List(ctx, IncludeDeleted())
	if err != nil || len(all) != n {
		t.Errorf("List(IncludeDeleted): %d sites, %v", len(all), err)
	}
}
