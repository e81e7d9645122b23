package httpcheck

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Resolver looks up the IP addresses of a host name. *net.Resolver (and so
// net.DefaultResolver) implements it. Implementations must honor ctx: the
// Checker bounds every lookup with it.
//
// Errors should be *net.DNSError values: IsNotFound marks a name that does
// not exist (NXDOMAIN or no address records), which is the site's fault; any
// other error is taken to be a failure of the resolver, which is the
// monitor's.
type Resolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// lookupError is a failed resolution of Host.
type lookupError struct {
	Host string
	Err  error
}

func (e *lookupError) Error() string { return "lookup " + e.Host + ": " + e.Err.Error() }
func (e *lookupError) Unwrap() error { return e.Err }

// notFound reports whether err says the name does not exist.
func (e *lookupError) notFound() bool {
	var de *net.DNSError
	return errors.As(e.Err, &de) && de.IsNotFound
}

// dnsCache caches lookups for a fixed TTL, caches "not found" answers for a
// shorter one, and coalesces concurrent lookups of one host into a single
// resolver call. Other failures are not cached: the next check asks again.
type dnsCache struct {
	resolver Resolver
	ttl      time.Duration
	negTTL   time.Duration
	timeout  time.Duration // bound of one resolver call
	now      func() time.Time

	mu      sync.Mutex
	entries map[string]dnsEntry
	calls   map[string]*dnsCall
	sweepAt int // sweep expired entries when the map reaches this size
}

type dnsEntry struct {
	addrs   []netip.Addr
	err     error // a not-found error, for negative entries
	expires time.Time
}

// dnsCall is a lookup in flight; done is closed when addrs and err are set.
type dnsCall struct {
	done  chan struct{}
	addrs []netip.Addr
	err   error
}

const minSweep = 1024

func newDNSCache(r Resolver, ttl, negTTL, timeout time.Duration, now func() time.Time) *dnsCache {
	return &dnsCache{
		resolver: r, ttl: ttl, negTTL: negTTL, timeout: timeout, now: now,
		entries: make(map[string]dnsEntry),
		calls:   make(map[string]*dnsCall),
		sweepAt: minSweep,
	}
}

// lookup returns the addresses of host, in the resolver's order. Errors are
// *lookupError. It returns early with ctx's error if ctx ends first; the
// shared resolver call then goes on (bounded by c.timeout) for other waiters
// and for the cache.
func (c *dnsCache) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	c.mu.Lock()
	if e, ok := c.entries[host]; ok {
		if c.now().Before(e.expires) {
			c.mu.Unlock()
			return e.addrs, e.err
		}
		delete(c.entries, host)
	}
	call, ok := c.calls[host]
	if !ok {
		call = &dnsCall{done: make(chan struct{})}
		c.calls[host] = call
		// The call is detached from ctx (and from the values of the check
		// that started it) so that one caller giving up does not fail the
		// others waiting on it; it has its own bound.
		go c.resolve(host, call)
	}
	c.mu.Unlock()

	select {
	case <-call.done:
		return call.addrs, call.err
	case <-ctx.Done():
		return nil, &lookupError{Host: host, Err: ctx.Err()}
	}
}

func (c *dnsCache) resolve(host string, call *dnsCall) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	ips, err := c.resolver.LookupIPAddr(ctx, host)
	addrs := make([]netip.Addr, 0, len(ips))
	for _, ip := range ips {
		if a, ok := netip.AddrFromSlice(ip.IP); ok {
			addrs = append(addrs, a.Unmap().WithZone(ip.Zone))
		}
	}
	if err == nil && len(addrs) == 0 {
		err = &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
	}
	if err != nil {
		addrs = nil
		err = &lookupError{Host: host, Err: err}
	}
	call.addrs, call.err = addrs, err

	c.mu.Lock()
	delete(c.calls, host)
	var le *lookupError
	switch {
	case err == nil:
		c.store(host, dnsEntry{addrs: addrs, expires: c.now().Add(c.ttl)})
	case errors.As(err, &le) && le.notFound():
		c.store(host, dnsEntry{err: err, expires: c.now().Add(c.negTTL)})
	}
	c.mu.Unlock()
	close(call.done)
}

// store adds an entry; c.mu is held. When the map has doubled since the last
// sweep, expired entries are dropped, so the cache holds at most about twice
// the hosts looked up within one TTL.
func (c *dnsCache) store(host string, e dnsEntry) {
	c.entries[host] = e
	if len(c.entries) < c.sweepAt {
		return
	}
	now := c.now()
	for h, e := range c.entries {
		if !now.Before(e.expires) {
			delete(c.entries, h)
		}
	}
	c.sweepAt = max(minSweep, 2*len(c.entries))
}
