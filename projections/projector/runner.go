package projector

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/projections/store"
)

// Options tune a Runner. Zero values mean the defaults.
type Options struct {
	// Stream and Subjects say what to read: EVENTS, vigil.events.>.
	Stream   string
	Subjects []string
	// BatchSize is the most events applied in one transaction (default 500).
	BatchSize int
	// BatchWait is how long to wait for the next message of a batch the
	// server says is pending (default 100ms). A batch never waits for
	// messages that are not there yet: it is applied as soon as the
	// consumer has nothing pending.
	BatchWait time.Duration
	// RetryDelay is the first pause after a failed batch; it doubles up to
	// MaxRetryDelay (defaults 500ms and 30s).
	RetryDelay    time.Duration
	MaxRetryDelay time.Duration
	// MaintainEvery is how often Maintainer projections run their upkeep
	// (default 10 minutes; negative turns it off).
	MaintainEvery time.Duration
	Logger        *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// BeforeCommit and AfterCommit are fault-injection hooks for tests: they
	// are called with the batch's last sequence just before and just after
	// the commit. An error from BeforeCommit rolls the batch back; an error
	// from either stops the current pass as a crash would.
	BeforeCommit func(lastSeq uint64) error
	AfterCommit  func(lastSeq uint64) error
}

func (o Options) withDefaults() Options {
	if o.Stream == "" {
		o.Stream = events.StreamEvents
	}
	if len(o.Subjects) == 0 {
		o.Subjects = []string{events.EventsAll}
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 500
	}
	if o.BatchWait <= 0 {
		o.BatchWait = 100 * time.Millisecond
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = 500 * time.Millisecond
	}
	if o.MaxRetryDelay <= 0 {
		o.MaxRetryDelay = 30 * time.Second
	}
	if o.MaintainEvery == 0 {
		o.MaintainEvery = 10 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Runner applies EVENTS to a set of projections. Each projection keeps its own
// checkpoint; one consumer reads from the lowest of them, and an event is
// applied only to the projections that have not seen it.
type Runner struct {
	db     *store.DB
	js     jetstream.JetStream
	projs  []Projection
	opts   Options
	suffix string
	// until, in rebuild mode, is the sequence after which Run returns.
	until uint64

	// sem is held while a batch is applied, and by Pause.
	sem chan struct{}
	// gen changes when a Pause ends: the runner then reloads its checkpoints.
	gen atomic.Uint64

	applied, batches, quarantined, read atomic.Uint64
	lastSeq                             atomic.Uint64
}

// New returns a Runner for the projections, which must have distinct names.
func New(db *store.DB, js jetstream.JetStream, projs []Projection, opts Options) (*Runner, error) {
	if len(projs) == 0 {
		return nil, errors.New("projector: no projections")
	}
	seen := map[string]bool{}
	for _, p := range projs {
		if p.Name() == "" || len(p.Name()) > 48 {
			return nil, fmt.Errorf("projector: bad projection name %q", p.Name())
		}
		if seen[p.Name()] {
			return nil, fmt.Errorf("projector: two projections named %q", p.Name())
		}
		seen[p.Name()] = true
	}
	return &Runner{db: db, js: js, projs: projs, opts: opts.withDefaults(), sem: make(chan struct{}, 1)}, nil
}

var (
	errRestart = errors.New("restart from the stored checkpoints")
	errDone    = errors.New("caught up")
)

func (r *Runner) names() []string {
	n := make([]string, len(r.projs))
	for i, p := range r.projs {
		n[i] = p.Name() + r.suffix
	}
	return n
}

// Run applies events until ctx is cancelled (then it returns nil) or, for a
// rebuild's runner, until it has caught up. Failed batches are retried with
// backoff from the stored checkpoints; Run returns an error only if the
// checkpoints cannot be created.
func (r *Runner) Run(ctx context.Context) error {
	log := r.opts.Logger.With("projections", r.names())
	if err := ensureCheckpoints(ctx, r.db, r.names()); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if r.suffix == "" && r.opts.MaintainEvery > 0 {
		mctx, stop := context.WithCancel(ctx)
		defer stop()
		go r.maintain(mctx, log)
	}
	delay := r.opts.RetryDelay
	for {
		before := r.batches.Load()
		err := r.runOnce(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, errDone):
			return nil
		case errors.Is(err, errRestart):
			continue
		case errors.Is(err, errCheckpointMoved):
			log.Warn("checkpoint moved by another writer; restarting from it", "err", err)
		default:
			log.Error("projection batch failed; retrying", "err", err, "delay", delay)
		}
		if r.batches.Load() != before {
			delay = r.opts.RetryDelay
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, r.opts.MaxRetryDelay)
	}
}

func (r *Runner) runOnce(ctx context.Context) error {
	gen := r.gen.Load()
	names := r.names()
	cps, err := Checkpoints(ctx, r.db.W, names...)
	if err != nil {
		return err
	}
	from := cps[names[0]]
	for _, n := range names {
		from = min(from, cps[n])
	}
	if r.until > 0 && from >= r.until {
		return errDone
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: r.opts.Subjects, DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = from + 1
	}
	cons, err := r.js.OrderedConsumer(ctx, r.opts.Stream, cfg)
	if err != nil {
		return fmt.Errorf("ordered consumer on %s from %d: %w", r.opts.Stream, from+1, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(r.opts.BatchSize))
	if err != nil {
		return fmt.Errorf("consume %s: %w", r.opts.Stream, err)
	}
	defer it.Stop()
	batch := make([]jetstream.Msg, 0, r.opts.BatchSize)
	for {
		batch = batch[:0]
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return fmt.Errorf("next event: %w", err)
		}
		batch = append(batch, m)
		pending := numPending(m)
		for len(batch) < r.opts.BatchSize && pending > 0 {
			m, err := it.Next(jetstream.NextMaxWait(r.opts.BatchWait))
			if errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages) {
				break
			}
			if err != nil {
				return fmt.Errorf("next event: %w", err)
			}
			batch = append(batch, m)
			pending = numPending(m)
		}
		last, err := r.apply(ctx, gen, cps, batch)
		if err != nil {
			return err
		}
		if r.until > 0 && (last >= r.until || pending == 0) {
			return errDone
		}
	}
}

func numPending(m jetstream.Msg) uint64 {
	md, err := m.Metadata()
	if err != nil {
		return 0
	}
	return md.NumPending
}

// apply applies one batch in one transaction and advances the checkpoints
// (cps is updated on success). It returns the batch's last sequence.
func (r *Runner) apply(ctx context.Context, gen uint64, cps map[string]uint64, batch []jetstream.Msg) (uint64, error) {
	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	defer func() { <-r.sem }()
	if r.gen.Load() != gen {
		return 0, errRestart
	}
	now := r.opts.Now()
	sqlTx, err := r.db.W.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer sqlTx.Rollback()
	tx := &Tx{Tx: sqlTx, D: r.db.D, suffix: r.suffix}
	if r.db.D.ReusePrepared() {
		tx.stmts = &stmtCache{tx: sqlTx, m: map[string]*sql.Stmt{}}
	}
	for _, p := range r.projs {
		if bs, ok := p.(BatchStarter); ok {
			if err := bs.BeginBatch(ctx, tx); err != nil {
				return 0, fmt.Errorf("%s: begin batch: %w", p.Name(), err)
			}
		}
	}
	var last uint64
	var applied, quarantined uint64
	for _, m := range batch {
		md, err := m.Metadata()
		if err != nil {
			return 0, fmt.Errorf("message metadata: %w", err)
		}
		seq := md.Sequence.Stream
		last = seq
		ev, derr := Decode(seq, m.Subject(), m.Headers(), m.Data())
		for _, p := range r.projs {
			if seq <= cps[p.Name()+r.suffix] {
				continue
			}
			reason := ""
			if derr != nil {
				reason = derr.Error()
			} else if err := p.Apply(ctx, tx, seq, ev); err != nil {
				if !IsPoison(err) {
					return 0, fmt.Errorf("%s: apply seq %d (%s): %w", p.Name(), seq, m.Subject(), err)
				}
				reason = err.Error()
			} else {
				applied++
				continue
			}
			id, typ := m.Headers().Get("ce-id"), m.Headers().Get("ce-type")
			if err := quarantine(ctx, sqlTx, r.db.D, p.Name(), seq, m.Subject(), id, typ, reason, m.Data(), now); err != nil {
				return 0, err
			}
			quarantined++
			r.opts.Logger.Warn("event quarantined", "projection", p.Name(), "seq", seq, "subject", m.Subject(), "reason", reason)
		}
	}
	if err := tx.FlushQueued(ctx); err != nil {
		return 0, fmt.Errorf("write queued rows: %w", err)
	}
	for _, p := range r.projs {
		if be, ok := p.(BatchEnder); ok {
			if err := be.EndBatch(ctx, tx); err != nil {
				return 0, fmt.Errorf("%s: end batch: %w", p.Name(), err)
			}
		}
	}
	for _, p := range r.projs {
		n := p.Name() + r.suffix
		if last > cps[n] {
			if err := advance(ctx, sqlTx, r.db.D, n, cps[n], last, now); err != nil {
				return 0, err
			}
		}
	}
	if r.opts.BeforeCommit != nil {
		if err := r.opts.BeforeCommit(last); err != nil {
			return 0, err
		}
	}
	if err := sqlTx.Commit(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	for _, p := range r.projs {
		n := p.Name() + r.suffix
		cps[n] = max(cps[n], last)
	}
	r.applied.Add(applied)
	r.quarantined.Add(quarantined)
	r.batches.Add(1)
	r.read.Add(uint64(len(batch)))
	r.lastSeq.Store(last)
	if r.opts.AfterCommit != nil {
		if err := r.opts.AfterCommit(last); err != nil {
			return 0, err
		}
	}
	return last, nil
}

// Pause waits until the runner is between batches and holds it there until
// resume is called; the runner then reloads its checkpoints from the store
// (a rebuild may have moved them). Pause is how Rebuild stops a live runner
// of the same process for the final catch-up and swap.
func (r *Runner) Pause(ctx context.Context) (resume func(), err error) {
	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			r.gen.Add(1)
			<-r.sem
		})
	}, nil
}

// Lag returns how many stream sequences the slowest of the runner's
// projections is behind the stream's last message.
func (r *Runner) Lag(ctx context.Context) (uint64, error) {
	last, err := streamLastSeq(ctx, r.js, r.opts.Stream)
	if err != nil {
		return 0, err
	}
	cps, err := Checkpoints(ctx, r.db.R, r.names()...)
	if err != nil {
		return 0, err
	}
	var lag uint64
	for _, cp := range cps {
		if last > cp {
			lag = max(lag, last-cp)
		}
	}
	return lag, nil
}

// Stats are a runner's counters since it was made.
type Stats struct {
	Applied     uint64 // projection applications (an event times the projections it reached)
	Quarantined uint64
	Batches     uint64
	LastSeq     uint64
}

// Stats returns the runner's counters.
func (r *Runner) Stats() Stats {
	return Stats{Applied: r.applied.Load(), Quarantined: r.quarantined.Load(), Batches: r.batches.Load(), LastSeq: r.lastSeq.Load()}
}

func (r *Runner) maintain(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(r.opts.MaintainEvery)
	defer t.Stop()
	for {
		for _, p := range r.projs {
			if m, ok := p.(Maintainer); ok {
				if err := m.Maintain(ctx, r.db); err != nil && ctx.Err() == nil {
					log.Error("projection upkeep failed", "projection", p.Name(), "err", err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func streamLastSeq(ctx context.Context, js jetstream.JetStream, stream string) (uint64, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s info: %w", stream, err)
	}
	return info.State.LastSeq, nil
}
