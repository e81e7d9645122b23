package checker

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
)

// A CheckBatch message carries several commands (events.CheckBatch). The
// dispatcher decodes it and hands each command to a worker as a job of its
// own, which runs exactly as a command received alone would. The message is
// settled once, by the last of its jobs to finish: acknowledged if every
// observation was made durable, negatively acknowledged otherwise, so the
// server delivers the whole batch again and every command in it is checked
// again (the occasional second check the state machine tolerates). Nothing is
// acknowledged that is not durable.

// batchMsg is a CheckBatch message whose commands run as separate jobs.
type batchMsg struct {
	c        *Checker
	msg      jetstream.Msg
	id       string
	progress *progress

	mu      sync.Mutex
	pending int           // jobs not yet done
	failed  bool          // some command's observation is not durable
	delay   time.Duration // the longest redelivery delay a failure asked for
}

// openBatch decodes and validates a batch message and returns a job for each
// command to run. A batch that cannot be decoded, or is not for this region,
// or holds no command this checker could run, is poison: it is terminated
// and openBatch returns nil. A command inside an otherwise good batch that
// cannot be run is counted and logged as poison and left out; the others run.
func (c *Checker) openBatch(msg jetstream.Msg, received time.Time) []job {
	c.m.batches.Inc()
	var b events.CheckBatch
	if _, err := events.Decode(msg.Headers(), msg.Data(), &b); err != nil {
		c.terminate(msg, fmt.Errorf("undecodable check batch: %w", err))
		return nil
	}
	if err := c.validateBatch(msg.Subject(), &b); err != nil {
		c.terminate(msg, err)
		return nil
	}
	bm := &batchMsg{c: c, msg: msg, id: b.ID}
	jobs := make([]job, 0, len(b.Commands))
	var firstErr error
	for i := range b.Commands {
		cmd := &b.Commands[i]
		if err := c.validateCommand(cmd); err != nil {
			c.m.poison.Inc()
			c.logger.Warn("poison command in a check batch left out", "batch_id", b.ID, "subject", msg.Subject(),
				"site", cmd.SiteID, "command_id", cmd.ID, "err", err)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		jobs = append(jobs, job{batch: bm, cmd: cmd, received: received})
	}
	if len(jobs) == 0 {
		if firstErr == nil {
			firstErr = errors.New("it is empty")
		}
		c.terminate(msg, fmt.Errorf("check batch %s has no command to run: %w", b.ID, firstErr))
		return nil
	}
	bm.pending = len(jobs)
	// The batch is held until its last command is done: commands waiting
	// for a worker, then checks. Progress acknowledgements keep the server
	// from redelivering it meanwhile.
	bm.progress = startProgress(msg, c.progressEvery)
	return jobs
}

// validateBatch refuses a batch that is not this region's or not on its own
// subject.
func (c *Checker) validateBatch(subject string, b *events.CheckBatch) error {
	if b.ID == "" {
		return errors.New("check batch has no id")
	}
	if b.Region != c.region {
		return fmt.Errorf("check batch %s is for region %q, not %q", b.ID, b.Region, c.region)
	}
	if want := events.CheckBatchSubject(b.Region, b.ID); subject != want {
		return fmt.Errorf("check batch %s arrived on %s, belongs on %s", b.ID, subject, want)
	}
	return nil
}

// done records that one job of the batch finished: durable says whether its
// observation was made durable (or never can be: a poison command is done
// too), and a failure asks for redelivery after delay. The last job settles
// the message.
func (b *batchMsg) done(durable bool, delay time.Duration) {
	b.mu.Lock()
	if !durable {
		b.failed = true
		b.delay = max(b.delay, delay)
	}
	b.pending--
	last := b.pending == 0
	failed, delay := b.failed, b.delay
	b.mu.Unlock()
	if last {
		b.settle(failed, delay)
	}
}

// release gives up the n jobs of the batch that were never handed to a
// worker (shutdown): the batch will be delivered again.
func (b *batchMsg) release(n int) {
	for range n {
		b.done(false, 0)
	}
}

func (b *batchMsg) settle(failed bool, delay time.Duration) {
	b.progress.stop()
	if !failed {
		if err := b.msg.Ack(); err != nil {
			// Every observation is durable; the batch will be redelivered
			// and checked once more, which the state machine tolerates.
			b.c.logger.Warn("acknowledge check batch failed; it may be checked again", "batch_id", b.id, "err", err)
		}
		return
	}
	var err error
	if delay > 0 {
		err = b.msg.NakWithDelay(delay)
	} else {
		err = b.msg.Nak()
	}
	b.c.logger.Warn("check batch not acknowledged: some observations are not durable; the batch will be checked again",
		"batch_id", b.id, "retry_in", delay, "nak_err", err)
}
