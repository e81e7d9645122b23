package httpcheck

import (
	"context"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/events"
)

// benchCheck runs b.N checks of sp one after another, each on a fresh
// connection. The allocations counted include the test server's: they are
// the same before and after a change to the checker.
func benchCheck(b *testing.B, c *Checker, sp events.CheckSpec) {
	b.Helper()
	if r := c.Check(context.Background(), sp); r.Class != events.ClassOK {
		b.Fatalf("class %q: %s", r.Class, r.Error)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if r := c.Check(context.Background(), sp); r.Class != events.ClassOK {
			b.Fatalf("class %q: %s", r.Class, r.Error)
		}
	}
}

// BenchmarkCheckHTTP is a plain HTTP check of a local server, by name (the
// DNS cache answers), with a keyword.
func BenchmarkCheckHTTP(b *testing.B) {
	s := quietServer(b, okHandler("Vigil is up"))
	c := newChecker(b, nil)
	sp := events.CheckSpec{
		URL:       named(s, "site.test", "/health"),
		Timeout:   events.Duration(5 * time.Second),
		Redirects: events.RedirectFollow,
		TLSVerify: true,
		Keywords:  []string{"up"},
	}
	benchCheck(b, c, sp)
}

// BenchmarkCheckHTTPS is the same check over TLS, with a certificate the
// checker verifies.
func BenchmarkCheckHTTPS(b *testing.B) {
	ca := newCA(b)
	now := time.Now()
	s := tlsServer(b, leaf(b, ca, "site.test", []string{"site.test"}, now.Add(-time.Hour), now.Add(48*time.Hour)), okHandler("Vigil is up"))
	c := newChecker(b, ca)
	sp := events.CheckSpec{
		URL:       named(s, "site.test", "/health"),
		Timeout:   events.Duration(5 * time.Second),
		Redirects: events.RedirectFollow,
		TLSVerify: true,
		Keywords:  []string{"up"},
	}
	benchCheck(b, c, sp)
}
