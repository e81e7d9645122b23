package stack

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vigil-dev/vigil/projections/store"
	"github.com/vigil-dev/vigil/services/checker/httpcheck"
	"github.com/vigil-dev/vigil/services/config"
	"github.com/vigil-dev/vigil/services/internal/natstest"
)

func testDB(t *testing.T) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "vigil.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// Dev builds every service of the configuration, each on a connection of
// its own, and runs them; Drain closes the connections.
func TestDevBuildsAndRunsEveryService(t *testing.T) {
	srv := natstest.Start(t, true)
	cfg := config.Default(config.Dev)
	cfg.Regions = []string{"local", "eu"}
	cfg.Lease.TTL = 2 * time.Second
	db := testDB(t)
	if err := db.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	var names []string
	connect := func(name string) (*nats.Conn, error) {
		names = append(names, name)
		return nats.Connect(srv.URL(), nats.Name(name))
	}
	var engineTouched bool
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := Dev(cfg, connect, db, prometheus.NewRegistry(), logger,
		WithEngineOptions(func(o *httpcheck.Options) { engineTouched = o.UserAgent == cfg.Checker.UserAgent }))
	if err != nil {
		t.Fatal(err)
	}
	var services []string
	for _, s := range st.Services {
		services = append(services, s.Name)
	}
	if want := []string{"scheduler", "checker-local", "checker-eu", "statemachine", "projector"}; !slices.Equal(services, want) {
		t.Fatalf("services %v, want %v", services, want)
	}
	if want := []string{"vigil-scheduler", "vigil-checker-local", "vigil-checker-eu", "vigil-statemachine", "vigil-projector"}; !slices.Equal(names, want) {
		t.Fatalf("connections %v, want one per service %v", names, want)
	}
	if !engineTouched {
		t.Error("the engine options were not applied to the configuration's")
	}
	if err := st.Connected(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, len(st.Services))
	for _, s := range st.Services {
		go func() { errc <- s.Run(ctx) }()
	}
	time.Sleep(500 * time.Millisecond)
	cancel()
	for range st.Services {
		if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("service stopped with %v", err)
		}
	}
	if err := st.Drain(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := st.Connected(); err == nil {
		t.Error("connections still up after Drain")
	}
}

// A service that cannot be built fails Dev, naming it, and the connections
// already opened are closed.
func TestDevClosesConnectionsOnError(t *testing.T) {
	srv := natstest.Start(t, true)
	cfg := config.Default(config.Dev)
	cfg.Checker.TargetPolicy = "anything"
	var opened []*nats.Conn
	connect := func(name string) (*nats.Conn, error) {
		nc, err := nats.Connect(srv.URL(), nats.Name(name))
		opened = append(opened, nc)
		return nc, err
	}
	_, err := Dev(cfg, connect, testDB(t), nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "checker-local") || !strings.Contains(err.Error(), "target_policy") {
		t.Fatalf("err = %v, want the checker's target policy named", err)
	}
	for _, nc := range opened {
		if !nc.IsClosed() {
			t.Errorf("connection %s left open", nc.Opts.Name)
		}
	}
}
