package httpcheck

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/vigil-dev/vigil/events"
)

func spec(url string) events.CheckSpec {
	return events.CheckSpec{
		URL:       url,
		Timeout:   events.Duration(5 * time.Second),
		Redirects: events.RedirectFollow,
		TLSVerify: true,
	}
}

func wantClass(t *testing.T, r Result, want events.Class) {
	t.Helper()
	if r.Class != want {
		t.Fatalf("class = %q (error %q), want %q", r.Class, r.Error, want)
	}
	if want == events.ClassOK && r.Error != "" {
		t.Errorf("ok result has error %q", r.Error)
	}
	if want != events.ClassOK && r.Error == "" {
		t.Errorf("%s result has no error text", want)
	}
}

func TestOK(t *testing.T) {
	s := quietServer(t, okHandler("hello"))
	c := newChecker(t, nil)
	before := time.Now()
	u := named(s, "site.test", "/health")
	r := c.Check(context.Background(), spec(u))
	wantClass(t, r, events.ClassOK)
	if r.StatusCode != 200 {
		t.Errorf("status = %d", r.StatusCode)
	}
	if r.FinalURL != u || r.RedirectChain != nil || r.TLS != nil {
		t.Errorf("final %q chain %v tls %v", r.FinalURL, r.RedirectChain, r.TLS)
	}
	tm := r.Timings
	if tm.DNSMs <= 0 || tm.ConnectMs <= 0 || tm.TTFBMs <= 0 || tm.TotalMs <= 0 || tm.TLSMs != 0 {
		t.Errorf("timings %+v", tm)
	}
	if sum := tm.DNSMs + tm.ConnectMs + tm.TTFBMs; sum > tm.TotalMs {
		t.Errorf("phases %v exceed total %v", sum, tm.TotalMs)
	}
	if r.StartedAt.Before(before) || r.StartedAt.After(time.Now()) {
		t.Errorf("started at %v", r.StartedAt)
	}

	// An IP literal has no DNS phase.
	r = c.Check(context.Background(), spec(s.URL))
	wantClass(t, r, events.ClassOK)
	if r.Timings.DNSMs != 0 {
		t.Errorf("DNS %v for an IP literal", r.Timings.DNSMs)
	}
}

func TestStatus(t *testing.T) {
	s := quietServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var code int
		fmt.Sscanf(r.URL.Path, "/%d", &code)
		w.WriteHeader(code)
	}))
	c := newChecker(t, nil)
	for _, tc := range []struct {
		code   int
		expect []int
		want   events.Class
	}{
		{200, nil, events.ClassOK},
		{204, nil, events.ClassOK},
		{399, nil, events.ClassOK},
		{404, nil, events.ClassHTTPStatus},
		{503, nil, events.ClassHTTPStatus},
		{503, []int{503}, events.ClassOK},
		{200, []int{201, 202}, events.ClassHTTPStatus},
		{202, []int{201, 202}, events.ClassOK},
	} {
		t.Run(fmt.Sprintf("%d-%v", tc.code, tc.expect), func(t *testing.T) {
			sp := spec(fmt.Sprintf("%s/%d", s.URL, tc.code))
			sp.ExpectStatus = tc.expect
			r := c.Check(context.Background(), sp)
			wantClass(t, r, tc.want)
			if r.StatusCode != tc.code {
				t.Errorf("status = %d, want %d", r.StatusCode, tc.code)
			}
		})
	}
}

func TestTLS(t *testing.T) {
	ca := newCA(t)
	now := time.Now()
	valid := leaf(t, ca, "site.test", []string{"site.test", "127.0.0.1"}, now.Add(-time.Hour), now.Add(48*time.Hour))
	expired := leaf(t, ca, "site.test", []string{"site.test"}, now.Add(-48*time.Hour), now.Add(-time.Hour))
	self := leaf(t, nil, "site.test", []string{"site.test"}, now.Add(-time.Hour), now.Add(48*time.Hour))
	wrong := leaf(t, ca, "other.test", []string{"other.test"}, now.Add(-time.Hour), now.Add(48*time.Hour))
	c := newChecker(t, ca)

	for _, tc := range []struct {
		name       string
		cert       tls.Certificate
		host       string
		verify     bool
		want       events.Class
		chainValid bool
		verifyErr  string
	}{
		{"valid", valid, "site.test", true, events.ClassOK, true, ""},
		{"valid-ip", valid, "127.0.0.1", true, events.ClassOK, true, ""},
		{"expired", expired, "site.test", true, events.ClassTLSExpired, false, "expired"},
		{"self-signed", self, "site.test", true, events.ClassTLSUntrusted, false, "unknown authority"},
		{"wrong-host", wrong, "site.test", true, events.ClassTLSUntrusted, false, "site.test"},
		{"expired-noverify", expired, "site.test", false, events.ClassOK, false, "expired"},
		{"self-signed-noverify", self, "site.test", false, events.ClassOK, false, "unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tlsServer(t, tc.cert, okHandler("hello"))
			sp := spec(named(s, tc.host, "/"))
			sp.TLSVerify = tc.verify
			r := c.Check(context.Background(), sp)
			wantClass(t, r, tc.want)
			if r.TLS == nil {
				t.Fatal("no TLS facts")
			}
			leafCert, _ := x509.ParseCertificate(tc.cert.Certificate[0])
			if r.TLS.Version != "TLS1.3" || r.TLS.Subject != leafCert.Subject.String() ||
				r.TLS.Issuer != leafCert.Issuer.String() ||
				!r.TLS.NotAfter.Equal(leafCert.NotAfter) || !r.TLS.NotBefore.Equal(leafCert.NotBefore) {
				t.Errorf("TLS facts %+v", r.TLS)
			}
			if r.TLS.ChainValid != tc.chainValid || !strings.Contains(r.TLS.VerifyError, tc.verifyErr) {
				t.Errorf("chain valid %v error %q", r.TLS.ChainValid, r.TLS.VerifyError)
			}
			if tc.want == events.ClassOK {
				if r.StatusCode != 200 || r.Timings.TLSMs <= 0 {
					t.Errorf("status %d timings %+v", r.StatusCode, r.Timings)
				}
			} else if r.StatusCode != 0 {
				t.Errorf("status %d on a failed handshake", r.StatusCode)
			}
		})
	}
}

// A server that does not speak TLS fails the handshake for a reason other
// than its certificate.
func TestTLSHandshakeFailure(t *testing.T) {
	s := quietServer(t, okHandler("plain"))
	c := newChecker(t, nil)
	r := c.Check(context.Background(), spec(strings.Replace(s.URL, "http:", "https:", 1)))
	wantClass(t, r, events.ClassTLSHandshake)
	if r.TLS != nil {
		t.Errorf("TLS facts without a certificate: %+v", r.TLS)
	}
}

// redirectServer serves /hop/N redirecting to /hop/N-1, /hop/0 with 200,
// /a <-> /b in a loop, /away to a non-HTTP scheme, /perm with 301 to /hop/0.
func redirectServer(t *testing.T) *httptestServer {
	s := quietServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n int
		switch {
		case r.URL.Path == "/a":
			http.Redirect(w, r, "/b", http.StatusFound)
		case r.URL.Path == "/b":
			http.Redirect(w, r, "/a", http.StatusFound)
		case r.URL.Path == "/away":
			w.Header().Set("Location", "ftp://files.test/x")
			w.WriteHeader(http.StatusFound)
		case r.URL.Path == "/perm":
			http.Redirect(w, r, "/hop/0", http.StatusMovedPermanently)
		case r.URL.Path == "/badloc":
			w.Header().Set("Location", "http://[::1")
			w.WriteHeader(http.StatusFound)
		default:
			if _, err := fmt.Sscanf(r.URL.Path, "/hop/%d", &n); err != nil {
				http.NotFound(w, r)
				return
			}
			if n == 0 {
				io.WriteString(w, "arrived")
				return
			}
			http.Redirect(w, r, fmt.Sprintf("/hop/%d", n-1), http.StatusFound)
		}
	}))
	return &httptestServer{s.URL}
}

type httptestServer struct{ URL string }

func hops(base string, from, to int) []string {
	var out []string
	for n := from; n >= to; n-- {
		out = append(out, fmt.Sprintf("%s/hop/%d", base, n))
	}
	return out
}

func TestRedirects(t *testing.T) {
	s := redirectServer(t)
	c := newChecker(t, nil)
	for _, tc := range []struct {
		name   string
		path   string
		policy events.RedirectPolicy
		expect []int
		last   []string
		want   events.Class
		status int
		chain  []string
		final  string
	}{
		{name: "follow-3", path: "/hop/3", policy: events.RedirectFollow, want: events.ClassOK, status: 200,
			chain: hops(s.URL, 2, 0), final: s.URL + "/hop/0"},
		{name: "default-policy", path: "/hop/1", policy: "", want: events.ClassOK, status: 200,
			chain: hops(s.URL, 0, 0), final: s.URL + "/hop/0"},
		{name: "follow-10", path: "/hop/10", policy: events.RedirectFollow, want: events.ClassOK, status: 200,
			chain: hops(s.URL, 9, 0), final: s.URL + "/hop/0"},
		{name: "follow-11", path: "/hop/11", policy: events.RedirectFollow, want: events.ClassRedirectLoop, status: 302,
			chain: hops(s.URL, 10, 1), final: s.URL + "/hop/1"},
		{name: "loop", path: "/a", policy: events.RedirectFollow, want: events.ClassRedirectLoop, status: 302,
			chain: []string{s.URL + "/b"}, final: s.URL + "/b"},
		{name: "non-http", path: "/away", policy: events.RedirectFollow, want: events.ClassRedirectPolicy, status: 302,
			final: s.URL + "/away"},
		{name: "bad-location", path: "/badloc", policy: events.RedirectFollow, want: events.ClassRedirectPolicy,
			final: s.URL + "/badloc"},
		{name: "fail", path: "/hop/1", policy: events.RedirectFail, want: events.ClassRedirectPolicy, status: 302,
			final: s.URL + "/hop/1"},
		{name: "fail-expected-3xx", path: "/perm", policy: events.RedirectFail, expect: []int{301}, want: events.ClassOK, status: 301,
			final: s.URL + "/perm"},
		{name: "follow-expect-applies-to-final", path: "/perm", policy: events.RedirectFollow, expect: []int{301},
			want: events.ClassHTTPStatus, status: 200, chain: hops(s.URL, 0, 0), final: s.URL + "/hop/0"},
		{name: "alert-first-check", path: "/hop/2", policy: events.RedirectAlert, want: events.ClassOK, status: 200,
			chain: hops(s.URL, 1, 0), final: s.URL + "/hop/0"},
		{name: "alert-same", path: "/hop/2", policy: events.RedirectAlert, last: hops(s.URL, 1, 0), want: events.ClassOK,
			status: 200, chain: hops(s.URL, 1, 0), final: s.URL + "/hop/0"},
		{name: "alert-changed", path: "/hop/2", policy: events.RedirectAlert, last: []string{s.URL + "/elsewhere"},
			want: events.ClassRedirectPolicy, status: 200, chain: hops(s.URL, 1, 0), final: s.URL + "/hop/0"},
		{name: "alert-stopped-redirecting", path: "/hop/0", policy: events.RedirectAlert, last: hops(s.URL, 0, 0),
			want: events.ClassRedirectPolicy, status: 200, final: s.URL + "/hop/0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sp := spec(s.URL + tc.path)
			sp.Redirects = tc.policy
			sp.ExpectStatus = tc.expect
			sp.LastRedirectChain = tc.last
			r := c.Check(context.Background(), sp)
			wantClass(t, r, tc.want)
			if r.StatusCode != tc.status {
				t.Errorf("status = %d, want %d", r.StatusCode, tc.status)
			}
			if !slices.Equal(r.RedirectChain, tc.chain) {
				t.Errorf("chain = %v, want %v", r.RedirectChain, tc.chain)
			}
			if r.FinalURL != tc.final {
				t.Errorf("final = %q, want %q", r.FinalURL, tc.final)
			}
			if tc.name == "alert-changed" && !strings.Contains(r.Error, "chain changed") {
				t.Errorf("error %q", r.Error)
			}
		})
	}
}

func TestKeywords(t *testing.T) {
	s := quietServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Split "Welcome to Vigil" over several flushed writes, so that
		// keywords span the client's reads.
		for _, part := range []string{"<html>Wel", "come to Vi", "gil, all ", "systems nominal</html>"} {
			io.WriteString(w, part)
			w.(http.Flusher).Flush()
			time.Sleep(5 * time.Millisecond)
		}
	}))
	c := newChecker(t, nil)
	for _, tc := range []struct {
		name      string
		keywords  []string
		forbidden []string
		want      events.Class
		errHas    string
	}{
		{"present", []string{"Welcome to Vigil"}, nil, events.ClassOK, ""},
		{"several", []string{"Vigil", "nominal"}, []string{"Error"}, events.ClassOK, ""},
		{"missing", []string{"Vigil", "Database error"}, nil, events.ClassKeywordMissing, `"Database error"`},
		{"case-sensitive", []string{"welcome to vigil"}, nil, events.ClassKeywordMissing, "welcome"},
		{"forbidden", nil, []string{"all systems"}, events.ClassKeywordForbidden, `"all systems"`},
		{"forbidden-wins", []string{"Vigil"}, []string{"nominal"}, events.ClassKeywordForbidden, "nominal"},
		{"empty-ignored", []string{""}, []string{""}, events.ClassOK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sp := spec(s.URL)
			sp.Keywords, sp.ForbiddenKeywords = tc.keywords, tc.forbidden
			r := c.Check(context.Background(), sp)
			wantClass(t, r, tc.want)
			if !strings.Contains(r.Error, tc.errHas) {
				t.Errorf("error %q does not name %s", r.Error, tc.errHas)
			}
		})
	}
}

func TestScanBodyBoundaries(t *testing.T) {
	body := strings.Repeat("a", 100) + "needle" + strings.Repeat("b", 100)
	for _, tc := range []struct {
		limit int64
		want  events.Class
	}{
		{1000, events.ClassOK},
		{106, events.ClassOK},
		{105, events.ClassKeywordMissing},
	} {
		// One byte per read: every keyword spans reads.
		cls, _, err := scanBody(iotest.OneByteReader(strings.NewReader(body)), tc.limit, []string{"needle"}, []string{"zz"})
		if err != nil || cls != tc.want {
			t.Errorf("limit %d: %q, %v; want %q", tc.limit, cls, err, tc.want)
		}
	}
	// Reads stop at the limit.
	var n countingReader
	n.r = strings.NewReader(strings.Repeat("x", 1<<20))
	cls, _, err := scanBody(&n, 1000, []string{"y"}, nil)
	if err != nil || cls != events.ClassKeywordMissing || n.n != 1000 {
		t.Errorf("%q %v read %d", cls, err, n.n)
	}
	// A read error is returned.
	_, _, err = scanBody(io.MultiReader(strings.NewReader("abc"), iotest.ErrReader(io.ErrUnexpectedEOF)), 1000, []string{"y"}, nil)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("err = %v", err)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestBodyRead(t *testing.T) {
	// The server promises more than it sends, then closes.
	s := quietServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		io.WriteString(w, "short")
		w.(http.Flusher).Flush()
		conn, _, _ := http.NewResponseController(w).Hijack()
		conn.Close()
	}))
	c := newChecker(t, nil)
	sp := spec(s.URL)
	sp.Keywords = []string{"never"}
	r := c.Check(context.Background(), sp)
	wantClass(t, r, events.ClassBodyRead)
	if r.StatusCode != 200 {
		t.Errorf("status %d", r.StatusCode)
	}

	// Without keywords the body is not read, so the truncation is not seen.
	r = c.Check(context.Background(), spec(s.URL))
	wantClass(t, r, events.ClassOK)
}

func TestNoResponse(t *testing.T) {
	// The server accepts the request and closes without answering.
	s := quietServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, _ := http.NewResponseController(w).Hijack()
		conn.Close()
	}))
	r := newChecker(t, nil).Check(context.Background(), spec(s.URL))
	wantClass(t, r, events.ClassBodyRead)
}

func TestSlowHeaders(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	s := quietServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	sp := spec(s.URL)
	sp.Timeout = events.Duration(500 * time.Millisecond)
	start := time.Now()
	r := newChecker(t, nil).Check(context.Background(), sp)
	wantClass(t, r, events.ClassTimeout)
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("took %v", el)
	}
}

func TestSlowDripBody(t *testing.T) {
	s := quietServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		for {
			if _, err := io.WriteString(w, "x"); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}))
	sp := spec(s.URL)
	sp.Timeout = events.Duration(time.Second)
	sp.Keywords = []string{"needle"}
	start := time.Now()
	r := newChecker(t, nil).Check(context.Background(), sp)
	el := time.Since(start)
	wantClass(t, r, events.ClassTimeout)
	if el < 900*time.Millisecond || el > 1500*time.Millisecond {
		t.Errorf("check took %v, want about 1s", el)
	}
	if r.StatusCode != 200 {
		t.Errorf("status %d", r.StatusCode)
	}
}

func TestHugeBody(t *testing.T) {
	const total = 50 << 20
	var written atomic.Int64
	done := make(chan struct{}, 1)
	s := quietServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { done <- struct{}{} }()
		w.Header().Set("Content-Length", fmt.Sprint(total))
		chunk := []byte(strings.Repeat("a", 32<<10))
		for written.Load() < total {
			p := chunk
			if written.Load() == 2<<20+32<<10 {
				p = []byte("needle" + strings.Repeat("a", len(chunk)-6))
			}
			n, err := w.Write(p)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}), func(s *http.Server) {
		// Keep the server's socket buffer small, so that what it managed
		// to write is mostly what the check let in.
		s.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			c.(*net.TCPConn).SetWriteBuffer(64 << 10)
			return ctx
		}
	})
	sp := spec(s.URL)
	sp.Keywords = []string{"needle"}
	c := newChecker(t, nil, func(o *Options) { o.MaxBodyBytes = 1 << 20 })
	r := c.Check(context.Background(), sp)
	wantClass(t, r, events.ClassKeywordMissing)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("server still writing 10s after the check closed the connection")
	}
	if n := written.Load(); n > 4<<20 {
		t.Errorf("server wrote %d bytes before the connection closed, want < 4 MiB", n)
	} else {
		t.Logf("server wrote %d bytes", n)
	}
}

func TestMethodAndHeaders(t *testing.T) {
	type seen struct {
		method, ua, custom, host string
	}
	got := make(chan seen, 1)
	s := quietServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Method, r.UserAgent(), r.Header.Get("X-Vigil-Test"), r.Host}
		io.WriteString(w, "body")
	}))
	c := newChecker(t, nil)

	sp := spec(s.URL)
	sp.Method = "HEAD"
	sp.Headers = map[string]string{"X-Vigil-Test": "yes"}
	r := c.Check(context.Background(), sp)
	wantClass(t, r, events.ClassOK)
	if g := <-got; g.method != "HEAD" || g.ua != DefaultUserAgent || g.custom != "yes" {
		t.Errorf("server saw %+v", g)
	}

	sp = spec(s.URL)
	sp.Method = ""
	sp.Headers = map[string]string{"user-agent": "Custom/2", "Host": "virtual.test"}
	r = c.Check(context.Background(), sp)
	wantClass(t, r, events.ClassOK)
	if g := <-got; g.method != "GET" || g.ua != "Custom/2" || g.host != "virtual.test" {
		t.Errorf("server saw %+v", g)
	}

	c = newChecker(t, nil, func(o *Options) { o.UserAgent = "Probe/3" })
	c.Check(context.Background(), spec(s.URL))
	if g := <-got; g.ua != "Probe/3" {
		t.Errorf("server saw %+v", g)
	}
}

func TestInvalidSpec(t *testing.T) {
	c := newChecker(t, nil)
	for _, sp := range []events.CheckSpec{
		spec("ftp://site.test/"),
		spec("://nope"),
		spec("http:///path"),
		{URL: "http://site.test/", Method: "POST"},
		{URL: "http://site.test/", Headers: map[string]string{"X-Bad": "a\nb"}},
	} {
		r := c.Check(context.Background(), sp)
		if r.Class != events.ClassTargetRefused || r.Error == "" {
			t.Errorf("%+v: %q %q", sp, r.Class, r.Error)
		}
	}
}

func TestConnectRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r := newChecker(t, nil).Check(context.Background(), spec("http://"+addr+"/"))
	wantClass(t, r, events.ClassConnectRefused)
	if r.StatusCode != 0 || r.Timings.TotalMs <= 0 {
		t.Errorf("%+v", r)
	}
}

// fakeDial replaces the checker's connect: addresses for which fail returns
// an error never see a packet.
func fakeDial(c *Checker, fail func(addr string) error) *[]string {
	var mu sync.Mutex
	var tried []string
	real := c.dialAddr
	c.dialAddr = func(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error) {
		mu.Lock()
		tried = append(tried, addr)
		mu.Unlock()
		if err := fail(addr); err != nil {
			return nil, err
		}
		return real(ctx, d, network, addr)
	}
	return &tried
}

func opErr(errno syscall.Errno) error {
	return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}
}

func TestDialErrors(t *testing.T) {
	s := quietServer(t, okHandler("ok"))
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(s.URL, "http://"))

	t.Run("timeout", func(t *testing.T) {
		c := newChecker(t, nil)
		c.dialAddr = func(ctx context.Context, _ *net.Dialer, _, _ string) (net.Conn, error) {
			<-ctx.Done() // a SYN that is never answered
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: ctx.Err()}
		}
		sp := spec(s.URL)
		sp.Timeout = events.Duration(300 * time.Millisecond)
		start := time.Now()
		r := c.Check(context.Background(), sp)
		wantClass(t, r, events.ClassConnectTimeout)
		if time.Since(start) > 2*time.Second {
			t.Errorf("took %v", time.Since(start))
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		c := newChecker(t, nil)
		fakeDial(c, func(string) error { return opErr(syscall.ENETUNREACH) })
		wantClass(t, c.Check(context.Background(), spec(s.URL)), events.ClassMonitorNetwork)
		fakeDial(c, func(string) error { return opErr(syscall.EHOSTUNREACH) })
		wantClass(t, c.Check(context.Background(), spec(s.URL)), events.ClassMonitorNetwork)
		fakeDial(c, func(string) error { return opErr(syscall.EADDRNOTAVAIL) })
		wantClass(t, c.Check(context.Background(), spec(s.URL)), events.ClassMonitorOverload)
	})
	t.Run("several-addresses", func(t *testing.T) {
		// An IPv6 address the checker cannot reach, then a refused IPv4
		// one: the site's answer is the one reported.
		res := &fakeResolver{fn: func(context.Context, string) ([]net.IPAddr, error) {
			return []net.IPAddr{{IP: net.ParseIP("::1")}, {IP: net.IPv4(127, 0, 0, 1)}}, nil
		}}
		c := newChecker(t, nil, func(o *Options) { o.Resolver = res })
		tried := fakeDial(c, func(addr string) error {
			if strings.HasPrefix(addr, "[::1]") {
				return opErr(syscall.ENETUNREACH)
			}
			return opErr(syscall.ECONNREFUSED)
		})
		r := c.Check(context.Background(), spec("http://multi.test:"+port+"/"))
		wantClass(t, r, events.ClassConnectRefused)
		if want := []string{"[::1]:" + port, "127.0.0.1:" + port}; !slices.Equal(*tried, want) {
			t.Errorf("tried %v, want %v", *tried, want)
		}
		// The next address is used when the first fails.
		c = newChecker(t, nil, func(o *Options) { o.Resolver = res })
		fakeDial(c, func(addr string) error {
			if strings.HasPrefix(addr, "[::1]") {
				return opErr(syscall.ENETUNREACH)
			}
			return nil
		})
		wantClass(t, c.Check(context.Background(), spec("http://multi.test:"+port+"/")), events.ClassOK)
	})
}

func TestCanceled(t *testing.T) {
	s := quietServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	r := newChecker(t, nil).Check(ctx, spec(s.URL))
	if r.Class != events.ClassMonitorNetwork || r.Error != "check canceled" {
		t.Errorf("%q %q", r.Class, r.Error)
	}
}

func TestTargetPolicyInChecks(t *testing.T) {
	s := quietServer(t, okHandler("private"))
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(s.URL, "http://"))
	public := func(o *Options) { o.TargetPolicy = PublicOnly }

	// A literal private address, and a name resolving to one.
	c := newChecker(t, nil, public)
	for _, u := range []string{s.URL, "http://site.test:" + port + "/", "http://[::ffff:127.0.0.1]:" + port + "/"} {
		r := c.Check(context.Background(), spec(u))
		wantClass(t, r, events.ClassTargetRefused)
		if r.Class.Side() != events.SideMonitor {
			t.Error("target_refused must be the monitor's side")
		}
	}

	// AllowPrivate lets it through.
	wantClass(t, newChecker(t, nil).Check(context.Background(), spec(s.URL)), events.ClassOK)

	// A redirect from a (pretend) public site to a private address.
	pub := netip.MustParseAddr("93.184.216.34")
	res := &fakeResolver{fn: func(_ context.Context, host string) ([]net.IPAddr, error) {
		if host == "public.test" {
			return []net.IPAddr{{IP: pub.AsSlice()}}, nil
		}
		return loopback(), nil
	}}
	c = newChecker(t, nil, public, func(o *Options) { o.Resolver = res })
	tried := fakeDial(c, func(addr string) error {
		if !netip.MustParseAddrPort(addr).Addr().IsLoopback() {
			return opErr(syscall.ECONNREFUSED) // never leave the machine
		}
		return nil
	})
	r := c.Check(context.Background(), spec("http://public.test:"+port+"/"))
	wantClass(t, r, events.ClassConnectRefused)
	if len(*tried) != 1 || (*tried)[0] != "93.184.216.34:"+port {
		t.Errorf("tried %v", *tried)
	}
}

// DNS rebinding: the name's answer turns private between two checks; the
// second check is refused when it connects.
func TestDNSRebinding(t *testing.T) {
	s := quietServer(t, okHandler("internal"))
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(s.URL, "http://"))
	var answer atomic.Value
	answer.Store(net.IPv4(93, 184, 216, 34))
	res := &fakeResolver{fn: func(context.Context, string) ([]net.IPAddr, error) {
		return []net.IPAddr{{IP: answer.Load().(net.IP)}}, nil
	}}
	clock := &fakeClock{t: time.Now()}
	c := newChecker(t, nil, func(o *Options) {
		o.TargetPolicy = PublicOnly
		o.Resolver = res
		o.DNSCacheTTL = time.Second
		o.Now = clock.Now
	})
	tried := fakeDial(c, func(addr string) error {
		if !netip.MustParseAddrPort(addr).Addr().IsLoopback() {
			return opErr(syscall.ECONNREFUSED) // never leave the machine
		}
		return nil
	})
	u := "http://rebind.test:" + port + "/"
	wantClass(t, c.Check(context.Background(), spec(u)), events.ClassConnectRefused)

	answer.Store(net.IPv4(127, 0, 0, 1))
	// Within the TTL the cached public answer is used.
	wantClass(t, c.Check(context.Background(), spec(u)), events.ClassConnectRefused)
	if n := res.count("rebind.test"); n != 1 {
		t.Errorf("resolver called %d times within the TTL", n)
	}
	clock.Advance(1100 * time.Millisecond)
	r := c.Check(context.Background(), spec(u))
	wantClass(t, r, events.ClassTargetRefused)
	if n := res.count("rebind.test"); n != 2 {
		t.Errorf("resolver called %d times", n)
	}
	for _, a := range *tried {
		if strings.HasPrefix(a, "127.") {
			t.Errorf("dialed %s", a)
		}
	}
}

// The Control hook alone refuses a private address, whatever the code before
// it decided.
func TestControlHookRefuses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			conn.Close()
		}
	}()
	c := newChecker(t, nil, func(o *Options) { o.TargetPolicy = PublicOnly })
	d := net.Dialer{Control: c.control, Timeout: time.Second}
	_, err = d.Dial("tcp", ln.Addr().String())
	var re *refusedError
	if !errors.As(err, &re) || re.Addr != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("err = %v, want a refusal", err)
	}
	if cls := dialClass(err); cls != events.ClassTargetRefused {
		t.Errorf("class %q", cls)
	}
	select {
	case <-accepted:
		t.Fatal("the listener accepted a connection")
	case <-time.After(200 * time.Millisecond):
	}

	c = newChecker(t, nil)
	d = net.Dialer{Control: c.control, Timeout: time.Second}
	conn, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	<-accepted
}

func TestGoroutineLeak(t *testing.T) {
	ca := newCA(t)
	now := time.Now()
	good := tlsServer(t, leaf(t, ca, "site.test", []string{"site.test"}, now.Add(-time.Hour), now.Add(time.Hour)), okHandler("fine"))
	bad := tlsServer(t, leaf(t, nil, "site.test", []string{"site.test"}, now.Add(-time.Hour), now.Add(time.Hour)), okHandler("fine"))
	plain := quietServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		case "/redirect":
			http.Redirect(w, r, "/", http.StatusFound)
		default:
			io.WriteString(w, strings.Repeat("body ", 10000))
		}
	}))
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	c := newChecker(t, ca)

	specs := []events.CheckSpec{
		spec(named(good, "site.test", "/")),
		spec(named(bad, "site.test", "/")),
		spec(plain.URL + "/redirect"),
		spec("http://" + closed + "/"),
		spec("http://nx.test/"),
	}
	kw := spec(plain.URL)
	kw.Keywords = []string{"missing"}
	specs = append(specs, kw)
	slow := spec(plain.URL + "/slow")
	slow.Timeout = events.Duration(100 * time.Millisecond)
	specs = append(specs, slow)

	// Timeouts far above the wait below: goroutines must end with the
	// check, not when a forgotten timer fires.
	for i := range specs[:len(specs)-1] {
		specs[i].Timeout = events.Duration(time.Minute)
	}
	check := func() {
		for _, sp := range specs {
			c.Check(context.Background(), sp)
		}
	}
	check() // warm up: system pools, server goroutines
	time.Sleep(100 * time.Millisecond)
	before := runtime.NumGoroutine()
	for range 20 {
		check()
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= before+5 {
			t.Logf("goroutines: %d before, %d after %d checks", before, n, 20*len(specs))
			return
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			pprof.Lookup("goroutine").WriteTo(&b, 1)
			t.Fatalf("goroutines: %d before, %d after\n%s", before, n, b.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestConcurrentChecks(t *testing.T) {
	ca := newCA(t)
	now := time.Now()
	ts := tlsServer(t, leaf(t, ca, "site.test", []string{"site.test"}, now.Add(-time.Hour), now.Add(time.Hour)), okHandler("Vigil up"))
	hs := quietServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/down" {
			w.WriteHeader(503)
			return
		}
		io.WriteString(w, "Vigil up")
	}))
	res := testResolver()
	c := newChecker(t, ca, func(o *Options) { o.Resolver = res })
	var wg sync.WaitGroup
	errs := make(chan string, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var sp events.CheckSpec
			want := events.ClassOK
			switch i % 3 {
			case 0:
				sp = spec(named(ts, "site.test", "/"))
			case 1:
				sp = spec(named(hs, "plain.test", "/"))
			case 2:
				sp = spec(named(hs, "plain.test", "/down"))
				want = events.ClassHTTPStatus
			}
			sp.Keywords = []string{"Vigil"}
			if r := c.Check(context.Background(), sp); r.Class != want {
				errs <- fmt.Sprintf("check %d: %q %s", i, r.Class, r.Error)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	// Concurrent lookups of a host coalesce and then hit the cache.
	if n := res.count("site.test"); n != 1 {
		t.Errorf("site.test resolved %d times", n)
	}
}

// A checker with a SourceAddr connects from it: a region's vantage point.
func TestSourceAddr(t *testing.T) {
	var remote atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		remote.Store(r.RemoteAddr)
	}))
	defer srv.Close()
	c, err := New(Options{TargetPolicy: AllowPrivate, SourceAddr: netip.MustParseAddr("127.0.0.7")})
	if err != nil {
		t.Fatal(err)
	}
	res := c.Check(context.Background(), events.CheckSpec{URL: srv.URL, Method: "GET", Timeout: events.Duration(5 * time.Second), Redirects: events.RedirectFollow})
	if res.Class != events.ClassOK {
		t.Fatalf("class %s: %s", res.Class, res.Error)
	}
	if got, _ := remote.Load().(string); !strings.HasPrefix(got, "127.0.0.7:") {
		t.Errorf("server saw the check from %q, want 127.0.0.7", got)
	}
}

// The transport's read buffer is small (every check allocates it afresh):
// response lines longer than it, and long request headers, still work.
func TestLongHeaderLines(t *testing.T) {
	long := strings.Repeat("v", 12<<10)
	s := quietServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Long-Request") != long {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Long", long)
		fmt.Fprint(w, "hello")
	}))
	c := newChecker(t, nil)
	sp := spec(named(s, "site.test", "/"))
	sp.Headers = map[string]string{"X-Long-Request": long}
	r := c.Check(context.Background(), sp)
	wantClass(t, r, events.ClassOK)
}
