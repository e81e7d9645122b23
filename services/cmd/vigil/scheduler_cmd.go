package main

import (
	"context"
	"fmt"
)

// runScheduler is being written (issue 4).
func runScheduler(_ context.Context, c *cli, _ []string) int {
	fmt.Fprintln(c.stderr, "vigil scheduler: not yet available")
	return exitError
}
