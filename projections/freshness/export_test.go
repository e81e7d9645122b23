package freshness

import "context"

// Tick runs one of Run's ticks: a freshness flush, or a rollup flush when
// RollupInterval has passed. Tests drive the schedule with it instead of
// waiting for a ticker.
func (a *Applier) Tick(ctx context.Context) error { return a.tick(ctx) }
