package main

import (
	"context"
	"fmt"
)

// runChecker is being written (issue 4).
func runChecker(_ context.Context, c *cli, _ []string) int {
	fmt.Fprintln(c.stderr, "vigil checker: not yet available")
	return exitError
}
