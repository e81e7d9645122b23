package statemachine

import (
	"io"
	"log/slog"
	"testing"
	"time"
)

// A consumer without acknowledgements never redelivers, so a message lost
// between server and client must be noticed: the worker takes messages only
// in consumer-sequence order and, at a gap, asks for the consumer to be
// created afresh from the position.
func TestWorkerNoticesDeliveryGap(t *testing.T) {
	w := newWorker(&Service{logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, 3)
	for dseq := uint64(1); dseq <= 3; dseq++ {
		if !w.inSequence(dseq, 100+dseq) {
			t.Fatalf("message %d in order was refused", dseq)
		}
	}
	if w.inSequence(5, 105) {
		t.Fatal("message 5 after 3 was taken")
	}
	select {
	case <-w.recheck:
	default:
		t.Fatal("a gap did not ask run to check the consumer")
	}
	if w.inSequence(4, 104) {
		t.Error("a message was taken after a gap, before the restart")
	}
	if !w.restart {
		t.Error("restart not requested")
	}
}

func TestRetryDelayGivesUp(t *testing.T) {
	var total time.Duration
	n := 0
	for {
		d, again := retryDelay(n)
		if !again {
			break
		}
		if d <= 0 {
			t.Fatalf("retry %d waits %v", n, d)
		}
		total += d
		n++
	}
	// Long enough for a NATS leader election or a short outage, short enough
	// that a bucket is not held for good.
	if total < 3*time.Minute || total > 10*time.Minute {
		t.Errorf("retries wait %v in all over %d tries", total, n)
	}
}
