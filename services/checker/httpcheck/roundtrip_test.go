package httpcheck

import (
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/events"
)

// rawServer accepts connections on 127.0.0.1, reads each request's header
// and hands the connection to answer. It returns the server's address.
func rawServer(t *testing.T, answer func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						break
					}
				}
				answer(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// gzipHandler answers body gzip-compressed to requests accepting gzip, and
// plain to the others. It records the Accept-Encoding of each request.
type gzipHandler struct {
	body string
	mu   sync.Mutex
	seen []string
}

func (h *gzipHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.seen = append(h.seen, r.Header.Get("Accept-Encoding"))
	h.mu.Unlock()
	if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		fmt.Fprint(w, h.body)
		return
	}
	w.Header().Set("Content-Encoding", "gzip")
	zw := gzip.NewWriter(w)
	fmt.Fprint(zw, h.body)
	zw.Close()
}

func (h *gzipHandler) accepted() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.seen...)
}

// A check asks for gzip, as browsers and net/http do, and looks for keywords
// in the decompressed body; a spec's own Accept-Encoding is sent as is and
// its body searched as sent.
func TestGzipBody(t *testing.T) {
	h := &gzipHandler{body: "<html>Vigil is up, all systems normal</html>"}
	s := quietServer(t, h)
	c := newChecker(t, nil)

	sp := spec(named(s, "site.test", "/"))
	sp.Keywords = []string{"all systems normal"}
	wantClass(t, c.Check(context.Background(), sp), events.ClassOK)

	sp.Keywords = nil
	sp.ForbiddenKeywords = []string{"Vigil is up"}
	r := c.Check(context.Background(), sp)
	wantClass(t, r, events.ClassKeywordForbidden)

	sp.ForbiddenKeywords = nil
	sp.Keywords = []string{"all systems normal"}
	sp.Headers = map[string]string{"Accept-Encoding": "identity"}
	wantClass(t, c.Check(context.Background(), sp), events.ClassOK)

	sp.Headers = nil
	sp.Method = http.MethodHead
	sp.Keywords = nil
	wantClass(t, c.Check(context.Background(), sp), events.ClassOK)

	want := []string{"gzip", "gzip", "identity", ""}
	if got := h.accepted(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("Accept-Encoding sent: %q, want %q", got, want)
	}
}

// A body that claims gzip and is not is a body_read failure when read, and
// no failure when the check does not read it.
func TestBrokenGzipBody(t *testing.T) {
	s := quietServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		fmt.Fprint(w, "this is not gzip")
	}))
	c := newChecker(t, nil)
	sp := spec(named(s, "site.test", "/"))
	wantClass(t, c.Check(context.Background(), sp), events.ClassOK)
	sp.Keywords = []string{"gzip"}
	r := c.Check(context.Background(), sp)
	wantClass(t, r, events.ClassBodyRead)
	if !strings.Contains(r.Error, "gzip") {
		t.Errorf("error %q does not say gzip", r.Error)
	}
}

// Response headers that never end are cut off at maxHeaderBytes, long
// before the check's timeout.
func TestEndlessHeaders(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) {
		fmt.Fprint(c, "HTTP/1.1 200 OK\r\n")
		line := "X-Filler: " + strings.Repeat("a", 1000) + "\r\n"
		for {
			if _, err := fmt.Fprint(c, line); err != nil {
				return
			}
		}
	})
	c := newChecker(t, nil)
	sp := spec("http://" + addr + "/")
	sp.Timeout = events.Duration(20 * time.Second)
	t0 := time.Now()
	r := c.Check(context.Background(), sp)
	wantClass(t, r, events.ClassBodyRead)
	if !strings.Contains(r.Error, "exceeded") {
		t.Errorf("error %q does not say the headers were too large", r.Error)
	}
	if d := time.Since(t0); d > 10*time.Second {
		t.Errorf("check took %s: not bounded by the header limit", d)
	}
}

// Informational responses (103 Early Hints, 100 Continue) come before the
// final one and are skipped, up to a bound.
func TestInformationalResponses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		pre   int
		class events.Class
	}{
		{"early hints", 1, events.ClassOK},
		{"five", 5, events.ClassOK},
		{"too many", 6, events.ClassBodyRead},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := rawServer(t, func(c net.Conn) {
				for range tc.pre {
					fmt.Fprint(c, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
				}
				fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
			})
			c := newChecker(t, nil)
			sp := spec("http://" + addr + "/")
			sp.Keywords = []string{"hello"}
			r := c.Check(context.Background(), sp)
			wantClass(t, r, tc.class)
			if tc.class == events.ClassOK && r.StatusCode != http.StatusOK {
				t.Errorf("status %d, want 200", r.StatusCode)
			}
		})
	}
}

// An internationalized host name is looked up, and sent, in its ASCII form.
func TestInternationalHost(t *testing.T) {
	var mu sync.Mutex
	var host string
	s := quietServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		host = r.Host
		mu.Unlock()
		fmt.Fprint(w, "ok")
	}))
	res := testResolver()
	c := newChecker(t, nil, func(o *Options) { o.Resolver = res })
	u, _ := url.Parse(s.URL)
	r := c.Check(context.Background(), spec("http://bücher.test:"+u.Port()+"/"))
	wantClass(t, r, events.ClassOK)
	if n := res.count("xn--bcher-kva.test"); n != 1 {
		t.Errorf("lookups of xn--bcher-kva.test: %d, want 1", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := "xn--bcher-kva.test:" + u.Port(); host != want {
		t.Errorf("Host %q, want %q", host, want)
	}
}

// Every request of a check, a redirect's too, says "Connection: close": the
// connection is the check's alone.
func TestConnectionClose(t *testing.T) {
	var mu sync.Mutex
	var closes []bool
	s := quietServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		closes = append(closes, r.Close)
		mu.Unlock()
		if r.URL.Path == "/old" {
			http.Redirect(w, r, "/new", http.StatusFound)
			return
		}
		fmt.Fprint(w, "ok")
	}))
	c := newChecker(t, nil)
	sp := spec(named(s, "site.test", "/old"))
	sp.Redirects = events.RedirectFollow
	wantClass(t, c.Check(context.Background(), sp), events.ClassOK)
	mu.Lock()
	defer mu.Unlock()
	if len(closes) != 2 || !closes[0] || !closes[1] {
		t.Errorf("Connection: close on the requests: %v, want [true true]", closes)
	}
}

// A status line that trickles out and is cut off by the check's deadline is
// a timeout, not a malformed response. bufio hands textproto the partial
// line without its error, and the connection's deadline can fire before the
// check's context says it is done: both must still read as a timeout.
func TestPartialStatusLineAtDeadline(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) {
		_, _ = c.Write([]byte("HT"))
		time.Sleep(time.Second)
	})
	c := newChecker(t, nil)
	for i := 0; i < 10; i++ {
		sp := spec("http://" + addr + "/")
		sp.Timeout = events.Duration(100 * time.Millisecond)
		r := c.Check(context.Background(), sp)
		wantClass(t, r, events.ClassTimeout)
	}
}
