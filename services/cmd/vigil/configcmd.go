package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/vigil-dev/vigil/services/config"
)

func runConfig(_ context.Context, c *cli, args []string) int {
	if len(args) == 0 || args[0] != "validate" {
		fmt.Fprintln(c.stderr, "usage: vigil config validate [--dev] [--config FILE] [flags]")
		return exitUsage
	}
	args = args[1:]
	profile := config.Service
	for i, a := range args {
		if a == "--dev" || a == "-dev" {
			profile = config.Dev
			args = append(args[:i:i], args[i+1:]...)
			break
		}
	}
	fs := flag.NewFlagSet("config validate", flag.ContinueOnError)
	cfg, _, _, code := c.setup("config", profile, fs, args)
	if code >= 0 {
		return code
	}
	if err := cfg.WriteYAML(c.stdout); err != nil {
		fmt.Fprintln(c.stderr, "vigil:", err)
		return exitError
	}
	return exitOK
}
