package sites

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/events"
)

func ptr[T any](v T) *T { return &v }

func dur(s string) events.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return events.Duration(d)
}

func TestNormalizeFillsDefaults(t *testing.T) {
	got, err := Normalize(events.Site{ID: "shop-eu", URL: "https://shop.example.com/health"})
	if err != nil {
		t.Fatal(err)
	}
	want := events.Site{
		ID:            "shop-eu",
		URL:           "https://shop.example.com/health",
		Interval:      dur("5m"),
		Timeout:       dur("10s"),
		Method:        "GET",
		Redirects:     events.RedirectFollow,
		TLSVerify:     ptr(true),
		RetryInterval: dur("30s"),
		ConfirmAfter:  3,
		RecoverAfter:  2,
		Quorum:        2,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Normalize =\n%+v\nwant\n%+v", got, want)
	}
}

// A short interval bounds the defaults that must stay below or at it.
func TestNormalizeDefaultsFollowShortInterval(t *testing.T) {
	got, err := Normalize(events.Site{URL: "http://a.example", Interval: dur("10s")})
	if err != nil {
		t.Fatal(err)
	}
	if got.Timeout != dur("5s") || got.RetryInterval != dur("10s") {
		t.Errorf("timeout %s, retry %s; want 5s and 10s", got.Timeout, got.RetryInterval)
	}
}

func TestNormalizeKeepsValidValues(t *testing.T) {
	start := time.Date(2026, 12, 1, 2, 0, 0, 0, time.UTC)
	in := events.Site{
		ID: "shop-eu", URL: "https://shop.example.com:8443/health?x=1",
		Interval: dur("1m"), Timeout: dur("59s"), Method: "HEAD",
		Headers:      map[string]string{"Accept": "text/html", "X-Token": "a\tb"},
		ExpectStatus: []int{200, 301}, Redirects: events.RedirectAlert, TLSVerify: ptr(false),
		RetryInterval: dur("5s"), ConfirmAfter: 20, RecoverAfter: 1, Quorum: 2,
		Regions:     []string{"eu", "us"},
		Maintenance: []events.MaintenanceWindow{{Start: &start, Duration: dur("1h")}, {Cron: "0 3 * * SUN", Duration: dur("168h")}},
		Labels:      map[string]string{"team": "web", "a.b_c-d": strings.Repeat("é", 255)},
	}
	got, err := Normalize(in)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, in) {
		t.Errorf("Normalize changed a normalized site:\n%+v\n%+v", got, in)
	}
	if got.TLSVerify == in.TLSVerify {
		t.Error("TLSVerify aliases the input's pointer")
	}
}

func TestNormalizeInvalid(t *testing.T) {
	long := "https://example.com/" + strings.Repeat("a", MaxURLLen)
	many := func(n int, f func(i int) string) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[f(i)] = "v"
		}
		return m
	}
	words := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = strings.Repeat("w", i+1)
		}
		return out
	}
	windows := func(n int) []events.MaintenanceWindow {
		out := make([]events.MaintenanceWindow, n)
		for i := range out {
			out[i] = events.MaintenanceWindow{Cron: "0 3 * * *", Duration: dur("1h")}
		}
		return out
	}
	start := time.Date(2026, 12, 1, 2, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		edit   func(s *events.Site)
		field  string
		reason string
	}{
		{"bad id", func(s *events.Site) { s.ID = "shop.eu" }, "id", "only A-Z"},
		{"long id", func(s *events.Site) { s.ID = strings.Repeat("x", 65) }, "id", "limit is 64"},
		{"no url", func(s *events.Site) { s.URL = "" }, "url", "is required"},
		{"relative url", func(s *events.Site) { s.URL = "/health" }, "url", "not absolute"},
		{"ftp url", func(s *events.Site) { s.URL = "ftp://example.com/" }, "url", `scheme "ftp"`},
		{"no host", func(s *events.Site) { s.URL = "http:///path" }, "url", "no host"},
		{"opaque", func(s *events.Site) { s.URL = "http:example.com" }, "url", "no host"},
		{"port only", func(s *events.Site) { s.URL = "http://:8080/" }, "url", "no host"},
		{"credentials", func(s *events.Site) { s.URL = "https://bob:secret@example.com/" }, "url", "secrets don't belong in site events"},
		{"user only", func(s *events.Site) { s.URL = "https://bob@example.com/" }, "url", "credentials"},
		{"space", func(s *events.Site) { s.URL = "https://example.com/a b" }, "url", "white space"},
		{"too long", func(s *events.Site) { s.URL = long }, "url", "limit is 2048"},
		{"bad port", func(s *events.Site) { s.URL = "https://example.com:99999/" }, "url", "out of range"},
		{"unparsable", func(s *events.Site) { s.URL = "https://exa%mple.com/" }, "url", "not a valid URL"},
		{"interval low", func(s *events.Site) { s.Interval = dur("5s") }, "interval", "5s is below the minimum 10s"},
		{"interval negative", func(s *events.Site) { s.Interval = dur("-1m") }, "interval", "below the minimum"},
		{"interval high", func(s *events.Site) { s.Interval = dur("25h") }, "interval", "above the maximum 24h"},
		{"timeout low", func(s *events.Site) { s.Timeout = dur("500ms") }, "timeout", "below the minimum 1s"},
		{"timeout high", func(s *events.Site) { s.Interval = dur("10m"); s.Timeout = dur("61s") }, "timeout", "above the maximum 1m"},
		{"timeout not below interval", func(s *events.Site) { s.Interval = dur("30s"); s.Timeout = dur("30s") }, "timeout", "must be below the interval 30s"},
		{"method", func(s *events.Site) { s.Method = "POST" }, "method", `"POST" is not supported`},
		{"head with keywords", func(s *events.Site) { s.Method = "HEAD"; s.Keywords = []string{"ok"} }, "method", "HEAD cannot check keywords"},
		{"head with forbidden keywords", func(s *events.Site) { s.Method = "head"; s.ForbiddenKeywords = []string{"error"} }, "method", "use GET"},
		{"header name", func(s *events.Site) { s.Headers = map[string]string{"X Bad": "v"} }, "headers", "not a valid HTTP header name"},
		{"header empty name", func(s *events.Site) { s.Headers = map[string]string{"": "v"} }, "headers", "not a valid HTTP header name"},
		{"header CRLF", func(s *events.Site) { s.Headers = map[string]string{"X-A": "v\r\nX-B: smuggled"} }, "headers", "CR, LF"},
		{"header LF", func(s *events.Site) { s.Headers = map[string]string{"X-A": "v\nb"} }, "headers", "CR, LF"},
		{"header Host", func(s *events.Site) { s.Headers = map[string]string{"host": "other.example"} }, "headers", "Host is managed by the HTTP client"},
		{"header Content-Length", func(s *events.Site) { s.Headers = map[string]string{"Content-Length": "0"} }, "headers", "Content-Length"},
		{"header Transfer-Encoding", func(s *events.Site) { s.Headers = map[string]string{"transfer-encoding": "chunked"} }, "headers", "Transfer-Encoding"},
		{"header Connection", func(s *events.Site) { s.Headers = map[string]string{"CONNECTION": "close"} }, "headers", "Connection"},
		{"header twice", func(s *events.Site) { s.Headers = map[string]string{"accept": "a", "Accept": "b"} }, "headers", "same header"},
		{"too many headers", func(s *events.Site) {
			s.Headers = many(33, func(i int) string { return "X-H" + strings.Repeat("a", i) })
		}, "headers", "limit is 32"},
		{"header value long", func(s *events.Site) { s.Headers = map[string]string{"X-A": strings.Repeat("v", MaxHeaderValueLen+1)} }, "headers", "bytes long"},
		{"status low", func(s *events.Site) { s.ExpectStatus = []int{200, 99} }, "expect_status", "99 is not an HTTP status code"},
		{"status high", func(s *events.Site) { s.ExpectStatus = []int{600} }, "expect_status", "600"},
		{"empty keyword", func(s *events.Site) { s.Keywords = []string{"ok", ""} }, "keywords[1]", "empty"},
		{"long keyword", func(s *events.Site) { s.Keywords = []string{strings.Repeat("k", MaxKeywordLen+1)} }, "keywords[0]", "limit is 1024"},
		{"too many keywords", func(s *events.Site) { s.Keywords = words(33) }, "keywords", "limit is 32"},
		{"empty forbidden keyword", func(s *events.Site) { s.ForbiddenKeywords = []string{""} }, "forbidden_keywords[0]", "empty"},
		{"keyword both ways", func(s *events.Site) { s.Keywords = []string{"ok"}; s.ForbiddenKeywords = []string{"ok"} }, "forbidden_keywords", "never be up"},
		{"redirects", func(s *events.Site) { s.Redirects = "always" }, "redirects", "use follow, fail or alert"},
		{"retry low", func(s *events.Site) { s.RetryInterval = dur("4s") }, "retry_interval", "below the minimum 5s"},
		{"retry above interval", func(s *events.Site) { s.Interval = dur("1m"); s.RetryInterval = dur("2m") }, "retry_interval", "above the interval 1m"},
		{"confirm_after high", func(s *events.Site) { s.ConfirmAfter = 21 }, "confirm_after", "above the maximum 20"},
		{"confirm_after negative", func(s *events.Site) { s.ConfirmAfter = -1 }, "confirm_after", "below the minimum 1"},
		{"recover_after high", func(s *events.Site) { s.RecoverAfter = 21 }, "recover_after", "above the maximum 20"},
		{"quorum high", func(s *events.Site) { s.Quorum = 11 }, "quorum", "above the maximum 10"},
		{"quorum above regions", func(s *events.Site) { s.Quorum = 3; s.Regions = []string{"eu", "us"} }, "quorum", "more than the 2 regions"},
		{"region", func(s *events.Site) { s.Regions = []string{"eu", "US-East"} }, "regions", `region "US-East"`},
		{"window both", func(s *events.Site) {
			s.Maintenance = []events.MaintenanceWindow{{Start: &start, Cron: "0 3 * * *", Duration: dur("1h")}}
		}, "maintenance[0]", "not both"},
		{"window neither", func(s *events.Site) { s.Maintenance = []events.MaintenanceWindow{{Duration: dur("1h")}} }, "maintenance[0]", "needs start"},
		{"window cron", func(s *events.Site) {
			s.Maintenance = []events.MaintenanceWindow{{Cron: "0 3 * * *", Duration: dur("1h")}, {Cron: "0 25 * * *", Duration: dur("1h")}}
		}, "maintenance[1].cron", "hour field"},
		{"window short", func(s *events.Site) {
			s.Maintenance = []events.MaintenanceWindow{{Start: &start, Duration: dur("30s")}}
		}, "maintenance[0].duration", "below the minimum 1m"},
		{"window long", func(s *events.Site) {
			s.Maintenance = []events.MaintenanceWindow{{Start: &start, Duration: dur("169h")}}
		}, "maintenance[0].duration", "above the maximum 168h"},
		{"window no duration", func(s *events.Site) { s.Maintenance = []events.MaintenanceWindow{{Start: &start}} }, "maintenance[0].duration", "is required"},
		{"too many windows", func(s *events.Site) { s.Maintenance = windows(33) }, "maintenance", "limit is 32"},
		{"label key", func(s *events.Site) { s.Labels = map[string]string{"Team": "web"} }, "labels", `key "Team"`},
		{"label key long", func(s *events.Site) { s.Labels = map[string]string{strings.Repeat("k", 64): "web"} }, "labels", "1 to 63"},
		{"label value long", func(s *events.Site) { s.Labels = map[string]string{"team": strings.Repeat("v", 256)} }, "labels", "limit is 255"},
		{"too many labels", func(s *events.Site) { s.Labels = many(65, func(i int) string { return "k" + strings.Repeat("a", i) }) }, "labels", "limit is 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := events.Site{ID: "shop-eu", URL: "https://shop.example.com/health"}
			tt.edit(&s)
			got, err := Normalize(s)
			if err == nil {
				t.Fatalf("accepted: %+v", got)
			}
			if !IsInvalid(err) {
				t.Fatalf("error %v is not a field error", err)
			}
			var found *FieldError
			for _, fe := range FieldErrors(err) {
				if fe.Field == tt.field {
					found = fe
				}
			}
			if found == nil {
				t.Fatalf("no error for field %q: %v", tt.field, err)
			}
			if !strings.Contains(found.Reason, tt.reason) {
				t.Errorf("reason %q lacks %q", found.Reason, tt.reason)
			}
			if found.Site != s.ID || found.Index != -1 {
				t.Errorf("error names site %q index %d", found.Site, found.Index)
			}
			if s.ID == "shop-eu" && !strings.HasPrefix(found.Error(), `site "shop-eu": `+tt.field+": ") {
				t.Errorf("message %q does not start with the site and field", found.Error())
			}
		})
	}
}

func TestNormalizeReportsEveryField(t *testing.T) {
	_, err := Normalize(events.Site{ID: "x", URL: "ftp://a", Interval: dur("1s"), Quorum: 99})
	var fields []string
	for _, fe := range FieldErrors(err) {
		fields = append(fields, fe.Field)
	}
	if !reflect.DeepEqual(fields, []string{"url", "interval", "quorum"}) {
		t.Errorf("fields %v, want url, interval, quorum", fields)
	}
}

func TestFieldErrorMessage(t *testing.T) {
	tests := []struct {
		e    FieldError
		want string
	}{
		{FieldError{Site: "shop-eu", Index: 2, Field: "interval", Reason: "5s is below the minimum 10s"}, `site "shop-eu" (sites[2]): interval: 5s is below the minimum 10s`},
		{FieldError{Site: "shop-eu", Index: -1, Field: "url", Reason: "is required"}, `site "shop-eu": url: is required`},
		{FieldError{Index: 0, Field: "url", Reason: "is required"}, `sites[0]: url: is required`},
		{FieldError{Index: -1, Field: "id", Reason: "is required"}, `id: is required`},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}

// Configurations that mean the same thing normalize to equal values.
func TestNormalizeEqualConfigsCompareEqual(t *testing.T) {
	cest := time.FixedZone("CEST", 2*3600)
	a := events.Site{
		ID: "s", URL: "https://example.com/",
		Method:       "get",
		Headers:      map[string]string{"accept": "text/html", "x-api-version": "2"},
		ExpectStatus: []int{301, 200, 200},
		Keywords:     []string{"Welcome", "Shop", "Welcome"},
		Regions:      []string{"us", "eu", "us"},
		Maintenance: []events.MaintenanceWindow{
			{Start: ptr(time.Date(2026, 12, 1, 4, 0, 0, 0, cest)), Duration: dur("1h")},
			{Cron: "0  3 * *   SUN", Duration: dur("30m")},
		},
		Labels: map[string]string{},
	}
	b := events.Site{
		ID: "s", URL: "https://example.com/",
		Interval: dur("5m"), Timeout: dur("10s"), RetryInterval: dur("30s"),
		Headers:      map[string]string{"Accept": "text/html", "X-Api-Version": "2"},
		ExpectStatus: []int{200, 301},
		Keywords:     []string{"Welcome", "Shop"},
		Redirects:    events.RedirectFollow, TLSVerify: ptr(true),
		ConfirmAfter: 3, RecoverAfter: 2, Quorum: 2,
		Regions: []string{"eu", "us"},
		Maintenance: []events.MaintenanceWindow{
			{Start: ptr(time.Date(2026, 12, 1, 2, 0, 0, 0, time.UTC)), Duration: dur("1h")},
			{Cron: "0 3 * * SUN", Duration: dur("30m")},
		},
		ForbiddenKeywords: []string{},
	}
	na, err := Normalize(a)
	if err != nil {
		t.Fatal(err)
	}
	nb, err := Normalize(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(na, nb) {
		t.Errorf("not equal:\n%+v\n%+v", na, nb)
	}
	if !SameConfig(na, nb) {
		t.Error("SameConfig says they differ")
	}
	if na.Labels != nil || nb.ForbiddenKeywords != nil {
		t.Error("empty collections are not nil")
	}
	// Order of keywords is kept: it is the order they are reported in.
	if na.Keywords[0] != "Welcome" {
		t.Errorf("keywords reordered: %v", na.Keywords)
	}
	again, _ := Normalize(na)
	if !reflect.DeepEqual(again, na) {
		t.Error("Normalize is not idempotent")
	}
}

func TestNormalizeAllNamesEachBadSite(t *testing.T) {
	in := []events.Site{
		{ID: "good", URL: "https://a.example/"},
		{ID: "shop-eu", URL: "https://b.example/", Interval: dur("5s")},
		{URL: "https://c.example/"},
		{URL: "ftp://d.example/"},
		{ID: "good", URL: "https://e.example/"},
	}
	out, err := NormalizeAll(in)
	if err == nil || out != nil {
		t.Fatalf("accepted: %v", out)
	}
	msg := err.Error()
	for _, want := range []string{
		`site "shop-eu" (sites[1]): interval: 5s is below the minimum 10s`,
		`sites[3]: url: scheme "ftp"`,
		`site "good" (sites[4]): id: duplicate: sites[0] has the same id`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if n := len(FieldErrors(err)); n != 3 {
		t.Errorf("%d field errors, want 3", n)
	}
	if !errors.As(err, new(*FieldError)) {
		t.Error("not a FieldError")
	}
}
