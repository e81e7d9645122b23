package main

import (
	"context"
	"fmt"
)

// runSites is being written (issue 4).
func runSites(_ context.Context, c *cli, _ []string) int {
	fmt.Fprintln(c.stderr, "vigil sites: not yet available")
	return exitError
}
