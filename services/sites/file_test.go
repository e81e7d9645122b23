package sites

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vigil-dev/vigil/events"
)

const exampleFile = `sites:
  - id: shop-eu            # optional; a ULID is assigned when absent
    url: https://shop.example.com/health
    interval: 1m
    timeout: 10s
    method: GET
    headers: {Accept: text/html}
    expect_status: [200, 301]
    keywords: [Welcome]
    forbidden_keywords: ["Error establishing a database connection"]
    redirects: follow
    tls_verify: true
    retry_interval: 30s
    confirm_after: 3
    recover_after: 2
    quorum: 2
    regions: [eu, us]
    maintenance: [{start: "2026-12-01T02:00:00Z", duration: 1h}, {cron: "0 3 * * SUN", duration: 30m}]
    labels: {team: web}
  - url: https://blog.example.com/
`

func TestParseFile(t *testing.T) {
	got, err := ParseFile(strings.NewReader(exampleFile))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 12, 1, 2, 0, 0, 0, time.UTC)
	want := []events.Site{{
		ID: "shop-eu", URL: "https://shop.example.com/health",
		Interval: dur("1m"), Timeout: dur("10s"), Method: "GET",
		Headers:           map[string]string{"Accept": "text/html"},
		ExpectStatus:      []int{200, 301},
		Keywords:          []string{"Welcome"},
		ForbiddenKeywords: []string{"Error establishing a database connection"},
		Redirects:         events.RedirectFollow, TLSVerify: ptr(true),
		RetryInterval: dur("30s"), ConfirmAfter: 3, RecoverAfter: 2, Quorum: 2,
		Regions:     []string{"eu", "us"},
		Maintenance: []events.MaintenanceWindow{{Start: &start, Duration: dur("1h")}, {Cron: "0 3 * * SUN", Duration: dur("30m")}},
		Labels:      map[string]string{"team": "web"},
	}, {URL: "https://blog.example.com/"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseFile =\n%+v\nwant\n%+v", got, want)
	}
	if _, err := NormalizeAll(got); err != nil {
		t.Errorf("the example does not validate: %v", err)
	}
}

func TestParseFileRefuses(t *testing.T) {
	tests := []struct {
		name string
		file string
		want []string
	}{
		{"unknown field", "sites:\n  - id: shop-eu\n    url: https://a.example/\n    intervall: 1m\n",
			[]string{`site "shop-eu" (sites[0]): intervall: unknown field (line 4); did you mean "interval"?`}},
		{"unknown field without id", "sites:\n  - url: https://a.example/\n  - url: https://b.example/\n    keyword: [x]\n",
			[]string{`sites[1]: keyword: unknown field (line 4); did you mean "keywords"?`}},
		{"unknown window field", "sites:\n  - id: a\n    url: https://a.example/\n    maintenance:\n      - {start: \"2026-12-01T02:00:00Z\", durration: 1h}\n",
			[]string{`site "a" (sites[0]): maintenance[0].durration: unknown field (line 5); did you mean "duration"?`}},
		{"unknown top-level field", "site:\n  - url: https://a.example/\n",
			[]string{`line 1: unknown field "site"`, `did you mean "sites"?`}},
		{"bad duration", "sites:\n  - id: a\n    url: https://a.example/\n    interval: 5 minutes\n",
			[]string{`site "a" (sites[0]): interval: invalid duration "5 minutes"`, "(line 4)"}},
		{"wrong type", "sites:\n  - id: a\n    url: https://a.example/\n    quorum: two\n",
			[]string{`site "a" (sites[0]): quorum: cannot unmarshal`, "(line 4)"}},
		{"key twice", "sites:\n  - id: a\n    url: https://a.example/\n    url: https://b.example/\n",
			[]string{`site "a" (sites[0]): url: given twice (lines 3 and 4)`}},
		{"duplicate id", "sites:\n  - id: a\n    url: https://a.example/\n  - id: b\n    url: https://b.example/\n  - id: a\n    url: https://c.example/\n",
			[]string{`site "a" (sites[2]): id: duplicate: sites[0] has the same id`}},
		{"several bad sites", "sites:\n  - id: a\n    urll: x\n  - id: b\n    url: https://b.example/\n  - id: c\n    timout: 1s\n",
			[]string{`site "a" (sites[0]): urll: unknown field (line 3)`, `site "c" (sites[2]): timout: unknown field (line 7)`}},
		{"empty file", "", []string{"empty"}},
		{"comment only", "# nothing\n", []string{"empty"}},
		{"no sites list", "sites:\n", []string{"no sites list"}},
		{"sites not a list", "sites: {url: x}\n", []string{"line 1: sites must be a list"}},
		{"site not a mapping", "sites:\n  - https://a.example/\n", []string{"sites[0]: must be a mapping of fields (line 2)"}},
		{"syntax error", "sites:\n  - url: [\n", []string{"line"}},
		{"two documents", "sites: []\n---\nsites: []\n", []string{"more than one YAML document"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFile(strings.NewReader(tt.file))
			if err == nil {
				t.Fatalf("accepted: %+v", got)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestParseFileEmptyList(t *testing.T) {
	got, err := ParseFile(strings.NewReader("sites: []\n"))
	if err != nil || got == nil || len(got) != 0 {
		t.Errorf("ParseFile = %v, %v; want an empty list", got, err)
	}
}

// The example file in the docs parses and validates.
func TestDocsExampleFile(t *testing.T) {
	f, err := os.Open("../../docs/sites.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	list, err := ParseFile(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("%d sites", len(list))
	}
	if _, err := NormalizeAll(list); err != nil {
		t.Fatalf("the documented example is invalid: %v", err)
	}
}
