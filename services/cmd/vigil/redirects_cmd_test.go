package main

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/internal/natstest"
)

// putChains stores an accepted redirect chain for site in each region.
func putChains(t *testing.T, s *natstest.Server, site string, regions ...string) jetstream.KeyValue {
	t.Helper()
	kv, err := s.JS.KeyValue(context.Background(), events.KVRedirects)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range regions {
		val := `{"url":"https://` + site + `.example/","chain":["https://` + site + `.example/` + r + `"],"at":"2026-01-02T03:04:05Z"}`
		if _, err := kv.Put(context.Background(), events.RedirectKey(site, r), []byte(val)); err != nil {
			t.Fatal(err)
		}
	}
	return kv
}

func redirectKeys(t *testing.T, kv jetstream.KeyValue) []string {
	t.Helper()
	keys, err := kv.Keys(context.Background())
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		t.Fatal(err)
	}
	slices.Sort(keys)
	return keys
}

func TestSitesAcceptRedirects(t *testing.T) {
	s, env := sitesEnv(t)
	for _, args := range [][]string{
		{"sites", "add", "https://shop.example/", "--id", "shop", "--redirects", "alert"},
		{"sites", "add", "https://shop2.example/", "--id", "shop2", "--redirects", "alert"},
		{"sites", "add", "https://blog.example/", "--id", "blog"},
	} {
		if code, _, errb := runCLI(env, args...); code != exitOK {
			t.Fatalf("%v: exit %d: %s", args, code, errb)
		}
	}
	kv := putChains(t, s, "shop", "eu", "us", "local")
	putChains(t, s, "shop2", "eu")
	key := events.RedirectKey

	// One region, named either way.
	code, out, errb := runCLI(env, "sites", "accept-redirects", "shop", "--region", "eu")
	if code != exitOK || !strings.Contains(out, "forgotten in eu;") || errb != "" {
		t.Errorf("accept in eu: exit %d, stdout %q, stderr %q", code, out, errb)
	}
	if got, want := redirectKeys(t, kv), sortedKeys(key("shop", "local"), key("shop", "us"), key("shop2", "eu")); !slices.Equal(got, want) {
		t.Errorf("keys after accepting in eu: %v, want %v", got, want)
	}
	code, out, _ = runCLI(env, "sites", "accept-redirects", "shop", "--site-region=eu")
	if code != exitOK || !strings.Contains(out, "no accepted redirect chain in eu; nothing changed") {
		t.Errorf("accept in eu again: exit %d, %q", code, out)
	}

	// Every region; another site's chain stays.
	code, out, _ = runCLI(env, "sites", "accept-redirects", "shop")
	if code != exitOK || !strings.Contains(out, "forgotten in local, us;") {
		t.Errorf("accept everywhere: exit %d, %q", code, out)
	}
	if got, want := redirectKeys(t, kv), []string{key("shop2", "eu")}; !slices.Equal(got, want) {
		t.Errorf("keys after accepting everywhere: %v, want %v", got, want)
	}
	code, out, _ = runCLI(env, "sites", "accept-redirects", "shop")
	if code != exitOK || !strings.Contains(out, "shop has no accepted redirect chain; nothing changed") {
		t.Errorf("accept with nothing to accept: exit %d, %q", code, out)
	}

	// A site without the alert policy: said so, nothing to do.
	code, out, errb = runCLI(env, "sites", "accept-redirects", "blog")
	if code != exitOK || !strings.Contains(errb, "blog has redirects: follow") || !strings.Contains(out, "nothing changed") {
		t.Errorf("accept for a follow site: exit %d, stdout %q, stderr %q", code, out, errb)
	}

	// Bad input.
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"sites", "accept-redirects"}, exitUsage, "want one site ID"},
		{[]string{"sites", "accept-redirects", "a.b"}, exitUsage, "only A-Z"},
		{[]string{"sites", "accept-redirects", "shop", "--region", "EU"}, exitUsage, `region "EU"`},
		{[]string{"sites", "accept-redirects", "nope"}, exitError, "not found"},
	} {
		if code, _, errb := runCLI(env, tt.args...); code != tt.code || !strings.Contains(errb, tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", tt.args, code, errb, tt.code, tt.want)
		}
	}
}

// Deleting a site, by hand or by apply --prune, removes its accepted chains.
func TestSitesDeleteForgetsRedirects(t *testing.T) {
	s, env := sitesEnv(t)
	path := writeFile(t, "sites:\n  - id: shop\n    url: https://shop.example/\n    redirects: alert\n  - id: shop2\n    url: https://shop2.example/\n    redirects: alert\n  - id: api\n    url: https://api.example/\n    redirects: alert\n")
	if code, _, errb := runCLI(env, "sites", "apply", "-f", path); code != exitOK {
		t.Fatalf("apply: %s", errb)
	}
	kv := putChains(t, s, "shop", "eu", "us")
	putChains(t, s, "shop2", "eu")
	putChains(t, s, "api", "local")

	code, out, errb := runCLI(env, "sites", "delete", "shop")
	if code != exitOK || strings.TrimSpace(out) != "deleted shop" || errb != "" {
		t.Errorf("delete: exit %d, stdout %q, stderr %q", code, out, errb)
	}
	if got, want := redirectKeys(t, kv), sortedKeys(events.RedirectKey("shop2", "eu"), events.RedirectKey("api", "local")); !slices.Equal(got, want) {
		t.Errorf("keys after delete: %v, want %v", got, want)
	}

	fewer := writeFile(t, "sites:\n  - id: shop2\n    url: https://shop2.example/\n    redirects: alert\n")
	if code, out, errb := runCLI(env, "sites", "apply", "-f", fewer, "--prune"); code != exitOK || !strings.Contains(out, "1 deleted") {
		t.Fatalf("apply --prune: exit %d\n%s%s", code, out, errb)
	}
	if got, want := redirectKeys(t, kv), []string{events.RedirectKey("shop2", "eu")}; !slices.Equal(got, want) {
		t.Errorf("keys after prune: %v, want %v", got, want)
	}
}

func sortedKeys(keys ...string) []string {
	slices.Sort(keys)
	return keys
}
