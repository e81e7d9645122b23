package config

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func load(t *testing.T, p Profile, args []string, e map[string]string) (*Config, []string, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return Load(p, fs, args, env(e))
}

func TestDefaults(t *testing.T) {
	c, _, err := load(t, Service, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.NATS.URL != "nats://127.0.0.1:4222" || c.NATS.Port != 4222 || c.HTTPAddr != ":8080" || c.DataDir != "./data" {
		t.Errorf("defaults: %+v", c)
	}
	if c.Checker.TargetPolicy != "public_only" {
		t.Errorf("service target policy = %s", c.Checker.TargetPolicy)
	}
	if c.Scheduler.BatchSize != 50 {
		t.Errorf("scheduler batch size = %d, want 50", c.Scheduler.BatchSize)
	}
	if b, _, err := load(t, Service, nil, map[string]string{"VIGIL_SCHEDULER_BATCH_SIZE": "0"}); err == nil {
		t.Errorf("batch size 0 accepted: %d", b.Scheduler.BatchSize)
	}
	d, _, _ := load(t, Dev, nil, nil)
	if d.Checker.TargetPolicy != "allow_private" {
		t.Errorf("dev target policy = %s", d.Checker.TargetPolicy)
	}
	if c.IsSet("nats.port") {
		t.Error("a default counts as set")
	}
}

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vigil.yaml")
	os.WriteFile(path, []byte("lease:\n  ttl: 20s\nregions: [eu, us]\nlog:\n  level: warn\nhttp_addr: 127.0.0.1:9000\n"), 0o644)
	c, pos, err := load(t, Service, []string{"--config", path, "pos1", "--log-level", "debug", "pos2"},
		map[string]string{"VIGIL_LEASE_TTL": "30s", "VIGIL_LOG_LEVEL": "error"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Lease.TTL != 30*time.Second {
		t.Errorf("env should beat file: lease.ttl = %s", c.Lease.TTL)
	}
	if c.Log.Level != "debug" {
		t.Errorf("flag should beat env: log.level = %s", c.Log.Level)
	}
	if strings.Join(c.Regions, ",") != "eu,us" || c.HTTPAddr != "127.0.0.1:9000" {
		t.Errorf("file values: regions %v http %s", c.Regions, c.HTTPAddr)
	}
	if strings.Join(pos, " ") != "pos1 pos2" {
		t.Errorf("positional = %v", pos)
	}
	if !c.IsSet("lease.ttl") || c.Source("lease.ttl") != "env VIGIL_LEASE_TTL" || c.Source("nats.url") != "default" {
		t.Errorf("sources: %s / %s", c.Source("lease.ttl"), c.Source("nats.url"))
	}
}

func TestErrorsNameTheField(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("lease:\n  tll: 5s\n"), 0o644)
	for _, tc := range []struct {
		args []string
		env  map[string]string
		key  string
	}{
		{args: []string{"--lease-ttl", "soon"}, key: "lease.ttl"},
		{args: []string{"--lease-ttl", "10ms"}, key: "lease.ttl"},
		{args: []string{"--nats", "http://x:1"}, key: "nats.url"},
		{args: []string{"--log-format", "xml"}, key: "log.format"},
		{args: []string{"--regions", "EU"}, key: "regions"},
		{args: []string{"--regions", "eu,eu"}, key: "regions"},
		{args: []string{"--observations-max-bytes", "lots"}, key: "streams.observations_max_bytes"},
		{env: map[string]string{"VIGIL_NATS_PORT": "70000"}, key: "nats.port"},
		{args: []string{"--config", bad}, key: "lease.tll"},
		{args: []string{"--min-workers", "50", "--max-workers", "10"}, key: "checker.min_workers"},
		{args: []string{"--freshness-interval", "2m", "--rollup-interval", "1m"}, key: "store.rollup_interval"},
		{env: map[string]string{"VIGIL_STORE_ROLLUP_INTERVAL": "30m", "VIGIL_STREAMS_OBSERVATIONS_MAX_AGE": "20m"}, key: "store.rollup_interval"},
		{args: []string{"--rollup-interval", "2h"}, key: "store.rollup_interval"},
	} {
		_, _, err := load(t, Service, tc.args, tc.env)
		var ce *Error
		if !errors.As(err, &ce) || ce.Key != tc.key {
			t.Errorf("%v %v: err = %v, want a config error on %s", tc.args, tc.env, err, tc.key)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("error is not one line: %q", err)
		}
	}
}

func TestWriteYAMLRoundTrips(t *testing.T) {
	c, _, err := load(t, Dev, []string{"--lease-ttl", "15s", "--observations-max-bytes", "3GiB"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := c.WriteYAML(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "ttl: 15s # from flag --lease-ttl") {
		t.Errorf("effective config lacks the flag's value and source:\n%s", buf.String())
	}
	path := filepath.Join(t.TempDir(), "out.yaml")
	os.WriteFile(path, buf.Bytes(), 0o644)
	back, _, err := load(t, Service, []string{"--config", path}, nil)
	if err != nil {
		t.Fatalf("printed config does not load back: %v\n%s", err, buf.String())
	}
	if back.Lease.TTL != 15*time.Second || back.Streams.ObservationsMaxBytes != 3<<30 || back.Checker.TargetPolicy != "allow_private" {
		t.Errorf("reloaded: %+v", back)
	}
}

func TestSizes(t *testing.T) {
	for in, want := range map[string]int64{"512": 512, "1KiB": 1024, "2 MiB": 2 << 20, "1GB": 1e9, "3GiB": 3 << 30} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v", in, got, err)
		}
	}
	if FormatSize(2<<30) != "2GiB" || FormatSize(1500) != "1500" {
		t.Error("FormatSize")
	}
}

func TestBareBoolFlag(t *testing.T) {
	c, _, err := load(t, Service, []string{"--deny-delete"}, nil)
	if err != nil || !c.Streams.DenyDelete {
		t.Errorf("--deny-delete: %v %v", c.Streams.DenyDelete, err)
	}
}

// The README's configuration table must list every key, so it stays current.
func TestREADMEListsEveryKey(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range Default(Service).Keys() {
		for _, s := range []string{"`" + k.Key + "`", "`" + k.Flag + "`", "`" + k.Env + "`"} {
			if !strings.Contains(string(b), s) {
				t.Errorf("README.md does not mention %s", s)
			}
		}
	}
}

// store.rollup_interval defaults to 5m and may equal freshness_interval (a
// full flush every interval, as before it existed).
func TestRollupInterval(t *testing.T) {
	c, _, err := load(t, Service, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Store.RollupInterval != 5*time.Minute || c.Store.FreshnessInterval != time.Minute {
		t.Errorf("defaults: rollup %s, freshness %s", c.Store.RollupInterval, c.Store.FreshnessInterval)
	}
	c, _, err = load(t, Service, []string{"--freshness-interval", "30s"}, map[string]string{"VIGIL_STORE_ROLLUP_INTERVAL": "30s"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Store.RollupInterval != 30*time.Second || c.Source("store.rollup_interval") != "env VIGIL_STORE_ROLLUP_INTERVAL" {
		t.Errorf("rollup %s from %s", c.Store.RollupInterval, c.Source("store.rollup_interval"))
	}
}
