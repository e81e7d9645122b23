// Package httpcheck runs one HTTP(S) check of a site and classifies the
// result.
//
// A Checker turns an events.CheckSpec into a Result: the result class (ok,
// the site's fault or the monitor's, see events.Class), the status code, the
// phase timings, the redirect chain and the facts of the TLS certificate. The
// checker service wraps a Result into an events.Observation.
//
// Targets are untrusted. Every check is bounded in time (spec.Timeout), in
// bytes read (Options.MaxBodyBytes, and a cap on response headers) and in
// redirects (Options.MaxRedirects), and connects only to the addresses its
// TargetPolicy allows, checked at dial time. Each check uses fresh
// connections, never reused by another check, so one site cannot affect the
// result of another.
//
// Requests are HTTP/1.1 with "Connection: close", the Checker's User-Agent
// and, unless the spec sets its own or the method is HEAD, "Accept-Encoding:
// gzip", as a browser would send; keywords are searched in the decompressed
// body. Informational (1xx) responses before the final one are skipped, five
// at most. An internationalized host name is resolved and sent in its ASCII
// form.
//
// # Classification
//
// Failures are classified by the phase in which they happened:
//
//	invalid URL, method or header, other scheme  target_refused (monitor)
//	address refused by the TargetPolicy          target_refused (monitor)
//	name does not exist (NXDOMAIN, no address)   dns_nxdomain
//	resolver error or timeout, deadline in DNS   monitor_resolver (monitor)
//	connection refused or reset when connecting  connect_refused
//	connect timed out, deadline while connecting connect_timeout
//	network or host unreachable, EACCES, EPERM   monitor_network (monitor)
//	checker out of ports, files or buffers       monitor_overload (monitor)
//	any other connect error                      monitor_network (monitor)
//	certificate expired or not yet valid         tls_expired
//	unknown authority, self-signed, wrong name   tls_untrusted
//	checker has no system roots                  monitor_network (monitor)
//	other handshake failure                      tls_handshake
//	deadline in handshake, request or body       timeout
//	connection closed or malformed response      body_read
//	error reading the body                       body_read
//	redirect loop, more than MaxRedirects        redirect_loop
//	redirect not allowed by spec.Redirects       redirect_policy
//	redirect chain changed (policy "alert")      redirect_policy
//	status not expected                          http_status
//	required keyword missing                     keyword_missing
//	forbidden keyword present                    keyword_forbidden
//	check canceled by the caller's context       monitor_network (monitor)
//
// When a response arrives, its status is judged first, then the redirect
// chain (policy "alert"), then the body's keywords. spec.ExpectStatus
// applies to the final response of the chain; with policy "fail" a redirect
// is not followed and is a redirect_policy failure unless its own status is
// in spec.ExpectStatus, in which case it is judged like any final response.
//
// Certificates are always verified by the Checker itself, against
// Options.RootCAs, for the host name of the URL, so Result.TLS reports
// whether the chain is valid even when spec.TLSVerify is false; only then is
// an invalid chain not a failure. The TLS versions and cipher suites are
// crypto/tls's client defaults (TLS 1.2 and later), like a current browser.
package httpcheck

import (
	"compress/gzip"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vigil-dev/vigil/events"
)

// Defaults of Options and of CheckSpec fields left zero.
const (
	DefaultUserAgent        = "Vigil/1 (+https://vigil.dev/bot)"
	DefaultDNSCacheTTL      = 60 * time.Second
	DefaultDNSNegativeTTL   = 10 * time.Second
	DefaultDNSLookupTimeout = 10 * time.Second
	DefaultMaxBodyBytes     = 1 << 20
	DefaultMaxRedirects     = 10
	// DefaultTimeout bounds a check whose spec has no timeout.
	DefaultTimeout = 30 * time.Second
)

// maxHeaderBytes caps the response headers a check reads.
const maxHeaderBytes = 256 << 10

// Options configure a Checker. The zero value is a production checker:
// public targets only, system resolver and roots, default bounds.
type Options struct {
	// UserAgent is sent with every request unless the spec's headers set
	// one. Default DefaultUserAgent.
	UserAgent string

	// TargetPolicy says which addresses checks may connect to. The zero
	// value, PublicOnly, is the safe default.
	TargetPolicy TargetPolicy

	// Resolver looks host names up. Nil means net.DefaultResolver. It is
	// always used through the Checker's cache.
	Resolver Resolver

	// DNSCacheTTL is how long a resolved host's addresses are reused
	// (default 60s); DNSNegativeTTL how long a name that does not exist is
	// remembered as such (default 10s). An entry is never used after its
	// TTL: a changed answer is seen at most one TTL late.
	DNSCacheTTL, DNSNegativeTTL time.Duration

	// DNSLookupTimeout bounds one call to the Resolver (default 10s). A
	// lookup is shared by every check of the host that starts while it is
	// in flight, so it is bounded on its own rather than by one check.
	DNSLookupTimeout time.Duration

	// MaxBodyBytes is the most of a body a keyword check reads (default
	// 1 MiB). Keywords after it are not seen; a longer body is not an error.
	MaxBodyBytes int64

	// MaxRedirects is how many redirects a check follows (default 10); one
	// more is a redirect_loop.
	MaxRedirects int

	// Now is the clock for Result.StartedAt, certificate validity and DNS
	// cache expiry. Nil means time.Now. Durations are always measured with
	// the monotonic clock.
	Now func() time.Time

	// RootCAs are the roots certificates are verified against. Nil means
	// the system roots.
	RootCAs *x509.CertPool

	// SourceAddr, when valid, is the local address checks connect from, for
	// a host with several addresses (one per vantage point). It applies to
	// targets of the same address family only; others use the default.
	SourceAddr netip.Addr
}

// A Checker runs checks. It holds the DNS cache, so there should be one per
// process. A Checker is safe for concurrent use by multiple goroutines.
type Checker struct {
	opts   Options
	policy TargetPolicy
	dns    *dnsCache
	now    func() time.Time

	// client is shared by every check. Its transport dials afresh for
	// each request and keeps no connection; everything that belongs to one
	// check (the dialers writing the timings, the TLS settings, the
	// redirect policy) is found through the *probe in the request's
	// context (see probeFrom).
	client *http.Client

	// Made once rather than per dial: the Control hook (a method value),
	// the source addresses by family (nil for the default), the
	// User-Agent header value (never modified: a spec's User-Agent
	// replaces it) and the Accept-Encoding one of checks that set none.
	controlFn          func(network, address string, c syscall.RawConn) error
	srcAddr4, srcAddr6 *net.TCPAddr
	userAgent          []string
	acceptGzip         []string

	// readers and writers hold the buffers of connections between checks
	// (*connReader, *bufio.Writer): every check has a new connection.
	readers, writers sync.Pool

	// dialAddr connects to one literal address; tests replace it to keep
	// traffic off non-loopback addresses.
	dialAddr func(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error)
}

// New returns a Checker with opts, zero fields replaced by their defaults.
// It returns an error for negative bounds or an unknown TargetPolicy.
func New(opts Options) (*Checker, error) {
	if opts.TargetPolicy != PublicOnly && opts.TargetPolicy != AllowPrivate {
		return nil, fmt.Errorf("httpcheck: unknown target policy %d", int(opts.TargetPolicy))
	}
	if opts.DNSCacheTTL < 0 || opts.DNSNegativeTTL < 0 || opts.DNSLookupTimeout < 0 ||
		opts.MaxBodyBytes < 0 || opts.MaxRedirects < 0 {
		return nil, errors.New("httpcheck: negative option")
	}
	if opts.UserAgent == "" {
		opts.UserAgent = DefaultUserAgent
	}
	if opts.Resolver == nil {
		opts.Resolver = net.DefaultResolver
	}
	if opts.DNSCacheTTL == 0 {
		opts.DNSCacheTTL = DefaultDNSCacheTTL
	}
	if opts.DNSNegativeTTL == 0 {
		opts.DNSNegativeTTL = DefaultDNSNegativeTTL
	}
	if opts.DNSLookupTimeout == 0 {
		opts.DNSLookupTimeout = DefaultDNSLookupTimeout
	}
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.MaxRedirects == 0 {
		opts.MaxRedirects = DefaultMaxRedirects
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Checker{
		opts:   opts,
		policy: opts.TargetPolicy,
		now:    opts.Now,
		dns:    newDNSCache(opts.Resolver, opts.DNSCacheTTL, opts.DNSNegativeTTL, opts.DNSLookupTimeout, opts.Now),
		dialAddr: func(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
		userAgent:  []string{opts.UserAgent},
		acceptGzip: []string{"gzip"},
	}
	c.controlFn = c.control
	c.readers.New = newConnReader
	c.writers.New = newConnWriter
	if src := opts.SourceAddr; src.IsValid() {
		a := &net.TCPAddr{IP: src.AsSlice()}
		if src.Is4() {
			c.srcAddr4 = a
		} else {
			c.srcAddr6 = a
		}
	}

	// The client follows redirects; roundTripper sends each request on a
	// connection of its own (see roundTrip): HTTP/1.1, a TLS handshake
	// offering no ALPN, never a proxy from the environment.
	c.client = &http.Client{
		Transport:     roundTripper{},
		CheckRedirect: checkRedirect,
	}
	return c, nil
}

// Result is the outcome of one check.
type Result struct {
	// Class is the result class; Class.Side says whom it blames.
	Class events.Class
	// StatusCode is the status of the last response received, 0 if none.
	StatusCode int
	// Timings are the check's phases, summed over the requests of a
	// redirect chain (see Check).
	Timings events.Timings
	// FinalURL is the last URL requested (passwords redacted).
	FinalURL string
	// RedirectChain lists the URLs redirected to and requested, in order,
	// excluding the first; nil without redirects.
	RedirectChain []string
	// TLS describes the certificate of the last TLS handshake of the
	// check that got as far as a certificate, verified or not; nil if none.
	TLS *events.TLSInfo
	// Error explains a failure for people; empty when Class is ok.
	Error string
	// StartedAt is when the check started, by Options.Now.
	StartedAt time.Time
}

// Check runs the check spec describes and classifies its result. It returns
// by spec.Timeout (DefaultTimeout if zero) or ctx's deadline, whichever is
// earlier, plus a little time to clean up.
//
// spec.Method is GET (the default when empty) or HEAD; spec.Headers are
// sent on every request of the chain (a "Host" entry sets the request's
// host), with Options.UserAgent unless they set User-Agent. The body is read
// only when the spec has keywords, at most Options.MaxBodyBytes of it, and
// otherwise closed unread. Keywords need GET: a HEAD response has no body,
// so required keywords are reported missing.
//
// Timings: DNS is the time spent resolving (near zero when cached, zero for
// an IP address), connect the time to open the TCP connection, TLS the
// handshake, TTFB the time from having a connection to the first byte of the
// response (writing the request and the server's think time); each is summed
// over the requests of a redirect chain. Total is the whole check, body
// included.
//
// If ctx is canceled (not timed out) the check is abandoned and the Result
// has class monitor_network and Error "check canceled": it says nothing about
// the site and should not be published.
func (c *Checker) Check(ctx context.Context, spec events.CheckSpec) Result {
	start := time.Now()
	p := &probe{c: c, spec: spec}
	res := Result{StartedAt: c.now()}
	res.Class, res.Error = p.run(ctx, &res)
	if res.Class == events.ClassOK {
		res.Error = ""
	}

	p.mu.Lock()
	res.Timings = events.Timings{
		DNSMs:     ms(p.dnsDur),
		ConnectMs: ms(p.connectDur),
		TLSMs:     ms(p.tlsDur),
		TTFBMs:    ms(p.ttfbDur),
	}
	// A TLSInfo is never modified once recorded (verify makes a new one
	// per handshake), so the Result may share it.
	res.TLS = p.tls
	p.mu.Unlock()
	res.Timings.TotalMs = ms(time.Since(start))
	return res
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// phase is how far one request of a check got.
type phase int

const (
	phaseStart    phase = iota // nothing sent yet
	phaseConn                  // waiting for the transport to dial
	phaseDNS                   // resolving the host
	phaseConnect               // opening the TCP connection
	phaseTLS                   // TLS handshake
	phaseRequest               // connected; sending the request, awaiting headers
	phaseResponse              // response headers received
	phaseBody                  // reading the body
)

// probe is the state of one check. The requests of the check carry it in
// their context (see probeFrom), for the Checker's shared client and
// transport to find.
type probe struct {
	c        *Checker
	spec     events.CheckSpec
	deadline time.Time
	// gzip says the check asks for gzip-compressed bodies (as browsers and
	// net/http's transport do) and so must decompress the ones it reads.
	gzip bool

	// Written while the requests run, read by Check at the end: mu keeps
	// every read of them consistent.
	mu                                  sync.Mutex
	phase                               phase
	failPhase                           phase // phase when a request failed
	dnsDur, connectDur, tlsDur, ttfbDur time.Duration
	tls                                 *events.TLSInfo

	// Used only by the goroutine running Check: the client calls
	// CheckRedirect and RoundTrip on it.
	first   *url.URL        // the URL of the first request
	seen    map[string]bool // made at the first redirect
	chain   []string
	stopped string // a redirect not followed under policy "fail"
	lastURL string // last URL requested
}

func (p *probe) setPhase(ph phase) {
	p.mu.Lock()
	p.phase = ph
	p.mu.Unlock()
}

func (p *probe) add(d *time.Duration, v time.Duration) {
	p.mu.Lock()
	*d += v
	p.mu.Unlock()
}

func (p *probe) run(parent context.Context, res *Result) (events.Class, string) {
	spec := &p.spec
	timeout := spec.Timeout.Std()
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	p.deadline, _ = ctx.Deadline()

	reqCtx := context.WithValue(ctx, probeKey{}, p)
	// The URL is parsed once, by NewRequestWithContext. It is given GET,
	// so that only the URL can be refused there; the spec's method is
	// checked below, after the URL, as it always was.
	req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, spec.URL, nil)
	if err != nil {
		return events.ClassTargetRefused, "invalid URL: " + err.Error()
	}
	u := req.URL
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return events.ClassTargetRefused, fmt.Sprintf("invalid URL %q: need http or https and a host", u.Redacted())
	}
	res.FinalURL = u.Redacted()
	p.lastURL = res.FinalURL
	p.first = u

	method := strings.ToUpper(spec.Method)
	switch method {
	case "":
		method = http.MethodGet
	case http.MethodGet, http.MethodHead:
	default:
		return events.ClassTargetRefused, fmt.Sprintf("unsupported method %q: use GET or HEAD", spec.Method)
	}
	req.Method = method
	// The Checker's slice: a spec's User-Agent below replaces it, and
	// nothing in net/http modifies a header's values in place.
	req.Header["User-Agent"] = p.c.userAgent
	for k, v := range spec.Headers {
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	if method != http.MethodHead && req.Header.Get("Accept-Encoding") == "" && req.Header.Get("Range") == "" {
		// http.Client copies the header into the requests of a redirect.
		req.Header["Accept-Encoding"] = p.c.acceptGzip
		p.gzip = true
	}

	resp, err := p.c.client.Do(req)
	if len(p.chain) > 0 {
		res.RedirectChain = p.chain
	}
	res.FinalURL = p.lastURL
	if resp != nil {
		res.StatusCode = resp.StatusCode
		defer resp.Body.Close()
	}
	if err != nil {
		return p.classify(parent, ctx, err)
	}

	expected := len(spec.ExpectStatus) > 0 && slices.Contains(spec.ExpectStatus, resp.StatusCode)
	if p.stopped != "" && !expected {
		return events.ClassRedirectPolicy, fmt.Sprintf("status %d redirects to %s: redirects are not allowed (policy fail)", resp.StatusCode, p.stopped)
	}
	if len(spec.ExpectStatus) > 0 && !expected {
		return events.ClassHTTPStatus, fmt.Sprintf("status %d, expected one of %v", resp.StatusCode, spec.ExpectStatus)
	}
	if len(spec.ExpectStatus) == 0 && resp.StatusCode >= 400 {
		return events.ClassHTTPStatus, fmt.Sprintf("status %d", resp.StatusCode)
	}
	if spec.Redirects == events.RedirectAlert && len(spec.LastRedirectChain) > 0 &&
		!slices.Equal(spec.LastRedirectChain, p.chain) {
		return events.ClassRedirectPolicy, fmt.Sprintf("redirect chain changed: was %v, now %v", spec.LastRedirectChain, p.chain)
	}
	if len(spec.Keywords) == 0 && len(spec.ForbiddenKeywords) == 0 {
		return events.ClassOK, ""
	}
	p.setPhase(phaseBody)
	body, err := p.decoded(resp)
	var cls events.Class
	var msg string
	if err == nil {
		cls, msg, err = scanBody(body, p.c.opts.MaxBodyBytes, spec.Keywords, spec.ForbiddenKeywords)
	}
	if err != nil {
		switch {
		case parent.Err() != nil && errors.Is(parent.Err(), context.Canceled):
			return events.ClassMonitorNetwork, "check canceled"
		case p.expired(ctx) || isTimeout(err):
			return events.ClassTimeout, "reading body: " + err.Error()
		}
		return events.ClassBodyRead, "reading body: " + err.Error()
	}
	return cls, msg
}

// decoded returns the body of resp as sent: decompressed when the check
// asked for gzip and got it. Keywords are searched for, and MaxBodyBytes
// counted, in the decompressed body, so a small compressed body cannot
// expand past the bound.
func (p *probe) decoded(resp *http.Response) (io.Reader, error) {
	if !p.gzip || !strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip") {
		return resp.Body, nil
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	return zr, nil
}

// probeKey is the context key of the *probe a request belongs to.
type probeKey struct{}

// probeFrom returns the probe whose request ctx belongs to, or nil. The
// transport keeps the request context's values in the contexts it dials
// with, and the client keeps them in the requests of a redirect chain.
func probeFrom(ctx context.Context) *probe {
	p, _ := ctx.Value(probeKey{}).(*probe)
	return p
}

// errNoProbe is a request sent through a Checker's client by anything but
// a check; it does not happen.
var errNoProbe = errors.New("httpcheck: request without a check")

// roundTripper marks where each request of a chain starts and ends, so that
// an error can be placed in its phase.
type roundTripper struct{}

func (r roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	p := probeFrom(req.Context())
	if p == nil {
		return nil, errNoProbe
	}
	p.lastURL = req.URL.Redacted()
	p.setPhase(phaseStart) // until the request is found valid
	resp, err := p.roundTrip(req)
	p.mu.Lock()
	if err != nil {
		p.failPhase = p.phase
	} else {
		p.phase = phaseResponse
		p.failPhase = phaseResponse
	}
	p.mu.Unlock()
	return resp, err
}

// redirectError is a redirect the check refuses to follow.
type redirectError struct {
	Class events.Class
	Msg   string
}

func (e *redirectError) Error() string { return e.Msg }

// checkRedirect is the client's CheckRedirect: it hands the redirect to the
// probe of the chain.
func checkRedirect(req *http.Request, via []*http.Request) error {
	p := probeFrom(req.Context())
	if p == nil {
		return errNoProbe
	}
	return p.checkRedirect(req, via)
}

// checkRedirect applies spec.Redirects to a redirect to req; via are the
// requests made so far.
func (p *probe) checkRedirect(req *http.Request, via []*http.Request) error {
	target := req.URL.Redacted()
	if p.spec.Redirects == events.RedirectFail {
		p.stopped = target
		return http.ErrUseLastResponse
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return &redirectError{events.ClassRedirectPolicy, fmt.Sprintf("redirect to %s: scheme %q is not http or https", target, req.URL.Scheme)}
	}
	if len(via) > p.c.opts.MaxRedirects {
		return &redirectError{events.ClassRedirectLoop, fmt.Sprintf("redirect to %s: more than %d redirects", target, p.c.opts.MaxRedirects)}
	}
	if p.seen == nil {
		p.seen = map[string]bool{seenKey(p.first): true}
	}
	key := seenKey(req.URL)
	if p.seen[key] {
		return &redirectError{events.ClassRedirectLoop, fmt.Sprintf("redirect loop: %s requested twice", target)}
	}
	p.seen[key] = true
	p.chain = append(p.chain, target)
	return nil
}

// seenKey identifies a URL for loop detection: the fragment is never sent.
func seenKey(u *url.URL) string {
	v := *u
	v.Fragment, v.RawFragment = "", ""
	return v.String()
}
