package fleet

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/checker/httpcheck"
)

// testConfig has 20 sites of every kind; about half of each kind are in
// their incident window now (windows are an hour in every two, and the
// epoch is an hour ago), and TLS sites expire across the next hour.
func testConfig() Config {
	mix := Mix{}
	for _, k := range Kinds() {
		if k != Healthy {
			mix[k] = 0.05
		}
	}
	return Config{
		Sites:         400,
		Seed:          7,
		Mix:           mix,
		Epoch:         time.Now().Add(-time.Hour),
		Period:        2 * time.Hour,
		Outage:        time.Hour,
		FlapPeriod:    time.Hour,
		LatencyMedian: time.Millisecond,
		LatencyMax:    5 * time.Millisecond,
		Listeners:     4,
		TLSListeners:  2,
	}
}

func startFleet(t *testing.T, cfg Config) *Fleet {
	t.Helper()
	f, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

// client returns an HTTP client that resolves through the fleet and
// connects from src (a region's source address).
func client(t *testing.T, f *Fleet, src string, timeout time.Duration) *http.Client {
	t.Helper()
	pool, err := CertPool([]byte(f.Info().CAPEM))
	if err != nil {
		t.Fatal(err)
	}
	d := &net.Dialer{Timeout: 2 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:           f.Resolver().DialContext(d),
			DisableKeepAlives:     true,
			TLSClientConfig:       &tls.Config{RootCAs: pool},
			ResponseHeaderTimeout: timeout,
		},
	}
}

// pick returns a site of kind k whose window is open (or not) now.
func pick(t *testing.T, p *Plan, k Kind, open bool) int {
	t.Helper()
	now := time.Now()
	for _, i := range p.Sites(k) {
		in := p.InWindow(i, now)
		if k == Flapping {
			in = p.flapDown(i, now)
		}
		if k == TLSExpiry {
			in = !now.Add(time.Minute).Before(p.NotAfter(i)) // expired, with margin
			if !in && p.NotAfter(i).Before(now.Add(5*time.Minute)) {
				continue // too close to expiry to be stable
			}
		}
		if in == open {
			return i
		}
	}
	t.Fatalf("no %s site with window open=%v", k, open)
	return 0
}

func get(t *testing.T, c *http.Client, r *Resolver, i int) (int, string, error) {
	t.Helper()
	resp, err := c.Get(r.URL(i))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func TestPlanIsReproducible(t *testing.T) {
	cfg := Config{Sites: 10000, Seed: 42, Mix: DefaultMix(), Epoch: time.Unix(1_700_000_000, 0)}
	a, err := NewPlan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewPlan(cfg)
	if !reflect.DeepEqual(a.recs, b.recs) {
		t.Fatal("two plans of one config differ")
	}
	cfg.Seed = 43
	c, _ := NewPlan(cfg)
	if reflect.DeepEqual(a.recs, c.recs) {
		t.Fatal("plans of different seeds are equal")
	}
	counts := a.Counts()
	for k, share := range DefaultMix() {
		if want := int(share*10000 + 0.5); counts[k] != want {
			t.Errorf("%s: %d sites, want %d", k, counts[k], want)
		}
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	if total != 10000 {
		t.Fatalf("counts add up to %d", total)
	}
}

func TestNamesRoundTrip(t *testing.T) {
	p, err := NewPlan(Config{Sites: 1234567})
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 7, 999999, 1234566} {
		for _, name := range []string{p.ID(i), p.Host(i), p.Host(i) + ":8080", strings.ToUpper(p.Host(i))} {
			if j, ok := p.Index(name); !ok || j != i {
				t.Errorf("Index(%q) = %d, %v; want %d", name, j, ok, i)
			}
		}
		if err := events.ValidateSiteID(p.ID(i)); err != nil {
			t.Errorf("ID %q is not a valid site ID: %v", p.ID(i), err)
		}
	}
	if p.ID(12) != "s0000012" {
		t.Errorf("ID(12) = %q: the width must fit the fleet", p.ID(12))
	}
	for _, bad := range []string{"", "s", "x0000012", "s000001", "s9999999", "s0000012.other.test", "s00000a2"} {
		if _, ok := p.Index(bad); ok {
			t.Errorf("Index(%q) accepted", bad)
		}
	}
	small, _ := NewPlan(Config{Sites: 10})
	if small.Host(3) != "s000003.fleet.test" {
		t.Errorf("Host(3) = %q", small.Host(3))
	}
}

func TestWindowsAgreeWithScript(t *testing.T) {
	cfg := Config{Sites: 2000, Seed: 3, Mix: Mix{Errors5xx: 0.1, Flapping: 0.1, TLSExpiry: 0.05},
		Epoch: time.Unix(1_700_000_000, 0), Period: 10 * time.Minute, Outage: 3 * time.Minute, FlapPeriod: time.Minute}
	p, err := NewPlan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	from := cfg.Epoch.Add(-time.Minute)
	to := cfg.Epoch.Add(25 * time.Minute)
	for _, k := range []Kind{Errors5xx, Flapping, TLSExpiry, Healthy} {
		for _, i := range p.Sites(k)[:20] {
			ws := p.Windows(i, from, to)
			for tt := from; tt.Before(to); tt = tt.Add(7 * time.Second) {
				var script bool
				switch k {
				case Errors5xx:
					script = p.InWindow(i, tt)
				case Flapping:
					script = p.flapDown(i, tt)
				case TLSExpiry:
					script = !tt.Before(p.NotAfter(i))
				}
				inWs := false
				for _, w := range ws {
					if !tt.Before(w[0]) && tt.Before(w[1]) {
						inWs = true
					}
				}
				if inWs != script {
					t.Fatalf("%s site %d at %s: windows say %v, script says %v (windows %v)", k, i, tt.Sub(cfg.Epoch), inWs, script, ws)
				}
			}
		}
	}
	// A 5xx site is down Outage in every Period.
	i := p.Sites(Errors5xx)[0]
	var down time.Duration
	for _, w := range p.Windows(i, cfg.Epoch, cfg.Epoch.Add(10*cfg.Period)) {
		down += w[1].Sub(w[0])
	}
	if down != 10*cfg.Outage && down != 9*cfg.Outage+cfg.Outage-(cfg.Outage-down%cfg.Outage)%cfg.Outage {
		t.Errorf("down %s in 10 periods, want about %s", down, 10*cfg.Outage)
	}
}

func TestMixAndConfigJSON(t *testing.T) {
	m, err := ParseMix("5xx=0.01,timeout=0.002,region_block=0.5")
	if err != nil {
		t.Fatal(err)
	}
	if m[Errors5xx] != 0.01 || m[Timeout] != 0.002 || m[RegionBlock] != 0.5 {
		t.Fatalf("ParseMix = %v", m)
	}
	if back, _ := ParseMix(m.String()); !reflect.DeepEqual(back, m) {
		t.Fatalf("round trip %q gave %v", m.String(), back)
	}
	for _, bad := range []string{"5xx", "nope=0.1", "5xx=2", "5xx=x"} {
		if _, err := ParseMix(bad); err == nil {
			t.Errorf("ParseMix(%q) accepted", bad)
		}
	}
	cfg := testConfig().Defaults()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var back Config
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !back.Epoch.Equal(cfg.Epoch) {
		t.Fatal("epoch lost")
	}
	back.Epoch = cfg.Epoch
	if !reflect.DeepEqual(back, cfg) {
		t.Fatalf("config JSON round trip:\n%+v\n%+v", back, cfg)
	}
	if err := (Config{Sites: 10, Mix: Mix{Timeout: 0.7, Drip: 0.7}}).Defaults().Validate(); err == nil {
		t.Error("shares above 1 accepted")
	}
	if err := (Config{Sites: 10, HTTPBase: netip.MustParseAddr("10.0.0.1")}).Defaults().Validate(); err == nil {
		t.Error("a non-loopback listener accepted")
	}
}

func TestResolver(t *testing.T) {
	f := startFleet(t, testConfig())
	r := f.Resolver()
	p := f.Plan()
	seen := map[netip.Addr]bool{}
	for i := range p.Len() {
		ips, err := r.LookupIPAddr(context.Background(), p.Host(i))
		if err != nil {
			t.Fatal(err)
		}
		a, _ := netip.AddrFromSlice(ips[0].IP)
		a = a.Unmap()
		if a != r.AddrPort(i).Addr() || !a.IsLoopback() {
			t.Fatalf("site %d resolves to %s, served on %s", i, a, r.AddrPort(i))
		}
		seen[a] = true
		if wantTLS := p.TLS(i); strings.HasPrefix(r.URL(i), "https://") != wantTLS {
			t.Fatalf("site %d (%s): URL %s", i, p.Kind(i), r.URL(i))
		}
	}
	if len(seen) != 6 {
		t.Errorf("sites spread over %d addresses, want 4 HTTP + 2 TLS", len(seen))
	}
	for _, name := range []string{"example.com", "s000001", "s999999.fleet.test", "s000001.fleet.test.evil"} {
		_, err := r.LookupIPAddr(context.Background(), name)
		var de *net.DNSError
		if !errors.As(err, &de) || !de.IsNotFound {
			t.Errorf("LookupIPAddr(%q) = %v, want not found", name, err)
		}
	}
}

func TestBehaviours(t *testing.T) {
	f := startFleet(t, testConfig())
	p, r := f.Plan(), f.Resolver()
	c := client(t, f, "127.0.0.1", 2*time.Second)

	expectPage := func(i int, keyword bool) {
		t.Helper()
		code, body, err := get(t, c, r, i)
		if err != nil || code != 200 {
			t.Fatalf("%s site %d: %d %v", p.Kind(i), i, code, err)
		}
		if strings.Contains(body, Keyword) != keyword {
			t.Fatalf("%s site %d: body %q, keyword expected %v", p.Kind(i), i, body, keyword)
		}
	}
	expectStatus := func(i int, want ...int) {
		t.Helper()
		code, _, err := get(t, c, r, i)
		if err != nil {
			t.Fatalf("%s site %d: %v", p.Kind(i), i, err)
		}
		for _, w := range want {
			if code == w {
				return
			}
		}
		t.Fatalf("%s site %d: status %d, want %v", p.Kind(i), i, code, want)
	}

	t.Run("healthy", func(t *testing.T) {
		for _, i := range p.Sites(Healthy)[:10] {
			expectPage(i, true)
		}
	})
	t.Run("5xx", func(t *testing.T) {
		expectStatus(pick(t, p, Errors5xx, true), 500, 502, 503)
		expectPage(pick(t, p, Errors5xx, false), true)
	})
	t.Run("flapping", func(t *testing.T) {
		expectStatus(pick(t, p, Flapping, true), 503)
		expectPage(pick(t, p, Flapping, false), true)
	})
	t.Run("keyword", func(t *testing.T) {
		expectPage(pick(t, p, KeywordLoss, true), false)
		expectPage(pick(t, p, KeywordLoss, false), true)
		if p.Keyword(pick(t, p, KeywordLoss, true)) != Keyword {
			t.Error("keyword sites must be checked with the keyword")
		}
	})
	t.Run("timeout", func(t *testing.T) {
		short := client(t, f, "127.0.0.1", 300*time.Millisecond)
		start := time.Now()
		_, _, err := get(t, short, r, pick(t, p, Timeout, true))
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("hanging site: err %v, want a timeout", err)
		}
		if time.Since(start) > 2*time.Second {
			t.Fatal("timeout took too long")
		}
		expectPage(pick(t, p, Timeout, false), true)
	})
	t.Run("drip", func(t *testing.T) {
		short := client(t, f, "127.0.0.1", 1500*time.Millisecond)
		_, _, err := get(t, short, r, pick(t, p, Drip, true))
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("dripping site: err %v, want a timeout", err)
		}
		expectPage(pick(t, p, Drip, false), true)
	})
	t.Run("tls", func(t *testing.T) {
		i := pick(t, p, TLSExpiry, false)
		expectPage(i, true)
		_, _, err := get(t, c, r, pick(t, p, TLSExpiry, true))
		var ce *tls.CertificateVerificationError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("expired site: err %v, want an expired certificate", err)
		}
	})
	t.Run("region block", func(t *testing.T) {
		blocked := client(t, f, "127.0.0.2", 2*time.Second)
		i := pick(t, p, RegionBlock, true)
		expectPage(i, true) // region local is not blocked
		code, _, err := get(t, blocked, r, i)
		if err != nil || code != http.StatusForbidden {
			t.Fatalf("blocked region: %d %v, want 403", code, err)
		}
		code, _, err = get(t, blocked, r, pick(t, p, RegionBlock, false))
		if err != nil || code != 200 {
			t.Fatalf("blocked region outside the window: %d %v", code, err)
		}
		st := f.Stats()
		if st.ByRegion["blocked"] < 2 || st.ByRegion["local"] < 1 || st.ByMode[ModeBlock] != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("unknown host", func(t *testing.T) {
		ln := f.Info().Listeners[0].Addr
		req, _ := http.NewRequest("GET", "http://"+ln+"/", nil)
		req.Host = "nobody.example"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Fatalf("unknown host: %d", resp.StatusCode)
		}
	})
}

func TestLatencyDistribution(t *testing.T) {
	f := startFleet(t, Config{Sites: 10, LatencyMedian: 20 * time.Millisecond, LatencySigma: 0.6, LatencyMax: time.Second})
	var ds []time.Duration
	for n := range uint32(2000) {
		ds = append(ds, f.latency(int(n%10), n))
	}
	below := 0
	for _, d := range ds {
		if d < 20*time.Millisecond {
			below++
		}
		if d <= 0 || d > time.Second {
			t.Fatalf("latency %s out of range", d)
		}
	}
	if below < 850 || below > 1150 {
		t.Fatalf("%d of 2000 latencies below the median", below)
	}
	g := startFleet(t, Config{Sites: 10, LatencyMedian: 20 * time.Millisecond, LatencySigma: 0.6, LatencyMax: time.Second})
	if f.latency(3, 17) != g.latency(3, 17) {
		t.Fatal("latency is not reproducible across fleets of one seed")
	}
}

func TestControlAPI(t *testing.T) {
	cfg := testConfig()
	cfg.Mix = nil // all healthy
	f := startFleet(t, cfg)
	ctx := context.Background()
	api := NewClient(f.Info().Control)
	r := f.Resolver()
	c := client(t, f, "127.0.0.1", 2*time.Second)
	status := func(i int) int {
		code, _, err := get(t, c, r, i)
		if err != nil {
			return -1
		}
		return code
	}

	info, err := api.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Listeners) != 6 || info.Config.Sites != 400 || !strings.Contains(info.CAPEM, "CERTIFICATE") {
		t.Fatalf("info %+v", info)
	}
	if status(5) != 200 {
		t.Fatal("site 5 not healthy before the outage")
	}
	st, err := api.StartOutage(ctx, "s000005", Outage{Mode: ModeStatus, Status: 502})
	if err != nil {
		t.Fatal(err)
	}
	if st.Now != ModeStatus || st.Outage == nil {
		t.Fatalf("site after starting the outage: %+v", st)
	}
	if got := status(5); got != 502 {
		t.Fatalf("during the outage: %d", got)
	}
	if status(6) != 200 {
		t.Fatal("another site was affected")
	}
	if _, err := api.EndOutage(ctx, "s000005.fleet.test"); err != nil {
		t.Fatal(err)
	}
	if got := status(5); got != 200 {
		t.Fatalf("after the outage: %d", got)
	}

	// An outage that ends by itself.
	if _, err := api.StartOutage(ctx, "s000007", Outage{Mode: ModeStatus, For: Duration(300 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	if got := status(7); got != 503 {
		t.Fatalf("timed outage: %d", got)
	}
	time.Sleep(400 * time.Millisecond)
	if got := status(7); got != 200 {
		t.Fatalf("after the timed outage: %d", got)
	}

	// Region-limited outage: only the blocked region sees it.
	if _, err := api.StartOutage(ctx, "s000008", Outage{Mode: ModeBlock, Regions: []string{"blocked"}}); err != nil {
		t.Fatal(err)
	}
	if got := status(8); got != 200 {
		t.Fatalf("region local during a blocked-region outage: %d", got)
	}
	code, _, _ := get(t, client(t, f, "127.0.0.2", 2*time.Second), r, 8)
	if code != 403 {
		t.Fatalf("region blocked during its outage: %d", code)
	}

	// Bulk, reset mode, and ending everything.
	if err := api.StartOutages(ctx, []string{"s000010", "s000011"}, Outage{Mode: ModeReset}); err != nil {
		t.Fatal(err)
	}
	if got := status(10); got != -1 {
		t.Fatalf("reset site answered %d", got)
	}
	n, err := api.EndAllOutages(ctx)
	if err != nil || n != 3 {
		t.Fatalf("EndAllOutages = %d, %v; want 3 (8, 10, 11)", n, err)
	}
	if status(11) != 200 {
		t.Fatal("site 11 still down after ending every outage")
	}

	// Errors.
	if _, err := api.StartOutage(ctx, "s999999", Outage{}); err == nil {
		t.Error("outage on a missing site accepted")
	}
	if _, err := api.StartOutage(ctx, "s000001", Outage{Mode: "melt"}); err == nil {
		t.Error("unknown mode accepted")
	}
	stats, err := api.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stats.ByMode[ModeStatus] != 2 || stats.ByMode[ModeReset] != 1 || stats.SitesHit < 5 || stats.Outages != 0 {
		t.Fatalf("stats %+v", stats)
	}
}

// TestWithHTTPCheck points Vigil's own check engine at the fleet: every
// behaviour is classified as the incident model expects.
func TestWithHTTPCheck(t *testing.T) {
	f := startFleet(t, testConfig())
	p, r := f.Plan(), f.Resolver()
	pool, err := CertPool([]byte(f.Info().CAPEM))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := httpcheck.New(httpcheck.Options{TargetPolicy: httpcheck.AllowPrivate, Resolver: r, RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	check := func(i int, timeout time.Duration) events.Class {
		site := events.Site{URL: r.URL(i), Timeout: events.Duration(timeout)}
		if kw := p.Keyword(i); kw != "" {
			site.Keywords = []string{kw}
		}
		return eng.Check(context.Background(), site.CheckSpec()).Class
	}
	cases := []struct {
		i       int
		timeout time.Duration
		want    events.Class
	}{
		{p.Sites(Healthy)[0], 2 * time.Second, events.ClassOK},
		{pick(t, p, Errors5xx, true), 2 * time.Second, events.ClassHTTPStatus},
		{pick(t, p, Flapping, true), 2 * time.Second, events.ClassHTTPStatus},
		{pick(t, p, KeywordLoss, true), 2 * time.Second, events.ClassKeywordMissing},
		{pick(t, p, KeywordLoss, false), 2 * time.Second, events.ClassOK},
		{pick(t, p, Timeout, true), time.Second, events.ClassTimeout},
		{pick(t, p, Drip, true), 1500 * time.Millisecond, events.ClassTimeout},
		{pick(t, p, TLSExpiry, false), 2 * time.Second, events.ClassOK},
		{pick(t, p, TLSExpiry, true), 2 * time.Second, events.ClassTLSExpired},
		{pick(t, p, RegionBlock, true), 2 * time.Second, events.ClassOK}, // checks come from region local
	}
	for _, c := range cases {
		if got := check(c.i, c.timeout); got != c.want {
			t.Errorf("%s site %d (%s): class %s, want %s", p.Kind(c.i), c.i, r.URL(c.i), got, c.want)
		}
	}
}
