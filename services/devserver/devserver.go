// Package devserver runs an embedded nats-server with JetStream on a file
// store: the NATS of `vigil dev` and of tests. Only dev mode and tests import
// it, so the services' production code paths never need the server.
package devserver

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// RandomPort asks for any free port.
const RandomPort = -1

// Options configures the embedded server.
type Options struct {
	// DataDir holds the JetStream file store (under DataDir/jetstream).
	DataDir string
	// Host to listen on; default 127.0.0.1, so the nats CLI can connect but
	// nothing off the machine can.
	Host string
	// Port to listen on; RandomPort for any free one.
	Port int
	// FallbackPort: when Port is taken, listen on a free port instead of
	// failing. `vigil dev` sets it unless the port was given explicitly.
	FallbackPort bool
	// MaxStore and MaxMemory bound JetStream; zero leaves the server's
	// defaults (derived from the disk and the machine's memory).
	MaxStore, MaxMemory int64
	// Logger receives the server's log; nil discards it.
	Logger *slog.Logger
}

// Server is a running embedded nats-server.
type Server struct {
	srv *server.Server
	// Port is the port the server listens on.
	Port int
	// FellBack is set when the requested port was taken and another was used.
	FellBack bool
}

// ErrPortInUse is returned when the requested port is taken and FallbackPort
// is not set.
var ErrPortInUse = errors.New("port already in use")

// Start starts the server and waits until it accepts connections.
func Start(o Options) (*Server, error) {
	if o.DataDir == "" {
		return nil, errors.New("devserver: DataDir is required (a temporary store would lose data on reboot)")
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	port, fellBack := o.Port, false
	if port != RandomPort {
		if err := probePort(o.Host, port); err != nil {
			if !errors.Is(err, ErrPortInUse) || !o.FallbackPort {
				return nil, fmt.Errorf("nats port %d on %s: %w", port, o.Host, err)
			}
			port, fellBack = RandomPort, true
		}
	}
	opts := &server.Options{
		ServerName: "vigil-dev",
		Host:       o.Host,
		Port:       port,
		JetStream:  true,
		StoreDir:   o.DataDir,
		// The process handles signals itself: it drains its services first and
		// shuts the server down last.
		NoSigs:             true,
		JetStreamMaxStore:  o.MaxStore,
		JetStreamMaxMemory: o.MaxMemory,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("create embedded nats-server: %w", err)
	}
	if o.Logger != nil {
		srv.SetLoggerV2(&logAdapter{l: o.Logger.With("component", "nats-server")}, false, false, false)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded nats-server not ready after 30s")
	}
	addr, ok := srv.Addr().(*net.TCPAddr)
	if !ok {
		srv.Shutdown()
		return nil, errors.New("embedded nats-server has no TCP listener")
	}
	return &Server{srv: srv, Port: addr.Port, FellBack: fellBack}, nil
}

// URL is the client URL of the server's TCP listener.
func (s *Server) URL() string { return s.srv.ClientURL() }

// Connect opens a connection named name to the server's loopback listener.
//
// It is TCP, not nats.InProcessServer: an in-process connection is a
// net.Pipe, which hands every write to the reader synchronously and arms a
// deadline timer for each one, and measured about 12% more CPU per
// JetStream message than loopback TCP (publish, delivery and ack;
// BENCHMARKS.md, session 6). The server listens on loopback anyway, for the
// nats CLI.
func (s *Server) Connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.Name(name), nats.MaxReconnects(-1)}, opts...)
	nc, err := nats.Connect(s.URL(), opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to embedded nats-server: %w", err)
	}
	return nc, nil
}

// Shutdown stops the server and waits for it to finish, flushing the store.
func (s *Server) Shutdown() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}

// NATS returns the underlying server, for tests that need its internals.
func (s *Server) NATS() *server.Server { return s.srv }

func probePort(host string, port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return ErrPortInUse
		}
		return err
	}
	return l.Close()
}

// logAdapter sends the server's log to slog.
type logAdapter struct{ l *slog.Logger }

func (a *logAdapter) Noticef(format string, v ...any) { a.l.Info(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Fatalf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Errorf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Debugf(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Tracef(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
