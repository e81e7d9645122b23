// Package events is Vigil's public contract: the messages Vigil publishes on
// NATS JetStream, the subjects and streams they live on, how their IDs are made
// and how they are encoded as CloudEvents.
//
// Programs that consume Vigil's events import this package and nothing else of
// Vigil's. It depends only on nats.go, the CloudEvents Go SDK and ulid.
//
// # Streams
//
//	SITES         vigil.sites.<bucket>.<site>                 site configuration changes (SiteChange)
//	CHECKS        vigil.checks.<region>.<bucket>.<site>       check commands (CheckCommand)
//	              vigil.checks.<region>.batch.<id>            batches of them (CheckBatch)
//	OBSERVATIONS  vigil.obs.<bucket>.<site>                   what checkers saw (Observation)
//	EVENTS        vigil.events.<bucket>.<site>.<kind>         derived site events (SiteEvent)
//	              vigil.events.region.<region>.<kind>         region impaired / recovered (RegionEvent)
//
// The bucket is Bucket(siteID), FNV-1a 32 of the site ID modulo 64.
//
// # Reading a message
//
//	var ev events.SiteEvent
//	ce, err := events.Decode(msg.Headers(), msg.Data(), &ev)
//
// or, for a message of any type, ReadEvent and a switch on the CloudEvent's
// type.
package events
