package httpcheck

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vigil-dev/vigil/events"
)

// refusedError is a connection the TargetPolicy forbids.
type refusedError struct {
	Addr   netip.Addr
	Policy TargetPolicy
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("address %s refused by target policy %s", e.Addr, e.Policy)
}

// certError is a certificate that failed verification while the check
// required verification.
type certError struct{ Err error }

func (e *certError) Error() string { return "tls: certificate: " + e.Err.Error() }
func (e *certError) Unwrap() error { return e.Err }

// dialError is a failure to open a TCP connection to any of a host's
// addresses.
type dialError struct{ Err error }

func (e *dialError) Error() string { return e.Err.Error() }
func (e *dialError) Unwrap() error { return e.Err }

// handshakeError is a failed TLS handshake for a reason other than the
// certificate.
type handshakeError struct{ Err error }

func (e *handshakeError) Error() string { return "tls handshake: " + e.Err.Error() }
func (e *handshakeError) Unwrap() error { return e.Err }

// control is the net.Dialer Control hook: the last point before connect(2),
// with the address the socket will really connect to. Checking here, not
// after DNS, is what defeats DNS rebinding.
func (c *Checker) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("target policy: unparsable address %q: %w", address, err)
	}
	if !c.policy.Allows(ap.Addr()) {
		return &refusedError{Addr: ap.Addr(), Policy: c.policy}
	}
	return nil
}

// minAttempt is the least time given to one address when a host has several,
// as in package net.
const minAttempt = 2 * time.Second

// connect opens a TCP connection to addr ("host:port") for the probe: it
// resolves host through the cache and tries its addresses in order, each
// through the guarded dialer. ctx ends by the check's deadline.
func (p *probe) connect(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, &dialError{Err: err}
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		p.setPhase(phaseDNS)
		t := time.Now()
		addrs, err = p.c.dns.lookup(ctx, host)
		p.add(&p.dnsDur, time.Since(t))
		if err != nil {
			return nil, err
		}
	}
	p.setPhase(phaseConnect)
	t := time.Now()
	defer func() { p.add(&p.connectDur, time.Since(t)) }()

	portNum, err := parsePort(port)
	if err != nil {
		return nil, &dialError{Err: err}
	}
	var first error
	for i, a := range addrs {
		if !p.c.policy.Allows(a) {
			// Refuse early, without a socket; control refuses again at
			// connect time for anything that gets past here.
			first = pickDialError(first, &refusedError{Addr: a, Policy: p.c.policy})
			continue
		}
		d := net.Dialer{Control: p.c.controlFn, KeepAlive: -1}
		// The source address applies to targets of its own family only.
		if src := p.c.srcAddr4; src != nil && a.Is4() {
			d.LocalAddr = src
		} else if src := p.c.srcAddr6; src != nil && !a.Is4() {
			d.LocalAddr = src
		}
		if left := len(addrs) - i; left > 1 {
			// Share the remaining time among the remaining addresses.
			if dl, ok := ctx.Deadline(); ok {
				d.Deadline = time.Now().Add(max(time.Until(dl)/time.Duration(left), minAttempt))
			}
		}
		conn, err := p.c.dialAddr(ctx, &d, network, netip.AddrPortFrom(a, portNum).String())
		if err == nil {
			return conn, nil
		}
		var re *refusedError
		if errors.As(err, &re) {
			first = pickDialError(first, re)
		} else {
			first = pickDialError(first, &dialError{Err: err})
		}
		if ctx.Err() != nil {
			break
		}
	}
	if first == nil {
		first = &dialError{Err: fmt.Errorf("no address to dial for %s", host)}
	}
	return nil, first
}

// pickDialError returns the error to report when a host's addresses fail one
// after another: the first one, unless a later one says more about the site
// than "this checker cannot reach that address" (an IPv6 address from an
// IPv4-only checker, or a refused address, followed by a refused
// connection).
func pickDialError(cur, next error) error {
	if cur == nil {
		return next
	}
	if cls := dialClass(cur); cls.Side() == events.SideMonitor && dialClass(next).Side() == events.SideSite {
		return next
	}
	return cur
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("invalid port %q", s)
	}
	return uint16(n), nil
}

// dialTLS opens a connection as connect does, then runs the TLS handshake
// itself so that it can record the certificate whatever the outcome and
// verify the chain on its own terms (see verify).
func (p *probe) dialTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	// ctx, the request's, ends at the check's deadline: it bounds the dial
	// and the handshake.
	raw, err := p.connect(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(addr)
	cfg := &tls.Config{
		ServerName: host,
		// Verification happens in VerifyConnection, so that it can be
		// recorded even when the check does not require it.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return p.verify(cs, host)
		},
	}

	p.setPhase(phaseTLS)
	t := time.Now()
	conn := tls.Client(raw, cfg)
	err = conn.HandshakeContext(ctx)
	p.add(&p.tlsDur, time.Since(t))
	if err != nil {
		raw.Close()
		var ce *certError
		if errors.As(err, &ce) {
			return nil, ce
		}
		if ctx.Err() != nil {
			return nil, &handshakeError{Err: fmt.Errorf("timed out: %w", ctx.Err())}
		}
		return nil, &handshakeError{Err: err}
	}
	return conn, nil
}

// verify records what the server presented and checks the chain against the
// checker's roots for host, whether or not the check requires it. It fails
// the handshake only when the spec asks for verification.
func (p *probe) verify(cs tls.ConnectionState, host string) error {
	if len(cs.PeerCertificates) == 0 {
		return &certError{Err: errors.New("server presented no certificate")}
	}
	leaf := cs.PeerCertificates[0]
	var inter *x509.CertPool // nil: no intermediates
	if len(cs.PeerCertificates) > 1 {
		inter = x509.NewCertPool()
		for _, cert := range cs.PeerCertificates[1:] {
			inter.AddCert(cert)
		}
	}
	_, verr := leaf.Verify(x509.VerifyOptions{
		DNSName:       host,
		Roots:         p.c.opts.RootCAs,
		Intermediates: inter,
		CurrentTime:   p.c.now(),
	})
	info := &events.TLSInfo{
		Version:    tlsVersion(cs.Version),
		Issuer:     leaf.Issuer.String(),
		Subject:    leaf.Subject.String(),
		NotBefore:  leaf.NotBefore.UTC(),
		NotAfter:   leaf.NotAfter.UTC(),
		ChainValid: verr == nil,
	}
	if verr != nil {
		info.VerifyError = verr.Error()
	}
	p.mu.Lock()
	p.tls = info
	p.mu.Unlock()
	if verr != nil && p.spec.TLSVerify {
		return &certError{Err: verr}
	}
	return nil
}

// tlsVersion names a TLS version without a space: "TLS1.3".
func tlsVersion(v uint16) string {
	return strings.ReplaceAll(tls.VersionName(v), " ", "")
}
