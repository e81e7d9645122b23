// Package checker runs the check commands of one region: it pulls them from
// the CHECKS stream, runs each with a Prober (the HTTP engine,
// httpcheck.Checker), and publishes what it saw to OBSERVATIONS.
//
// # Work sharing
//
// Every checker process of a region pulls from one shared durable consumer,
// named by ConsumerName ("checkers-<region>"), filtered on the region's
// commands (events.ChecksRegionFilter). The server hands each command to one
// of them, so starting another process adds capacity and stopping one only
// moves its work to the others. Commands need no order: the CHECKS stream
// keeps at most one pending command per site and region.
//
// # Batches
//
// The scheduler sends the commands of a region that come due together in
// batches (events.CheckBatch, on subjects of their own), so the stream's
// cost per message is paid once for many checks. The dispatcher decodes a
// batch and hands each of its commands to a worker as a job of its own; a
// command runs exactly as one received alone would. The batch's message is
// settled once, by the last of its commands to finish: acknowledged when
// every observation is durable, negatively acknowledged otherwise, so that
// the whole batch is delivered again (its finished commands are then checked
// a second time, which the state machine tolerates). A batch is kept alive
// with progress acknowledgements while it is held. A command of a batch that
// cannot be run is counted as poison and left out; a batch that cannot be
// decoded, or is not for this region, is terminated whole. For prefetch and
// MaxAckPending a batch is one message, however many commands it holds.
//
// # Delivery guarantees
//
// A command is acknowledged only after its observation is durable: the
// observation is published with a JetStream publish (its ID, a fresh ULID, is
// the Nats-Msg-Id) and the command is acknowledged once the PubAck arrives. If
// the publish fails the command is negatively acknowledged with a short delay
// and checked again, so an observation is never lost, at the price of an
// occasional second check. The acknowledgement itself is not waited for: if
// it is lost the command is delivered again after AckWait and checked once
// more, the same occasional second check. A command that cannot be decoded
// (poison) is terminated with a reason, counted and logged; it never holds up
// the others.
// A command found past its Deadline is not checked: a command_expired
// observation (a monitor-side class, never downtime) tells the state machine
// the site was not checked.
//
// # Concurrency
//
// Checks run on a fixed set of worker goroutines fed from an unbuffered
// channel by a single dispatcher that pulls from the consumer. The dispatcher
// only moves messages; decoding, checking, publishing and acknowledging happen
// on the workers, so result handling never starves dispatch. When every worker
// is busy the dispatcher blocks, the client stops asking the server for more
// commands, and the consumer's MaxAckPending bounds what all the instances of
// the region hold: that is the back-pressure, and the backlog waits in the
// stream rather than in memory.
//
// The number of workers follows Little's law: the rate at which checks start
// (smoothed) times the latency of successful checks (smoothed), with 50%
// headroom, clamped to [MinWorkers, MaxWorkers]. The latency of failed checks
// is deliberately left out. A timeout costs the whole check timeout, and when
// many sites fail at once (or the checker's own network is in trouble) feeding
// that latency back into sizing grows the pool, which opens more sockets,
// which causes more timeouts: Jetmon's runaway concurrency. So slow failures
// can keep the pool busy but never make it grow; the pool grows only while
// checks succeed and shrinks only while workers are idle. What cannot be
// checked in time expires and is reported as command_expired, which the
// incident model treats as "unknown", not as downtime.
//
// # Redirect alerts
//
// A site with the alert redirect policy fails with redirect_policy when its
// redirect chain differs from the accepted one. The accepted chain of each
// site and region is kept in the events.KVRedirects bucket: before checking
// such a site the checker reads its region's key and hands the chain to the
// Prober as CheckSpec.LastRedirectChain. With no key yet, or one recorded for
// another URL, the check runs without a reference and, if it is ok, its chain
// (possibly empty) is recorded as the accepted one. A changed chain is never
// recorded: the site keeps failing, so the state machine confirms an incident
// and the operator is told, until the chain reverts or the operator accepts
// the new one by deleting the key (vigil sites accept-redirects). If the key
// cannot be read (the monitor's own trouble) the check runs without a
// reference, as with the follow policy, and the problem is logged: the
// monitor's trouble is never the site's failure. Sites with any other policy
// cause no KV traffic.
//
// # Shutdown
//
// When Run's context is done the dispatcher stops pulling and hands back
// (Nak) the commands it holds but has not started, so other checkers get them
// at once; a batch of which some commands started is handed back when they
// finish. Checks in flight run to completion (they are bounded by their own
// timeout, at most MaxCheckTimeout), their observations are published and
// their commands acknowledged. A check still running after the grace period is
// abandoned and its command left to be redelivered. Nothing is acknowledged
// that was not made durable.
package checker

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/checker/httpcheck"
	"github.com/vigil-dev/vigil/services/ops"
)

// Prober runs one check. *httpcheck.Checker implements it; tests may use
// anything that does. Check must return by the spec's timeout or ctx's
// deadline, whichever is earlier, and must be safe for concurrent use.
type Prober interface {
	Check(ctx context.Context, spec events.CheckSpec) httpcheck.Result
}

// chainStore holds the accepted redirect chains of sites with the alert
// redirect policy: the events.KVRedirects bucket, one key per site and region
// (events.RedirectKey). jetstream.KeyValue implements it.
type chainStore interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
	ListKeysFiltered(ctx context.Context, filters ...string) (jetstream.KeyLister, error)
}

// Defaults of the options.
const (
	DefaultMinWorkers = 8
	DefaultMaxWorkers = 2000
	DefaultPrefetch   = 128
)

// MaxCheckTimeout is the longest a single check may run. A command asking
// for more is run with this timeout, and a command with none with
// httpcheck.DefaultTimeout. The consumer's AckWait is set well above it.
const MaxCheckTimeout = 60 * time.Second

// Consumer settings. AckWait (the first BackOff step) must exceed the longest
// a command can be held: a check of MaxCheckTimeout plus publishing and
// acknowledging; long checks also send progress acknowledgements. A command
// delivered MaxDeliver times without being acknowledged is given up (the
// scheduler's next command for the site replaces it).
const (
	consumerAckWait    = 2 * time.Minute
	consumerMaxDeliver = 5
)

// consumerBackOff is how long the server waits for an acknowledgement on each
// successive delivery. It only applies to deliveries nobody answered (a
// checker that died mid-check); a negative acknowledgement carries its own
// delay.
var consumerBackOff = []time.Duration{2 * time.Minute, 3 * time.Minute, 4 * time.Minute}

// ConsumerName is the durable consumer on CHECKS shared by every checker of
// region: "checkers-<region>".
func ConsumerName(region string) string { return "checkers-" + region }

// Option configures a Checker.
type Option func(*Checker)

// WithRegion sets the region whose commands the Checker runs. Required.
func WithRegion(r string) Option { return func(c *Checker) { c.region = r } }

// WithInstanceID names this checker process in observations (CheckerID) and logs.
// The default is the host name followed by a random suffix, so two processes
// on one host differ.
func WithInstanceID(id string) Option { return func(c *Checker) { c.instance = id } }

// WithMinWorkers sets the fewest concurrent checks (default DefaultMinWorkers).
// It is also how many commands the Checker asks the server for ahead of need:
// the pool never has fewer workers than that, so a command waiting on the
// client is started within about one check duration, well inside AckWait.
func WithMinWorkers(n int) Option { return func(c *Checker) { c.minWorkers = n } }

// WithMaxWorkers sets the most concurrent checks (default DefaultMaxWorkers): the
// ceiling the host can bear in sockets, file descriptors and memory.
func WithMaxWorkers(n int) Option { return func(c *Checker) { c.maxWorkers = n } }

// WithMaxAckPending sets the consumer's MaxAckPending: the most commands
// delivered and not yet acknowledged across every checker of the region.
// When it is reached the server stops delivering, which bounds the work held
// by all the instances together. The default is twice MaxWorkers, room for one
// instance at its ceiling with as much again in transit. The consumer is
// shared, so the last checker to start sets it: configure every instance
// alike, and with several instances raise it toward twice the sum of their
// WithMaxWorkers if they are all expected to run at the ceiling.
func WithMaxAckPending(n int) Option { return func(c *Checker) { c.maxAckPending = n } }

// WithPrefetch sets how many commands the client asks for ahead of need
// (default: the larger of DefaultPrefetch and MinWorkers; never more than 512
// or MaxAckPending).
func WithPrefetch(n int) Option { return func(c *Checker) { c.prefetch = n } }

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(c *Checker) { c.logger = l } }

// WithRegisterer sets where the metrics are registered (default: a private
// registry, i.e. not exported). Several Checkers may share a Registerer: every
// metric carries a region label, and Checkers of the same region add up.
func WithRegisterer(r prometheus.Registerer) Option { return func(c *Checker) { c.reg = r } }

// WithNow sets the clock used to decide whether a command expired, to measure
// lateness and to date command_expired observations (default time.Now). The
// start time of a check that runs is the Prober's.
func WithNow(now func() time.Time) Option { return func(c *Checker) { c.now = now } }

// A Checker runs the check commands of one region. Create it with New and
// call Run once.
type Checker struct {
	js       jetstream.JetStream
	prober   Prober
	region   string
	instance string

	// chains is the KVRedirects bucket, opened by Run (tests may set it
	// before). Only commands of sites with the alert policy touch it.
	chains chainStore

	minWorkers, maxWorkers int
	maxAckPending          int
	// prefetch is how many commands the client asks for ahead of need.
	prefetch int

	logger *slog.Logger
	reg    prometheus.Registerer
	now    func() time.Time
	ids    *events.IDSource
	m      *metrics
	est    *estimator
	size   sizing

	// Timing knobs; tests shorten some of them.
	controlEvery   time.Duration // how often the pool is resized
	nakDelay       time.Duration // first redelivery delay after a failed publish
	maxNakDelay    time.Duration
	publishTimeout time.Duration // one publish, or one KV read or write
	progressEvery  time.Duration // progress acknowledgements while a command is held
	shutdownGrace  time.Duration // how long in-flight checks may finish after ctx is done
	retryEvery     time.Duration // pause before re-creating a lost consumer

	// publish makes an observation durable on OBSERVATIONS (publishDurable;
	// unit tests replace it).
	publish func(*nats.Msg) error

	running atomic.Bool
}

// New returns a Checker that pulls commands through js and runs them with
// prober. It does no I/O; Run creates the consumer.
func New(js jetstream.JetStream, prober Prober, opts ...Option) (*Checker, error) {
	if js == nil || prober == nil {
		return nil, errors.New("checker: a JetStream context and a prober are required")
	}
	c := &Checker{
		js:             js,
		prober:         prober,
		minWorkers:     DefaultMinWorkers,
		maxWorkers:     DefaultMaxWorkers,
		now:            time.Now,
		controlEvery:   time.Second,
		nakDelay:       time.Second,
		maxNakDelay:    30 * time.Second,
		publishTimeout: 5 * time.Second,
		progressEvery:  consumerAckWait / 4,
		shutdownGrace:  MaxCheckTimeout + 10*time.Second,
		retryEvery:     time.Second,
	}
	for _, o := range opts {
		o(c)
	}
	if err := events.ValidateRegion(c.region); err != nil {
		return nil, fmt.Errorf("checker: %w", err)
	}
	if c.minWorkers < 1 || c.maxWorkers < c.minWorkers {
		return nil, fmt.Errorf("checker: workers must satisfy 1 <= min (%d) <= max (%d)", c.minWorkers, c.maxWorkers)
	}
	if c.maxAckPending == 0 {
		c.maxAckPending = 2 * c.maxWorkers
	}
	if c.maxAckPending < 1 {
		return nil, fmt.Errorf("checker: MaxAckPending %d must be positive", c.maxAckPending)
	}
	// Prefetch decides how often the client goes back to the server for
	// commands: at 8 (the default MinWorkers) the pull round trips capped a
	// checker near 900 checks/s on the benchmark (BENCHMARKS.md). A command
	// fetched ahead waits about prefetch/rate for a worker, ~80 ms at 128 and
	// 1,667 checks/s, so a larger batch costs little lateness.
	if c.prefetch == 0 {
		c.prefetch = max(c.minWorkers, DefaultPrefetch)
	}
	c.prefetch = max(1, min(c.prefetch, 512, c.maxAckPending))
	if c.instance == "" {
		c.instance = ops.InstanceID("checker")
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	c.logger = c.logger.With("region", c.region, "checker", c.instance)
	if c.reg == nil {
		c.reg = prometheus.NewRegistry()
	}
	if c.now == nil {
		c.now = time.Now
	}
	m, err := newMetrics(c.reg, c.region)
	if err != nil {
		return nil, err
	}
	c.m = m
	c.ids = events.NewIDSource(rand.Reader)
	c.publish = func(m *nats.Msg) error {
		return publishDurable(js.Conn(), m, events.StreamObservations, c.publishTimeout)
	}
	c.est = newEstimator()
	c.size = sizing{min: c.minWorkers, max: c.maxWorkers, headroom: defaultHeadroom}
	return c, nil
}

// WithRegion returns the region the Checker serves.
func (c *Checker) Region() string { return c.region }

// WithInstanceID returns the name this Checker puts in observations.
func (c *Checker) InstanceID() string { return c.instance }

// consumerConfig is the shared durable consumer of the region.
func (c *Checker) consumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerName(c.region),
		Description:   "Checkers of region " + c.region + ": one work queue shared by every checker process of the region",
		FilterSubject: events.ChecksRegionFilter(c.region),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       consumerAckWait,
		BackOff:       slices.Clone(consumerBackOff),
		MaxDeliver:    consumerMaxDeliver,
		MaxAckPending: c.maxAckPending,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
	}
}

// Run checks commands until ctx is done, then shuts down as the package
// documentation describes. It creates (or updates) the region's consumer and
// opens the KVRedirects bucket first; an error doing so is returned at once. Run returns nil after a
// shutdown caused by ctx, or the error that stopped it. It may be called only
// once.
func (c *Checker) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("checker: Run called twice")
	}
	cons, err := c.js.CreateOrUpdateConsumer(ctx, events.StreamChecks, c.consumerConfig())
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped before it started
		}
		return fmt.Errorf("checker: create consumer %s on %s: %w", ConsumerName(c.region), events.StreamChecks, err)
	}
	if c.chains == nil {
		kv, err := c.js.KeyValue(ctx, events.KVRedirects)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("checker: open kv %s: %w", events.KVRedirects, err)
		}
		c.chains = kv
	}

	// Checks, publishes and acknowledgements run under workCtx, which is not
	// canceled with ctx: in-flight work finishes after shutdown begins.
	// abortWork cancels it once the grace period is over.
	workCtx, abortWork := context.WithCancel(context.WithoutCancel(ctx))
	defer abortWork()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()

	jobs := make(chan job)
	p := newPool(jobs, func(j job) { c.handle(workCtx, j) }, c.maxWorkers, c.m.poolSize)
	p.resize(c.minWorkers)
	ctrlDone := make(chan struct{})
	go func() {
		defer close(ctrlDone)
		c.control(runCtx, p)
	}()
	c.logger.Info("checker running", "consumer", ConsumerName(c.region), "min_workers", c.minWorkers,
		"max_workers", c.maxWorkers, "max_ack_pending", c.maxAckPending, "prefetch", c.prefetch)

	runErr := c.dispatch(runCtx, cons, jobs)
	stop()
	// The controller must be gone before the pool is waited for: a resize
	// starting a worker (WaitGroup.Add) while Wait runs is a race.
	<-ctrlDone
	close(jobs)

	done := make(chan struct{})
	go func() {
		p.wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(c.shutdownGrace):
		c.logger.Warn("checks still running after the shutdown grace period; abandoning them (their commands will be redelivered)",
			"grace", c.shutdownGrace)
		abortWork()
		<-done
	}
	c.logger.Info("checker stopped")
	return runErr
}

// job is a command handed from the dispatcher to a worker: a message holding
// one command, which the worker decodes, or one command of a batch, decoded
// by the dispatcher.
type job struct {
	msg jetstream.Msg // a single command's message; nil for a batch's command
	// batch and cmd are set for a command that came in a batch.
	batch *batchMsg
	cmd   *events.CheckCommand
	// received is when the dispatcher got the message from the client.
	received time.Time
}

// dispatch pulls commands and hands each to an idle worker, blocking while
// none is idle. It returns nil when ctx is done, after handing back the
// commands it received but did not hand over, or an error if pulling became
// impossible (the connection closed).
func (c *Checker) dispatch(ctx context.Context, cons jetstream.Consumer, jobs chan<- job) error {
	for {
		// A short expiry and heartbeat re-issue a pull request the server
		// lost within seconds; with the defaults (30 s expiry, 15 s
		// heartbeat) the benchmark saw the checker stall for 30 s at a time
		// while thousands of commands waited.
		it, err := cons.Messages(jetstream.PullMaxMessages(c.prefetch),
			jetstream.PullExpiry(5*time.Second), jetstream.PullHeartbeat(time.Second))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, nats.ErrConnectionClosed) {
				return fmt.Errorf("checker: pull commands: %w", err)
			}
			c.logger.Warn("cannot pull commands; retrying", "err", err)
			if cons, err = c.recreateConsumer(ctx); err != nil {
				return nil // ctx done
			}
			continue
		}
		// On shutdown, Drain stops pulling but lets Next return what the
		// client already holds, so it can be handed back.
		stopDrain := context.AfterFunc(ctx, it.Drain)
		held, err := c.pullLoop(ctx, it, jobs)
		stopDrain()
		it.Stop()
		c.handBack(held)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, jetstream.ErrConnectionClosed) {
			return fmt.Errorf("checker: pull commands: %w", err)
		}
		c.logger.Warn("command subscription ended; re-creating it", "err", err)
		if cons, err = c.recreateConsumer(ctx); err != nil {
			return nil
		}
	}
}

// pullLoop hands messages from it to workers until the iterator closes. It
// returns the error that ended it (nil after ctx is done) and the messages
// received after ctx was done, which the caller hands back once the
// subscription is gone.
func (c *Checker) pullLoop(ctx context.Context, it jetstream.MessagesContext, jobs chan<- job) ([]jetstream.Msg, error) {
	var held []jetstream.Msg
	for {
		var msg jetstream.Msg
		var err error
		if ctx.Err() != nil {
			// Draining: take what is buffered, but do not wait long for
			// the subscription to wind down.
			msg, err = it.Next(jetstream.NextMaxWait(time.Second))
		} else {
			msg, err = it.Next()
		}
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return held, nil
		case errors.Is(err, jetstream.ErrNoHeartbeat):
			// The server went quiet for a while; the iterator asks again.
			c.m.pullStalls.Inc()
			c.logger.Warn("missed heartbeats from the command consumer; pulling again", "err", err)
			continue
		case errors.Is(err, jetstream.ErrMsgIteratorClosed),
			errors.Is(err, jetstream.ErrConsumerDeleted),
			errors.Is(err, jetstream.ErrBadRequest),
			errors.Is(err, jetstream.ErrConsumerNotFound):
			return held, err
		default:
			c.logger.Warn("pulling commands", "err", err)
			continue
		}
		if ctx.Err() != nil {
			held = append(held, msg)
			continue
		}
		received := time.Now()
		if !events.IsCheckBatchSubject(msg.Subject()) {
			if !c.hand(ctx, jobs, job{msg: msg, received: received}) {
				held = append(held, msg)
			}
			continue
		}
		batch := c.openBatch(msg, received)
		for i, j := range batch {
			if c.hand(ctx, jobs, j) {
				continue
			}
			if i == 0 {
				// Nothing of it started: hand it back whole.
				j.batch.progress.stop()
				held = append(held, msg)
			} else {
				j.batch.release(len(batch) - i)
			}
			break
		}
	}
}

// hand gives j to an idle worker, waiting for one if every worker is busy.
// It reports false if ctx was done first.
func (c *Checker) hand(ctx context.Context, jobs chan<- job, j job) bool {
	select {
	case jobs <- j:
		return true
	default:
	}
	// Every worker is busy: wait, and tell the controller how long.
	waitStart := time.Now()
	select {
	case jobs <- j:
		c.est.dispatchWaited(time.Since(waitStart))
		return true
	case <-ctx.Done():
		c.est.dispatchWaited(time.Since(waitStart))
		return false
	}
}

// handBack returns commands this checker received but will not start, so the
// server delivers them to another checker now rather than after AckWait. It
// must be called after the subscription is gone: a command handed back while
// this checker's pull request is still open would come straight back to it,
// burning a delivery each time. The flush makes sure the server has seen the
// unsubscription before the negative acknowledgements.
func (c *Checker) handBack(msgs []jetstream.Msg) {
	if len(msgs) == 0 {
		return
	}
	if err := c.js.Conn().FlushTimeout(c.publishTimeout); err != nil {
		c.logger.Debug("flush before handing back commands", "err", err)
	}
	for _, msg := range msgs {
		if err := msg.Nak(); err != nil {
			c.logger.Debug("hand back command", "subject", msg.Subject(), "err", err)
		}
	}
	c.logger.Info("handed back commands not started", "count", len(msgs))
}

// recreateConsumer waits a moment and re-creates the consumer (after it was
// deleted, say). It returns an error only when ctx is done.
func (c *Checker) recreateConsumer(ctx context.Context) (jetstream.Consumer, error) {
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(c.retryEvery):
		}
		cons, err := c.js.CreateOrUpdateConsumer(ctx, events.StreamChecks, c.consumerConfig())
		if err == nil {
			return cons, nil
		}
		c.logger.Warn("re-create command consumer", "consumer", ConsumerName(c.region), "err", err)
	}
}

// control resizes the pool every controlEvery until ctx is done.
func (c *Checker) control(ctx context.Context, p *pool) {
	t := time.NewTicker(c.controlEvery)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s := c.est.tick(now.Sub(last))
			last = now
			cur := p.size()
			next := c.size.next(cur, s)
			if next != cur {
				p.resize(next)
				c.logger.Debug("worker pool resized", "from", cur, "to", next,
					"rate", s.rate, "ok_latency", s.okLatency, "saturated", s.saturated)
			}
		}
	}
}
