package statemachine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
)

// Replayer feeds stored observations through fresh state machines, without
// writing anything: what the machine would emit, for debugging a decision
// after the fact and for checking that stored events are reproducible.
type Replayer struct {
	// Env is the deployment as the state machine saw it.
	Env Env
	// Site returns a site's configuration; ok false skips its observations.
	Site func(ctx context.Context, siteID string) (site events.Site, ok bool, err error)

	states map[string]*SiteState
}

// Feed applies one observation and returns what the machine emits.
func (r *Replayer) Feed(ctx context.Context, obs events.Observation) (Output, error) {
	if r.states == nil {
		r.states = map[string]*SiteState{}
	}
	site, ok, err := r.Site(ctx, obs.SiteID)
	if err != nil || !ok {
		return Output{}, err
	}
	st, found := r.states[obs.SiteID]
	if !found {
		st = &SiteState{SiteID: obs.SiteID}
		r.states[obs.SiteID] = st
	}
	return st.Observe(site, obs, r.Env), nil
}

// Replay reads OBSERVATIONS from sequence fromSeq (up to toSeq, 0 = the end
// at the time of the call), optionally only one bucket (bucket < 0 = all), and
// calls emit for every output that is not empty.
func (r *Replayer) Replay(ctx context.Context, js jetstream.JetStream, fromSeq, toSeq uint64, bucket int, emit func(events.Observation, Output) error) error {
	stream, err := js.Stream(ctx, events.StreamObservations)
	if err != nil {
		return fmt.Errorf("look up %s: %w", events.StreamObservations, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("read %s info: %w", events.StreamObservations, err)
	}
	if toSeq == 0 || toSeq > info.State.LastSeq {
		toSeq = info.State.LastSeq
	}
	fromSeq = max(fromSeq, info.State.FirstSeq, 1)
	if fromSeq > toSeq {
		return nil
	}
	filter := events.ObservationsAll
	if bucket >= 0 {
		filter = events.ObservationsBucketFilter(bucket)
	}
	oc, err := js.OrderedConsumer(ctx, events.StreamObservations, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    fromSeq,
	})
	if err != nil {
		return fmt.Errorf("replay consumer: %w", err)
	}
	iter, err := oc.Messages()
	if err != nil {
		return fmt.Errorf("replay consumer: %w", err)
	}
	defer iter.Stop()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := iter.Next(jetstream.NextMaxWait(2 * time.Second))
		if errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
			return nil // nothing more within the range
		}
		if err != nil {
			return err
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("replay: metadata: %w", err)
		}
		if md.Sequence.Stream > toSeq {
			return nil
		}
		var obs events.Observation
		if _, err := events.Decode(m.Headers(), m.Data(), &obs); err == nil {
			out, err := r.Feed(ctx, obs)
			if err != nil {
				return err
			}
			if !out.empty() {
				if err := emit(obs, out); err != nil {
					return err
				}
			}
		}
		if md.Sequence.Stream == toSeq {
			return nil
		}
	}
}

func (o Output) empty() bool {
	return len(o.Events) == 0 && len(o.Verify) == 0 && o.Cadence == nil && !o.ClearCadence
}
