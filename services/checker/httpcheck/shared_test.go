package httpcheck

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/events"
)

// connCounter counts the connections a server accepts and the requests it
// serves on each; install it before the server starts.
type connCounter struct {
	accepted atomic.Int64
	mu       sync.Mutex
	perConn  map[string]int // requests served, by client address
}

func (cc *connCounter) install(s *http.Server) {
	cc.perConn = map[string]int{}
	s.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			cc.accepted.Add(1)
		}
	}
	h := s.Handler
	s.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cc.mu.Lock()
		cc.perConn[r.RemoteAddr]++
		cc.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

// reused lists the connections that served more than one request.
func (cc *connCounter) reused() []string {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	var out []string
	for addr, n := range cc.perConn {
		if n > 1 {
			out = append(out, fmt.Sprintf("%s served %d requests", addr, n))
		}
	}
	return out
}

// The Checker's transport is shared, but keeps no connection: consecutive
// checks of one server each open their own, and each pays for DNS (from
// the cache), connect and TLS again.
func TestFreshConnectionPerCheck(t *testing.T) {
	ca := newCA(t)
	now := time.Now()
	cert := leaf(t, ca, "site.test", []string{"site.test"}, now.Add(-time.Hour), now.Add(48*time.Hour))
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"http", false}, {"https", true}} {
		t.Run(tc.name, func(t *testing.T) {
			var cc connCounter
			s := httptest.NewUnstartedServer(okHandler("Vigil up"))
			s.Config.ErrorLog = log.New(io.Discard, "", 0)
			cc.install(s.Config)
			if tc.tls {
				s.TLS = tlsConfig(cert)
				s.StartTLS()
			} else {
				s.Start()
			}
			t.Cleanup(s.Close)

			c := newChecker(t, ca)
			const checks = 3
			for i := range checks {
				// With and without a keyword: a body read to the end
				// and one closed unread.
				sp := spec(named(s, "site.test", "/"))
				if i%2 == 0 {
					sp.Keywords = []string{"up"}
				}
				r := c.Check(context.Background(), sp)
				wantClass(t, r, events.ClassOK)
				tm := r.Timings
				if tm.ConnectMs <= 0 || tm.TTFBMs <= 0 {
					t.Errorf("check %d: timings %+v, want connect and TTFB", i, tm)
				}
				if tc.tls && (tm.TLSMs <= 0 || r.TLS == nil || !r.TLS.ChainValid) {
					t.Errorf("check %d: TLS %v timings %+v, want a handshake", i, r.TLS, tm)
				}
				if !tc.tls && (tm.TLSMs != 0 || r.TLS != nil) {
					t.Errorf("check %d: TLS %v timings %+v on plain HTTP", i, r.TLS, tm)
				}
			}
			if n := cc.accepted.Load(); n != checks {
				t.Errorf("server accepted %d connections for %d checks", n, checks)
			}
			if r := cc.reused(); len(r) > 0 {
				t.Errorf("connections reused: %v", r)
			}
		})
	}
}

// A redirect chain also opens a connection per request.
func TestFreshConnectionPerRedirect(t *testing.T) {
	var cc connCounter
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/old" {
			http.Redirect(w, r, "/new", http.StatusFound)
			return
		}
		io.WriteString(w, "arrived")
	}))
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	cc.install(s.Config)
	s.Start()
	t.Cleanup(s.Close)

	c := newChecker(t, nil)
	for range 2 {
		r := c.Check(context.Background(), spec(s.URL+"/old"))
		wantClass(t, r, events.ClassOK)
		if len(r.RedirectChain) != 1 {
			t.Errorf("chain %v", r.RedirectChain)
		}
	}
	if n := cc.accepted.Load(); n != 4 {
		t.Errorf("server accepted %d connections for 2 checks of 2 requests", n)
	}
	if r := cc.reused(); len(r) > 0 {
		t.Errorf("connections reused: %v", r)
	}
}

// Checks with and without verification share the transport but not their
// TLS settings: run side by side against one self-signed server, each gets
// its own verdict. The server offers HTTP/2; checks speak HTTP/1.1.
func TestTLSVerifyPerCheck(t *testing.T) {
	ca := newCA(t) // trusted by the checker; the server's certificate is not from it
	now := time.Now()
	self := leaf(t, nil, "site.test", []string{"site.test"}, now.Add(-time.Hour), now.Add(48*time.Hour))
	var proto2 atomic.Int64
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 1 {
			proto2.Add(1)
		}
		io.WriteString(w, "Vigil up")
	}))
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.EnableHTTP2 = true
	s.TLS = tlsConfig(self)
	s.StartTLS()
	t.Cleanup(s.Close)

	c := newChecker(t, ca)
	const checks = 40
	var wg sync.WaitGroup
	errs := make(chan string, checks)
	for i := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sp := spec(named(s, "site.test", "/"))
			sp.TLSVerify = i%2 == 0
			sp.Keywords = []string{"Vigil"}
			want := events.ClassOK
			if sp.TLSVerify {
				want = events.ClassTLSUntrusted
			}
			r := c.Check(context.Background(), sp)
			switch {
			case r.Class != want:
				errs <- fmt.Sprintf("check %d (verify %v): %q %s, want %q", i, sp.TLSVerify, r.Class, r.Error, want)
			case r.TLS == nil || r.TLS.ChainValid || r.TLS.Subject != "CN=site.test":
				errs <- fmt.Sprintf("check %d (verify %v): TLS facts %+v", i, sp.TLSVerify, r.TLS)
			case r.Timings.TLSMs <= 0:
				errs <- fmt.Sprintf("check %d (verify %v): timings %+v", i, sp.TLSVerify, r.Timings)
			case !sp.TLSVerify && r.StatusCode != 200, sp.TLSVerify && r.StatusCode != 0:
				errs <- fmt.Sprintf("check %d (verify %v): status %d", i, sp.TLSVerify, r.StatusCode)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := proto2.Load(); n > 0 {
		t.Errorf("%d requests over HTTP/2, want HTTP/1.1 only", n)
	}
}

// Checks from one Checker with different timeouts each keep their own: a
// slow server times the short check out, not the long one.
func TestTimeoutPerCheck(t *testing.T) {
	s := quietServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(400 * time.Millisecond):
		case <-r.Context().Done():
		}
		io.WriteString(w, "late")
	}))
	c := newChecker(t, nil)
	var wg sync.WaitGroup
	var short, long Result
	wg.Add(2)
	go func() {
		defer wg.Done()
		sp := spec(s.URL)
		sp.Timeout = events.Duration(100 * time.Millisecond)
		short = c.Check(context.Background(), sp)
	}()
	go func() {
		defer wg.Done()
		sp := spec(s.URL)
		sp.Timeout = events.Duration(5 * time.Second)
		long = c.Check(context.Background(), sp)
	}()
	wg.Wait()
	wantClass(t, short, events.ClassTimeout)
	wantClass(t, long, events.ClassOK)
}

// tlsConfig is a server configuration presenting cert.
func tlsConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}}
}
