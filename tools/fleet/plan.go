// Package fleet is a simulated fleet of websites for Vigil's capacity
// harness and tests: one process serving N virtual sites on loopback, each
// with its own host name (s000123.fleet.test) and a scripted behaviour over
// time that is reproducible from a seed.
//
// # Behaviours
//
// Every site has a Kind. Most are Healthy: they answer 200 after a latency
// drawn from a log-normal distribution. The others have incident windows,
// Outage long in every Period, at a phase of their own:
//
//	Errors5xx    500, 502 or 503 during the window
//	Timeout      no answer during the window (the request hangs past any
//	             client timeout, until HangMax or the client gives up)
//	Drip         the response trickles out one byte a second during the window
//	Flapping     down (503) and up again every FlapPeriod, all the time
//	KeywordLoss  the keyword "vigil-ok" disappears from the body in the window
//	TLSExpiry    served over TLS with a certificate whose NotAfter falls at
//	             the site's phase after the epoch: valid (but expiring) before,
//	             expired after
//	RegionBlock  answers 403 during the window to the checker regions listed
//	             in Config.BlockRegions, told apart by their source address
//
// Only TLSExpiry sites are served over TLS; every other site is plain HTTP.
//
// # Addresses
//
// Sites are spread over Config.Listeners HTTP listeners on 127.0.1.1,
// 127.0.1.2, … and Config.TLSListeners TLS listeners on 127.0.2.1, …, each
// serving many hosts by the Host header (or SNI). A site's host name resolves
// only through this package's Resolver, which a checker can be pointed at
// (httpcheck.Options.Resolver); nothing touches /etc/hosts. Spreading the
// listeners over many destination addresses multiplies the 4-tuples
// available, so tens of thousands of new connections a minute do not run
// out of ephemeral ports.
//
// # Control
//
// A JSON control API on 127.0.0.1 starts and ends outages on any site at run
// time (see Control and Client), overriding its script.
package fleet

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Kind is a site's scripted behaviour.
type Kind uint8

// The kinds of site.
const (
	Healthy Kind = iota
	Errors5xx
	Timeout
	Drip
	Flapping
	KeywordLoss
	TLSExpiry
	RegionBlock
	numKinds
)

var kindNames = [...]string{
	Healthy:     "healthy",
	Errors5xx:   "5xx",
	Timeout:     "timeout",
	Drip:        "drip",
	Flapping:    "flapping",
	KeywordLoss: "keyword",
	TLSExpiry:   "tls_expiry",
	RegionBlock: "region_block",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// ParseKind returns the kind named s (as Kind.String writes it).
func ParseKind(s string) (Kind, error) {
	for k, n := range kindNames {
		if n == s {
			return Kind(k), nil
		}
	}
	return 0, fmt.Errorf("unknown site kind %q (want one of %s)", s, strings.Join(kindNames[:], ", "))
}

// MarshalText implements encoding.TextMarshaler.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (k *Kind) UnmarshalText(b []byte) error {
	v, err := ParseKind(string(b))
	*k = v
	return err
}

// Kinds lists every kind.
func Kinds() []Kind {
	out := make([]Kind, numKinds)
	for i := range out {
		out[i] = Kind(i)
	}
	return out
}

// Mix is the share of sites of each kind other than Healthy, such as
// {Errors5xx: 0.001}; the rest are healthy.
type Mix map[Kind]float64

// ParseMix parses "5xx=0.001,timeout=0.0005".
func ParseMix(s string) (Mix, error) {
	m := Mix{}
	s = strings.TrimSpace(s)
	if s == "" || s == "none" {
		return m, nil
	}
	for item := range strings.SplitSeq(s, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			return nil, fmt.Errorf("mix item %q: want kind=share", item)
		}
		k, err := ParseKind(name)
		if err != nil {
			return nil, err
		}
		f, err := strconv.ParseFloat(val, 64)
		if err != nil || f < 0 || f > 1 {
			return nil, fmt.Errorf("mix item %q: share must be a number in [0,1]", item)
		}
		m[k] = f
	}
	return m, nil
}

// String writes the mix in ParseMix's syntax, kinds in order.
func (m Mix) String() string {
	var parts []string
	for _, k := range Kinds() {
		if f, ok := m[k]; ok && k != Healthy {
			parts = append(parts, k.String()+"="+strconv.FormatFloat(f, 'g', -1, 64))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

// DefaultMix is the benchmark's mix: one site in 250 has a scripted incident
// of some kind, the rest are healthy.
func DefaultMix() Mix {
	return Mix{
		Errors5xx:   0.001,
		Timeout:     0.0005,
		Drip:        0.0002,
		Flapping:    0.0005,
		KeywordLoss: 0.0005,
		TLSExpiry:   0.0002,
		RegionBlock: 0.0005,
	}
}

// Config describes a fleet. Everything about the sites is a pure function of
// it, so two processes given the same Config agree on every site (the bench
// builds the plan itself and runs the fleet in a child process).
type Config struct {
	// Sites is the number of sites.
	Sites int `json:"sites"`
	// Seed makes the plan and the latencies reproducible.
	Seed uint64 `json:"seed"`
	// Mix is the share of each non-healthy kind.
	Mix Mix `json:"mix"`
	// Epoch is time zero of the scripts.
	Epoch time.Time `json:"epoch"`
	// Period and Outage: an incident window lasts Outage in every Period
	// (defaults 10m and 3m).
	Period time.Duration `json:"period"`
	Outage time.Duration `json:"outage"`
	// FlapPeriod is how long a flapping site stays up, then down (default 60s).
	FlapPeriod time.Duration `json:"flap_period"`
	// Healthy latency: log-normal with this median and sigma, capped at
	// LatencyMax (defaults 20ms, 0.6, 1s).
	LatencyMedian time.Duration `json:"latency_median"`
	LatencySigma  float64       `json:"latency_sigma"`
	LatencyMax    time.Duration `json:"latency_max"`
	// HangMax bounds how long a hanging or dripping response lasts (default 2m).
	HangMax time.Duration `json:"hang_max"`
	// Listeners and TLSListeners: how many addresses the sites are spread
	// over (defaults 64 and 4).
	Listeners    int `json:"listeners"`
	TLSListeners int `json:"tls_listeners"`
	// HTTPBase and TLSBase are the first listener addresses (defaults
	// 127.0.1.1 and 127.0.2.1); the others follow.
	HTTPBase netip.Addr `json:"http_base"`
	TLSBase  netip.Addr `json:"tls_base"`
	// Domain of the site host names (default fleet.test).
	Domain string `json:"domain"`
	// Regions maps checker regions to the source address their checks
	// come from (default local=127.0.0.1, blocked=127.0.0.2).
	Regions map[string]netip.Addr `json:"regions"`
	// BlockRegions are the regions RegionBlock sites refuse during their
	// windows (default: blocked).
	BlockRegions []string `json:"block_regions"`
	// Control is the control API's address (default 127.0.0.1:0).
	Control string `json:"control"`
}

// Defaults returns c with every zero field set to its default.
func (c Config) Defaults() Config {
	if c.Mix == nil {
		c.Mix = Mix{}
	}
	if c.Epoch.IsZero() {
		c.Epoch = time.Now().Truncate(time.Second)
	}
	if c.Period <= 0 {
		c.Period = 10 * time.Minute
	}
	if c.Outage <= 0 {
		c.Outage = 3 * time.Minute
	}
	if c.FlapPeriod <= 0 {
		c.FlapPeriod = time.Minute
	}
	if c.LatencyMedian <= 0 {
		c.LatencyMedian = 20 * time.Millisecond
	}
	if c.LatencySigma <= 0 {
		c.LatencySigma = 0.6
	}
	if c.LatencyMax <= 0 {
		c.LatencyMax = time.Second
	}
	if c.HangMax <= 0 {
		c.HangMax = 2 * time.Minute
	}
	if c.Listeners <= 0 {
		c.Listeners = 64
	}
	if c.TLSListeners <= 0 {
		c.TLSListeners = 4
	}
	if !c.HTTPBase.IsValid() {
		c.HTTPBase = netip.MustParseAddr("127.0.1.1")
	}
	if !c.TLSBase.IsValid() {
		c.TLSBase = netip.MustParseAddr("127.0.2.1")
	}
	if c.Domain == "" {
		c.Domain = "fleet.test"
	}
	if c.Regions == nil {
		c.Regions = map[string]netip.Addr{
			"local":   netip.MustParseAddr("127.0.0.1"),
			"blocked": netip.MustParseAddr("127.0.0.2"),
		}
	}
	if c.BlockRegions == nil {
		c.BlockRegions = []string{"blocked"}
	}
	if c.Control == "" {
		c.Control = "127.0.0.1:0"
	}
	return c
}

// Validate reports a config that cannot be planned or served.
func (c Config) Validate() error {
	if c.Sites < 1 {
		return errors.New("fleet: at least one site is required")
	}
	total := 0.0
	for k, f := range c.Mix {
		if k >= numKinds {
			return fmt.Errorf("fleet: unknown kind %d in mix", k)
		}
		if f < 0 {
			return fmt.Errorf("fleet: negative share for %s", k)
		}
		if k != Healthy {
			total += f
		}
	}
	if total > 1 {
		return fmt.Errorf("fleet: the mix's shares add up to %.3f, more than 1", total)
	}
	if c.Outage >= c.Period {
		return fmt.Errorf("fleet: outage %s must be shorter than the period %s", c.Outage, c.Period)
	}
	for _, a := range []netip.Addr{c.HTTPBase, c.TLSBase} {
		if !a.Is4() || !a.IsLoopback() {
			return fmt.Errorf("fleet: listener base %s is not an IPv4 loopback address", a)
		}
	}
	for r, a := range c.Regions {
		if !a.IsLoopback() {
			return fmt.Errorf("fleet: region %s source %s is not a loopback address", r, a)
		}
	}
	for _, n := range []int{c.Listeners, c.TLSListeners} {
		if n > 250 {
			return fmt.Errorf("fleet: at most 250 listeners of a kind (asked for %d)", n)
		}
	}
	return nil
}

// rec is what the plan stores per site: kept small, because a fleet of a
// million sites keeps one per site.
type rec struct {
	kind  Kind
	phase uint32 // ms within Period
}

// Plan is the fleet's sites and their scripts. It is immutable and safe for
// concurrent use.
type Plan struct {
	cfg    Config
	recs   []rec
	width  int // digits in a site number
	counts [numKinds]int
	suffix string // "." + domain
}

// NewPlan builds the plan of cfg (defaults applied).
func NewPlan(cfg Config) (*Plan, error) {
	cfg = cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Plan{cfg: cfg, recs: make([]rec, cfg.Sites), suffix: "." + cfg.Domain}
	p.width = max(6, len(strconv.Itoa(cfg.Sites-1)))
	// Kinds are dealt by exact counts (not by chance per site), so a small
	// fleet gets what its shares promise, at positions drawn from the seed.
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x76696769_6c666c74))
	perm := rng.Perm(cfg.Sites)
	next := 0
	for _, k := range Kinds() {
		if k == Healthy {
			continue
		}
		n := int(cfg.Mix[k]*float64(cfg.Sites) + 0.5)
		for ; n > 0 && next < len(perm); n-- {
			p.recs[perm[next]].kind = k
			next++
		}
	}
	periodMs := uint64(cfg.Period.Milliseconds())
	for i := range p.recs {
		p.recs[i].phase = uint32(rng.Uint64() % periodMs)
		p.counts[p.recs[i].kind]++
	}
	return p, nil
}

// Config returns the plan's configuration, defaults applied.
func (p *Plan) Config() Config { return p.cfg }

// Len is the number of sites.
func (p *Plan) Len() int { return len(p.recs) }

// Counts returns how many sites there are of each kind.
func (p *Plan) Counts() map[Kind]int {
	out := map[Kind]int{}
	for k, n := range p.counts {
		if n > 0 {
			out[Kind(k)] = n
		}
	}
	return out
}

// Kind returns site i's kind.
func (p *Plan) Kind(i int) Kind { return p.recs[i].kind }

// ID returns site i's ID, such as s000123 (a valid Vigil site ID).
func (p *Plan) ID(i int) string {
	s := strconv.Itoa(i)
	if len(s) < p.width {
		s = strings.Repeat("0", p.width-len(s)) + s
	}
	return "s" + s
}

// Host returns site i's host name, such as s000123.fleet.test.
func (p *Plan) Host(i int) string { return p.ID(i) + p.suffix }

// Index returns the site named by an ID or a host name (with or without a
// port); ok is false for anything else.
func (p *Plan) Index(name string) (int, bool) {
	if h, _, ok := strings.Cut(name, ":"); ok {
		name = h
	}
	if len(name) > len(p.suffix) && strings.EqualFold(name[len(name)-len(p.suffix):], p.suffix) {
		name = name[:len(name)-len(p.suffix)]
	}
	if len(name) != p.width+1 || (name[0] != 's' && name[0] != 'S') {
		return 0, false
	}
	n := 0
	for _, c := range name[1:] {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if n >= len(p.recs) {
		return 0, false
	}
	return n, true
}

// TLS reports whether site i is served over TLS.
func (p *Plan) TLS(i int) bool { return p.recs[i].kind == TLSExpiry }

// Keyword returns the keyword a check of site i should require, or "".
func (p *Plan) Keyword(i int) string {
	if p.recs[i].kind == KeywordLoss {
		return Keyword
	}
	return ""
}

// Keyword is the word every page carries, except a KeywordLoss site's in
// its window.
const Keyword = "vigil-ok"

// Phase returns the offset of site i's windows within the period.
func (p *Plan) Phase(i int) time.Duration {
	return time.Duration(p.recs[i].phase) * time.Millisecond
}

// NotAfter returns the expiry of a TLSExpiry site's certificate: its phase
// after the epoch.
func (p *Plan) NotAfter(i int) time.Time { return p.cfg.Epoch.Add(p.Phase(i)) }

// InWindow reports whether site i's incident window is open at t. Windows
// open at epoch + phase + k·period for k ≥ 0 and last Outage.
func (p *Plan) InWindow(i int, t time.Time) bool {
	d := t.Sub(p.cfg.Epoch) - p.Phase(i)
	if d < 0 {
		return false
	}
	return d%p.cfg.Period < p.cfg.Outage
}

// Windows returns site i's incident windows that overlap [from, to): the
// times its script makes it fail (for Flapping, its down half-periods; for
// TLSExpiry, from NotAfter on). Healthy and RegionBlock sites (whose windows
// affect only the blocked regions) return nil.
func (p *Plan) Windows(i int, from, to time.Time) [][2]time.Time {
	var out [][2]time.Time
	from = maxTime(from, p.cfg.Epoch) // scripts start at the epoch
	clip := func(a, b time.Time) {
		if b.After(from) && a.Before(to) {
			out = append(out, [2]time.Time{maxTime(a, from), minTime(b, to)})
		}
	}
	switch p.recs[i].kind {
	case Healthy, RegionBlock:
		return nil
	case TLSExpiry:
		clip(p.NotAfter(i), to)
		return out
	case Flapping:
		fp := p.cfg.FlapPeriod
		start := p.cfg.Epoch.Add(p.Phase(i) % (2 * fp))
		if start.After(p.cfg.Epoch) {
			start = start.Add(-2 * fp)
		}
		// Down in the second half of every 2·fp cycle from start.
		k := max(0, int64(from.Sub(start)/(2*fp))-1)
		for c := start.Add(time.Duration(k) * 2 * fp); c.Before(to); c = c.Add(2 * fp) {
			clip(c.Add(fp), c.Add(2*fp))
		}
		return out
	}
	first := p.cfg.Epoch.Add(p.Phase(i))
	k := max(0, int64(from.Sub(first)/p.cfg.Period)-1)
	for w := first.Add(time.Duration(k) * p.cfg.Period); w.Before(to); w = w.Add(p.cfg.Period) {
		clip(w, w.Add(p.cfg.Outage))
	}
	return out
}

// flapDown reports whether a flapping site is down at t.
func (p *Plan) flapDown(i int, t time.Time) bool {
	if t.Before(p.cfg.Epoch) {
		return false
	}
	fp := p.cfg.FlapPeriod
	d := t.Sub(p.cfg.Epoch) + 2*fp - p.Phase(i)%(2*fp)
	if d < 0 {
		return false
	}
	return (d/fp)%2 == 1
}

// KeptHealthy reports whether site i's script never makes it fail from any
// region: the sites on which any event is a false one.
func (p *Plan) KeptHealthy(i int) bool { return p.recs[i].kind == Healthy }

// Sites returns the indexes of the sites of kind k, in order.
func (p *Plan) Sites(k Kind) []int {
	var out []int
	for i, r := range p.recs {
		if r.kind == k {
			out = append(out, i)
		}
	}
	return out
}

// regionOf maps a source address to its region name, "" if none.
func (p *Plan) regionOf(a netip.Addr) string {
	for r, src := range p.cfg.Regions {
		if src == a {
			return r
		}
	}
	return ""
}

// blocks reports whether RegionBlock sites refuse region r.
func (p *Plan) blocks(r string) bool {
	for _, b := range p.cfg.BlockRegions {
		if b == r {
			return true
		}
	}
	return false
}

// httpListener and tlsListener: which listener serves site i.
func (p *Plan) httpListener(i int) int { return i % p.cfg.Listeners }
func (p *Plan) tlsListener(i int) int  { return i % p.cfg.TLSListeners }

// listenerAddrs returns the listener addresses: Listeners from HTTPBase, then
// TLSListeners from TLSBase.
func (p *Plan) listenerAddrs() (httpAddrs, tlsAddrs []netip.Addr) {
	a := p.cfg.HTTPBase
	for range p.cfg.Listeners {
		httpAddrs = append(httpAddrs, a)
		a = a.Next()
	}
	a = p.cfg.TLSBase
	for range p.cfg.TLSListeners {
		tlsAddrs = append(tlsAddrs, a)
		a = a.Next()
	}
	return httpAddrs, tlsAddrs
}

// SortedRegions returns the configured regions' names, sorted.
func (c Config) SortedRegions() []string {
	out := make([]string, 0, len(c.Regions))
	for r := range c.Regions {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
