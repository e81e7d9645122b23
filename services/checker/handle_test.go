package checker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/checker/httpcheck"
)

// fakeMsg is a delivered command that records what the checker answered.
// Methods the checker must not call panic (the embedded interface is nil).
type fakeMsg struct {
	jetstream.Msg
	subject  string
	headers  nats.Header
	data     []byte
	progress atomic.Int64
	acks     atomic.Int64
	syncAcks atomic.Int64
	naks     atomic.Int64
	terms    atomic.Int64
}

func newFakeMsg(t testing.TB, cmd *events.CheckCommand) *fakeMsg {
	t.Helper()
	m, err := events.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeMsg{subject: m.Subject, headers: m.Header, data: m.Data}
}

func (m *fakeMsg) Subject() string      { return m.subject }
func (m *fakeMsg) Headers() nats.Header { return m.headers }
func (m *fakeMsg) Data() []byte         { return m.data }
func (m *fakeMsg) Ack() error           { m.acks.Add(1); return nil }
func (m *fakeMsg) DoubleAck(context.Context) error {
	m.syncAcks.Add(1)
	return nil
}
func (m *fakeMsg) InProgress() error { m.progress.Add(1); return nil }
func (m *fakeMsg) Nak() error        { m.naks.Add(1); return nil }
func (m *fakeMsg) NakWithDelay(time.Duration) error {
	m.naks.Add(1)
	return nil
}
func (m *fakeMsg) TermWithReason(string) error { m.terms.Add(1); return nil }
func (m *fakeMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{NumDelivered: 1}, nil
}

// fakeJS accepts every publish of an observation at once, or fails it with
// err. newFakeChecker routes a Checker's publishes to it.
type fakeJS struct {
	jetstream.JetStream
	err       error
	mu        sync.Mutex
	published int
}

func (f *fakeJS) publish(*nats.Msg) error {
	if f.err != nil {
		return f.err
	}
	f.mu.Lock()
	f.published++
	f.mu.Unlock()
	return nil
}

// newFakeChecker returns a Checker of testRegion that publishes to js.
func newFakeChecker(t testing.TB, js *fakeJS, p Prober, opts ...Option) *Checker {
	t.Helper()
	c, err := New(js, p, append([]Option{WithRegion(testRegion)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	c.publish = js.publish
	return c
}

// instantProber answers ok at once.
type instantProber struct{}

func (instantProber) Check(_ context.Context, spec events.CheckSpec) httpcheck.Result {
	return httpcheck.Result{Class: events.ClassOK, StatusCode: 200, StartedAt: time.Now(), FinalURL: spec.URL}
}

// BenchmarkHandle measures the checker's own work per command: decode,
// observation, encode, logging, timers and contexts, with a Prober and a
// publish that cost nothing.
func BenchmarkHandle(b *testing.B) {
	// The logger of a service at the default level, info.
	logger := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c := newFakeChecker(b, &fakeJS{}, instantProber{}, WithLogger(logger))
	cmd := command("bench-1", "http://127.0.0.1:1/", time.Now())
	cmd.Deadline = time.Now().Add(time.Hour)
	msgs := make([]*fakeMsg, b.N)
	for i := range msgs {
		msgs[i] = newFakeMsg(b, cmd)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		c.handle(ctx, job{msg: msgs[i], received: time.Now()})
	}
}

// A command is acknowledged with a plain Ack once its observation is
// published: no waiting for the server's reply.
func TestHandleAcksWithoutWaiting(t *testing.T) {
	js := &fakeJS{}
	c := newFakeChecker(t, js, instantProber{})
	msg := newFakeMsg(t, command("ack-1", "http://127.0.0.1:1/", time.Now()))
	c.handle(context.Background(), job{msg: msg, received: time.Now()})
	if js.published != 1 || msg.acks.Load() != 1 || msg.syncAcks.Load() != 0 || msg.naks.Load() != 0 {
		t.Errorf("published %d, acks %d, double acks %d, naks %d; want one publish and one plain ack",
			js.published, msg.acks.Load(), msg.syncAcks.Load(), msg.naks.Load())
	}
}

// Only a command that can be held longer than progressEvery gets a progress
// timer: with the defaults (30 s, 5 s publish timeout) the default 10 s
// check does not, a 60 s one does, and so does one that already waited long
// on the client.
func TestProgressTimerOnlyForLongHolds(t *testing.T) {
	c, err := New(&fakeJS{}, instantProber{}, WithRegion(testRegion))
	if err != nil {
		t.Fatal(err)
	}
	if c.progressEvery != 30*time.Second || c.publishTimeout != 5*time.Second {
		t.Fatalf("defaults changed: progressEvery %s, publishTimeout %s", c.progressEvery, c.publishTimeout)
	}
	msg := &fakeMsg{}
	for _, tt := range []struct {
		name    string
		waited  time.Duration
		timeout time.Duration
		policy  events.RedirectPolicy
		want    bool
	}{
		{"a site's default timeout", 0, time.Duration(events.DefaultCheckTimeout), events.RedirectFollow, false},
		{"a command without a timeout (the engine's default)", 0, httpcheck.DefaultTimeout, events.RedirectFollow, true},
		{"20s timeout, follow", 0, 20 * time.Second, events.RedirectFollow, false},
		{"20s timeout, alert (KV read and write)", 0, 20 * time.Second, events.RedirectAlert, true},
		{"longest timeout", 0, MaxCheckTimeout, events.RedirectFollow, true},
		{"default timeout after a long wait", 15 * time.Second, time.Duration(events.DefaultCheckTimeout), events.RedirectFollow, true},
	} {
		p := c.keepAlive(job{msg: msg}, tt.waited, c.holdBound(tt.timeout, tt.policy))
		if got := p != nil; got != tt.want {
			t.Errorf("%s: progress timer %v, want %v", tt.name, got, tt.want)
		}
		p.stop()
	}
	if c.keepAlive(job{msg: msg}, 0, c.publishTimeout) != nil {
		t.Error("an expired command (publish only) got a progress timer")
	}
}

// A check that can outlast progressEvery keeps its command alive with
// progress acks while it runs; one that waited long on the client gets one at
// once.
func TestLongChecksSendProgress(t *testing.T) {
	p := &fakeProber{answer: func(events.CheckSpec) (events.Class, time.Duration) {
		return events.ClassOK, 700 * time.Millisecond
	}}
	c := newFakeChecker(t, &fakeJS{}, p)
	c.progressEvery = 200 * time.Millisecond
	cmd := command("slow-1", "http://127.0.0.1:1/", time.Now())
	cmd.Check.Timeout = events.Duration(MaxCheckTimeout)
	msg := newFakeMsg(t, cmd)
	c.handle(context.Background(), job{msg: msg, received: time.Now()})
	if n := msg.progress.Load(); n < 2 {
		t.Errorf("a 700 ms check sent %d progress acks at a 200 ms progress interval, want at least 2", n)
	}
	if msg.acks.Load() != 1 {
		t.Errorf("acks %d", msg.acks.Load())
	}
	sent := msg.progress.Load()
	time.Sleep(500 * time.Millisecond)
	if n := msg.progress.Load(); n != sent {
		t.Errorf("progress acks went on after the command was acknowledged: %d then %d", sent, n)
	}

	// Quick, but it waited on the client longer than progressEvery.
	p.answer = func(events.CheckSpec) (events.Class, time.Duration) { return events.ClassOK, 0 }
	c.progressEvery = time.Hour
	msg = newFakeMsg(t, command("waited-1", "http://127.0.0.1:1/", time.Now()))
	c.handle(context.Background(), job{msg: msg, received: time.Now().Add(-2 * time.Hour)})
	if n := msg.progress.Load(); n != 1 {
		t.Errorf("a command that waited long on the client got %d progress acks, want 1", n)
	}
}

// Records about a command carry the site, bucket and command IDs whether or
// not Debug is on; with Debug on each command's record is written once with
// them (no duplicated attributes).
func TestCommandLogsCarryIDs(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		var logs syncBuffer
		logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: level}))
		js := &fakeJS{err: errors.New("nats: timeout")}
		c := newFakeChecker(t, js, instantProber{}, WithLogger(logger))
		cmd := command("logged-1", "http://127.0.0.1:1/", time.Now())
		c.handle(context.Background(), job{msg: newFakeMsg(t, cmd), received: time.Now()})
		js.err = nil
		c.handle(context.Background(), job{msg: newFakeMsg(t, cmd), received: time.Now()})

		ids := []string{`"site":"logged-1"`, fmt.Sprintf(`"bucket":%d`, cmd.Bucket), `"command_id":"` + cmd.ID + `"`, `"region":"local"`}
		var warned, checked bool
		for line := range strings.SplitSeq(strings.TrimSpace(logs.String()), "\n") {
			switch {
			case strings.Contains(line, "publish observation failed"):
				warned = true
			case strings.Contains(line, `"msg":"checked"`):
				checked = true
			default:
				continue
			}
			for _, want := range ids {
				if n := strings.Count(line, want); n != 1 {
					t.Errorf("level %s: %s appears %d times in %s", level, want, n, line)
				}
			}
		}
		if !warned {
			t.Errorf("level %s: no warning about the failed publish:\n%s", level, logs.String())
		}
		if checked != (level == slog.LevelDebug) {
			t.Errorf("level %s: debug record written: %v", level, checked)
		}
	}
}
