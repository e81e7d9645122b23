package devserver_test

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/services/devserver"
)

// BenchmarkConnection compares the process's CPU per JetStream message (a
// publish awaiting its ack, a delivery and an ack, with an observation's
// size and headers) over the two ways to reach the embedded server:
// Server.Connect's loopback TCP and an in-process pipe
// (nats.InProcessServer). Publishes are paced at -rate, as the checker's are,
// since a connection's cost depends on how writes batch. The figure is
// cpu-us/msg; ns/op is wall time and means little here.
//
//	go test -run '^$' -bench Connection -benchtime 40000x ./devserver
func BenchmarkConnection(b *testing.B) {
	for _, mode := range []string{"tcp", "in-process"} {
		b.Run(mode, func(b *testing.B) {
			srv, err := devserver.Start(devserver.Options{DataDir: b.TempDir(), Port: devserver.RandomPort})
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Shutdown()
			connect := func(name string) *nats.Conn {
				var opts []nats.Option
				if mode == "in-process" {
					opts = append(opts, nats.InProcessServer(srv.NATS()))
				}
				nc, err := srv.Connect(name, opts...)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(nc.Close)
				return nc
			}
			benchConnection(b, connect("publisher"), connect("consumer"), 2000)
		})
	}
}

func benchConnection(b *testing.B, pub, sub *nats.Conn, rate int) {
	ctx := context.Background()
	jsp, _ := jetstream.New(pub)
	jss, _ := jetstream.New(sub)
	if _, err := jsp.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCH", Subjects: []string{"bench.>"}}); err != nil {
		b.Fatal(err)
	}
	cons, err := jss.CreateConsumer(ctx, "BENCH", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, MemoryStorage: true})
	if err != nil {
		b.Fatal(err)
	}
	var got atomic.Int64
	cc, err := cons.Consume(func(m jetstream.Msg) { _ = m.Ack(); got.Add(1) })
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()
	data := make([]byte, 520)
	hdr := nats.Header{}
	for _, k := range []string{"ce-specversion", "ce-id", "ce-source", "ce-type", "content-type", "ce-subject", "ce-time"} {
		hdr.Set(k, "01JABCDEFGHJKMNPQRSTVWXYZ0")
	}
	const publishers = 50
	per := max(1, b.N/publishers)
	tick := time.Duration(float64(time.Second) * publishers / float64(rate))
	b.ResetTimer()
	cpu0 := processCPU()
	var wg sync.WaitGroup
	for g := range publishers {
		wg.Go(func() {
			t := time.NewTicker(tick)
			defer t.Stop()
			for i := range per {
				<-t.C
				m := &nats.Msg{Subject: fmt.Sprintf("bench.%d.%d", g, i), Header: maps.Clone(hdr), Data: data}
				m.Header.Set(nats.MsgIdHdr, m.Subject) // unique, as an observation's ID is
				if _, err := jsp.PublishMsg(ctx, m); err != nil {
					b.Errorf("publish: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for got.Load() < int64(per*publishers) {
		if b.Failed() || time.Now().After(deadline) {
			b.Fatalf("%d of %d messages consumed", got.Load(), per*publishers)
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(per*publishers), "cpu-us/msg")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
