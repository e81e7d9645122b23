package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/internal/natstest"
	"github.com/vigil-dev/vigil/services/sites"
)

// sitesEnv starts a server with the topology and returns the environment
// that points the CLI at it.
func sitesEnv(t *testing.T) (*natstest.Server, map[string]string) {
	t.Helper()
	s := natstest.Start(t, true)
	return s, map[string]string{"VIGIL_NATS_URL": s.URL()}
}

func sitesLastSeq(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	st, err := js.Stream(context.Background(), events.StreamSites)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sites.yaml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// runCLI runs one vigil command and returns its exit code and output.
func runCLI(env map[string]string, args ...string) (int, string, string) {
	c, out, errb := testCLI(env)
	code := run(context.Background(), args, c)
	return code, out.String(), errb.String()
}

const sitesFile = `sites:
  - id: shop-eu
    url: https://shop.example.com/health
    interval: 1m
    keywords: [Welcome]
    maintenance: [{cron: "0 3 * * SUN", duration: 30m}]
    labels: {team: web}
  - id: api
    url: https://api.example.com/health
    method: HEAD
  - url: https://blog.example.com/
`

// Acceptance: applying the same file twice publishes nothing the second time.
func TestSitesApplyTwicePublishesNothing(t *testing.T) {
	s, env := sitesEnv(t)
	path := writeFile(t, sitesFile)
	code, out, errb := runCLI(env, "sites", "apply", "-f", path)
	if code != exitOK {
		t.Fatalf("first apply: exit %d: %s", code, errb)
	}
	if !strings.Contains(out, "3 created, 0 updated, 0 deleted, 0 unchanged") || strings.Count(out, "create ") != 3 {
		t.Errorf("first apply printed:\n%s", out)
	}
	seq := sitesLastSeq(t, s.JS)
	if seq != 3 {
		t.Errorf("SITES at sequence %d after creating 3 sites", seq)
	}

	code, out, errb = runCLI(env, "sites", "apply", "-f", path)
	if code != exitOK {
		t.Fatalf("second apply: exit %d: %s", code, errb)
	}
	if strings.TrimSpace(out) != "0 created, 0 updated, 0 deleted, 3 unchanged" {
		t.Errorf("second apply printed:\n%s", out)
	}
	if got := sitesLastSeq(t, s.JS); got != seq {
		t.Errorf("second apply published: SITES went from sequence %d to %d", seq, got)
	}

	// A change to the file updates exactly that site.
	path2 := writeFile(t, strings.Replace(sitesFile, "interval: 1m", "interval: 2m", 1))
	code, out, _ = runCLI(env, "sites", "apply", "-f", path2)
	if code != exitOK || !strings.Contains(out, "update  shop-eu") || !strings.Contains(out, "changed: interval") ||
		!strings.Contains(out, "0 created, 1 updated, 0 deleted, 2 unchanged") {
		t.Errorf("apply of a change: exit %d\n%s", code, out)
	}
}

// Acceptance: a file with one invalid site is refused whole.
func TestSitesApplyRefusesInvalidFile(t *testing.T) {
	s, env := sitesEnv(t)
	path := writeFile(t, sitesFile+"  - id: broken\n    url: https://broken.example/\n    interval: 5s\n")
	code, out, errb := runCLI(env, "sites", "apply", "-f", path)
	if code != exitUsage {
		t.Fatalf("exit %d, want %d", code, exitUsage)
	}
	msg := strings.TrimSpace(errb)
	if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, `site "broken" (sites[3]): interval: 5s is below the minimum 10s`) {
		t.Errorf("stderr = %q, want one line naming the site and the field", msg)
	}
	if out != "" {
		t.Errorf("stdout = %q", out)
	}
	if seq := sitesLastSeq(t, s.JS); seq != 0 {
		t.Errorf("SITES at sequence %d: something was published", seq)
	}

	// A misspelt field is refused with its name and line.
	path = writeFile(t, "sites:\n  - id: a\n    url: https://a.example/\n    intervall: 1m\n")
	code, _, errb = runCLI(env, "sites", "apply", "-f", path)
	if code != exitUsage || !strings.Contains(errb, "intervall: unknown field (line 4)") {
		t.Errorf("misspelt field: exit %d, stderr %q", code, errb)
	}
	// Several bad sites are each named.
	path = writeFile(t, "sites:\n  - id: a\n    url: ftp://a.example/\n  - id: b\n    url: https://b.example/\n    quorum: 50\n")
	code, _, errb = runCLI(env, "sites", "apply", "-f", path)
	if code != exitUsage || !strings.Contains(errb, `site "a" (sites[0]): url`) || !strings.Contains(errb, `site "b" (sites[1]): quorum`) {
		t.Errorf("two bad sites: exit %d, stderr %q", code, errb)
	}
	if code, _, _ := runCLI(env, "sites", "apply", "-f", filepath.Join(t.TempDir(), "missing.yaml")); code != exitUsage {
		t.Errorf("missing file: exit %d", code)
	}
	if code, _, _ := runCLI(env, "sites", "apply"); code != exitUsage {
		t.Errorf("no -f: exit %d", code)
	}
	if seq := sitesLastSeq(t, s.JS); seq != 0 {
		t.Errorf("SITES at sequence %d: something was published", seq)
	}
}

// Acceptance: --prune deletes a site the file no longer names; without it the
// site stays.
func TestSitesApplyPrune(t *testing.T) {
	s, env := sitesEnv(t)
	if code, _, errb := runCLI(env, "sites", "apply", "-f", writeFile(t, sitesFile)); code != exitOK {
		t.Fatalf("apply: %s", errb)
	}
	fewer := writeFile(t, strings.Replace(sitesFile, "  - id: api\n    url: https://api.example.com/health\n    method: HEAD\n", "", 1))

	code, out, _ := runCLI(env, "sites", "apply", "-f", fewer)
	if code != exitOK || !strings.Contains(out, "0 created, 0 updated, 0 deleted, 2 unchanged") {
		t.Errorf("apply without --prune: exit %d\n%s", code, out)
	}

	seq := sitesLastSeq(t, s.JS)
	code, out, _ = runCLI(env, "sites", "apply", "-f", fewer, "--prune", "--dry-run")
	if code != exitOK || !strings.Contains(out, "delete  api") || !strings.Contains(out, "dry run, nothing published: 0 to create, 0 to update, 1 to delete, 2 unchanged") {
		t.Errorf("dry run: exit %d\n%s", code, out)
	}
	if sitesLastSeq(t, s.JS) != seq {
		t.Error("dry run published")
	}

	code, out, _ = runCLI(env, "sites", "apply", "-f", fewer, "--prune")
	if code != exitOK || !strings.Contains(out, "delete  api") || !strings.Contains(out, "0 created, 0 updated, 1 deleted, 2 unchanged") {
		t.Errorf("apply --prune: exit %d\n%s", code, out)
	}
	reg := sites.NewRegistry(s.JS)
	list, err := reg.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, cur := range list {
		ids = append(ids, cur.Site.ID)
	}
	if len(ids) != 2 || !strings.Contains(strings.Join(ids, ","), "shop-eu") || strings.Contains(strings.Join(ids, ","), "api") {
		t.Errorf("sites after prune: %v", ids)
	}
	// Pruning again deletes nothing more.
	seq = sitesLastSeq(t, s.JS)
	if code, out, _ := runCLI(env, "sites", "apply", "-f", fewer, "--prune"); code != exitOK || !strings.Contains(out, "0 deleted, 2 unchanged") || sitesLastSeq(t, s.JS) != seq {
		t.Errorf("second prune: exit %d\n%s", code, out)
	}
}

func TestSitesAddListPauseResumeDelete(t *testing.T) {
	s, env := sitesEnv(t)
	code, out, errb := runCLI(env, "sites", "add", "https://shop.example.com/health",
		"--id", "shop-eu", "--interval", "1m", "--timeout", "5s", "--keyword", "Welcome", "--keyword", "Shop",
		"--forbidden-keyword", "Error", "--expect-status", "200", "--expect-status", "301",
		"--redirects", "alert", "--no-tls-verify", "--label", "team=web", "--label", "tier=1",
		"--region", "us", "--region=eu", "--header", "Accept: text/html", "--quorum", "1")
	if code != exitOK || strings.TrimSpace(out) != "shop-eu" {
		t.Fatalf("add: exit %d, stdout %q, stderr %q", code, out, errb)
	}
	cur, err := sites.NewRegistry(s.JS).Get(context.Background(), "shop-eu")
	if err != nil {
		t.Fatal(err)
	}
	want := events.Site{
		ID: "shop-eu", URL: "https://shop.example.com/health", Interval: events.Duration(60e9), Timeout: events.Duration(5e9),
		Method: "GET", Headers: map[string]string{"Accept": "text/html"}, ExpectStatus: []int{200, 301},
		Keywords: []string{"Welcome", "Shop"}, ForbiddenKeywords: []string{"Error"}, Redirects: events.RedirectAlert,
		TLSVerify: new(bool), RetryInterval: events.Duration(30e9), ConfirmAfter: 3, RecoverAfter: 2, Quorum: 1,
		Regions: []string{"eu", "us"}, Labels: map[string]string{"team": "web", "tier": "1"},
	}
	if !reflect.DeepEqual(cur.Site, want) {
		t.Errorf("stored site\n%+v\nwant\n%+v", cur.Site, want)
	}
	if cur.Actor != "cli" {
		t.Errorf("actor %q", cur.Actor)
	}

	// Without --id, a ULID is assigned and printed.
	code, out, _ = runCLI(env, "sites", "add", "https://blog.example.com/")
	blogID := strings.TrimSpace(out)
	if _, err := events.IDTime(blogID); code != exitOK || err != nil {
		t.Fatalf("add without id: exit %d, %q", code, out)
	}
	if code, _, errb := runCLI(env, "sites", "add", "https://other.example/", "--id", "shop-eu"); code != exitError || !strings.Contains(errb, "already exists") {
		t.Errorf("add of an existing id: exit %d, %q", code, errb)
	}

	code, out, _ = runCLI(env, "sites", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitOK || len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(out, "INTERVAL") {
		t.Fatalf("list: exit %d\n%s", code, out)
	}
	if fields := strings.Fields(lines[2]); !reflect.DeepEqual(fields, []string{"shop-eu", "https://shop.example.com/health", "1m", "active", "team=web,tier=1"}) {
		t.Errorf("list row %q", lines[2])
	}

	if code, out, _ := runCLI(env, "sites", "pause", "shop-eu"); code != exitOK || strings.TrimSpace(out) != "paused shop-eu" {
		t.Errorf("pause: exit %d, %q", code, out)
	}
	seq := sitesLastSeq(t, s.JS)
	if code, out, _ := runCLI(env, "sites", "pause", "shop-eu"); code != exitOK || !strings.Contains(out, "already paused") || sitesLastSeq(t, s.JS) != seq {
		t.Errorf("second pause: exit %d, %q", code, out)
	}
	code, out, _ = runCLI(env, "sites", "list", "--json")
	var rows []sites.Current
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		var cur sites.Current
		if err := json.Unmarshal([]byte(line), &cur); err != nil {
			t.Fatalf("list --json line %q: %v", line, err)
		}
		rows = append(rows, cur)
	}
	if code != exitOK || len(rows) != 2 || rows[1].Site.ID != "shop-eu" || !rows[1].Paused || rows[1].Change != events.ChangePaused {
		t.Errorf("list --json: exit %d, %+v", code, rows)
	}

	if code, out, _ := runCLI(env, "sites", "resume", "shop-eu"); code != exitOK || strings.TrimSpace(out) != "resumed shop-eu" {
		t.Errorf("resume: exit %d, %q", code, out)
	}
	if code, out, _ := runCLI(env, "sites", "resume", "shop-eu"); code != exitOK || !strings.Contains(out, "already running") {
		t.Errorf("second resume: exit %d, %q", code, out)
	}
	if code, out, _ := runCLI(env, "sites", "delete", "shop-eu"); code != exitOK || strings.TrimSpace(out) != "deleted shop-eu" {
		t.Errorf("delete: exit %d, %q", code, out)
	}
	if code, out, _ := runCLI(env, "sites", "delete", "shop-eu"); code != exitOK || !strings.Contains(out, "already deleted") {
		t.Errorf("second delete: exit %d, %q", code, out)
	}
	if code, _, errb := runCLI(env, "sites", "pause", "nope"); code != exitError || !strings.Contains(errb, "not found") {
		t.Errorf("pause of a missing site: exit %d, %q", code, errb)
	}
	code, out, _ = runCLI(env, "sites", "list")
	if code != exitOK || strings.Contains(out, "shop-eu") || !strings.Contains(out, blogID) {
		t.Errorf("list after delete:\n%s", out)
	}
	code, out, _ = runCLI(env, "sites", "list", "--deleted")
	if code != exitOK || !strings.Contains(out, "deleted") {
		t.Errorf("list --deleted:\n%s", out)
	}
}

func TestSitesBadInput(t *testing.T) {
	// None of these needs a server: bad input is refused before connecting.
	env := map[string]string{"VIGIL_NATS_URL": "nats://127.0.0.1:1"}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"sites"}, "usage"},
		{[]string{"sites", "frob"}, "unknown command"},
		{[]string{"sites", "add"}, "want one URL"},
		{[]string{"sites", "add", "a", "b"}, "want one URL"},
		{[]string{"sites", "add", "ftp://a.example/"}, `url: scheme "ftp" is not supported`},
		{[]string{"sites", "add", "https://u:p@a.example/"}, "secrets don't belong"},
		{[]string{"sites", "add", "https://a.example/", "--interval", "5s"}, "interval: 5s is below the minimum 10s"},
		{[]string{"sites", "add", "https://a.example/", "--interval", "often"}, "invalid duration"},
		{[]string{"sites", "add", "https://a.example/", "--method", "HEAD", "--keyword", "x"}, "HEAD cannot check keywords"},
		{[]string{"sites", "add", "https://a.example/", "--label", "novalue"}, "want key=value"},
		{[]string{"sites", "add", "https://a.example/", "--header", "Host: evil"}, "Host is managed"},
		{[]string{"sites", "add", "https://a.example/", "--region", "EU"}, `region "EU"`},
		{[]string{"sites", "add", "https://a.example/", "--expect-status", "ok"}, "not a number"},
		{[]string{"sites", "pause"}, "want one site ID"},
		{[]string{"sites", "delete", "a.b"}, "only A-Z"},
		{[]string{"sites", "list", "extra"}, "unexpected argument"},
	}
	for _, tt := range tests {
		code, out, errb := runCLI(env, tt.args...)
		if code != exitUsage || !strings.Contains(errb, tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", tt.args, code, errb, tt.want)
		}
		if out != "" {
			t.Errorf("%v: stdout %q", tt.args, out)
		}
	}
}

func TestSitesNoServer(t *testing.T) {
	env := map[string]string{"VIGIL_NATS_URL": "nats://127.0.0.1:1"}
	for _, args := range [][]string{{"sites", "list"}, {"sites", "add", "https://a.example/"}, {"sites", "pause", "a"}} {
		code, _, errb := runCLI(env, args...)
		if code != exitError || !strings.Contains(errb, "connect to nats") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errb)
		}
	}
}

func TestRenameRegionFlags(t *testing.T) {
	got := renameRegionFlags([]string{"URL", "--region", "eu", "-region=us", "--regions", "x", "--", "--region"})
	want := []string{"URL", "--site-region", "eu", "--site-region=us", "--regions", "x", "--", "--region"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v", got)
	}
}
