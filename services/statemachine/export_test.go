package statemachine

import "time"

// WithRetryPolicy shortens how a bucket retries an observation whose effects
// failed: at most attempts times, waiting delays between them.
func WithRetryPolicy(attempts int, delays ...time.Duration) Option {
	return func(o *options) { o.retry = retryPolicy{attempts: attempts, delays: delays} }
}
