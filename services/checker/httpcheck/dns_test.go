package httpcheck

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/events"
)

func TestPolicyAllows(t *testing.T) {
	for _, tc := range []struct {
		addr         string
		public, priv bool
	}{
		// Public unicast.
		{"93.184.216.34", true, true},
		{"8.8.8.8", true, true},
		{"1.1.1.1", true, true},
		{"100.63.255.255", true, true},
		{"100.128.0.0", true, true},
		{"172.32.0.1", true, true},
		{"192.0.3.1", true, true},
		{"198.20.0.1", true, true},
		{"223.255.255.254", true, true},
		{"2606:2800:220:1:248:1893:25c8:1946", true, true},
		{"2a00:1450:4001:82a::200e", true, true},
		{"::ffff:93.184.216.34", true, true},
		{"64:ff9b::5db8:d822", true, true}, // NAT64 of 93.184.216.34
		// Loopback, private, link-local, CGNAT.
		{"127.0.0.1", false, true},
		{"127.255.255.254", false, true},
		{"10.1.2.3", false, true},
		{"172.16.0.1", false, true},
		{"172.31.255.255", false, true},
		{"192.168.1.1", false, true},
		{"169.254.169.254", false, true},
		{"100.64.0.1", false, true},
		{"100.127.255.255", false, true},
		{"::1", false, true},
		{"fc00::1", false, true},
		{"fd12:3456::1", false, true},
		{"fe80::1", false, true},
		{"fe80::1%eth0", false, true},
		{"fec0::1", false, true},
		// Reserved, documentation, benchmarking.
		{"0.1.2.3", false, true},
		{"192.0.0.8", false, true},
		{"192.0.2.10", false, true},
		{"198.51.100.7", false, true},
		{"203.0.113.9", false, true},
		{"198.18.0.1", false, true},
		{"198.19.255.255", false, true},
		{"240.0.0.1", false, true},
		{"2001:db8::1", false, true},
		{"3fff::1", false, true},
		{"2001::1", false, true},        // Teredo
		{"2002:a00:1::1", false, true},  // 6to4 of 10.0.0.1
		{"100::1", false, true},         // discard
		{"::127.0.0.1", false, true},    // IPv4-compatible
		{"64:ff9b::a00:1", false, true}, // NAT64 of 10.0.0.1
		{"64:ff9b:1::1", false, true},
		// IPv4-mapped forms.
		{"::ffff:127.0.0.1", false, true},
		{"::ffff:10.0.0.1", false, true},
		{"::ffff:169.254.169.254", false, true},
		// Never a single server.
		{"0.0.0.0", false, false},
		{"::", false, false},
		{"::ffff:0.0.0.0", false, false},
		{"255.255.255.255", false, false},
		{"224.0.0.1", false, false},
		{"239.255.255.250", false, false},
		{"ff02::1", false, false},
		{"ff05::1:3", false, false},
	} {
		a := netip.MustParseAddr(tc.addr)
		if got := PublicOnly.Allows(a); got != tc.public {
			t.Errorf("PublicOnly.Allows(%s) = %v", tc.addr, got)
		}
		if got := AllowPrivate.Allows(a); got != tc.priv {
			t.Errorf("AllowPrivate.Allows(%s) = %v", tc.addr, got)
		}
	}
	if PublicOnly.Allows(netip.Addr{}) || TargetPolicy(7).Allows(netip.MustParseAddr("8.8.8.8")) {
		t.Error("invalid address or policy allowed")
	}
	if _, err := New(Options{TargetPolicy: 7}); err == nil {
		t.Error("New accepted an unknown policy")
	}
}

func TestNXDomainNegativeCache(t *testing.T) {
	res := testResolver()
	clock := &fakeClock{t: time.Now()}
	c := newChecker(t, nil, func(o *Options) {
		o.Resolver = res
		o.Now = clock.Now
		o.DNSNegativeTTL = 10 * time.Second
	})
	for i := range 3 {
		r := c.Check(context.Background(), spec("http://nx.test/"))
		wantClass(t, r, events.ClassDNSNXDomain)
		if r.Class.Side() != events.SideSite {
			t.Error("nxdomain must be the site's side")
		}
		if i == 0 && r.Timings.DNSMs <= 0 {
			t.Errorf("timings %+v", r.Timings)
		}
	}
	if n := res.count("nx.test"); n != 1 {
		t.Errorf("resolver called %d times, want 1 (negative cache)", n)
	}
	clock.Advance(11 * time.Second)
	wantClass(t, c.Check(context.Background(), spec("http://nx.test/")), events.ClassDNSNXDomain)
	if n := res.count("nx.test"); n != 2 {
		t.Errorf("resolver called %d times after the negative TTL, want 2", n)
	}
}

func TestResolverFailures(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"timeout", &net.DNSError{Err: "i/o timeout", Name: "x.test", IsTimeout: true}},
		{"temporary", &net.DNSError{Err: "server misbehaving", Name: "x.test", IsTemporary: true}},
		{"other", &net.DNSError{Err: "connection refused", Name: "x.test"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := &fakeResolver{fn: func(context.Context, string) ([]net.IPAddr, error) { return nil, tc.err }}
			c := newChecker(t, nil, func(o *Options) { o.Resolver = res })
			for range 2 {
				r := c.Check(context.Background(), spec("http://x.test/"))
				wantClass(t, r, events.ClassMonitorResolver)
				if r.Class.Side() != events.SideMonitor {
					t.Error("resolver failure must be the monitor's side")
				}
			}
			if n := res.count("x.test"); n != 2 {
				t.Errorf("resolver called %d times: failures must not be cached", n)
			}
		})
	}

	// A resolver that does not answer within the check's timeout.
	res := &fakeResolver{fn: func(ctx context.Context, _ string) ([]net.IPAddr, error) {
		<-ctx.Done()
		return nil, &net.DNSError{Err: ctx.Err().Error(), IsTimeout: true}
	}}
	c := newChecker(t, nil, func(o *Options) { o.Resolver = res; o.DNSLookupTimeout = time.Second })
	sp := spec("http://slow.test/")
	sp.Timeout = events.Duration(200 * time.Millisecond)
	start := time.Now()
	r := c.Check(context.Background(), sp)
	wantClass(t, r, events.ClassMonitorResolver)
	if el := time.Since(start); el > time.Second {
		t.Errorf("check took %v", el)
	}
}

func TestDNSCoalescing(t *testing.T) {
	release := make(chan struct{})
	res := &fakeResolver{fn: func(ctx context.Context, _ string) ([]net.IPAddr, error) {
		<-release
		return loopback(), nil
	}}
	d := newDNSCache(res, time.Minute, time.Second, time.Minute, time.Now)
	var wg sync.WaitGroup
	results := make(chan []netip.Addr, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addrs, err := d.lookup(context.Background(), "busy.test")
			if err != nil {
				t.Error(err)
			}
			results <- addrs
		}()
	}
	// A waiter that gives up does not disturb the others.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := d.lookup(ctx, "busy.test"); err == nil {
		t.Error("lookup did not give up at its context's deadline")
	}
	close(release)
	wg.Wait()
	close(results)
	for addrs := range results {
		if len(addrs) != 1 || addrs[0] != netip.MustParseAddr("127.0.0.1") {
			t.Errorf("addrs %v", addrs)
		}
	}
	if n := res.count("busy.test"); n != 1 {
		t.Errorf("resolver called %d times, want 1", n)
	}
	if _, err := d.lookup(context.Background(), "busy.test"); err != nil || res.count("busy.test") != 1 {
		t.Errorf("cached lookup: %v, %d calls", err, res.count("busy.test"))
	}
}

func TestDNSCacheExpiryAndSweep(t *testing.T) {
	res := testResolver()
	clock := &fakeClock{t: time.Now()}
	d := newDNSCache(res, time.Minute, time.Second, time.Minute, clock.Now)
	for i := range 3000 {
		if _, err := d.lookup(context.Background(), "h"+strconv.Itoa(i)+".test"); err != nil {
			t.Fatal(err)
		}
		if i == 1500 {
			clock.Advance(2 * time.Minute) // the first 1501 expire
		}
	}
	d.mu.Lock()
	n := len(d.entries)
	d.mu.Unlock()
	if n > 2500 {
		t.Errorf("%d entries cached, expired ones were not swept", n)
	}
	// An expired entry is looked up again.
	if _, err := d.lookup(context.Background(), "h0.test"); err != nil || res.count("h0.test") != 2 {
		t.Errorf("expired entry: %v, %d calls", err, res.count("h0.test"))
	}
	if _, err := d.lookup(context.Background(), "h2999.test"); err != nil || res.count("h2999.test") != 1 {
		t.Errorf("fresh entry: %v, %d calls", err, res.count("h2999.test"))
	}
}
