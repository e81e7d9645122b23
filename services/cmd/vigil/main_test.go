package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/internal/natstest"
)

// syncBuffer is a bytes.Buffer safe to read while a command writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testCLI(env map[string]string) (*cli, *syncBuffer, *syncBuffer) {
	out, errb := &syncBuffer{}, &syncBuffer{}
	return &cli{stdout: out, stderr: errb, getenv: func(k string) string { return env[k] }}, out, errb
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestConfigValidateBadValue(t *testing.T) {
	c, out, errb := testCLI(map[string]string{"VIGIL_LEASE_TTL": "forever"})
	if code := run(context.Background(), []string{"config", "validate"}, c); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	msg := strings.TrimSpace(errb.String())
	if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, "lease.ttl") || !strings.Contains(msg, "VIGIL_LEASE_TTL") {
		t.Errorf("stderr = %q, want one line naming the field and its source", msg)
	}
	if out.String() != "" {
		t.Errorf("printed a config despite the error: %s", out)
	}
}

func TestConfigValidatePrintsEffectiveConfig(t *testing.T) {
	c, out, _ := testCLI(nil)
	if code := run(context.Background(), []string{"config", "validate", "--dev", "--regions", "local,eu"}, c); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"target_policy: allow_private", "- eu", "from flag --regions", "url: nats://127.0.0.1:4222"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("effective config lacks %q:\n%s", want, out)
		}
	}
}

func TestUnknownCommand(t *testing.T) {
	c, _, errb := testCLI(nil)
	if code := run(context.Background(), []string{"frobnicate"}, c); code != 2 || !strings.Contains(errb.String(), "unknown command") {
		t.Errorf("exit %d, stderr %q", code, errb)
	}
}

func TestStreamsApplyAndStatus(t *testing.T) {
	s := natstest.Start(t, false)
	env := map[string]string{"VIGIL_NATS_URL": s.URL(), "VIGIL_STREAMS_OBSERVATIONS_MAX_BYTES": "64MiB"}
	c, out, errb := testCLI(env)
	if code := run(context.Background(), []string{"streams", "apply"}, c); code != 0 {
		t.Fatalf("apply: exit %d: %s", code, errb)
	}
	if strings.Count(out.String(), "created") != 8 {
		t.Errorf("first apply:\n%s", out)
	}
	c, out, _ = testCLI(env)
	if code := run(context.Background(), []string{"streams", "apply"}, c); code != 0 || strings.Count(out.String(), "unchanged") != 8 {
		t.Errorf("second apply: exit %d\n%s", code, out)
	}
	c, out, _ = testCLI(env)
	if code := run(context.Background(), []string{"streams", "status"}, c); code != 0 {
		t.Fatalf("status: exit %d", code)
	}
	for _, name := range []string{"SITES", "CHECKS", "OBSERVATIONS", "EVENTS", "CONSUMERS"} {
		if !strings.Contains(out.String(), name) {
			t.Errorf("status lacks %s:\n%s", name, out)
		}
	}
}

// vigil dev starts an embedded server the nats CLI can reach over TCP, applies
// the topology, answers /healthz and /readyz, and shuts down cleanly.
func TestDevStartsAndStops(t *testing.T) {
	natsPort, httpPort := freePort(t), freePort(t)
	dataDir := t.TempDir()
	c, out, errb := testCLI(nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"dev", "--data-dir", dataDir, "--nats-port", fmt.Sprint(natsPort), "--http-addr", fmt.Sprintf("127.0.0.1:%d", httpPort)}, c)
	}()
	base := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	waitHTTP(t, base+"/readyz", done, errb)
	if code := httpStatus(base + "/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if !strings.Contains(out.String(), fmt.Sprintf("nats://127.0.0.1:%d", natsPort)) {
		t.Errorf("banner does not show the NATS URL:\n%s", out)
	}
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", natsPort))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	var names []string
	lister := js.StreamNames(context.Background())
	for n := range lister.Name() {
		names = append(names, n)
	}
	nc.Close()
	for _, want := range []string{events.StreamSites, events.StreamChecks, events.StreamObservations, events.StreamEvents} {
		if !strings.Contains(strings.Join(names, ","), want) {
			t.Errorf("streams %v lack %s", names, want)
		}
	}
	if matches, _ := filepath.Glob(filepath.Join(dataDir, "nats", "jetstream", "*")); len(matches) == 0 {
		t.Errorf("no file store under %s", dataDir)
	}
	if !strings.Contains(out.String(), "sqlite:"+filepath.Join(dataDir, "vigil.db")) {
		t.Errorf("banner does not show the embedded store:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "vigil.db")); err != nil {
		t.Errorf("no SQLite store: %v", err)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("dev exited %d: %s", code, errb)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dev did not stop within 30s of the signal")
	}
}

func TestDevExplicitPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	c, _, errb := testCLI(nil)
	code := run(context.Background(), []string{"dev", "--data-dir", t.TempDir(), "--nats-port", fmt.Sprint(port), "--http-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t))}, c)
	msg := strings.TrimSpace(lastLine(errb.String()))
	if code != 2 || !strings.Contains(msg, "in use") || !strings.Contains(msg, fmt.Sprint(port)) {
		t.Errorf("exit %d, last line %q", code, msg)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func waitHTTP(t *testing.T, url string, done chan int, errb *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case code := <-done:
			t.Fatalf("exited %d before becoming ready: %s", code, errb)
		default:
		}
		if httpStatus(url) == 200 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not ready within 30s", url)
}

func httpStatus(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// vigil statemachine replay prints what a fresh state machine would derive
// from the stored observations, and writes nothing.
func TestStateMachineReplay(t *testing.T) {
	s := natstest.Start(t, true)
	ctx := context.Background()
	env := map[string]string{"VIGIL_NATS_URL": s.URL()}
	c, _, errb := testCLI(env)
	if code := run(ctx, []string{"sites", "add", "https://shop.example.com/", "--id", "shop"}, c); code != 0 {
		t.Fatalf("sites add: %d %s", code, errb)
	}
	ids := events.NewIDSource(strings.NewReader(strings.Repeat("x", 4096)))
	start := time.Date(2026, 11, 23, 4, 0, 0, 0, time.UTC)
	for i, class := range []events.Class{events.ClassOK, events.ClassHTTPStatus, events.ClassHTTPStatus, events.ClassOK} {
		at := start.Add(time.Duration(i) * time.Minute)
		id, _ := ids.New(at)
		msg, err := events.Marshal(&events.Observation{ID: id, SiteID: "shop", Bucket: events.Bucket("shop"), Region: "local",
			CommandID: "c", Purpose: events.PurposeScheduled, DueAt: at, StartedAt: at, Class: class})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.JS.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	c, out, errb := testCLI(env)
	if code := run(ctx, []string{"statemachine", "replay", "--from-seq", "1", "--dry-run"}, c); code != 0 {
		t.Fatalf("replay: exit %d: %s", code, errb)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"kind":"seems_down"`) || !strings.Contains(lines[1], `"reason":"probe_cleared"`) {
		t.Errorf("replay printed:\n%s", out)
	}
	st, _ := s.JS.Stream(ctx, events.StreamEvents)
	if n := st.CachedInfo().State.Msgs; n != 0 {
		t.Errorf("a dry run wrote %d events", n)
	}
}

func TestMigrateAndProjectionsStatus(t *testing.T) {
	s := natstest.Start(t, true)
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "vigil.db")
	env := map[string]string{"VIGIL_NATS_URL": s.URL(), "VIGIL_STORE_DSN": dsn}
	ctx := context.Background()
	c, out, errb := testCLI(env)
	if code := run(ctx, []string{"migrate"}, c); code != 0 || !strings.Contains(out.String(), "migrations applied") {
		t.Fatalf("migrate: exit %d: %s %s", code, out, errb)
	}
	c, out, errb = testCLI(env)
	if code := run(ctx, []string{"projections", "status"}, c); code != 0 {
		t.Fatalf("status: exit %d: %s", code, errb)
	}
	for _, name := range []string{"site_status", "incidents", "notification_outbox"} {
		if !strings.Contains(out.String(), name) {
			t.Errorf("status lacks %s:\n%s", name, out)
		}
	}
	c, out, errb = testCLI(env)
	if code := run(ctx, []string{"projections", "rebuild", "all"}, c); code != 0 || !strings.Contains(out.String(), "rebuilt") {
		t.Errorf("rebuild: exit %d: %s %s", code, out, errb)
	}
	c, _, errb = testCLI(map[string]string{"VIGIL_NATS_URL": s.URL()})
	if code := run(ctx, []string{"migrate"}, c); code != 1 || !strings.Contains(errb.String(), "no store configured") {
		t.Errorf("migrate without a store: exit %d: %s", code, errb)
	}
	c, _, errb = testCLI(map[string]string{"VIGIL_STORE_DSN": "postgres://x"})
	if code := run(ctx, []string{"migrate"}, c); code != 2 || !strings.Contains(errb.String(), "store.dsn") {
		t.Errorf("bad DSN: exit %d: %s", code, errb)
	}
}
