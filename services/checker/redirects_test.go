package checker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/internal/natstest"
)

// redirectServer redirects /a to whatever target holds ("" answers 200
// without redirecting) and answers 200 everywhere else.
type redirectServer struct {
	*httptest.Server
	target atomic.Value // string
}

func newRedirectServer(t *testing.T, target string) *redirectServer {
	t.Helper()
	s := &redirectServer{}
	s.target.Store(target)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if to := s.target.Load().(string); r.URL.Path == "/a" && to != "" {
			http.Redirect(w, r, to, http.StatusFound)
			return
		}
		fmt.Fprintln(w, "hello from", r.URL.Path)
	}))
	t.Cleanup(s.Close)
	return s
}

func alertCommand(site, url string, due time.Time) *events.CheckCommand {
	cmd := command(site, url, due)
	cmd.Check.Redirects = events.RedirectAlert
	return cmd
}

func redirectsKV(t *testing.T, js jetstream.JetStream) jetstream.KeyValue {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), events.KVRedirects)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// accepted returns a site's accepted chain in testRegion and the key's
// revision; ok is false if there is none.
func accepted(t *testing.T, kv jetstream.KeyValue, site string) (a acceptedChain, rev uint64, ok bool) {
	t.Helper()
	e, err := kv.Get(context.Background(), events.RedirectKey(site, testRegion))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return a, 0, false
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		t.Fatalf("accepted chain %q: %v", e.Value(), err)
	}
	return a, e.Revision(), true
}

// checkOnce publishes cmd and returns its observation once it is stored
// (want is the number of observations OBSERVATIONS then holds).
func checkOnce(t *testing.T, js jetstream.JetStream, cmd *events.CheckCommand, want int) events.Observation {
	t.Helper()
	seq := publish(t, js, cmd)
	obs := waitObservations(t, js, want)
	waitAcked(t, js, seq)
	o := obs[want-1]
	if o.CommandID != cmd.ID {
		t.Fatalf("observation %d is for command %s, want %s", want, o.CommandID, cmd.ID)
	}
	return o
}

// The alert policy end to end in one region: the first ok check records the
// chain, a changed chain fails without replacing it, and deleting the key
// accepts the next chain.
func TestRedirectAlertRecordsComparesAndAccepts(t *testing.T) {
	ns := natstest.Start(t, true)
	srv := newRedirectServer(t, "/b")
	c, _ := newTestChecker(t, ns.JS, engine(t))
	start(t, c)
	kv := redirectsKV(t, ns.JS)
	url := srv.URL + "/a"
	due := time.Now()

	// First check: no accepted chain yet; ok, and its chain is recorded.
	o := checkOnce(t, ns.JS, alertCommand("alert-1", url, due), 1)
	if o.Class != events.ClassOK || !slices.Equal(o.RedirectChain, []string{srv.URL + "/b"}) {
		t.Fatalf("first check: class %s chain %v err %q", o.Class, o.RedirectChain, o.Error)
	}
	var rev uint64
	waitFor(t, "the chain recorded", func() bool {
		_, r, ok := accepted(t, kv, "alert-1")
		rev = r
		return ok
	})
	a, _, _ := accepted(t, kv, "alert-1")
	if a.URL != url || !slices.Equal(a.Chain, []string{srv.URL + "/b"}) || a.At.IsZero() {
		t.Errorf("accepted chain %+v", a)
	}

	// The same chain again: ok, nothing written.
	o = checkOnce(t, ns.JS, alertCommand("alert-1", url, due.Add(time.Second)), 2)
	if o.Class != events.ClassOK {
		t.Fatalf("same chain: class %s err %q", o.Class, o.Error)
	}

	// The site now redirects elsewhere: redirect_policy naming both chains,
	// and the accepted chain stays.
	srv.target.Store("/c")
	for i := range 2 {
		o = checkOnce(t, ns.JS, alertCommand("alert-1", url, due.Add(time.Duration(2+i)*time.Second)), 3+i)
		if o.Class != events.ClassRedirectPolicy || o.Class.Side() != events.SideSite ||
			!strings.Contains(o.Error, srv.URL+"/b") || !strings.Contains(o.Error, srv.URL+"/c") {
			t.Fatalf("changed chain, check %d: class %s err %q", i+1, o.Class, o.Error)
		}
	}
	time.Sleep(100 * time.Millisecond) // a wrongful write would have landed
	if a, r, ok := accepted(t, kv, "alert-1"); !ok || r != rev || !slices.Equal(a.Chain, []string{srv.URL + "/b"}) {
		t.Errorf("after a changed chain the key is %+v at revision %d (was %d), want it unchanged", a, r, rev)
	}

	// The operator accepts the new chain: the next check is ok and records it.
	if err := kv.Delete(context.Background(), events.RedirectKey("alert-1", testRegion)); err != nil {
		t.Fatal(err)
	}
	o = checkOnce(t, ns.JS, alertCommand("alert-1", url, due.Add(5*time.Second)), 5)
	if o.Class != events.ClassOK {
		t.Fatalf("after accepting: class %s err %q", o.Class, o.Error)
	}
	waitFor(t, "the new chain recorded", func() bool {
		a, _, ok := accepted(t, kv, "alert-1")
		return ok && slices.Equal(a.Chain, []string{srv.URL + "/c"})
	})
	o = checkOnce(t, ns.JS, alertCommand("alert-1", url, due.Add(6*time.Second)), 6)
	if o.Class != events.ClassOK {
		t.Fatalf("new chain, next check: class %s err %q", o.Class, o.Error)
	}

	// A site with the follow policy redirects as much but has no key.
	o = checkOnce(t, ns.JS, command("follow-1", url, due), 7)
	if o.Class != events.ClassOK || len(o.RedirectChain) != 1 {
		t.Fatalf("follow site: class %s chain %v", o.Class, o.RedirectChain)
	}
	time.Sleep(100 * time.Millisecond)
	keys, err := kv.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{events.RedirectKey("alert-1", testRegion)}; !slices.Equal(keys, want) {
		t.Errorf("keys in %s: %v, want %v", events.KVRedirects, keys, want)
	}
}

// A site accepted without redirects fails once it starts redirecting: the
// accepted chain is empty, not missing.
func TestRedirectAlertEmptyChainThenRedirect(t *testing.T) {
	ns := natstest.Start(t, true)
	srv := newRedirectServer(t, "")
	c, _ := newTestChecker(t, ns.JS, engine(t))
	start(t, c)
	kv := redirectsKV(t, ns.JS)
	url := srv.URL + "/a"
	due := time.Now()

	if o := checkOnce(t, ns.JS, alertCommand("plain-1", url, due), 1); o.Class != events.ClassOK || len(o.RedirectChain) != 0 {
		t.Fatalf("first check: class %s chain %v", o.Class, o.RedirectChain)
	}
	waitFor(t, "the empty chain recorded", func() bool {
		_, _, ok := accepted(t, kv, "plain-1")
		return ok
	})
	e, err := kv.Get(context.Background(), events.RedirectKey("plain-1", testRegion))
	if err != nil || !bytes.Contains(e.Value(), []byte(`"chain":[]`)) {
		t.Errorf("recorded value %q (%v), want an empty chain", e.Value(), err)
	}

	srv.target.Store("/elsewhere")
	o := checkOnce(t, ns.JS, alertCommand("plain-1", url, due.Add(time.Second)), 2)
	if o.Class != events.ClassRedirectPolicy || !strings.Contains(o.Error, "was [], now ["+srv.URL+"/elsewhere]") {
		t.Fatalf("redirecting now: class %s err %q", o.Class, o.Error)
	}
	if a, _, _ := accepted(t, kv, "plain-1"); len(a.Chain) != 0 {
		t.Errorf("accepted chain replaced by %v", a.Chain)
	}

	// Back to no redirect: ok again.
	srv.target.Store("")
	if o := checkOnce(t, ns.JS, alertCommand("plain-1", url, due.Add(2*time.Second)), 3); o.Class != events.ClassOK {
		t.Fatalf("reverted: class %s err %q", o.Class, o.Error)
	}
}

// A key recorded for another URL (the site's URL changed) is no reference:
// the check is ok whatever its chain, and its chain replaces the old one.
func TestRedirectAlertURLChangeRecordsAgain(t *testing.T) {
	ns := natstest.Start(t, true)
	srv := newRedirectServer(t, "/c")
	c, _ := newTestChecker(t, ns.JS, engine(t))
	start(t, c)
	kv := redirectsKV(t, ns.JS)
	old, _ := json.Marshal(acceptedChain{URL: srv.URL + "/old", Chain: []string{srv.URL + "/b"}, At: time.Now()})
	if _, err := kv.Put(context.Background(), events.RedirectKey("moved-1", testRegion), old); err != nil {
		t.Fatal(err)
	}
	url := srv.URL + "/a"
	if o := checkOnce(t, ns.JS, alertCommand("moved-1", url, time.Now()), 1); o.Class != events.ClassOK {
		t.Fatalf("check after a URL change: class %s err %q", o.Class, o.Error)
	}
	waitFor(t, "the chain of the new URL recorded", func() bool {
		a, _, _ := accepted(t, kv, "moved-1")
		return a.URL == url && slices.Equal(a.Chain, []string{srv.URL + "/c"})
	})
}

// failingChains is a chainStore whose reads fail, as with NATS in trouble,
// and which counts every call.
type failingChains struct{ calls atomic.Int64 }

func (f *failingChains) Get(context.Context, string) (jetstream.KeyValueEntry, error) {
	f.calls.Add(1)
	return nil, errors.New("nats: timeout")
}

func (f *failingChains) Create(context.Context, string, []byte, ...jetstream.KVCreateOpt) (uint64, error) {
	f.calls.Add(1)
	return 0, errors.New("nats: timeout")
}

func (f *failingChains) Update(context.Context, string, []byte, uint64) (uint64, error) {
	f.calls.Add(1)
	return 0, errors.New("nats: timeout")
}

func (f *failingChains) ListKeysFiltered(context.Context, ...string) (jetstream.KeyLister, error) {
	f.calls.Add(1)
	return nil, errors.New("nats: timeout")
}

// A region asked to verify has no accepted chain of its own (it checks the
// site only when asked): it judges by the chain another region accepted, and
// records none, so it cannot accept the change it is asked to confirm.
func TestRedirectAlertVerificationUsesAnotherRegionsChain(t *testing.T) {
	ns := natstest.Start(t, true)
	srv := newRedirectServer(t, "/c")
	c, _ := newTestChecker(t, ns.JS, engine(t))
	start(t, c)
	kv := redirectsKV(t, ns.JS)
	url := srv.URL + "/a"
	val, _ := json.Marshal(acceptedChain{URL: url, Chain: []string{srv.URL + "/b"}, At: time.Now().UTC()})
	if _, err := kv.Put(context.Background(), events.RedirectKey("geo-1", "primary"), val); err != nil {
		t.Fatal(err)
	}
	verify := func(due time.Time) *events.CheckCommand {
		cmd := alertCommand("geo-1", url, due)
		cmd.Purpose = events.PurposeVerify
		cmd.IncidentID = "01JINCIDENT0000000000000000"
		cmd.ID = events.CommandID(cmd.SiteID, cmd.Region, cmd.Purpose, due)
		return cmd
	}

	o := checkOnce(t, ns.JS, verify(time.Now()), 1)
	if o.Class != events.ClassRedirectPolicy || !strings.Contains(o.Error, srv.URL+"/b") || !strings.Contains(o.Error, srv.URL+"/c") {
		t.Fatalf("verification of a changed chain: class %s err %q, want redirect_policy naming both chains", o.Class, o.Error)
	}
	srv.target.Store("/b")
	if o := checkOnce(t, ns.JS, verify(time.Now().Add(time.Second)), 2); o.Class != events.ClassOK {
		t.Fatalf("verification of the accepted chain: class %s err %q", o.Class, o.Error)
	}
	if _, _, ok := accepted(t, kv, "geo-1"); ok {
		t.Fatal("a verification recorded a chain for its own region")
	}
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// When the accepted chain cannot be read the check runs without it (ok,
// whatever the chain) and the trouble is logged with the site's IDs; no
// other policy touches the bucket.
func TestRedirectAlertKVTroubleIsNotTheSites(t *testing.T) {
	ns := natstest.Start(t, true)
	srv := newRedirectServer(t, "/b")
	var logs syncBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c, _ := newTestChecker(t, ns.JS, engine(t), WithLogger(logger))
	store := &failingChains{}
	c.chains = store
	start(t, c)
	url := srv.URL + "/a"
	due := time.Now()

	follow := command("follow-2", url, due)
	fail := command("fail-2", srv.URL+"/b", due)
	fail.Check.Redirects = events.RedirectFail
	checkOnce(t, ns.JS, follow, 1)
	checkOnce(t, ns.JS, fail, 2)
	if n := store.calls.Load(); n != 0 {
		t.Fatalf("sites without the alert policy made %d KV calls", n)
	}

	cmd := alertCommand("alert-2", url, due)
	if o := checkOnce(t, ns.JS, cmd, 3); o.Class != events.ClassOK {
		t.Fatalf("with the KV unreadable: class %s err %q, want ok", o.Class, o.Error)
	}
	if n := store.calls.Load(); n != 1 {
		t.Errorf("%d KV calls, want the one read (nothing recorded without a reference read)", n)
	}
	var warned bool
	for line := range strings.SplitSeq(logs.String(), "\n") {
		if !strings.Contains(line, `"level":"WARN"`) || !strings.Contains(line, "redirect chain") {
			continue
		}
		warned = true
		for _, want := range []string{`"site":"alert-2"`, fmt.Sprintf(`"bucket":%d`, cmd.Bucket), `"command_id":"` + cmd.ID + `"`, `"kv":"` + events.KVRedirects + `"`} {
			if !strings.Contains(line, want) {
				t.Errorf("warning %s lacks %s", line, want)
			}
		}
	}
	if !warned {
		t.Errorf("no warning logged:\n%s", logs.String())
	}
}
