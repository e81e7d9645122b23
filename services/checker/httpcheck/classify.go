package httpcheck

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/vigil-dev/vigil/events"
)

// classify names the failure of a request chain: err came from
// http.Client.Do, parent is the caller's context and ctx the check's (parent
// plus the check timeout). The table is in the package documentation.
func (p *probe) classify(parent, ctx context.Context, err error) (events.Class, string) {
	msg := err.Error()
	if parent.Err() != nil && errors.Is(parent.Err(), context.Canceled) {
		return events.ClassMonitorNetwork, "check canceled"
	}
	var (
		rdr *redirectError
		ref *refusedError
		lku *lookupError
		crt *certError
		hsk *handshakeError
		dia *dialError
	)
	timedOut := p.expired(ctx) || isTimeout(err)
	switch {
	case errors.As(err, &rdr):
		return rdr.Class, rdr.Msg
	case errors.As(err, &ref):
		return events.ClassTargetRefused, msg
	case errors.As(err, &lku):
		if lku.notFound() {
			return events.ClassDNSNXDomain, msg
		}
		return events.ClassMonitorResolver, msg
	case errors.As(err, &crt):
		return certClass(crt.Err), msg
	case errors.As(err, &hsk):
		if timedOut {
			return events.ClassTimeout, msg
		}
		return events.ClassTLSHandshake, msg
	case errors.As(err, &dia):
		if timedOut {
			return events.ClassConnectTimeout, msg
		}
		return dialClass(dia.Err), msg
	}

	// The transport gave up first (usually at the deadline) while a dial
	// was still running: go by how far the request got.
	p.mu.Lock()
	ph := p.failPhase
	p.mu.Unlock()
	switch ph {
	case phaseStart:
		if timedOut {
			return events.ClassTimeout, msg
		}
		return events.ClassTargetRefused, "invalid request: " + msg
	case phaseDNS:
		return events.ClassMonitorResolver, "DNS lookup did not finish: " + msg
	case phaseConn, phaseConnect:
		if timedOut {
			return events.ClassConnectTimeout, msg
		}
		return dialClass(err), msg
	case phaseTLS:
		if timedOut {
			return events.ClassTimeout, msg
		}
		return events.ClassTLSHandshake, msg
	case phaseResponse:
		// A response arrived but the client could not follow it (an
		// unparsable Location).
		return events.ClassRedirectPolicy, msg
	}
	// phaseRequest: connected, no complete response.
	if timedOut {
		return events.ClassTimeout, msg
	}
	return events.ClassBodyRead, "reading response: " + msg
}

// dialClass classifies an error opening a TCP connection.
func dialClass(err error) events.Class {
	var ref *refusedError
	switch {
	case errors.As(err, &ref):
		return events.ClassTargetRefused
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return events.ClassConnectRefused
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETDOWN), errors.Is(err, syscall.EHOSTDOWN),
		errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		// The checker has no route (say an IPv6 address from an IPv4-only
		// host) or a local firewall said no: nothing about the site.
		return events.ClassMonitorNetwork
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE),
		errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.ENOBUFS),
		errors.Is(err, syscall.ENOMEM):
		return events.ClassMonitorOverload
	case isTimeout(err):
		return events.ClassConnectTimeout
	}
	// An error the monitor cannot interpret is never the site's fault.
	return events.ClassMonitorNetwork
}

// certClass classifies a certificate verification error.
func certClass(err error) events.Class {
	var inv x509.CertificateInvalidError
	var roots x509.SystemRootsError
	switch {
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		return events.ClassTLSExpired
	case errors.As(err, &roots):
		return events.ClassMonitorNetwork
	}
	// Unknown authority (including self-signed), wrong host name, and any
	// other reason the chain does not verify.
	return events.ClassTLSUntrusted
}

// expired reports whether the check's time is up. The connection's deadline
// and ctx's timer are the same instant but fire apart, so an I/O error at the
// deadline can come before ctx says it is done; and not every such error says
// it was a timeout (bufio returns a partial line without its error, which
// net/http then calls a malformed response).
func (p *probe) expired(ctx context.Context) bool {
	return ctx.Err() != nil || !p.deadline.IsZero() && !time.Now().Before(p.deadline)
}

// isTimeout reports whether err is a deadline or an I/O timeout.
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
