package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Duration is a time.Duration written as "90s" in JSON.
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration such as 90s or 5m", b)
	}
	*d = Duration(v)
	return nil
}

// Outage overrides a site's script until it is ended or For has passed.
type Outage struct {
	// Mode is how requests are answered (default status).
	Mode Mode `json:"mode"`
	// Status for ModeStatus (default 503) and ModeBlock (default 403).
	Status int `json:"status,omitempty"`
	// Latency for ModeSlow.
	Latency Duration `json:"latency,omitempty"`
	// Regions limits the outage to checks from these regions (by source
	// address); empty means every client.
	Regions []string `json:"regions,omitempty"`
	// For ends the outage by itself after this long; zero lasts until
	// ended.
	For Duration `json:"for,omitempty"`
	// Until is when it ends (set by the fleet from For).
	Until time.Time `json:"until,omitzero"`

	until time.Time
}

func (o *Outage) appliesTo(region string) bool {
	return len(o.Regions) == 0 || slices.Contains(o.Regions, region)
}

func (o *Outage) check() error {
	if o.Mode == "" {
		o.Mode = ModeStatus
	}
	if modeIndex(o.Mode) < 0 {
		names := make([]string, len(modes))
		for i, m := range modes {
			names[i] = string(m)
		}
		return fmt.Errorf("unknown mode %q (want one of %s)", o.Mode, strings.Join(names, ", "))
	}
	if o.Status != 0 && (o.Status < 100 || o.Status > 599) {
		return fmt.Errorf("status %d is not an HTTP status", o.Status)
	}
	if o.For < 0 || o.Latency < 0 {
		return errors.New("for and latency must not be negative")
	}
	return nil
}

// StartOutage overrides site i's script with o. It replaces any outage the
// site had.
func (f *Fleet) StartOutage(i int, o Outage) error {
	if i < 0 || i >= f.plan.Len() {
		return fmt.Errorf("no site %d", i)
	}
	if err := o.check(); err != nil {
		return err
	}
	if o.For > 0 {
		o.until = f.now().Add(o.For.Std())
		o.Until = o.until
	}
	op := &o
	f.mu.Lock()
	if _, ok := f.overrides[i]; !ok {
		f.nOverride.Add(1)
	}
	f.overrides[i] = op
	f.mu.Unlock()
	if o.For > 0 {
		// Forget it once over, unless another outage replaced it.
		time.AfterFunc(o.For.Std(), func() {
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.overrides[i] == op {
				delete(f.overrides, i)
				f.nOverride.Add(-1)
			}
		})
	}
	return nil
}

// EndOutage returns site i to its script; it reports whether it had an outage.
func (f *Fleet) EndOutage(i int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.overrides[i]; !ok {
		return false
	}
	delete(f.overrides, i)
	f.nOverride.Add(-1)
	return true
}

// EndAllOutages returns every site to its script and says how many had an
// outage.
func (f *Fleet) EndAllOutages() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.overrides)
	clear(f.overrides)
	f.nOverride.Store(0)
	return n
}

// SiteStatus describes one site.
type SiteStatus struct {
	Index    int        `json:"index"`
	ID       string     `json:"id"`
	Host     string     `json:"host"`
	Kind     Kind       `json:"kind"`
	TLS      bool       `json:"tls"`
	Keyword  string     `json:"keyword,omitempty"`
	Phase    Duration   `json:"phase"`
	NotAfter *time.Time `json:"not_after,omitempty"`
	Hits     uint32     `json:"hits"`
	// Now is how a request from Region would be answered now.
	Now    Mode    `json:"now"`
	Region string  `json:"region"`
	Outage *Outage `json:"outage,omitempty"`
}

// Site describes site i as seen from region now.
func (f *Fleet) Site(i int, region string) SiteStatus {
	p := f.plan
	st := SiteStatus{
		Index: i, ID: p.ID(i), Host: p.Host(i), Kind: p.Kind(i), TLS: p.TLS(i),
		Keyword: p.Keyword(i), Phase: Duration(p.Phase(i)), Hits: f.hits[i].Load(),
		Region: region,
	}
	if st.TLS {
		na := p.NotAfter(i)
		st.NotAfter = &na
	}
	now := f.now()
	st.Now = f.decide(i, now, region, 0).mode
	if st.TLS && !now.Before(p.NotAfter(i)) {
		st.Now = "tls_expired"
	}
	f.mu.RLock()
	if o := f.overrides[i]; o != nil {
		c := *o
		st.Outage = &c
	}
	f.mu.RUnlock()
	return st
}

// BulkOutage starts one outage on many sites.
type BulkOutage struct {
	Sites  []string `json:"sites"`
	Outage Outage   `json:"outage"`
}

// controlHandler is the control API:
//
//	GET    /v1/info                 Info
//	GET    /v1/stats                Stats
//	GET    /v1/sites/{id}[?region=] SiteStatus
//	PUT    /v1/sites/{id}/outage    start an outage (body: Outage)
//	DELETE /v1/sites/{id}/outage    end it
//	POST   /v1/outages              start one outage on many sites (BulkOutage)
//	DELETE /v1/outages              end every outage
//
// {id} is a site ID (s000123) or host name.
func (f *Fleet) controlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/info", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, f.Info())
	})
	mux.HandleFunc("GET /v1/stats", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, f.Stats())
	})
	site := func(w http.ResponseWriter, r *http.Request) (int, bool) {
		i, ok := f.plan.Index(r.PathValue("id"))
		if !ok {
			writeError(w, http.StatusNotFound, fmt.Errorf("no site %q in the fleet", r.PathValue("id")))
		}
		return i, ok
	}
	region := func(r *http.Request) string {
		if q := r.URL.Query().Get("region"); q != "" {
			return q
		}
		return f.plan.cfg.SortedRegions()[0]
	}
	mux.HandleFunc("GET /v1/sites/{id}", func(w http.ResponseWriter, r *http.Request) {
		if i, ok := site(w, r); ok {
			writeJSON(w, http.StatusOK, f.Site(i, region(r)))
		}
	})
	mux.HandleFunc("PUT /v1/sites/{id}/outage", func(w http.ResponseWriter, r *http.Request) {
		i, ok := site(w, r)
		if !ok {
			return
		}
		var o Outage
		if err := readJSON(r, &o); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		if err := f.StartOutage(i, o); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, http.StatusOK, f.Site(i, region(r)))
	})
	mux.HandleFunc("DELETE /v1/sites/{id}/outage", func(w http.ResponseWriter, r *http.Request) {
		i, ok := site(w, r)
		if !ok {
			return
		}
		f.EndOutage(i)
		writeJSON(w, http.StatusOK, f.Site(i, region(r)))
	})
	mux.HandleFunc("POST /v1/outages", func(w http.ResponseWriter, r *http.Request) {
		var b BulkOutage
		if err := readJSON(r, &b); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		idx := make([]int, 0, len(b.Sites))
		for _, s := range b.Sites {
			i, ok := f.plan.Index(s)
			if !ok {
				writeError(w, http.StatusNotFound, fmt.Errorf("no site %q in the fleet", s))
				return
			}
			idx = append(idx, i)
		}
		for _, i := range idx {
			if err := f.StartOutage(i, b.Outage); err != nil {
				writeError(w, http.StatusBadRequest, err)
				return
			}
		}
		writeJSON(w, http.StatusOK, map[string]int{"started": len(idx)})
	})
	mux.HandleFunc("DELETE /v1/outages", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]int{"ended": f.EndAllOutages()})
	})
	return mux
}

func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 16<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("bad JSON body: %w", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

// Client talks to a fleet's control API.
type Client struct {
	// Base is the API's address, such as http://127.0.0.1:41234.
	Base string
	HTTP *http.Client
}

// NewClient returns a client of the control API at addr (host:port).
func NewClient(addr string) *Client {
	return &Client{Base: "http://" + addr, HTTP: &http.Client{Timeout: 30 * time.Second}}
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("fleet control %s %s: %s: %s", method, path, resp.Status, e.Error)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Info returns the fleet's Info.
func (c *Client) Info(ctx context.Context) (Info, error) {
	var i Info
	return i, c.do(ctx, http.MethodGet, "/v1/info", nil, &i)
}

// Stats returns the fleet's counters.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	return s, c.do(ctx, http.MethodGet, "/v1/stats", nil, &s)
}

// Site describes a site (an ID or a host name).
func (c *Client) Site(ctx context.Context, id string) (SiteStatus, error) {
	var s SiteStatus
	return s, c.do(ctx, http.MethodGet, "/v1/sites/"+id, nil, &s)
}

// StartOutage starts an outage on a site.
func (c *Client) StartOutage(ctx context.Context, id string, o Outage) (SiteStatus, error) {
	var s SiteStatus
	return s, c.do(ctx, http.MethodPut, "/v1/sites/"+id+"/outage", o, &s)
}

// EndOutage ends a site's outage.
func (c *Client) EndOutage(ctx context.Context, id string) (SiteStatus, error) {
	var s SiteStatus
	return s, c.do(ctx, http.MethodDelete, "/v1/sites/"+id+"/outage", nil, &s)
}

// StartOutages starts one outage on many sites.
func (c *Client) StartOutages(ctx context.Context, ids []string, o Outage) error {
	return c.do(ctx, http.MethodPost, "/v1/outages", BulkOutage{Sites: ids, Outage: o}, nil)
}

// EndAllOutages ends every outage.
func (c *Client) EndAllOutages(ctx context.Context) (int, error) {
	var r map[string]int
	err := c.do(ctx, http.MethodDelete, "/v1/outages", nil, &r)
	return r["ended"], err
}
