// Package natstest starts real embedded nats-servers for tests, the way
// nats-server's own tests do: JetStream on a file store in the test's temporary
// directory, on a random port, with Vigil's topology applied.
package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/services/devserver"
	"github.com/vigil-dev/vigil/services/topology"
)

// Options returns the topology options tests use: the service defaults with a
// short lease so failover tests run quickly.
func Options() topology.Options {
	return topology.Options{
		Replicas:             1,
		ObservationsMaxAge:   time.Hour,
		ObservationsMaxBytes: 256 << 20,
		ChecksMaxAge:         10 * time.Minute,
		EventsDuplicates:     time.Hour,
		LeaseTTL:             2 * time.Second,
	}
}

// Server is a started server with one client connection.
type Server struct {
	*devserver.Server
	NC *nats.Conn
	JS jetstream.JetStream
}

// Start starts a server in t's temporary directory. It is shut down when the
// test ends. With apply set, the topology is applied with Options().
func Start(t testing.TB, apply bool) *Server {
	t.Helper()
	srv, err := devserver.Start(devserver.Options{
		DataDir:   t.TempDir(),
		Port:      devserver.RandomPort,
		MaxStore:  1 << 30,
		MaxMemory: 64 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	s := &Server{Server: srv}
	s.NC, s.JS = s.Connect(t, "test")
	if apply {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := topology.Apply(ctx, s.JS, Options()); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// Connect opens another TCP connection to the server, closed when the test ends.
func (s *Server) Connect(t testing.TB, name string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.URL(), nats.Name(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}
