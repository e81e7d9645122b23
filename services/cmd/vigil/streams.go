package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vigil-dev/vigil/services/config"
	"github.com/vigil-dev/vigil/services/topology"
)

func runStreams(ctx context.Context, c *cli, args []string) int {
	if len(args) == 0 || (args[0] != "apply" && args[0] != "status") {
		fmt.Fprintln(c.stderr, "usage: vigil streams apply|status [--nats URL]")
		return exitUsage
	}
	sub := args[0]
	cfg, _, logger, code := c.setup("streams "+sub, config.Service, nil, args[1:])
	if code >= 0 {
		return code
	}
	nc, js, ok := c.connect(cfg, "vigil-streams", logger)
	if !ok {
		return exitError
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if sub == "status" {
		st, err := topology.Status(ctx, js)
		if err != nil {
			fmt.Fprintln(c.stderr, "vigil:", err)
			return exitError
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "STREAM\tMESSAGES\tBYTES\tSUBJECTS\tCONSUMERS\tFIRST SEQ\tLAST SEQ\t")
		for _, s := range st {
			if !s.Exists {
				fmt.Fprintf(tw, "%s\tmissing: run vigil streams apply\t\t\t\t\t\t\n", s.Name)
				continue
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%d\t\n", s.Name, s.Messages, config.FormatSize(int64(s.Bytes)), s.Subjects, s.Consumers, s.FirstSeq, s.LastSeq)
		}
		tw.Flush()
		return exitOK
	}
	results, err := topology.Apply(ctx, js, topology.FromConfig(cfg))
	printResults(c, results)
	if err != nil {
		fmt.Fprintln(c.stderr, "vigil:", err)
		return exitError
	}
	for _, r := range results {
		if len(r.Drift) > 0 {
			fmt.Fprintln(c.stderr, "vigil: some settings differ and cannot be changed in place; see docs/streams.md (Migrations)")
			return exitError
		}
	}
	return exitOK
}

func printResults(c *cli, results []topology.Result) {
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, r.Action, strings.Join(r.Changed, "; "))
		for _, d := range r.Drift {
			fmt.Fprintf(tw, "%s\tDRIFT\t%s\n", r.Name, d)
		}
	}
	tw.Flush()
}
