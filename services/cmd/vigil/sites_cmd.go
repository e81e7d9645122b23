package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vigil-dev/vigil/events"
	"github.com/vigil-dev/vigil/services/config"
	"github.com/vigil-dev/vigil/services/sites"
)

// Time limits of the sites commands: one site, or every site (list, apply).
const (
	sitesOpTimeout   = time.Minute
	sitesBulkTimeout = 10 * time.Minute
)

func sitesUsage(c *cli) {
	fmt.Fprint(c.stderr, `usage: vigil sites <command> [flags] [--nats URL]

Commands:
  add URL [flags]                       register a site and print its ID (vigil sites add --help)
  list [--json] [--deleted]             list sites: ID, URL, INTERVAL, STATE, LABELS
  pause ID | resume ID | delete ID      pause or resume a site's checks, or delete it
  accept-redirects ID [--site-region R] accept a changed redirect chain of a site with
                                        redirects: alert (every region unless one is given)
  apply -f sites.yaml [--prune] [--dry-run]
                                        make the registry match a site file; --prune deletes
                                        sites the file does not name
`)
}

// runSites is `vigil sites`: the operator's commands on the site registry.
// They talk to NATS directly (--nats), so they work whether or not an API
// server runs.
func runSites(ctx context.Context, c *cli, args []string) int {
	if len(args) == 0 {
		sitesUsage(c)
		return exitUsage
	}
	switch args[0] {
	case "add":
		return sitesAdd(ctx, c, args[1:])
	case "list":
		return sitesList(ctx, c, args[1:])
	case "pause", "resume", "delete":
		return sitesChange(ctx, c, args[0], args[1:])
	case "apply":
		return sitesApply(ctx, c, args[1:])
	case "accept-redirects":
		return sitesAcceptRedirects(ctx, c, args[1:])
	case "help", "-h", "--help":
		sitesUsage(c)
		return exitOK
	}
	fmt.Fprintf(c.stderr, "vigil sites: unknown command %q; run vigil sites help\n", args[0])
	return exitUsage
}

// sitesFailure prints err, one line per problem, and returns the exit code:
// exitUsage for invalid input, exitError for anything else.
func sitesFailure(c *cli, cmd string, err error) int {
	for line := range strings.SplitSeq(err.Error(), "\n") {
		if line != "" {
			fmt.Fprintf(c.stderr, "vigil %s: %s\n", cmd, line)
		}
	}
	if sites.IsInvalid(err) {
		return exitUsage
	}
	return exitError
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// durationFlag is a duration flag whose zero value means "the default",
// which its usage names.
type durationFlag struct{ p *events.Duration }

func (d durationFlag) String() string {
	if d.p == nil || *d.p == 0 {
		return ""
	}
	return d.p.String()
}
func (d durationFlag) Set(v string) error { return d.p.UnmarshalText([]byte(v)) }

// statusFlag is a repeatable HTTP status flag.
type statusFlag []int

func (l *statusFlag) String() string { return fmt.Sprint([]int(*l)) }
func (l *statusFlag) Set(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil {
		return fmt.Errorf("%q is not a number", v)
	}
	*l = append(*l, n)
	return nil
}

// pairFlag is a repeatable "key<sep>value" flag.
type pairFlag struct {
	sep  string
	form string
	m    map[string]string
}

func (p *pairFlag) String() string { return "" }
func (p *pairFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, p.sep)
	k, val = strings.TrimSpace(k), strings.TrimSpace(val)
	if !ok || k == "" {
		return fmt.Errorf("%q: want %s", v, p.form)
	}
	if p.m == nil {
		p.m = map[string]string{}
	}
	if _, dup := p.m[k]; dup {
		return fmt.Errorf("%s given twice", k)
	}
	p.m[k] = val
	return nil
}

// regionFlag is what `vigil sites add --region` is registered as: the
// configuration already owns --region (a checker's own region), and one flag
// set cannot hold two flags of one name, so the command's --region arguments
// are renamed before parsing.
const regionFlag = "site-region"

// renameRegionFlags rewrites --region / -region (with a separate or an
// attached value) to --site-region, up to a "--" that ends the flags.
func renameRegionFlags(args []string) []string {
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		for _, prefix := range []string{"--region", "-region"} {
			if a == prefix || strings.HasPrefix(a, prefix+"=") {
				a = "--" + regionFlag + strings.TrimPrefix(a, prefix)
				break
			}
		}
		out = append(out, a)
	}
	return out
}

func sitesAdd(ctx context.Context, c *cli, args []string) int {
	const cmd = "sites add"
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: vigil sites add URL [flags]\n\nRegisters a site and prints its ID. Unset options take their defaults.\n\nFlags:")
		fs.PrintDefaults()
	}
	var (
		site                         events.Site
		headers                      = pairFlag{sep: ":", form: "'Name: value'"}
		labels                       = pairFlag{sep: "=", form: "key=value"}
		keywords, forbidden, regions listFlag
		statuses                     statusFlag
		noTLSVerify                  bool
		redirects                    string
		confirm, recover, quorum     int
	)
	fs.StringVar(&site.ID, "id", "", "site ID, 1 to 64 of A-Z a-z 0-9 _ - (default: a new ULID)")
	fs.Var(durationFlag{&site.Interval}, "interval", "check interval, 10s to 24h (default 5m)")
	fs.Var(durationFlag{&site.Timeout}, "timeout", "check timeout, 1s to 60s and below the interval (default 10s)")
	fs.StringVar(&site.Method, "method", "", "GET or HEAD (default GET)")
	fs.Var(&headers, "header", "request header 'Name: value' (repeatable)")
	fs.Var(&statuses, "expect-status", "status code that counts as up (repeatable; default: any below 400)")
	fs.Var(&keywords, "keyword", "text the page must contain (repeatable; needs GET)")
	fs.Var(&forbidden, "forbidden-keyword", "text the page must not contain (repeatable; needs GET)")
	fs.StringVar(&redirects, "redirects", "", "redirect policy: follow (up to 10 hops), fail, or alert when the chain changes (default follow)")
	fs.BoolVar(&noTLSVerify, "no-tls-verify", false, "do not verify the TLS certificate")
	fs.Var(durationFlag{&site.RetryInterval}, "retry-interval", "check interval while an incident is open, 5s to the interval (default 30s)")
	fs.IntVar(&confirm, "confirm-after", 0, "consecutive local failures before other regions verify, 1 to 20 (default 3)")
	fs.IntVar(&recover, "recover-after", 0, "consecutive successes that close a confirmed incident, 1 to 20 (default 2)")
	fs.IntVar(&quorum, "quorum", 0, "regions other than the primary that must confirm a failure, 1 to 10 (default 2)")
	fs.Var(&regions, regionFlag, "region to verify from (repeatable, also as --region; default: every region)")
	fs.Var(&labels, "label", "label key=value (repeatable)")
	cfg, pos, logger, code := c.setup(cmd, config.Service, fs, renameRegionFlags(args))
	if code >= 0 {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintln(c.stderr, "vigil sites add: want one URL; usage: vigil sites add URL [flags]")
		return exitUsage
	}
	site.URL = pos[0]
	site.Headers, site.Labels = headers.m, labels.m
	site.Keywords, site.ForbiddenKeywords, site.Regions = keywords, forbidden, regions
	site.ExpectStatus = statuses
	site.Redirects = events.RedirectPolicy(redirects)
	site.ConfirmAfter, site.RecoverAfter, site.Quorum = confirm, recover, quorum
	if noTLSVerify {
		site.TLSVerify = new(bool)
	}
	// Refuse bad input before connecting, so it reads as such even with
	// NATS down.
	if _, err := sites.Normalize(site); err != nil {
		return sitesFailure(c, cmd, err)
	}

	nc, js, ok := c.connect(cfg, "vigil-sites", logger)
	if !ok {
		return exitError
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, sitesOpTimeout)
	defer cancel()
	cur, err := sites.NewRegistry(js, sites.WithActor("cli")).Create(ctx, site)
	if err != nil {
		return sitesFailure(c, cmd, err)
	}
	fmt.Fprintln(c.stdout, cur.Site.ID)
	return exitOK
}

func sitesList(ctx context.Context, c *cli, args []string) int {
	const cmd = "sites list"
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print one JSON object per site (site, paused, deleted, seq, change, at, actor)")
	withDeleted := fs.Bool("deleted", false, "include deleted sites")
	cfg, pos, logger, code := c.setup(cmd, config.Service, fs, args)
	if code >= 0 {
		return code
	}
	if len(pos) != 0 {
		fmt.Fprintf(c.stderr, "vigil sites list: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	nc, js, ok := c.connect(cfg, "vigil-sites", logger)
	if !ok {
		return exitError
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, sitesBulkTimeout)
	defer cancel()
	var opts []sites.ListOption
	if *withDeleted {
		opts = append(opts, sites.IncludeDeleted())
	}
	list, err := sites.NewRegistry(js).List(ctx, opts...)
	if err != nil && !errors.Is(err, sites.ErrCorrupt) {
		return sitesFailure(c, cmd, err)
	}
	if *asJSON {
		enc := json.NewEncoder(c.stdout)
		for _, cur := range list {
			if err := enc.Encode(cur); err != nil {
				fmt.Fprintln(c.stderr, "vigil sites list:", err)
				return exitError
			}
		}
	} else {
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tURL\tINTERVAL\tSTATE\tLABELS")
		for _, cur := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", cur.Site.ID, cur.Site.URL, cur.Site.Interval, siteState(cur), formatLabels(cur.Site.Labels))
		}
		tw.Flush()
	}
	if err != nil {
		// Unreadable messages: the readable sites are printed, the rest named.
		return sitesFailure(c, cmd, err)
	}
	return exitOK
}

func siteState(cur sites.Current) string {
	switch {
	case cur.Deleted:
		return "deleted"
	case cur.Paused:
		return "paused"
	}
	return "active"
}

func formatLabels(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ",")
}

// siteIDArg returns the one site ID a command takes. On failure it reports
// on stderr, with the usage, and ok is false: the command exits with
// exitUsage.
func (c *cli) siteIDArg(cmd, usage string, pos []string) (id string, ok bool) {
	if len(pos) != 1 {
		fmt.Fprintf(c.stderr, "vigil %s: want one site ID; usage: %s\n", cmd, usage)
		return "", false
	}
	if err := events.ValidateSiteID(pos[0]); err != nil {
		fmt.Fprintf(c.stderr, "vigil %s: %v\n", cmd, err)
		return "", false
	}
	return pos[0], true
}

func sitesChange(ctx context.Context, c *cli, verb string, args []string) int {
	cmd := "sites " + verb
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: vigil sites %s ID [flags]\n\nFlags:\n", verb)
		fs.PrintDefaults()
	}
	cfg, pos, logger, code := c.setup(cmd, config.Service, fs, args)
	if code >= 0 {
		return code
	}
	id, ok := c.siteIDArg(cmd, "vigil sites "+verb+" ID", pos)
	if !ok {
		return exitUsage
	}
	nc, js, ok := c.connect(cfg, "vigil-sites", logger)
	if !ok {
		return exitError
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, sitesOpTimeout)
	defer cancel()
	reg := sites.NewRegistry(js, sites.WithActor("cli"))
	var (
		changed bool
		err     error
	)
	switch verb {
	case "pause":
		_, changed, err = reg.Pause(ctx, id)
	case "resume":
		_, changed, err = reg.Resume(ctx, id)
	default:
		_, changed, err = reg.Delete(ctx, id)
	}
	if err != nil {
		return sitesFailure(c, cmd, err)
	}
	if verb == "delete" {
		// A deleted site's accepted redirect chains go too (best effort):
		// a site re-created under the same ID starts afresh.
		forgetRedirects(ctx, c, cmd, js, []string{id})
	}
	if changed {
		fmt.Fprintf(c.stdout, "%s %s\n", map[string]string{"pause": "paused", "resume": "resumed", "delete": "deleted"}[verb], id)
	} else {
		fmt.Fprintf(c.stdout, "%s is already %s; nothing changed\n", id, map[string]string{"pause": "paused", "resume": "running", "delete": "deleted"}[verb])
	}
	return exitOK
}

func sitesApply(ctx context.Context, c *cli, args []string) int {
	const cmd = "sites apply"
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: vigil sites apply -f sites.yaml [--prune] [--dry-run]\n\nMakes the registry match the file: creates the sites it adds, updates the ones\nit changes and, with --prune, deletes the ones it no longer names. Applying the\nsame file again changes nothing. An invalid file is refused whole.\n\nFlags:")
		fs.PrintDefaults()
	}
	path := fs.String("f", "", "site file (YAML) to apply")
	prune := fs.Bool("prune", false, "delete sites the file does not name")
	dryRun := fs.Bool("dry-run", false, "print what would change and publish nothing")
	cfg, pos, logger, code := c.setup(cmd, config.Service, fs, args)
	if code >= 0 {
		return code
	}
	if *path == "" || len(pos) != 0 {
		fmt.Fprintln(c.stderr, "vigil sites apply: want -f FILE; usage: vigil sites apply -f sites.yaml [--prune] [--dry-run]")
		return exitUsage
	}
	f, err := os.Open(*path)
	if err != nil {
		fmt.Fprintf(c.stderr, "vigil %s: %v\n", cmd, err)
		return exitUsage
	}
	desired, err := sites.ParseFile(f)
	f.Close()
	if err == nil {
		// Validate before connecting, so a bad file reads as such even with
		// NATS down. Plan validates again against the registry.
		_, err = sites.NormalizeAll(desired)
	}
	if err != nil {
		for line := range strings.SplitSeq(err.Error(), "\n") {
			fmt.Fprintf(c.stderr, "vigil %s: %s: %s\n", cmd, *path, line)
		}
		return exitUsage
	}

	nc, js, ok := c.connect(cfg, "vigil-sites", logger)
	if !ok {
		return exitError
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, sitesBulkTimeout)
	defer cancel()
	reg := sites.NewRegistry(js, sites.WithActor("apply:"+*path))
	plan, err := reg.Plan(ctx, desired, *prune)
	if err != nil {
		return sitesFailure(c, cmd, err)
	}
	if *dryRun {
		printSteps(c, plan.Steps, -1)
		fmt.Fprintf(c.stdout, "dry run, nothing published: %d to create, %d to update, %d to delete, %d unchanged\n",
			plan.Count(sites.ActionCreate), plan.Count(sites.ActionUpdate), plan.Count(sites.ActionDelete), plan.Count(sites.ActionUnchanged))
		return exitOK
	}
	res, applyErr := reg.ApplyPlan(ctx, plan)
	var deleted []string
	for _, cur := range res.Published {
		if cur.Deleted {
			deleted = append(deleted, cur.Site.ID)
		}
	}
	forgetRedirects(ctx, c, cmd, js, deleted)
	// Report exactly what was published: the first changes of the plan, up
	// to an error.
	printSteps(c, plan.Steps, len(res.Published))
	fmt.Fprintf(c.stdout, "%d created, %d updated, %d deleted, %d unchanged\n", res.Created, res.Updated, res.Deleted, plan.Count(sites.ActionUnchanged))
	if applyErr != nil {
		if errors.Is(applyErr, sites.ErrConflict) {
			applyErr = fmt.Errorf("%w; run apply again to continue from the new state", applyErr)
		}
		return sitesFailure(c, cmd, applyErr)
	}
	return exitOK
}

// printSteps prints one line per change of a plan, the first limit of them
// (all if limit is negative).
func printSteps(c *cli, steps []sites.Step, limit int) {
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	n := 0
	for _, s := range steps {
		if s.Action == sites.ActionUnchanged {
			continue
		}
		if limit >= 0 && n >= limit {
			break
		}
		n++
		note := ""
		switch {
		case s.Action == sites.ActionUpdate:
			note = "changed: " + strings.Join(s.Changed, ", ")
		case s.Recreate:
			note = "re-created after deletion"
		}
		if note != "" {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Action, s.Site.ID, s.Site.URL, note)
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Action, s.Site.ID, s.Site.URL)
		}
	}
	tw.Flush()
}

// sitesAcceptRedirects is `vigil sites accept-redirects ID [--site-region R]`:
// it deletes the site's accepted redirect chain in KVRedirects, in one region
// or in all, so the next successful check of each region records the chain it
// sees as the accepted one. Until then a site with redirects: alert whose
// chain changed keeps failing with redirect_policy.
func sitesAcceptRedirects(ctx context.Context, c *cli, args []string) int {
	const cmd = "sites accept-redirects"
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: vigil sites accept-redirects ID [--site-region R]\n\nAccepts the current redirect chain of a site with redirects: alert: forgets the\naccepted chain, in every region or in R only, so the next successful check\nrecords the chain it sees.\n\nFlags:")
		fs.PrintDefaults()
	}
	region := fs.String(regionFlag, "", "only this region (also as --region; default: every region)")
	cfg, pos, logger, code := c.setup(cmd, config.Service, fs, renameRegionFlags(args))
	if code >= 0 {
		return code
	}
	id, ok := c.siteIDArg(cmd, "vigil sites accept-redirects ID [--site-region R]", pos)
	if !ok {
		return exitUsage
	}
	if *region != "" {
		if err := events.ValidateRegion(*region); err != nil {
			fmt.Fprintf(c.stderr, "vigil %s: %v\n", cmd, err)
			return exitUsage
		}
	}
	nc, js, ok := c.connect(cfg, "vigil-sites", logger)
	if !ok {
		return exitError
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, sitesOpTimeout)
	defer cancel()
	cur, err := sites.NewRegistry(js).Get(ctx, id)
	if err != nil {
		return sitesFailure(c, cmd, err)
	}
	if cur.Site.Redirects != events.RedirectAlert {
		policy := cur.Site.Redirects
		if policy == "" {
			policy = events.RedirectFollow
		}
		fmt.Fprintf(c.stderr, "vigil %s: note: %s has redirects: %s; only alert keeps an accepted chain\n", cmd, id, policy)
	}
	kv, err := js.KeyValue(ctx, events.KVRedirects)
	if err != nil {
		fmt.Fprintf(c.stderr, "vigil %s: open kv %s: %v (run vigil streams apply)\n", cmd, events.KVRedirects, err)
		return exitError
	}
	regions, err := deleteRedirects(ctx, kv, id, *region)
	if err != nil {
		fmt.Fprintf(c.stderr, "vigil %s: %v\n", cmd, err)
		return exitError
	}
	switch {
	case len(regions) > 0:
		fmt.Fprintf(c.stdout, "accepted redirect chain of %s forgotten in %s; the next successful check there records the new one\n",
			id, strings.Join(regions, ", "))
	case *region != "":
		fmt.Fprintf(c.stdout, "%s has no accepted redirect chain in %s; nothing changed\n", id, *region)
	default:
		fmt.Fprintf(c.stdout, "%s has no accepted redirect chain; nothing changed\n", id)
	}
	return exitOK
}

// deleteRedirects deletes a site's accepted redirect chains in KVRedirects:
// the one of region, or every region's when region is empty. It returns the
// regions whose chain it deleted, sorted.
func deleteRedirects(ctx context.Context, kv jetstream.KeyValue, siteID, region string) ([]string, error) {
	var keys []string
	if region != "" {
		key := events.RedirectKey(siteID, region)
		_, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s in kv %s: %w", key, events.KVRedirects, err)
		}
		keys = []string{key}
	} else {
		l, err := kv.ListKeysFiltered(ctx, events.RedirectSiteFilter(siteID))
		if err != nil {
			return nil, fmt.Errorf("list the keys of %s in kv %s: %w", siteID, events.KVRedirects, err)
		}
		for k := range l.Keys() {
			keys = append(keys, k)
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("list the keys of %s in kv %s: %w", siteID, events.KVRedirects, err)
		}
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	prefix := events.RedirectKey(siteID, "")
	var regions []string
	for _, key := range keys {
		if err := kv.Delete(ctx, key); err != nil {
			return regions, fmt.Errorf("delete %s in kv %s: %w", key, events.KVRedirects, err)
		}
		regions = append(regions, strings.TrimPrefix(key, prefix))
	}
	return regions, nil
}

// forgetRedirects deletes the accepted redirect chains of deleted sites. It
// is best effort: the sites are deleted whatever happens here, and a failure
// is only reported.
func forgetRedirects(ctx context.Context, c *cli, cmd string, js jetstream.JetStream, ids []string) {
	if len(ids) == 0 {
		return
	}
	kv, err := js.KeyValue(ctx, events.KVRedirects)
	if err != nil {
		fmt.Fprintf(c.stderr, "vigil %s: warning: accepted redirect chains not removed: open kv %s: %v\n", cmd, events.KVRedirects, err)
		return
	}
	for _, id := range ids {
		if _, err := deleteRedirects(ctx, kv, id, ""); err != nil {
			fmt.Fprintf(c.stderr, "vigil %s: warning: accepted redirect chains of %s not removed: %v\n", cmd, id, err)
		}
	}
}
