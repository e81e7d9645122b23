package scenario

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/checker"
	"github.com/vigil-dev/vigil/services/checker/httpcheck"
	"github.com/vigil-dev/vigil/services/internal/natstest"
	"github.com/vigil-dev/vigil/services/scheduler"
	"github.com/vigil-dev/vigil/services/sites"
	"github.com/vigil-dev/vigil/services/statemachine"
)

// Each region checks from its own loopback address, so a target can answer
// regions differently, as a real site can answer vantage points differently.
var regionAddrs = map[string]netip.Addr{
	"local": netip.MustParseAddr("127.0.0.11"),
	"eu":    netip.MustParseAddr("127.0.0.12"),
	"us":    netip.MustParseAddr("127.0.0.13"),
}

func regionOf(remoteAddr string) string {
	host, _, _ := net.SplitHostPort(remoteAddr)
	for r, a := range regionAddrs {
		if a.String() == host {
			return r
		}
	}
	return "?"
}

// behaviour decides a site's answer to one request from one region.
type behaviour func(region string) int

// targets serves every scenario site under /<site>, answering as its
// behaviour says, and counts requests.
type targets struct {
	srv *httptest.Server
	mu  sync.Mutex
	by  map[string]behaviour
}

func newTargets(t *testing.T) *targets {
	tg := &targets{by: map[string]behaviour{}}
	tg.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		site := strings.Trim(r.URL.Path, "/")
		tg.mu.Lock()
		b := tg.by[site]
		tg.mu.Unlock()
		status := http.StatusOK
		if b != nil {
			status = b(regionOf(r.RemoteAddr))
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(tg.srv.Close)
	return tg
}

func (tg *targets) set(site string, b behaviour) {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	tg.by[site] = b
}

// port is the target server's port.
func (tg *targets) port() string {
	_, p, _ := net.SplitHostPort(tg.srv.Listener.Addr().String())
	return p
}

// resolver maps every name under .scenario.test to 127.0.0.1, or fails like
// a broken resolver while failing is set.
type resolver struct{ failing atomic.Bool }

func (r *resolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	if r.failing.Load() {
		return nil, &net.DNSError{Err: "i/o timeout", Name: host, IsTimeout: true}
	}
	if strings.HasSuffix(host, ".scenario.test") {
		return []net.IPAddr{{IP: net.IPv4(127, 0, 0, 1)}}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// pipeline is Vigil running for real on an embedded server: a scheduler, a
// checker in each of three regions and the state machine.
type pipeline struct {
	t        *testing.T
	srv      *natstest.Server
	reg      *sites.Registry
	targets  *targets
	resolver map[string]*resolver
}

type pipelineOptions struct {
	regions []string
	sm      []statemachine.Option
}

func startPipeline(t *testing.T, o pipelineOptions) *pipeline {
	t.Helper()
	if len(o.regions) == 0 {
		o.regions = []string{"local", "eu", "us"}
	}
	p := &pipeline{t: t, srv: natstest.Start(t, true), targets: newTargets(t), resolver: map[string]*resolver{}}
	p.reg = sites.NewRegistry(p.srv.JS)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	run := func(name string, r interface{ Run(context.Context) error }) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.Run(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("%s: %v", name, err)
			}
		}()
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	sched, err := scheduler.New(p.srv.JS, scheduler.WithRegions(o.regions...), scheduler.WithLeaseTTL(2*time.Second),
		scheduler.WithLogger(quiet), scheduler.WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	run("scheduler", sched)
	for _, region := range o.regions {
		res := &resolver{}
		p.resolver[region] = res
		engine, err := httpcheck.New(httpcheck.Options{TargetPolicy: httpcheck.AllowPrivate, Resolver: res,
			SourceAddr: regionAddrs[region], DNSCacheTTL: time.Millisecond, DNSNegativeTTL: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		chk, err := checker.New(p.srv.JS, engine, checker.WithRegion(region), checker.WithLogger(quiet),
			checker.WithRegisterer(prometheus.NewRegistry()), checker.WithMinWorkers(8), checker.WithMaxWorkers(64))
		if err != nil {
			t.Fatal(err)
		}
		run("checker "+region, chk)
	}
	smOpts := append([]statemachine.Option{statemachine.WithRegions(o.regions...), statemachine.WithLeaseTTL(2 * time.Second),
		statemachine.WithVerifyTimeout(20 * time.Second), statemachine.WithLogger(quiet),
		statemachine.WithRegisterer(prometheus.NewRegistry())}, o.sm...)
	sm, err := statemachine.New(p.srv.JS, smOpts...)
	if err != nil {
		t.Fatal(err)
	}
	run("statemachine", sm)
	return p
}

// site registers a site served by the targets at the fastest cadence the
// registry allows: checks every 10 s, retries every 5 s.
func (p *pipeline) site(id string, b behaviour) events.Site {
	p.t.Helper()
	p.targets.set(id, b)
	s := events.Site{
		ID:            id,
		URL:           fmt.Sprintf("http://%s.scenario.test:%s/%s", id, p.targets.port(), id),
		Interval:      events.Duration(10 * time.Second),
		Timeout:       events.Duration(2 * time.Second),
		RetryInterval: events.Duration(5 * time.Second),
	}
	cur, err := p.reg.Create(context.Background(), s)
	if err != nil {
		p.t.Fatal(err)
	}
	return cur.Site
}

// siteEvents reads a site's events from EVENTS, in order.
func (p *pipeline) siteEvents(siteID string) []events.SiteEvent {
	p.t.Helper()
	var out []events.SiteEvent
	p.read(events.SiteEventsFilter(siteID), func(h map[string][]string, data []byte) {
		var ev events.SiteEvent
		if _, err := events.Decode(h, data, &ev); err != nil {
			p.t.Fatal(err)
		}
		out = append(out, ev)
	})
	return out
}

// regionEvents reads the region events from EVENTS, in order.
func (p *pipeline) regionEvents() []events.RegionEvent {
	p.t.Helper()
	var out []events.RegionEvent
	p.read(events.RegionEventsAll, func(h map[string][]string, data []byte) {
		var ev events.RegionEvent
		if _, err := events.Decode(h, data, &ev); err != nil {
			p.t.Fatal(err)
		}
		out = append(out, ev)
	})
	return out
}

func (p *pipeline) read(filter string, each func(map[string][]string, []byte)) {
	p.t.Helper()
	oc, err := p.srv.JS.OrderedConsumer(context.Background(), events.StreamEvents, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		p.t.Fatal(err)
	}
	for {
		batch, err := oc.FetchNoWait(200)
		if err != nil {
			p.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			each(m.Headers(), m.Data())
		}
		if n == 0 {
			return
		}
	}
}

// waitFor polls cond until it holds or the timeout passes.
func (p *pipeline) waitFor(timeout time.Duration, what string, cond func() bool) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			p.t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// kinds renders events as "kind" or "kind:reason".
func kinds(evs []events.SiteEvent) string {
	var parts []string
	for _, e := range evs {
		k := string(e.Kind)
		if e.Reason != "" {
			k += ":" + string(e.Reason)
		}
		parts = append(parts, k)
	}
	return strings.Join(parts, " ")
}

// failing answers 503 to every region while on is set, 200 otherwise.
func failing(on *atomic.Bool) behaviour {
	return func(string) int {
		if on.Load() {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	}
}
