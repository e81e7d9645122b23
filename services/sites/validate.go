package sites

import (
	"errors"
	"fmt"
	"net/textproto"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/vigil-dev/vigil/events"
)

// Defaults and limits of a site's configuration. Normalize fills the defaults
// in and refuses values outside the limits.
const (
	DefaultInterval = events.DefaultInterval
	MinInterval     = 10 * time.Second
	MaxInterval     = 24 * time.Hour

	// DefaultTimeout is the timeout of a site that sets none, unless its
	// interval is 20s or less: then it is half the interval, so the timeout
	// stays below the interval.
	DefaultTimeout = events.DefaultCheckTimeout
	MinTimeout     = time.Second
	// MaxTimeout bounds how long one check may hold a checker's worker. A site
	// slower than a minute is down for any practical purpose.
	MaxTimeout = 60 * time.Second

	// DefaultRetryInterval is the cadence while an incident is open, unless
	// the site's interval is shorter: then it is the interval.
	DefaultRetryInterval = events.DefaultRetryInterval
	MinRetryInterval     = 5 * time.Second

	DefaultConfirmAfter = events.DefaultConfirmAfter
	MaxConfirmAfter     = 20
	DefaultRecoverAfter = events.DefaultRecoverAfter
	MaxRecoverAfter     = 20
	DefaultQuorum       = events.DefaultQuorum
	MaxQuorum           = 10

	MaxURLLen         = 2048
	MaxHeaders        = 32
	MaxHeaderValueLen = 4096
	MaxKeywords       = 32
	MaxKeywordLen     = 1024
	MaxRegions        = 32
	MaxWindows        = 32
	MinWindowDuration = time.Minute
	MaxWindowDuration = 7 * 24 * time.Hour
	MaxLabels         = 64
	MaxLabelKeyLen    = 63
	MaxLabelValueLen  = 255
)

// DefaultMethod is the HTTP method of a site that sets none.
const DefaultMethod = events.DefaultMethod

// FieldError is one invalid field of one site. Its message names the site,
// its position in a file when it came from one, the field and the reason, such
// as
//
//	site "shop-eu" (sites[2]): interval: 5s is below the minimum 10s
//
// so an operator can fix a file of thousands of sites from the message alone.
type FieldError struct {
	// Site is the site's ID, or "" when it has none yet.
	Site string
	// Index is the site's position in a file or list, or -1 when the site
	// was given alone.
	Index int
	// Field is the field's name as written in YAML, with an index or key
	// where one helps, such as "maintenance[1].cron".
	Field  string
	Reason string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	switch {
	case e.Site != "" && e.Index >= 0:
		fmt.Fprintf(&b, "site %q (sites[%d]): ", e.Site, e.Index)
	case e.Site != "":
		fmt.Fprintf(&b, "site %q: ", e.Site)
	case e.Index >= 0:
		fmt.Fprintf(&b, "sites[%d]: ", e.Index)
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// FieldErrors returns every *FieldError in err's tree (as built by Normalize,
// NormalizeAll and ParseFile with errors.Join), in order.
func FieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case *FieldError:
			out = append(out, e)
		case interface{ Unwrap() []error }:
			for _, inner := range e.Unwrap() {
				walk(inner)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		}
	}
	walk(err)
	return out
}

// IsInvalid reports whether err says the input was invalid (it holds a
// FieldError), as opposed to a failure to reach or use NATS. Commands exit 2
// for the first and 1 for the second.
func IsInvalid(err error) bool {
	var fe *FieldError
	return errors.As(err, &fe)
}

// Normalize validates s and returns it with every default filled in, in the
// canonical form in which configurations are stored: header names
// canonicalized, expected statuses and regions sorted and deduplicated,
// keywords deduplicated in their given order, times in UTC, empty maps and
// slices nil, and TLSVerify always set (to a pointer of its own). Two
// configurations that mean the same thing normalize to values that are equal
// under reflect.DeepEqual, so comparing stored and desired configurations
// tells real changes from rewrites.
//
// An empty ID is left empty: the registry assigns one. Every invalid field is
// reported, as *FieldError values joined with errors.Join, and the returned
// Site is then the zero value.
func Normalize(s events.Site) (events.Site, error) {
	return normalize(s, -1)
}

// NormalizeAll normalizes every site of a list (a site file) and refuses IDs
// given twice. The errors name each bad site with its position; the result is
// nil when any site is invalid, so a caller cannot act on part of a file.
func NormalizeAll(in []events.Site) ([]events.Site, error) {
	out := make([]events.Site, len(in))
	var errs []error
	seen := make(map[string]int, len(in))
	for i, s := range in {
		n, err := normalize(s, i)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if n.ID != "" {
			if j, dup := seen[n.ID]; dup {
				errs = append(errs, &FieldError{Site: n.ID, Index: i, Field: "id", Reason: fmt.Sprintf("duplicate: sites[%d] has the same id", j)})
				continue
			}
			seen[n.ID] = i
		}
		out[i] = n
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// validator collects the field errors of one site.
type validator struct {
	site  string
	index int
	errs  []error
}

func (v *validator) fail(field, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Site: v.site, Index: v.index, Field: field, Reason: fmt.Sprintf(format, args...)})
}

func normalize(s events.Site, index int) (events.Site, error) {
	v := &validator{site: s.ID, index: index}
	out := events.Site{ID: s.ID}

	if s.ID != "" {
		if err := events.ValidateSiteID(s.ID); err != nil {
			v.fail("id", "%v", err)
		}
	}
	out.URL = v.url(s.URL)

	// Interval, then what is bounded by it.
	interval := s.Interval.Std()
	intervalOK := true
	switch {
	case interval == 0:
		interval = DefaultInterval
	case interval < MinInterval:
		v.fail("interval", "%s is below the minimum %s", s.Interval, events.Duration(MinInterval))
		intervalOK = false
	case interval > MaxInterval:
		v.fail("interval", "%s is above the maximum %s", s.Interval, events.Duration(MaxInterval))
		intervalOK = false
	}
	out.Interval = events.Duration(interval)

	timeout := s.Timeout.Std()
	switch {
	case timeout == 0:
		timeout = min(DefaultTimeout, interval/2)
	case timeout < MinTimeout:
		v.fail("timeout", "%s is below the minimum %s", s.Timeout, events.Duration(MinTimeout))
	case timeout > MaxTimeout:
		v.fail("timeout", "%s is above the maximum %s", s.Timeout, events.Duration(MaxTimeout))
	case intervalOK && timeout >= interval:
		v.fail("timeout", "%s must be below the interval %s", s.Timeout, out.Interval)
	}
	out.Timeout = events.Duration(timeout)

	retry := s.RetryInterval.Std()
	switch {
	case retry == 0:
		retry = min(DefaultRetryInterval, interval)
	case retry < MinRetryInterval:
		v.fail("retry_interval", "%s is below the minimum %s", s.RetryInterval, events.Duration(MinRetryInterval))
	case intervalOK && retry > interval:
		v.fail("retry_interval", "%s is above the interval %s: retries while an incident is open must not be slower than normal checks", s.RetryInterval, out.Interval)
	}
	out.RetryInterval = events.Duration(retry)

	// Request.
	out.Method = strings.ToUpper(s.Method)
	switch out.Method {
	case "":
		out.Method = DefaultMethod
	case "GET", "HEAD":
	default:
		v.fail("method", "%q is not supported: use GET or HEAD", s.Method)
	}
	out.Headers = v.headers(s.Headers)

	// What counts as up.
	out.ExpectStatus = v.statuses(s.ExpectStatus)
	out.Keywords = v.keywords("keywords", s.Keywords)
	out.ForbiddenKeywords = v.keywords("forbidden_keywords", s.ForbiddenKeywords)
	for _, k := range out.ForbiddenKeywords {
		if slices.Contains(out.Keywords, k) {
			v.fail("forbidden_keywords", "%q is also a required keyword, so the site could never be up", k)
		}
	}
	if out.Method == "HEAD" && (len(out.Keywords) > 0 || len(out.ForbiddenKeywords) > 0) {
		v.fail("method", "HEAD cannot check keywords (a HEAD response has no body): use GET")
	}

	out.Redirects = s.Redirects
	switch out.Redirects {
	case "":
		out.Redirects = events.RedirectFollow
	case events.RedirectFollow, events.RedirectFail, events.RedirectAlert:
	default:
		v.fail("redirects", "%q is not a redirect policy: use follow, fail or alert", string(s.Redirects))
	}
	verify := s.TLSVerify == nil || *s.TLSVerify
	out.TLSVerify = &verify

	// Incident handling.
	out.ConfirmAfter = v.count("confirm_after", s.ConfirmAfter, DefaultConfirmAfter, MaxConfirmAfter)
	out.RecoverAfter = v.count("recover_after", s.RecoverAfter, DefaultRecoverAfter, MaxRecoverAfter)
	out.Quorum = v.count("quorum", s.Quorum, DefaultQuorum, MaxQuorum)
	out.Regions = v.regions(s.Regions)
	if len(out.Regions) > 0 && out.Quorum > len(out.Regions) {
		v.fail("quorum", "%d is more than the %d regions the site verifies from (regions), so a failure could never be confirmed", out.Quorum, len(out.Regions))
	}
	out.Maintenance = v.windows(s.Maintenance)
	out.Labels = v.labels(s.Labels)

	if len(v.errs) > 0 {
		return events.Site{}, errors.Join(v.errs...)
	}
	return out, nil
}

func (v *validator) url(raw string) string {
	const field = "url"
	if raw == "" {
		v.fail(field, "is required")
		return ""
	}
	if len(raw) > MaxURLLen {
		v.fail(field, "is %d characters long, the limit is %d", len(raw), MaxURLLen)
		return ""
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c <= ' ' || c == 0x7f {
			v.fail(field, "contains white space or a control character at position %d", i)
			return ""
		}
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		v.fail(field, "%q is not a valid URL: %v", raw, err)
		return ""
	}
	switch {
	case u.Scheme == "":
		v.fail(field, "%q is not absolute: it must start with http:// or https://", raw)
	case u.Scheme != "http" && u.Scheme != "https":
		v.fail(field, "scheme %q is not supported: use http or https", u.Scheme)
	case u.Opaque != "" || u.Hostname() == "":
		v.fail(field, "%q has no host", raw)
	case u.User != nil:
		v.fail(field, "carries credentials (user:password@host): secrets don't belong in site events, which are kept as history and readable by every consumer of SITES")
	default:
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				v.fail(field, "port %s is out of range 1 to 65535", p)
			}
		}
	}
	return raw
}

// forbiddenHeaders are set by the HTTP client from the request itself or
// govern the connection; a site setting them would break the check or smuggle
// a second request.
var forbiddenHeaders = map[string]bool{
	"Host":              true,
	"Content-Length":    true,
	"Transfer-Encoding": true,
	"Connection":        true,
	"Keep-Alive":        true,
	"Proxy-Connection":  true,
	"Te":                true,
	"Trailer":           true,
	"Upgrade":           true,
}

func (v *validator) headers(in map[string]string) map[string]string {
	const field = "headers"
	if len(in) == 0 {
		return nil
	}
	if len(in) > MaxHeaders {
		v.fail(field, "has %d headers, the limit is %d", len(in), MaxHeaders)
		return nil
	}
	out := make(map[string]string, len(in))
	given := make(map[string]string, len(in))
	for _, name := range sortedKeys(in) {
		value := in[name]
		if !validToken(name) {
			v.fail(field, "%q is not a valid HTTP header name", name)
			continue
		}
		canon := textproto.CanonicalMIMEHeaderKey(name)
		if forbiddenHeaders[canon] {
			v.fail(field, "%s is managed by the HTTP client and cannot be set", canon)
			continue
		}
		if prev, dup := given[canon]; dup {
			v.fail(field, "%q and %q are the same header", prev, name)
			continue
		}
		given[canon] = name
		if len(value) > MaxHeaderValueLen {
			v.fail(field, "value of %s is %d bytes long, the limit is %d", canon, len(value), MaxHeaderValueLen)
			continue
		}
		if strings.ContainsFunc(value, func(r rune) bool { return r != '\t' && (r < ' ' || r == 0x7f) }) {
			v.fail(field, "value of %s contains CR, LF or another control character", canon)
			continue
		}
		out[canon] = value
	}
	return out
}

// validToken reports whether s is an HTTP token (RFC 9110 section 5.6.2), the
// grammar of header names.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func (v *validator) statuses(in []int) []int {
	if len(in) == 0 {
		return nil
	}
	out := make([]int, 0, len(in))
	for _, code := range in {
		if code < 100 || code > 599 {
			v.fail("expect_status", "%d is not an HTTP status code (100 to 599)", code)
			continue
		}
		out = append(out, code)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) == 0 {
		return nil
	}
	return out
}

func (v *validator) keywords(field string, in []string) []string {
	if len(in) == 0 {
		return nil
	}
	if len(in) > MaxKeywords {
		v.fail(field, "has %d keywords, the limit is %d", len(in), MaxKeywords)
		return nil
	}
	out := make([]string, 0, len(in))
	for i, k := range in {
		switch {
		case k == "":
			v.fail(fmt.Sprintf("%s[%d]", field, i), "is empty; an empty keyword would match every page")
			continue
		case len(k) > MaxKeywordLen:
			v.fail(fmt.Sprintf("%s[%d]", field, i), "is %d bytes long, the limit is %d", len(k), MaxKeywordLen)
			continue
		case !utf8.ValidString(k):
			v.fail(fmt.Sprintf("%s[%d]", field, i), "is not valid UTF-8")
			continue
		}
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func (v *validator) count(field string, n, def, limit int) int {
	switch {
	case n == 0:
		return def
	case n < 1:
		v.fail(field, "%d is below the minimum 1", n)
	case n > limit:
		v.fail(field, "%d is above the maximum %d", n, limit)
	}
	return n
}

func (v *validator) regions(in []string) []string {
	if len(in) == 0 {
		return nil
	}
	if len(in) > MaxRegions {
		v.fail("regions", "has %d regions, the limit is %d", len(in), MaxRegions)
		return nil
	}
	out := make([]string, 0, len(in))
	for _, r := range in {
		if err := events.ValidateRegion(r); err != nil {
			v.fail("regions", "%v", err)
			continue
		}
		out = append(out, r)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) == 0 {
		return nil
	}
	return out
}

func (v *validator) windows(in []events.MaintenanceWindow) []events.MaintenanceWindow {
	if len(in) == 0 {
		return nil
	}
	if len(in) > MaxWindows {
		v.fail("maintenance", "has %d windows, the limit is %d", len(in), MaxWindows)
		return nil
	}
	out := make([]events.MaintenanceWindow, 0, len(in))
	for i, w := range in {
		field := fmt.Sprintf("maintenance[%d]", i)
		var n events.MaintenanceWindow
		ok := true
		switch {
		case w.Start != nil && w.Cron != "":
			v.fail(field, "set either start (one-off) or cron (recurring), not both")
			ok = false
		case w.Start == nil && w.Cron == "":
			v.fail(field, "needs start (a one-off window) or cron (a recurring one)")
			ok = false
		case w.Start != nil:
			t := w.Start.UTC().Round(0)
			n.Start = &t
		default:
			n.Cron = strings.Join(strings.Fields(w.Cron), " ")
			if _, err := ParseCron(n.Cron); err != nil {
				v.fail(field+".cron", "%v", err)
				ok = false
			}
		}
		d := w.Duration.Std()
		switch {
		case d == 0:
			v.fail(field+".duration", "is required (%s to %s)", events.Duration(MinWindowDuration), events.Duration(MaxWindowDuration))
			ok = false
		case d < MinWindowDuration:
			v.fail(field+".duration", "%s is below the minimum %s", w.Duration, events.Duration(MinWindowDuration))
			ok = false
		case d > MaxWindowDuration:
			v.fail(field+".duration", "%s is above the maximum %s", w.Duration, events.Duration(MaxWindowDuration))
			ok = false
		}
		n.Duration = w.Duration
		if ok {
			out = append(out, n)
		}
	}
	return out
}

func (v *validator) labels(in map[string]string) map[string]string {
	if len(in) == 0 {
		return nil
	}
	if len(in) > MaxLabels {
		v.fail("labels", "has %d labels, the limit is %d", len(in), MaxLabels)
		return nil
	}
	out := make(map[string]string, len(in))
	for _, k := range sortedKeys(in) {
		val := in[k]
		if !validLabelKey(k) {
			v.fail("labels", "key %q must be 1 to %d characters from a-z, 0-9, '_', '.' and '-'", k, MaxLabelKeyLen)
			continue
		}
		if !utf8.ValidString(val) {
			v.fail("labels", "value of %s is not valid UTF-8", k)
			continue
		}
		if n := utf8.RuneCountInString(val); n > MaxLabelValueLen {
			v.fail("labels", "value of %s is %d characters long, the limit is %d", k, n, MaxLabelValueLen)
			continue
		}
		out[k] = val
	}
	return out
}

func validLabelKey(k string) bool {
	if k == "" || len(k) > MaxLabelKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
