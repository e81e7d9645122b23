package checker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/checker/httpcheck"
)

// checkGrace is how long past the spec's timeout a check's context lasts. The
// prober enforces the timeout itself and classifies it; the context is only
// the safety net for a prober that overruns.
const checkGrace = 5 * time.Second

// maxReasonLen bounds the reason sent with a termination.
const maxReasonLen = 240

// handle processes one command on a worker: decode, check (or expire),
// publish the observation, acknowledge. ctx is the work context: it outlives
// Run's context and is canceled only when the shutdown grace period is over.
func (c *Checker) handle(ctx context.Context, j job) {
	c.m.inFlight.Inc()
	defer c.m.inFlight.Dec()

	// The server redelivers a command it has heard nothing about for
	// AckWait. One that waited long on the client gets a progress ack first;
	// one that may be held long gets more while it is held (keepAlive). A
	// batch has progress acknowledgements of its own (openBatch).
	waited := time.Since(j.received)
	cmd := j.cmd
	if j.batch == nil {
		msg := j.msg
		if waited > c.progressEvery {
			_ = msg.InProgress()
			waited = 0
		}
		cmd = new(events.CheckCommand)
		if _, err := events.Decode(msg.Headers(), msg.Data(), cmd); err != nil {
			c.terminate(msg, fmt.Errorf("undecodable check command: %w", err))
			return
		}
		if err := c.validate(msg.Subject(), cmd); err != nil {
			c.terminate(msg, err)
			return
		}
	}
	log := c.commandLog(ctx, cmd)

	now := c.now()
	if !cmd.Deadline.IsZero() && now.After(cmd.Deadline) {
		defer c.keepAlive(j, waited, c.publishTimeout).stop()
		obs := c.observation(cmd, now, httpcheck.Result{
			Class: events.ClassCommandExpired,
			Error: fmt.Sprintf("command expired before it ran: deadline %s, due %s, now %s",
				cmd.Deadline.UTC().Format(time.RFC3339Nano), cmd.DueAt.UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano)),
		})
		if obs == nil {
			c.settlePoison(j, cmd, errors.New("no observation ID can be made"))
			return
		}
		// An expired command is demand the pool did not meet in time: the
		// estimator counts it, so the pool grows instead of shrinking.
		c.est.expired()
		if c.publishAndAck(j, obs, log) {
			c.m.expired.Inc()
			if log.debug() {
				log.Debug("command expired; reported unchecked", "observation_id", obs.ID, "deadline", cmd.Deadline)
			}
		}
		return
	}

	spec := cmd.Check
	timeout := spec.Timeout.Std()
	if timeout <= 0 {
		timeout = httpcheck.DefaultTimeout
	}
	timeout = min(timeout, MaxCheckTimeout)
	spec.Timeout = events.Duration(timeout)
	defer c.keepAlive(j, waited, c.holdBound(timeout, spec.Redirects)).stop()
	// Only sites with the alert policy read (and may write) KVRedirects.
	var chain *chainRef
	if spec.Redirects == events.RedirectAlert {
		chain = c.readChain(ctx, cmd, log)
		spec.LastRedirectChain = chain.accepted
	}

	c.est.started()
	if !cmd.DueAt.IsZero() {
		c.m.lateness.Observe(now.Sub(cmd.DueAt).Seconds())
	}
	checkCtx, cancel := context.WithTimeout(ctx, timeout+checkGrace)
	t0 := time.Now()
	res := c.prober.Check(checkCtx, spec)
	took := time.Since(t0)
	cancel()
	if chain != nil {
		chain.judge(&res)
	}
	if ctx.Err() != nil {
		// Abandoned at the end of the shutdown grace period: the result
		// says nothing about the site. Leave the command to another checker.
		if j.batch != nil {
			j.batch.done(false, 0)
		} else {
			c.handBack([]jetstream.Msg{j.msg})
		}
		log.Warn("check abandoned at shutdown; command handed back")
		return
	}
	ok := res.Class == events.ClassOK
	outcome := "fail"
	if ok {
		outcome = "ok"
	}
	c.m.duration.WithLabelValues(outcome).Observe(took.Seconds())

	if res.StartedAt.IsZero() {
		res.StartedAt = now
	}
	obs := c.observation(cmd, res.StartedAt, res)
	if obs == nil {
		c.settlePoison(j, cmd, errors.New("no observation ID can be made"))
		return
	}
	if c.publishAndAck(j, obs, log) {
		// A worker is held for the check and for publishing and acking its
		// result (the publish was ~20 ms under load in the benchmark), so
		// Little's law needs more than the check. But the publish time grows
		// with contention, and contention with workers: counted whole it ran
		// the pool away (135 to 800+ workers). So the publish counts for at
		// most as long as the check. Failures still stay out.
		c.est.finished(min(time.Since(t0), 2*took), ok)
		if log.debug() {
			log.Debug("checked", "observation_id", obs.ID, "class", obs.Class, "status", obs.StatusCode,
				"took", took, "err", obs.Error)
		}
		if chain != nil && chain.record && ok {
			c.recordChain(ctx, cmd, chain, &res, log)
		}
	}
}

// acceptedChain is the value of a site's key in KVRedirects: the redirect
// chain accepted for the site in one region, the URL it was recorded for and
// when.
type acceptedChain struct {
	URL   string    `json:"url"`
	Chain []string  `json:"chain"`
	At    time.Time `json:"at"`
}

// chainRef is what the check of a site with the alert policy knows of its
// accepted redirect chain.
type chainRef struct {
	key string
	// accepted is the accepted chain when found is set (possibly empty).
	accepted []string
	found    bool
	// record says an ok check's chain becomes the accepted one: there is no
	// usable key (revision 0: none at all; else the revision to replace).
	record   bool
	revision uint64
}

// readChain reads the accepted redirect chain of cmd's site in this region.
// A key recorded for another URL, or unreadable, is no reference and is
// replaced after the next ok check. If the key cannot be read at all the
// check runs without a reference (as with the follow policy) and records
// nothing: the monitor's trouble must not fail the site.
func (c *Checker) readChain(ctx context.Context, cmd *events.CheckCommand, log commandLog) *chainRef {
	ref := &chainRef{key: events.RedirectKey(cmd.SiteID, c.region)}
	kctx, cancel := context.WithTimeout(ctx, c.publishTimeout)
	e, err := c.chains.Get(kctx, ref.key)
	cancel()
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		if cmd.Purpose == events.PurposeVerify {
			return c.otherRegionChain(ctx, cmd, ref, log)
		}
		ref.record = true
		return ref
	case err != nil:
		log.Warn("cannot read the accepted redirect chain; checking without it (redirect changes go unnoticed by this check)",
			"kv", events.KVRedirects, "key", ref.key, "err", err)
		return ref
	}
	var a acceptedChain
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		log.Warn("accepted redirect chain unreadable; the next ok check replaces it",
			"kv", events.KVRedirects, "key", ref.key, "err", err)
		ref.record, ref.revision = true, e.Revision()
		return ref
	}
	if a.URL != cmd.Check.URL {
		// The site's URL changed since: its old chain says nothing.
		ref.record, ref.revision = true, e.Revision()
		return ref
	}
	ref.accepted, ref.found = a.Chain, true
	if ref.accepted == nil {
		ref.accepted = []string{}
	}
	return ref
}

// otherRegionChain is the reference of a verification in a region with no
// accepted chain of its own. Such a region checks the site only when asked to
// confirm an incident, so it has never recorded one: it judges by the chain
// another region accepted (the primary's, in practice the only one with
// scheduled checks), and records nothing, since a verification must not
// accept the very change it is asked to confirm.
func (c *Checker) otherRegionChain(ctx context.Context, cmd *events.CheckCommand, ref *chainRef, log commandLog) *chainRef {
	kctx, cancel := context.WithTimeout(ctx, c.publishTimeout)
	defer cancel()
	lister, err := c.chains.ListKeysFiltered(kctx, events.RedirectSiteFilter(cmd.SiteID))
	if err != nil {
		log.Warn("cannot list the accepted redirect chains; verifying without one",
			"kv", events.KVRedirects, "err", err)
		return ref
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	slices.Sort(keys) // the same choice in every checker
	for _, k := range keys {
		e, err := c.chains.Get(kctx, k)
		if err != nil {
			continue
		}
		var a acceptedChain
		if json.Unmarshal(e.Value(), &a) != nil || a.URL != cmd.Check.URL {
			continue
		}
		ref.accepted, ref.found = a.Chain, true
		if ref.accepted == nil {
			ref.accepted = []string{}
		}
		return ref
	}
	return ref
}

// judge fails an ok result whose site did not redirect when its chain was
// accepted and now does. The Prober compares chains only when the accepted
// one is not empty: an empty LastRedirectChain cannot be told from none.
func (r *chainRef) judge(res *httpcheck.Result) {
	if r.found && len(r.accepted) == 0 && res.Class == events.ClassOK && len(res.RedirectChain) > 0 {
		res.Class = events.ClassRedirectPolicy
		res.Error = fmt.Sprintf("redirect chain changed: was %v, now %v", r.accepted, res.RedirectChain)
	}
}

// recordChain stores the chain of an ok check as the accepted one. It never
// overwrites a chain another check recorded meanwhile: that one stands.
func (c *Checker) recordChain(ctx context.Context, cmd *events.CheckCommand, ref *chainRef, res *httpcheck.Result, log commandLog) {
	seen := res.RedirectChain
	if seen == nil {
		seen = []string{}
	}
	val, err := json.Marshal(acceptedChain{URL: cmd.Check.URL, Chain: seen, At: res.StartedAt.UTC()})
	if err != nil {
		log.Error("encode accepted redirect chain", "err", err)
		return
	}
	kctx, cancel := context.WithTimeout(ctx, c.publishTimeout)
	if ref.revision == 0 {
		_, err = c.chains.Create(kctx, ref.key, val)
	} else {
		_, err = c.chains.Update(kctx, ref.key, val, ref.revision)
	}
	cancel()
	switch {
	case err == nil:
		log.Info("recorded the accepted redirect chain", "kv", events.KVRedirects, "key", ref.key, "chain", seen)
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		log.Debug("accepted redirect chain recorded meanwhile by another check", "key", ref.key)
	default:
		log.Warn("cannot record the accepted redirect chain; the next ok check tries again",
			"kv", events.KVRedirects, "key", ref.key, "err", err)
	}
}

// validate refuses a command that decoded but cannot be acted on: it would
// fail the same way on every delivery, so it is poison too.
func (c *Checker) validate(subject string, cmd *events.CheckCommand) error {
	if err := c.validateCommand(cmd); err != nil {
		return err
	}
	if want := events.CheckSubject(cmd.Region, cmd.SiteID); subject != want {
		return fmt.Errorf("check command %s arrived on %s, belongs on %s", cmd.ID, subject, want)
	}
	return nil
}

// validateCommand is validate without the subject, which a command in a
// batch does not have.
func (c *Checker) validateCommand(cmd *events.CheckCommand) error {
	if cmd.ID == "" {
		return errors.New("check command has no id")
	}
	if err := events.ValidateSiteID(cmd.SiteID); err != nil {
		return fmt.Errorf("check command %s: %w", cmd.ID, err)
	}
	if cmd.Region != c.region {
		return fmt.Errorf("check command %s is for region %q, not %q", cmd.ID, cmd.Region, c.region)
	}
	if want := events.Bucket(cmd.SiteID); cmd.Bucket != want {
		return fmt.Errorf("check command %s has bucket %d, site %s is in bucket %d", cmd.ID, cmd.Bucket, cmd.SiteID, want)
	}
	return nil
}

// terminate quarantines a poison command: the server never redelivers it and
// announces it in a terminated-delivery advisory carrying the reason.
func (c *Checker) terminate(msg jetstream.Msg, cause error) {
	c.m.poison.Inc()
	var seq, delivered uint64
	if md, err := msg.Metadata(); err == nil {
		seq, delivered = md.Sequence.Stream, md.NumDelivered
	}
	reason := "vigil checker: " + cause.Error()
	if len(reason) > maxReasonLen {
		reason = reason[:maxReasonLen]
	}
	err := msg.TermWithReason(reason)
	c.logger.Warn("poison check command terminated", "subject", msg.Subject(), "stream_seq", seq,
		"deliveries", delivered, "err", cause, "term_err", err)
}

// observation builds the observation of cmd from a check result. It returns
// nil if no ID can be made, which only a broken clock can cause; the caller
// then settles the command as poison.
func (c *Checker) observation(cmd *events.CheckCommand, started time.Time, res httpcheck.Result) *events.Observation {
	id, err := c.ids.New(started)
	if err != nil {
		c.logger.Error("make observation id", "command_id", cmd.ID, "err", err)
		return nil
	}
	return &events.Observation{
		ID:            id,
		SiteID:        cmd.SiteID,
		Bucket:        cmd.Bucket,
		Region:        c.region,
		CheckerID:     c.instance,
		CommandID:     cmd.ID,
		Purpose:       cmd.Purpose,
		IncidentID:    cmd.IncidentID,
		ConfigSeq:     cmd.ConfigSeq,
		DueAt:         cmd.DueAt,
		StartedAt:     started,
		Class:         res.Class,
		StatusCode:    res.StatusCode,
		Timings:       res.Timings,
		FinalURL:      res.FinalURL,
		RedirectChain: res.RedirectChain,
		TLS:           res.TLS,
		Error:         res.Error,
	}
}

// publishAndAck makes obs durable on OBSERVATIONS and only then acknowledges
// the command. If the publish fails the command is negatively acknowledged
// with a delay growing with its deliveries, to be checked again. It reports
// whether the observation was published.
//
// The acknowledgement is sent without waiting for the server's reply (Ack,
// not DoubleAck): the observation is already durable when it is sent, so a
// lost acknowledgement only means the command is delivered again after
// AckWait and checked once more, the occasional second check the state
// machine tolerates. Waiting would hold the worker for one more round trip
// per check.
func (c *Checker) publishAndAck(j job, obs *events.Observation, log commandLog) bool {
	out, err := events.Marshal(obs)
	if err != nil {
		// Deterministic: a redelivery would fail the same way.
		c.settlePoison(j, log.cmd, fmt.Errorf("encode observation %s: %w", obs.ID, err))
		return false
	}
	if err = c.publish(out); err != nil {
		c.m.publishErrors.Inc()
		var delay time.Duration
		var nakErr error
		if j.batch != nil {
			delay = c.retryDelay(j.batch.msg)
			j.batch.done(false, delay)
		} else {
			delay = c.retryDelay(j.msg)
			nakErr = j.msg.NakWithDelay(delay)
		}
		log.Warn("publish observation failed; command will be checked again", "observation_id", obs.ID,
			"err", fmt.Errorf("publish to %s: %w", obs.Envelope().NATSSubject, err), "retry_in", delay, "nak_err", nakErr)
		return false
	}
	c.m.checks.WithLabelValues(string(obs.Class)).Inc()
	if j.batch != nil {
		j.batch.done(true, 0)
		return true
	}
	if err := j.msg.Ack(); err != nil {
		// The observation is durable; the command will be redelivered and
		// checked once more, which the state machine tolerates.
		log.Warn("acknowledge command failed; it may be checked again", "observation_id", obs.ID, "err", err)
	}
	return true
}

// settlePoison settles a command that can never give an observation (one
// whose observation cannot be encoded, or a clock that cannot date it): a
// command alone is terminated with the cause; one in a batch is counted and
// logged, and done, so that the batch's other commands are not checked again
// for it.
func (c *Checker) settlePoison(j job, cmd *events.CheckCommand, cause error) {
	if j.batch == nil {
		c.terminate(j.msg, cause)
		return
	}
	c.m.poison.Inc()
	c.logger.Warn("check command in a batch dropped: no observation can be made of it",
		"batch_id", j.batch.id, "site", cmd.SiteID, "command_id", cmd.ID, "err", cause)
	j.batch.done(true, 0)
}

// commandLog logs about one command. Every record carries the site, its
// bucket, the command ID and purpose, so one incident can be followed across
// services. It builds no logger per command unless Debug is enabled: with
// Debug off (the default) the attributes are attached only to the records
// actually written, the rare warnings, rather than to a logger made for
// every command and used by nothing.
type commandLog struct {
	base *slog.Logger
	// with is base with the command's attributes; set only when Debug is
	// enabled, when every command logs.
	with *slog.Logger
	cmd  *events.CheckCommand
}

func (c *Checker) commandLog(ctx context.Context, cmd *events.CheckCommand) commandLog {
	l := commandLog{base: c.logger, cmd: cmd}
	if c.logger.Enabled(ctx, slog.LevelDebug) {
		l.with = c.logger.With(l.attrs()...)
	}
	return l
}

func (l commandLog) attrs() []any {
	return []any{"site", l.cmd.SiteID, "bucket", l.cmd.Bucket, "command_id", l.cmd.ID, "purpose", l.cmd.Purpose}
}

// debug reports whether Debug records are written. Callers test it before
// building a Debug record's arguments, which would otherwise be made for
// nothing.
func (l commandLog) debug() bool { return l.with != nil }

// Debug logs at Debug level; it does nothing when Debug is off.
func (l commandLog) Debug(msg string, args ...any) {
	if l.with != nil {
		l.with.Debug(msg, args...)
	}
}

func (l commandLog) Info(msg string, args ...any)  { l.log(slog.LevelInfo, msg, args) }
func (l commandLog) Warn(msg string, args ...any)  { l.log(slog.LevelWarn, msg, args) }
func (l commandLog) Error(msg string, args ...any) { l.log(slog.LevelError, msg, args) }

func (l commandLog) log(level slog.Level, msg string, args []any) {
	if l.with != nil {
		l.with.Log(context.Background(), level, msg, args...)
		return
	}
	l.base.Log(context.Background(), level, msg, append(l.attrs(), args...)...)
}

// holdBound is the longest handle may hold a command it checks after taking
// it: the check (its timeout, and the context's grace past it), publishing
// the observation and, for the alert redirect policy, reading and writing the
// accepted chain. The acknowledgement does not wait.
func (c *Checker) holdBound(timeout time.Duration, policy events.RedirectPolicy) time.Duration {
	d := timeout + checkGrace + c.publishTimeout
	if policy == events.RedirectAlert {
		d += 2 * c.publishTimeout
	}
	return d
}

// keepAlive starts progress acknowledgements for a command that may be held
// for up to hold after having waited on the client since its delivery (or
// its last progress acknowledgement). A command the server would hear about
// within progressEvery anyway needs none: with the default 10 s timeout a
// check is held ~20 s at most, below the 30 s progressEvery, so only long
// timeouts pay for a timer. It returns nil then; stopping nil does nothing.
func (c *Checker) keepAlive(j job, waited, hold time.Duration) *progress {
	if j.batch != nil || waited+hold <= c.progressEvery {
		return nil
	}
	return startProgress(j.msg, c.progressEvery)
}

// retryDelay is how long a command whose observation could not be published
// waits before redelivery: nakDelay doubled per earlier delivery, capped.
func (c *Checker) retryDelay(msg jetstream.Msg) time.Duration {
	d := c.nakDelay
	if md, err := msg.Metadata(); err == nil {
		for i := uint64(1); i < md.NumDelivered && d < c.maxNakDelay; i++ {
			d *= 2
		}
	}
	return min(d, c.maxNakDelay)
}

// progress sends progress acknowledgements for a held command every interval
// until stopped. It uses a timer, not a goroutine per command.
type progress struct {
	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

func startProgress(msg jetstream.Msg, every time.Duration) *progress {
	p := &progress{}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.t = time.AfterFunc(every, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.stopped {
			return
		}
		_ = msg.InProgress()
		p.t.Reset(every)
	})
	return p
}

func (p *progress) stop() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.stopped = true
	p.t.Stop()
	p.mu.Unlock()
}
