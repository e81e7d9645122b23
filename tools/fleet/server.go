package fleet

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is how the fleet answers one request.
type Mode string

// The ways a request is answered.
const (
	// ModeOK: 200 with the page (and its keyword) after the site's latency.
	ModeOK Mode = "ok"
	// ModeStatus: an error status (Outage.Status, default 503).
	ModeStatus Mode = "status"
	// ModeHang: no answer until the client gives up (or HangMax).
	ModeHang Mode = "hang"
	// ModeDrip: the response trickles out one byte a second.
	ModeDrip Mode = "drip"
	// ModeNoKeyword: 200, but the page lacks the keyword.
	ModeNoKeyword Mode = "keyword"
	// ModeReset: the connection is reset without an answer.
	ModeReset Mode = "reset"
	// ModeBlock: 403, as a geo-block answers (Outage.Status to change it).
	ModeBlock Mode = "block"
	// ModeSlow: 200 after Outage.Latency.
	ModeSlow Mode = "slow"
)

var modes = []Mode{ModeOK, ModeStatus, ModeHang, ModeDrip, ModeNoKeyword, ModeReset, ModeBlock, ModeSlow}

func modeIndex(m Mode) int {
	for i, x := range modes {
		if x == m {
			return i
		}
	}
	return -1
}

// Listener is one address the fleet serves on.
type Listener struct {
	Addr string `json:"addr"`
	TLS  bool   `json:"tls"`
}

// Info is what a running fleet tells its users: where it listens, the CA
// its TLS certificates chain to, and the configuration its plan was built
// from. cmd/fleet prints it as one JSON line.
type Info struct {
	Control   string     `json:"control"`
	Listeners []Listener `json:"listeners"`
	CAPEM     string     `json:"ca_pem"`
	Config    Config     `json:"config"`
	PID       int        `json:"pid"`
}

// Fleet is a running simulated fleet.
type Fleet struct {
	plan   *Plan
	ca     *authority
	now    func() time.Time
	done   chan struct{}
	closed sync.Once

	servers []*http.Server
	control *http.Server
	info    Info
	wg      sync.WaitGroup

	mu        sync.RWMutex
	overrides map[int]*Outage
	nOverride atomic.Int64

	hits     []atomic.Uint32
	served   [8]atomic.Uint64
	byRegion sync.Map // region -> *atomic.Uint64
	fallback *tls.Certificate
}

// Start plans cfg's fleet and starts serving it: the HTTP and TLS listeners
// and the control API. Close stops it.
func Start(cfg Config) (*Fleet, error) {
	plan, err := NewPlan(cfg)
	if err != nil {
		return nil, err
	}
	cfg = plan.Config()
	ca, err := newAuthority(time.Now())
	if err != nil {
		return nil, fmt.Errorf("fleet: make CA: %w", err)
	}
	f := &Fleet{
		plan:      plan,
		ca:        ca,
		now:       time.Now,
		done:      make(chan struct{}),
		overrides: map[int]*Outage{},
		hits:      make([]atomic.Uint32, plan.Len()),
	}
	if f.fallback, err = ca.leaf("*."+cfg.Domain, time.Now().Add(5*365*24*time.Hour)); err != nil {
		return nil, err
	}
	f.info = Info{CAPEM: string(ca.pem), Config: cfg, PID: os.Getpid()}
	httpAddrs, tlsAddrs := plan.listenerAddrs()
	errLog := log.New(io.Discard, "", 0)
	tlsCfg := &tls.Config{GetCertificate: f.certificate, MinVersion: tls.VersionTLS12}
	listen := func(a netip.Addr, useTLS bool) error {
		ln, err := net.Listen("tcp4", netip.AddrPortFrom(a, 0).String())
		if err != nil {
			return fmt.Errorf("fleet: listen on %s: %w", a, err)
		}
		f.info.Listeners = append(f.info.Listeners, Listener{Addr: ln.Addr().String(), TLS: useTLS})
		if useTLS {
			ln = tls.NewListener(ln, tlsCfg)
		}
		srv := &http.Server{
			Handler:           f,
			ReadHeaderTimeout: 30 * time.Second,
			IdleTimeout:       30 * time.Second,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          errLog,
		}
		f.servers = append(f.servers, srv)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			_ = srv.Serve(ln)
		}()
		return nil
	}
	for _, a := range httpAddrs {
		if err := listen(a, false); err != nil {
			f.Close()
			return nil, err
		}
	}
	for _, a := range tlsAddrs {
		if err := listen(a, true); err != nil {
			f.Close()
			return nil, err
		}
	}
	cl, err := net.Listen("tcp", cfg.Control)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("fleet: control API on %s: %w", cfg.Control, err)
	}
	f.info.Control = cl.Addr().String()
	f.control = &http.Server{Handler: f.controlHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		_ = f.control.Serve(cl)
	}()
	return f, nil
}

// Plan returns the fleet's plan.
func (f *Fleet) Plan() *Plan { return f.plan }

// Info returns where the fleet listens and what it serves.
func (f *Fleet) Info() Info { return f.info }

// Resolver returns a resolver of the fleet's host names.
func (f *Fleet) Resolver() *Resolver {
	r, err := NewResolver(f.plan, f.info)
	if err != nil {
		panic(err) // the fleet's own info always fits its plan
	}
	return r
}

// Close stops serving: listeners, open connections, hanging and dripping
// responses. It is safe to call more than once.
func (f *Fleet) Close() {
	f.closed.Do(func() {
		close(f.done)
		for _, s := range f.servers {
			_ = s.Close()
		}
		if f.control != nil {
			_ = f.control.Close()
		}
		f.wg.Wait()
	})
}

// Hits returns how many requests site i has received.
func (f *Fleet) Hits(i int) uint32 { return f.hits[i].Load() }

// Stats counts what the fleet served.
type Stats struct {
	Requests uint64            `json:"requests"`
	ByMode   map[Mode]uint64   `json:"by_mode"`
	ByRegion map[string]uint64 `json:"by_region"`
	// SitesHit is how many sites received at least one request.
	SitesHit int `json:"sites_hit"`
	// Outages is how many control-API outages stand.
	Outages int `json:"outages"`
}

// Stats returns the fleet's counters.
func (f *Fleet) Stats() Stats {
	s := Stats{ByMode: map[Mode]uint64{}, ByRegion: map[string]uint64{}}
	for i, m := range modes {
		if n := f.served[i].Load(); n > 0 {
			s.ByMode[m] = n
			s.Requests += n
		}
	}
	f.byRegion.Range(func(k, v any) bool {
		s.ByRegion[k.(string)] = v.(*atomic.Uint64).Load()
		return true
	})
	for i := range f.hits {
		if f.hits[i].Load() > 0 {
			s.SitesHit++
		}
	}
	f.mu.RLock()
	s.Outages = len(f.overrides)
	f.mu.RUnlock()
	return s
}

// certificate picks the certificate for a TLS handshake by SNI: a TLS site
// gets its own with its scripted NotAfter, anything else a valid wildcard.
func (f *Fleet) certificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	i, ok := f.plan.Index(hello.ServerName)
	if !ok || !f.plan.TLS(i) {
		return f.fallback, nil
	}
	return f.ca.leaf(f.plan.Host(i), f.plan.NotAfter(i))
}

// decision is how to answer one request.
type decision struct {
	mode    Mode
	status  int
	latency time.Duration
}

// decide applies a standing outage, else the site's script.
func (f *Fleet) decide(i int, now time.Time, region string, n uint32) decision {
	if f.nOverride.Load() > 0 {
		f.mu.RLock()
		o := f.overrides[i]
		f.mu.RUnlock()
		if o != nil && (o.until.IsZero() || now.Before(o.until)) && o.appliesTo(region) {
			d := decision{mode: o.Mode, status: o.Status, latency: o.Latency.Std()}
			switch d.mode {
			case ModeStatus:
				if d.status == 0 {
					d.status = http.StatusServiceUnavailable
				}
			case ModeBlock:
				if d.status == 0 {
					d.status = http.StatusForbidden
				}
			case ModeOK, ModeNoKeyword:
				d.latency = f.latency(i, n)
			}
			return d
		}
	}
	p := f.plan
	ok := decision{mode: ModeOK, latency: f.latency(i, n)}
	switch p.recs[i].kind {
	case Errors5xx:
		if p.InWindow(i, now) {
			return decision{mode: ModeStatus, status: [...]int{500, 502, 503}[p.recs[i].phase%3]}
		}
	case Timeout:
		if p.InWindow(i, now) {
			return decision{mode: ModeHang}
		}
	case Drip:
		if p.InWindow(i, now) {
			return decision{mode: ModeDrip}
		}
	case Flapping:
		if p.flapDown(i, now) {
			return decision{mode: ModeStatus, status: http.StatusServiceUnavailable}
		}
	case KeywordLoss:
		if p.InWindow(i, now) {
			ok.mode = ModeNoKeyword
		}
	case RegionBlock:
		if region != "" && p.blocks(region) && p.InWindow(i, now) {
			return decision{mode: ModeBlock, status: http.StatusForbidden}
		}
	}
	return ok
}

// latency is a healthy answer's delay: log-normal around the median, capped,
// drawn from a hash of the seed, the site and its request count, so a run is
// reproducible request by request.
func (f *Fleet) latency(i int, n uint32) time.Duration {
	cfg := &f.plan.cfg
	h := splitmix(cfg.Seed ^ uint64(i)*0x9e3779b97f4a7c15 ^ uint64(n)<<40)
	u1 := (float64(h>>11) + 0.5) / (1 << 53)
	u2 := float64(splitmix(h)>>11) / (1 << 53)
	z := math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*u2)
	d := time.Duration(float64(cfg.LatencyMedian) * math.Exp(cfg.LatencySigma*z))
	return min(d, cfg.LatencyMax)
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// ServeHTTP answers a request for one of the fleet's sites, chosen by the
// Host header.
func (f *Fleet) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	i, ok := f.plan.Index(r.Host)
	if !ok {
		http.Error(w, "no such site in the fleet", http.StatusNotFound)
		return
	}
	n := f.hits[i].Add(1)
	region := ""
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		region = f.plan.regionOf(ap.Addr().Unmap())
	}
	if region != "" {
		c, ok := f.byRegion.Load(region)
		if !ok {
			c, _ = f.byRegion.LoadOrStore(region, new(atomic.Uint64))
		}
		c.(*atomic.Uint64).Add(1)
	}
	d := f.decide(i, f.now(), region, n)
	f.served[modeIndex(d.mode)].Add(1)
	switch d.mode {
	case ModeOK, ModeNoKeyword, ModeSlow:
		if !f.sleep(r.Context(), d.latency) {
			return
		}
		f.page(w, i, d.mode != ModeNoKeyword)
	case ModeStatus, ModeBlock:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(d.status)
		_, _ = io.WriteString(w, http.StatusText(d.status)+"\n")
	case ModeHang:
		if f.sleep(r.Context(), f.plan.cfg.HangMax) {
			w.WriteHeader(http.StatusGatewayTimeout)
		}
	case ModeDrip:
		f.drip(w, r, i)
	case ModeReset:
		f.reset(w)
	}
}

// sleep waits d; false if the client went away or the fleet closed first.
func (f *Fleet) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-f.done:
	}
	return false
}

func (f *Fleet) body(i int, keyword bool) string {
	word := "nothing-here"
	if keyword {
		word = Keyword
	}
	return "<!doctype html><title>" + f.plan.ID(i) + "</title><p>" + word + "</p>\n"
}

func (f *Fleet) page(w http.ResponseWriter, i int, keyword bool) {
	b := f.body(i, keyword)
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, b)
}

// drip sends a whole response one byte a second, status line first, so a
// client times out waiting for the headers.
func (f *Fleet) drip(w http.ResponseWriter, r *http.Request, i int) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		w.WriteHeader(http.StatusGatewayTimeout)
		return
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	b := f.body(i, true)
	resp := "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\nContent-Length: " + strconv.Itoa(len(b)) + "\r\n\r\n" + b
	t := time.NewTicker(time.Second)
	defer t.Stop()
	end := time.NewTimer(f.plan.cfg.HangMax)
	defer end.Stop()
	for k := 0; k < len(resp); k++ {
		_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte{resp[k]}); err != nil {
			return
		}
		select {
		case <-t.C:
		case <-end.C:
			return
		case <-f.done:
			return
		case <-r.Context().Done():
			return
		}
	}
}

// reset drops the connection with a TCP reset.
func (f *Fleet) reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	var tc *net.TCPConn
	switch c := conn.(type) {
	case *net.TCPConn:
		tc = c
	case *tls.Conn:
		tc, _ = c.NetConn().(*net.TCPConn)
	}
	if tc != nil {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// Serve starts cfg's fleet, writes its Info as one JSON line to infoOut, and
// serves until ctx is done. cmd/fleet and the bench's fleet child run it.
func Serve(ctx context.Context, cfg Config, infoOut io.Writer) error {
	f, err := Start(cfg)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := json.NewEncoder(infoOut).Encode(f.Info()); err != nil {
		return fmt.Errorf("fleet: write info: %w", err)
	}
	<-ctx.Done()
	return nil
}
