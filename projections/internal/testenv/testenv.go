// Package testenv gives the projections' tests what they share: an embedded
// nats-server with the EVENTS and OBSERVATIONS streams, and fresh stores
// (SQLite always; MySQL or MariaDB when VIGIL_TEST_MYSQL_DSN is set). Only
// tests import it.
package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/projections/store"
)

// MySQLEnv names the variable holding the test MySQL DSN.
const MySQLEnv = "VIGIL_TEST_MYSQL_DSN"

// NATS is a running embedded server with a client connection.
type NATS struct {
	Server *server.Server
	Conn   *nats.Conn
	JS     jetstream.JetStream
}

// StartNATS starts a JetStream-enabled nats-server on a random loopback port
// with its store in a temporary directory, and creates the EVENTS and
// OBSERVATIONS streams as services/topology declares them.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	opts := &server.Options{
		ServerName:         "vigil-projections-test",
		Host:               "127.0.0.1",
		Port:               server.RANDOM_PORT,
		JetStream:          true,
		StoreDir:           t.TempDir(),
		JetStreamMaxMemory: 64 << 20,
		JetStreamMaxStore:  4 << 30,
		NoSigs:             true,
		NoLog:              true,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect(srv.ClientURL(), nats.Name("projections-test"))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		nc.Close()
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, cfg := range []jetstream.StreamConfig{{
		Name:        events.StreamEvents,
		Subjects:    []string{events.EventsAll},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    1,
		Discard:     jetstream.DiscardOld,
		MaxMsgs:     -1,
		MaxBytes:    -1,
		MaxMsgSize:  1 << 20,
		Duplicates:  2 * time.Minute,
		AllowDirect: true,
	}, {
		Name:        events.StreamObservations,
		Subjects:    []string{events.ObservationsAll},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    1,
		Discard:     jetstream.DiscardOld,
		MaxMsgs:     -1,
		MaxBytes:    -1,
		MaxMsgSize:  256 << 10,
		Duplicates:  2 * time.Minute,
		AllowDirect: true,
	}} {
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			t.Fatalf("create stream %s: %v", cfg.Name, err)
		}
	}
	return &NATS{Server: srv, Conn: nc, JS: js}
}

// Publish appends messages in order, waiting for every ack.
func (n *NATS) Publish(t testing.TB, msgs ...events.Message) {
	t.Helper()
	const window = 2000
	var futs []jetstream.PubAckFuture
	wait := func() {
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				t.Fatalf("publish: %v", err)
			case <-time.After(30 * time.Second):
				t.Fatal("publish: no ack")
			}
		}
		futs = futs[:0]
	}
	for _, m := range msgs {
		msg, err := events.Marshal(m)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		f, err := n.JS.PublishMsgAsync(msg)
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		futs = append(futs, f)
		if len(futs) >= window {
			wait()
		}
	}
	wait()
}

// PublishRaw appends a message as it is (for poison tests).
func (n *NATS) PublishRaw(t testing.TB, msg *nats.Msg) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.JS.PublishMsg(ctx, msg); err != nil {
		t.Fatalf("publish raw: %v", err)
	}
}

// Store is one fresh, migrated store of a kind.
type Store struct {
	Name string
	DB   *store.DB
}

// Stores returns a fresh SQLite store and, when VIGIL_TEST_MYSQL_DSN is set,
// a fresh MySQL database of its own (dropped at cleanup).
func Stores(t testing.TB) []Store {
	t.Helper()
	out := []Store{{Name: "sqlite", DB: SQLite(t)}}
	if os.Getenv(MySQLEnv) != "" {
		out = append(out, Store{Name: "mysql", DB: MySQL(t)})
	}
	return out
}

// SQLite opens and migrates a new SQLite store in a temporary directory.
func SQLite(t testing.TB) *store.DB {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "vigil.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return db
}

// MySQL creates a database of its own on the server VIGIL_TEST_MYSQL_DSN names,
// opens and migrates it, and drops it at cleanup. It skips the test when the
// variable is unset.
func MySQL(t testing.TB) *store.DB {
	t.Helper()
	db, _ := MySQLRaw(t)
	if err := db.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return db
}

// MySQLRaw is MySQL without migrating; it also returns the database name.
func MySQLRaw(t testing.TB) (*store.DB, string) {
	t.Helper()
	dsn := os.Getenv(MySQLEnv)
	if dsn == "" {
		t.Skipf("%s is not set: MySQL tests skipped (e.g. %s='root@tcp(127.0.0.1:3306)/vigil_test?parseTime=true&loc=UTC&clientFoundRows=true')", MySQLEnv, MySQLEnv)
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("%s: %v", MySQLEnv, err)
	}
	var b [6]byte
	rand.Read(b[:])
	name := "vigil_t_" + hex.EncodeToString(b[:])
	admin := cfg.Clone()
	admin.DBName = ""
	conn, err := mysql.NewConnector(admin)
	if err != nil {
		t.Fatal(err)
	}
	adb := sql.OpenDB(conn)
	ctx := context.Background()
	if _, err := adb.ExecContext(ctx, "CREATE DATABASE "+name+" CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"); err != nil {
		adb.Close()
		t.Fatalf("create database %s: %v", name, err)
	}
	cfg.DBName = name
	db, err := store.OpenMySQL(ctx, cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.Close()
		adb.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name)
		adb.Close()
	})
	return db, name
}
