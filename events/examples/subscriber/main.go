// Command subscriber shows how another system consumes Vigil's events: a
// durable JetStream consumer on the EVENTS stream, each message decoded with
// the events package's CloudEvents codec and printed.
//
//	go run ./examples/subscriber --nats nats://127.0.0.1:4222
//
// The durable consumer remembers its position on the server, so a restarted
// subscriber continues where it stopped and misses nothing.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
)

func main() {
	url := flag.String("nats", "nats://127.0.0.1:4222", "NATS server URL")
	durable := flag.String("durable", "example-subscriber", "durable consumer name; its position survives restarts")
	filter := flag.String("filter", events.EventsAll, "subject filter, e.g. 'vigil.events.*.*.down' for Down events only")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *url, *durable, *filter, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, url, durable, filter string, w io.Writer) error {
	nc, err := nats.Connect(url, nats.Name("vigil-example-subscriber"))
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer nc.Drain()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, events.StreamEvents, jetstream.ConsumerConfig{
		Durable:       durable,
		FilterSubject: filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("create consumer %s on %s: %w", durable, events.StreamEvents, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		fmt.Fprintln(w, describe(m.Headers(), m.Data()))
		// Ack only after the event is handled: an unacked event is redelivered.
		if err := m.Ack(); err != nil {
			log.Printf("ack: %v", err)
		}
	})
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	defer cc.Drain()
	fmt.Fprintf(w, "consuming %s from %s as %q; Ctrl-C to stop\n", filter, events.StreamEvents, durable)
	<-ctx.Done()
	return nil
}

// describe renders one message as a line. Any CloudEvent is readable with
// events.ReadEvent; Vigil's own types decode into their Go structs.
func describe(h nats.Header, data []byte) string {
	ce, err := events.ReadEvent(h, data)
	if err != nil {
		return "undecodable message: " + err.Error()
	}
	at := ce.Time().UTC().Format(time.RFC3339)
	switch {
	case strings.HasPrefix(ce.Type(), "dev.vigil.site."):
		var ev events.SiteEvent
		if _, err := events.Decode(h, data, &ev); err != nil {
			return fmt.Sprintf("%s %s: %v", at, ce.Type(), err)
		}
		line := fmt.Sprintf("%s site=%s %s severity=%d", at, ev.SiteID, ev.Kind, ev.Severity)
		if ev.IncidentID != "" {
			line += " incident=" + ev.IncidentID
		}
		if ev.Reason != "" {
			line += " reason=" + string(ev.Reason)
		}
		if ev.FailureClass != "" {
			line += fmt.Sprintf(" failure=%s/%d", ev.FailureClass, ev.FailureStatus)
		}
		return line
	case strings.HasPrefix(ce.Type(), "dev.vigil.region."):
		var ev events.RegionEvent
		if _, err := events.Decode(h, data, &ev); err != nil {
			return fmt.Sprintf("%s %s: %v", at, ce.Type(), err)
		}
		return fmt.Sprintf("%s region=%s %s failures=%d/%d sites=%d", at, ev.Region, ev.Kind, ev.Failures, ev.Checks, ev.Sites)
	}
	return fmt.Sprintf("%s %s id=%s subject=%s", at, ce.Type(), ce.ID(), ce.Subject())
}
