package events

import (
	"strings"
	"time"
)

// CheckBatch carries several check commands for one region in one message:
// the scheduled checks of a region that came due in one scheduler tick.
//
// A command of its own costs the stream a store, a delivery, an
// acknowledgement and a publish acknowledgement, about as much CPU as the
// check it asks for (BENCHMARKS.md); a batch pays them once for all its
// commands. Each command in it is complete and keeps its own ID, due time and
// deadline, and a checker treats it exactly as a command received alone. The
// batch is acknowledged when the last of its observations is durable; if any
// could not be published it is delivered again and every command in it is
// checked again (an occasional second check, which the state machine
// tolerates).
//
// Batches live on subjects of their own (CheckBatchSubject), so the stream's
// one-pending-command-per-subject rule never replaces one batch with another.
// The scheduler gives each a message TTL (Nats-TTL) that runs out with its
// commands' last deadline instead, so a batch nobody took in time leaves the
// stream as a site's stale command, replaced by its next one, does.
type CheckBatch struct {
	// ID is derived from the region and the IDs of the commands, so a batch
	// the scheduler sends again after a lost acknowledgement is dropped as a
	// duplicate by the stream.
	ID       string         `json:"id"`
	Region   string         `json:"region"`
	Commands []CheckCommand `json:"commands"`
}

// Envelope implements Message. The CloudEvents subject is the region, and the
// time the earliest due time of the commands.
func (b *CheckBatch) Envelope() Envelope {
	var t time.Time
	for i := range b.Commands {
		if d := b.Commands[i].DueAt; t.IsZero() || d.Before(t) {
			t = d
		}
	}
	return Envelope{
		ID:          b.ID,
		Type:        TypeCheckBatch,
		Source:      SourceScheduler,
		Subject:     b.Region,
		Time:        t,
		NATSSubject: CheckBatchSubject(b.Region, b.ID),
	}
}

// BatchID derives the ID of a batch of region's commands from the commands'
// IDs, in order; t is the batch's time (the earliest due time).
func BatchID(region string, t time.Time, commands []CheckCommand) string {
	parts := make([]string, 0, len(commands)+2)
	parts = append(parts, "batch", region)
	for i := range commands {
		parts = append(parts, commands[i].ID)
	}
	return DeriveID(t, parts...)
}

// batchToken is the token after the region on a batch's subject. A bucket is
// a number, so it never reads as a command's subject.
const batchToken = "batch"

// CheckBatchSubject is the subject of a batch of commands for one region:
// vigil.checks.<region>.batch.<id>. It is under the region's prefix, so the
// region's checkers' consumer (ChecksRegionFilter) takes batches and single
// commands alike, and unique to the batch.
func CheckBatchSubject(region, id string) string {
	return "vigil.checks." + region + "." + batchToken + "." + id
}

// IsCheckBatchSubject reports whether subject is a batch's subject
// (CheckBatchSubject) rather than a single command's (CheckSubject).
func IsCheckBatchSubject(subject string) bool {
	rest, ok := strings.CutPrefix(subject, "vigil.checks.")
	if !ok {
		return false
	}
	_, rest, ok = strings.Cut(rest, ".")
	return ok && strings.HasPrefix(rest, batchToken+".")
}
