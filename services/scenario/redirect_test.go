package scenario

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/statemachine"
)

// redirectTargets serves /<site> as a redirect to /<site>/<where>, where is
// set per site, and answers 200 on every other path.
type redirectTargets struct {
	srv *httptest.Server
	mu  sync.Mutex
	to  map[string]string
}

func newRedirectTargets(t *testing.T) *redirectTargets {
	rt := &redirectTargets{to: map[string]string{}}
	rt.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt.mu.Lock()
		where, ok := rt.to[r.URL.Path[1:]]
		rt.mu.Unlock()
		if ok {
			http.Redirect(w, r, r.URL.Path+"/"+where, http.StatusFound)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(rt.srv.Close)
	return rt
}

func (rt *redirectTargets) redirect(site, where string) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.to[site] = where
}

// site registers a site served by rt with the given redirect policy, at the
// fastest cadence the registry allows, like pipeline.site.
func (rt *redirectTargets) site(p *pipeline, id string, policy events.RedirectPolicy, where string) string {
	p.t.Helper()
	rt.redirect(id, where)
	_, port, _ := net.SplitHostPort(rt.srv.Listener.Addr().String())
	url := fmt.Sprintf("http://%s.scenario.test:%s/%s", id, port, id)
	_, err := p.reg.Create(context.Background(), events.Site{
		ID:            id,
		URL:           url,
		Interval:      events.Duration(10 * time.Second),
		Timeout:       events.Duration(2 * time.Second),
		RetryInterval: events.Duration(5 * time.Second),
		Redirects:     policy,
	})
	if err != nil {
		p.t.Fatal(err)
	}
	return url
}

// The redirects: alert policy end to end, in a single-region deployment:
// a changed redirect target keeps failing until Down is confirmed, and the
// site recovers when the target reverts (one site) or when the operator
// accepts the new chain by deleting it from KV (another). A site with the
// follow policy going through the same change has no event.
func TestRedirectAlertScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole pipeline for about a minute")
	}
	p := startPipeline(t, pipelineOptions{regions: []string{"local"},
		sm: []statemachine.Option{statemachine.WithSingleRegionAllowance(true)}})
	kv, err := p.srv.JS.KeyValue(context.Background(), events.KVRedirects)
	if err != nil {
		t.Fatal(err)
	}
	rt := newRedirectTargets(t)
	revertURL := rt.site(p, "redir-revert", events.RedirectAlert, "home")
	rt.site(p, "redir-accept", events.RedirectAlert, "home")
	rt.site(p, "redir-follow", events.RedirectFollow, "home")

	hasChain := func(site string) bool {
		_, err := kv.Get(context.Background(), events.RedirectKey(site, "local"))
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	hasEvent := func(site string, kind events.EventKind) func() bool {
		return func() bool {
			for _, e := range p.siteEvents(site) {
				if e.Kind == kind {
					return true
				}
			}
			return false
		}
	}

	// Each alert site is checked healthy once and its chain accepted; then
	// every site starts redirecting elsewhere.
	p.waitFor(30*time.Second, "the chains to be accepted", func() bool { return hasChain("redir-revert") && hasChain("redir-accept") })
	first, err := kv.Get(context.Background(), events.RedirectKey("redir-revert", "local"))
	if err != nil {
		t.Fatal(err)
	}
	for _, site := range []string{"redir-revert", "redir-accept", "redir-follow"} {
		rt.redirect(site, "moved")
	}

	p.waitFor(60*time.Second, "both alert sites to be confirmed Down", func() bool {
		return hasEvent("redir-revert", events.KindDown)() && hasEvent("redir-accept", events.KindDown)()
	})
	// A failing site never has its accepted chain replaced.
	if e, err := kv.Get(context.Background(), events.RedirectKey("redir-revert", "local")); err != nil || e.Revision() != first.Revision() {
		t.Errorf("accepted chain of a failing site rewritten: %v", err)
	}
	rt.redirect("redir-revert", "home")
	if err := kv.Delete(context.Background(), events.RedirectKey("redir-accept", "local")); err != nil {
		t.Fatal(err)
	}
	p.waitFor(60*time.Second, "both alert sites to recover", func() bool {
		return hasEvent("redir-revert", events.KindRecovered)() && hasEvent("redir-accept", events.KindRecovered)()
	})
	time.Sleep(6 * time.Second) // room for any event that should not come

	for _, site := range []string{"redir-revert", "redir-accept"} {
		evs := p.siteEvents(site)
		if got := kinds(evs); got != "seems_down down recovered:recovered" {
			t.Errorf("%s: events %q", site, got)
			continue
		}
		if evs[0].FailureClass != events.ClassRedirectPolicy || !evs[1].SingleRegion ||
			evs[1].IncidentID != evs[0].IncidentID || evs[2].IncidentID != evs[0].IncidentID {
			t.Errorf("%s: one redirect_policy incident expected: %+v", site, evs)
		}
	}
	// The accepted chain is the new one after accepting, the old one after
	// reverting.
	for site, want := range map[string]string{"redir-revert": revertURL + "/home", "redir-accept": "/redir-accept/moved"} {
		e, err := kv.Get(context.Background(), events.RedirectKey(site, "local"))
		if err != nil {
			t.Errorf("%s: %v", site, err)
			continue
		}
		if !strings.Contains(string(e.Value()), want) {
			t.Errorf("%s: accepted chain %s, want one with %s", site, e.Value(), want)
		}
	}
	if evs := p.siteEvents("redir-follow"); len(evs) != 0 {
		t.Errorf("follow site: events %q, want none", kinds(evs))
	}
	if hasChain("redir-follow") {
		t.Error("a follow site has an accepted chain")
	}
}
