package fleet

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Resolver resolves the fleet's host names to the addresses of the listeners
// serving them, without DNS or /etc/hosts. It implements
// httpcheck.Resolver. Names outside the fleet are not found.
type Resolver struct {
	plan      *Plan
	httpAddrs []netip.AddrPort
	tlsAddrs  []netip.AddrPort
}

// NewResolver returns the resolver of a running fleet, from the plan of its
// configuration and the Info it reported.
func NewResolver(p *Plan, info Info) (*Resolver, error) {
	r := &Resolver{plan: p}
	for _, l := range info.Listeners {
		ap, err := netip.ParseAddrPort(l.Addr)
		if err != nil {
			return nil, fmt.Errorf("fleet: listener address %q: %w", l.Addr, err)
		}
		if l.TLS {
			r.tlsAddrs = append(r.tlsAddrs, ap)
		} else {
			r.httpAddrs = append(r.httpAddrs, ap)
		}
	}
	cfg := p.Config()
	if len(r.httpAddrs) != cfg.Listeners || len(r.tlsAddrs) != cfg.TLSListeners {
		return nil, fmt.Errorf("fleet: info lists %d HTTP and %d TLS listeners, the plan wants %d and %d",
			len(r.httpAddrs), len(r.tlsAddrs), cfg.Listeners, cfg.TLSListeners)
	}
	return r, nil
}

// AddrPort returns the address site i is served on.
func (r *Resolver) AddrPort(i int) netip.AddrPort {
	if r.plan.TLS(i) {
		return r.tlsAddrs[r.plan.tlsListener(i)]
	}
	return r.httpAddrs[r.plan.httpListener(i)]
}

// URL returns the URL to check site i at, such as
// http://s000123.fleet.test:40123/.
func (r *Resolver) URL(i int) string {
	scheme := "http"
	if r.plan.TLS(i) {
		scheme = "https"
	}
	return scheme + "://" + r.plan.Host(i) + ":" + strconv.Itoa(int(r.AddrPort(i).Port())) + "/"
}

// LookupIPAddr implements httpcheck.Resolver: a fleet host name resolves to
// its listener's address; anything else is not found.
func (r *Resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	if err := ctx.Err(); err != nil {
		return nil, &net.DNSError{Err: err.Error(), Name: host, IsTimeout: true}
	}
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	i, ok := r.plan.Index(h)
	if !ok || !strings.HasSuffix(h, r.plan.suffix) {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	a := r.AddrPort(i).Addr()
	return []net.IPAddr{{IP: net.IP(a.AsSlice())}}, nil
}

// DialContext returns a dial function, for http.Transport.DialContext, that
// resolves fleet host names with r and dials with d (whose LocalAddr can
// pick the source address, and so the region, of the connection).
func (r *Resolver) DialContext(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if _, err := netip.ParseAddr(host); err != nil {
			ips, err := r.LookupIPAddr(ctx, host)
			if err != nil {
				return nil, err
			}
			host = ips[0].IP.String()
		}
		return d.DialContext(ctx, network, net.JoinHostPort(host, port))
	}
}
