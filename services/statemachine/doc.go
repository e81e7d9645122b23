// Package statemachine is the decision core of Vigil's state machine: for one
// site, it turns observations (what the checkers saw) into site events (Seems
// Down, Down, Recovered, TLS advisories), verification commands for other
// regions and cadence overrides for the scheduler.
//
// # What
//
// SiteState is everything the machine knows about one site. Observe, Expire and
// Close apply one input to it and return an Output: the events to append (in
// order), the verification commands to publish, and the cadence override to set
// or remove. The NATS service around this package reads OBSERVATIONS, keeps a
// SiteState per site (checkpointed to KV as JSON) and writes the Output.
//
// The incident model (brief §4):
//
//	up --first site-side failure--> seems_down (Seems Down, fast retries)
//	seems_down --confirm_after local failures--> verify commands to other regions
//	seems_down --quorum of down votes--> down (Down, same incident)
//	seems_down --local success--> up (Recovered probe_cleared)
//	seems_down --quorum out of reach / deadline passed--> up (Recovered false_alarm)
//	down --recover_after consecutive local successes--> up (Recovered recovered)
//	any open incident --Close--> up (Recovered manual | paused | deleted)
//
// Only the primary region (Env.Regions[0]) drives the lifecycle; the other
// regions only vote when asked. Unknown is not downtime: a monitor-side result
// class, or any result from a region impaired at the time, never opens,
// advances or resets an incident and never counts as a success or a down vote.
// TLS advisories are computed beside the lifecycle and never touch it.
//
// # Why it is pure
//
// The core does no I/O and never reads the clock: every time it uses comes from
// an observation, from a deadline derived from one, or from the caller (Expire,
// Close). Event, incident and command IDs are derived (events.DeriveID) from the
// facts that caused them, and nothing iterates a map into an output. So the same
// observations applied to the same state give byte-identical events in any
// process, at any time: a restarted or second instance reproduces the same IDs,
// which JetStream deduplicates (Nats-Msg-Id) and projections ignore. The state
// is plain JSON-serialisable data, so a checkpoint taken between any two inputs
// and restored continues exactly as an uninterrupted run would.
package statemachine
