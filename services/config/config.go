// Package config holds the configuration of every Vigil service and the one
// table of defaults it is built from.
//
// A value comes from, in increasing order of precedence: the default in the
// table, the YAML file named by --config (or VIGIL_CONFIG), the environment
// (VIGIL_ followed by the key in upper case with dots as underscores, such as
// VIGIL_NATS_URL), and command-line flags. Every key has one flag, one
// environment variable and one YAML path, all derived from the table, so the
// three can never drift apart.
package config

import (
	"flag"
	"fmt"
	"github.com/vigil-dev/vigil/events"
	"io"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Profile selects the defaults that differ between the all-in-one dev mode and
// separately run services.
type Profile int

const (
	// Service is the profile of separately run services (production).
	Service Profile = iota
	// Dev is the profile of `vigil dev`: a self-hoster monitors their own
	// network, so private targets are allowed.
	Dev
)

// Config is the effective configuration of a Vigil process.
type Config struct {
	NATS      NATS
	DataDir   string
	HTTPAddr  string
	Log       Log
	Region    string
	Regions   []string
	Checker   Checker
	Scheduler Scheduler
	// StateMachine configures the incident state machine.
	StateMachine StateMachine
	Lease        Lease
	// Store is the SQL store of the read models.
	Store   Store
	Streams Streams

	fields []*field
}

// NATS says how to reach NATS.
type NATS struct {
	// URL of the NATS server (services run alone).
	URL string
	// Port the embedded server of `vigil dev` listens on, on 127.0.0.1.
	Port int
}

// Log configures log/slog output.
type Log struct {
	Level  string
	Format string
}

// Checker configures the checkers.
type Checker struct {
	TargetPolicy string
	UserAgent    string
	MinWorkers   int
	MaxWorkers   int
	MaxBodyBytes int64
}

// Scheduler configures the scheduler.
type Scheduler struct {
	// Tick is how often due checks are published.
	Tick time.Duration
	// BatchSize is the most check commands in one CHECKS message; 1 sends
	// every command alone.
	BatchSize int
}

// StateMachine configures the incident state machine.
type StateMachine struct {
	// SingleRegion lets a deployment with one region confirm Down locally.
	SingleRegion bool
	// VerifyTimeout is how long other regions have to answer a verification.
	VerifyTimeout time.Duration
	// ImpairedWindow, ImpairedMinSites and ImpairedRatio say when a region is
	// impaired: more than ImpairedRatio of its checks in a window failing
	// with connect, timeout or DNS classes, on at least ImpairedMinSites sites.
	ImpairedWindow   time.Duration
	ImpairedMinSites int
	ImpairedRatio    float64
}

// Store says where the read models live.
type Store struct {
	// DSN is mysql://user:pw@tcp(host:3306)/db or sqlite:PATH. vigil dev
	// defaults to sqlite:<data_dir>/vigil.db when it is empty.
	DSN string
	// FreshnessInterval is how often last-check columns are written: at
	// most one write per site per interval.
	FreshnessInterval time.Duration
	// RollupInterval is how often the uptime rollups' check statistics are
	// written, and the freshness checkpoint with them: at least
	// FreshnessInterval. The rollups are most of a flush's cost, so writing
	// them less often makes a check cheaper; they lag by up to this much,
	// and a restart replays OBSERVATIONS from the last rollup flush.
	RollupInterval time.Duration
}

// Lease configures the leases by which instances split buckets.
type Lease struct {
	TTL time.Duration
}

// Streams configures the JetStream topology `vigil streams apply` creates.
type Streams struct {
	Replicas             int
	ObservationsMaxAge   time.Duration
	ObservationsMaxBytes int64
	ChecksMaxAge         time.Duration
	EventsDuplicates     time.Duration
	DenyDelete           bool
}

// EnvPrefix starts every environment variable Vigil reads.
const EnvPrefix = "VIGIL_"

// Error is a configuration error. Its message names the field and the reason on
// one line, such as "config: lease.ttl (flag --lease-ttl): must be at least 1s".
type Error struct {
	Key    string
	Source string
	Reason string
}

func (e *Error) Error() string {
	if e.Source == "" {
		return fmt.Sprintf("config: %s: %s", e.Key, e.Reason)
	}
	return fmt.Sprintf("config: %s (%s): %s", e.Key, e.Source, e.Reason)
}

// Default returns the configuration with every default of the profile applied.
func Default(p Profile) *Config {
	c := &Config{}
	c.fields = c.table()
	for _, f := range c.fields {
		def := f.def
		if p == Dev && f.devDef != "" {
			def = f.devDef
		}
		if err := f.value.Set(def); err != nil {
			panic(fmt.Sprintf("config: default of %s: %v", f.key, err))
		}
	}
	return c
}

// table is the one table of configuration keys and their defaults.
func (c *Config) table() []*field {
	return []*field{
		{key: "nats.url", flag: "nats", def: "nats://127.0.0.1:4222", usage: "NATS server URL of a separately run service",
			value: &stringValue{p: &c.NATS.URL, check: checkNATSURL}},
		{key: "nats.port", flag: "nats-port", def: "4222", usage: "port of the embedded NATS server of vigil dev (on 127.0.0.1); taken by another process, a free one is used unless set explicitly",
			value: &intValue{p: &c.NATS.Port, min: 1, max: 65535}},
		{key: "data_dir", flag: "data-dir", def: "./data", usage: "directory of the embedded NATS file store and SQL store (vigil dev)",
			value: &stringValue{p: &c.DataDir, check: nonEmpty}},
		{key: "http_addr", flag: "http-addr", def: ":8080", usage: "address of the HTTP server: health, metrics, pprof (and the API once it exists)",
			value: &stringValue{p: &c.HTTPAddr, check: checkHostPort}},
		{key: "log.level", flag: "log-level", def: "info", usage: "log level: debug, info, warn or error",
			value: &enumValue{p: &c.Log.Level, allowed: []string{"debug", "info", "warn", "error"}}},
		{key: "log.format", flag: "log-format", def: "text", usage: "log format: text or json",
			value: &enumValue{p: &c.Log.Format, allowed: []string{"text", "json"}}},
		{key: "region", flag: "region", def: "local", usage: "region of this checker",
			value: &stringValue{p: &c.Region, check: checkRegion}},
		{key: "regions", flag: "regions", def: "local", usage: "comma-separated checker regions; the first is the primary (vigil dev runs a checker for each)",
			value: &listValue{p: &c.Regions, check: checkRegion}},
		{key: "checker.target_policy", flag: "target-policy", def: "public_only", devDef: "allow_private", usage: "public_only refuses private, loopback and link-local targets at dial time; allow_private allows them",
			value: &enumValue{p: &c.Checker.TargetPolicy, allowed: []string{"public_only", "allow_private"}}},
		{key: "checker.user_agent", flag: "user-agent", def: "Vigil/1 (+https://vigil.dev/bot)", usage: "User-Agent of checks",
			value: &stringValue{p: &c.Checker.UserAgent, check: nonEmpty}},
		{key: "checker.min_workers", flag: "min-workers", def: "8", usage: "fewest concurrent checks per checker process",
			value: &intValue{p: &c.Checker.MinWorkers, min: 1, max: 100000}},
		{key: "checker.max_workers", flag: "max-workers", def: "2000", usage: "most concurrent checks per checker process",
			value: &intValue{p: &c.Checker.MaxWorkers, min: 1, max: 100000}},
		{key: "checker.max_body_bytes", flag: "max-body-bytes", def: "1MiB", usage: "most body bytes a keyword check reads",
			value: &sizeValue{p: &c.Checker.MaxBodyBytes, min: 1 << 10}},
		{key: "scheduler.tick", flag: "scheduler-tick", def: "100ms", usage: "how often the scheduler publishes due checks",
			value: &durationValue{p: &c.Scheduler.Tick, min: 10 * time.Millisecond, max: 10 * time.Second}},
		{key: "scheduler.batch_size", flag: "scheduler-batch-size", def: "50", usage: "most check commands of one region sent in one CHECKS message (1: every command alone)",
			value: &intValue{p: &c.Scheduler.BatchSize, min: 1, max: 1000}},
		{key: "statemachine.single_region", flag: "single-region", def: "false", devDef: "true", usage: "with a single region, confirm Down locally after confirm_after failures (there is nobody to verify)",
			value: &boolValue{p: &c.StateMachine.SingleRegion}},
		{key: "statemachine.verify_timeout", flag: "verify-timeout", def: "90s", usage: "how long other regions have to answer a verification; silent regions do not vote",
			value: &durationValue{p: &c.StateMachine.VerifyTimeout, min: 5 * time.Second, max: 30 * time.Minute}},
		{key: "statemachine.impaired_window", flag: "impaired-window", def: "60s", usage: "window over which a region's failure storm is judged",
			value: &durationValue{p: &c.StateMachine.ImpairedWindow, min: 5 * time.Second, max: time.Hour}},
		{key: "statemachine.impaired_min_sites", flag: "impaired-min-sites", def: "50", usage: "distinct failing sites a window needs before its region counts as impaired",
			value: &intValue{p: &c.StateMachine.ImpairedMinSites, min: 1, max: 1000000}},
		{key: "statemachine.impaired_ratio", flag: "impaired-ratio", def: "0.5", usage: "share of a region's checks that must fail (connect, timeout, DNS) for it to count as impaired",
			value: &floatValue{p: &c.StateMachine.ImpairedRatio, min: 0.05, max: 1}},
		{key: "store.dsn", flag: "store", def: "", usage: "SQL store of the read models: mysql://user:pw@tcp(host:3306)/vigil or sqlite:PATH (vigil dev: sqlite:<data_dir>/vigil.db when empty)",
			value: &stringValue{p: &c.Store.DSN, check: checkDSN}},
		{key: "store.freshness_interval", flag: "freshness-interval", def: "60s", usage: "how often last-check columns reach the store: at most one write per site per interval",
			value: &durationValue{p: &c.Store.FreshnessInterval, min: time.Second, max: time.Hour}},
		{key: "store.rollup_interval", flag: "rollup-interval", def: "5m", usage: "how often uptime rollups (check counts, response-time percentiles) reach the store: at least freshness_interval, rounded up to a multiple of it",
			value: &durationValue{p: &c.Store.RollupInterval, min: time.Second, max: time.Hour}},
		{key: "lease.ttl", flag: "lease-ttl", def: "10s", usage: "lease period by which instances split buckets; a dead instance's buckets move within two",
			value: &durationValue{p: &c.Lease.TTL, min: time.Second, max: 5 * time.Minute}},
		{key: "streams.replicas", flag: "stream-replicas", def: "1", usage: "replicas of every stream (3 on a cluster)",
			value: &intValue{p: &c.Streams.Replicas, min: 1, max: 5}},
		{key: "streams.observations_max_age", flag: "observations-max-age", def: "6h", usage: "how long OBSERVATIONS keeps observations",
			value: &durationValue{p: &c.Streams.ObservationsMaxAge, min: 10 * time.Minute}},
		{key: "streams.observations_max_bytes", flag: "observations-max-bytes", def: "2GiB", usage: "most bytes OBSERVATIONS keeps",
			value: &sizeValue{p: &c.Streams.ObservationsMaxBytes, min: 1 << 20}},
		{key: "streams.checks_max_age", flag: "checks-max-age", def: "10m", usage: "how long an unconsumed check command is kept",
			value: &durationValue{p: &c.Streams.ChecksMaxAge, min: time.Minute}},
		{key: "streams.events_duplicates", flag: "events-duplicates", def: "1h", usage: "deduplication window of EVENTS",
			value: &durationValue{p: &c.Streams.EventsDuplicates, min: time.Minute, max: 24 * time.Hour}},
		{key: "streams.deny_delete", flag: "deny-delete", def: "false", usage: "make EVENTS and SITES refuse deletes and purges; cannot be undone once applied",
			value: &boolValue{p: &c.Streams.DenyDelete}},
	}
}

// Load builds the configuration from the defaults of p, the YAML file, the
// environment and args. The config keys are registered as flags on fs, which
// may already hold the command's own flags; flags and positional arguments may
// be mixed. It returns the positional arguments.
func Load(p Profile, fs *flag.FlagSet, args []string, getenv func(string) string) (*Config, []string, error) {
	c := Default(p)
	flagged := map[string]string{}
	var order []string
	for _, f := range c.fields {
		fs.Var(&recorder{key: f.key, seen: flagged, order: &order, value: f.value}, f.flag, f.usage)
	}
	configPath := fs.String("config", "", "YAML configuration file (or "+EnvPrefix+"CONFIG)")
	positional, err := parseInterspersed(fs, args)
	if err != nil {
		return nil, nil, err
	}
	path := *configPath
	if path == "" {
		path = getenv(EnvPrefix + "CONFIG")
	}
	if path != "" {
		if err := c.loadFile(path); err != nil {
			return nil, nil, err
		}
	}
	for _, f := range c.fields {
		if v := getenv(f.env()); v != "" {
			if err := f.set(v, "env "+f.env()); err != nil {
				return nil, nil, err
			}
		}
	}
	for _, key := range order {
		f := c.field(key)
		if err := f.set(flagged[key], "flag --"+f.flag); err != nil {
			return nil, nil, err
		}
	}
	if err := c.Validate(); err != nil {
		return nil, nil, err
	}
	return c, positional, nil
}

// Validate checks the rules that involve more than one key.
func (c *Config) Validate() error {
	if c.Checker.MinWorkers > c.Checker.MaxWorkers {
		return &Error{Key: "checker.min_workers", Reason: fmt.Sprintf("%d is above checker.max_workers %d", c.Checker.MinWorkers, c.Checker.MaxWorkers)}
	}
	if err := events.ValidateRegions(c.Regions); err != nil {
		return &Error{Key: "regions", Reason: err.Error()}
	}
	return c.validateRollupInterval()
}

// validateRollupInterval checks store.rollup_interval against the keys it
// depends on: rollups are written with the freshness columns, so not more
// often; and a restart replays OBSERVATIONS from the last rollup flush, so
// the stream must keep observations longer than that.
func (c *Config) validateRollupInterval() error {
	r := c.Store.RollupInterval
	if r < c.Store.FreshnessInterval {
		return &Error{Key: "store.rollup_interval", Reason: fmt.Sprintf("%s is below store.freshness_interval %s", r, c.Store.FreshnessInterval)}
	}
	if r >= c.Streams.ObservationsMaxAge {
		return &Error{Key: "store.rollup_interval", Reason: fmt.Sprintf("%s is not below streams.observations_max_age %s: a restart replays observations since the last rollup flush", r, c.Streams.ObservationsMaxAge)}
	}
	return nil
}

// IsSet reports whether key was given by the file, the environment or a flag
// rather than left at its default.
func (c *Config) IsSet(key string) bool {
	f := c.field(key)
	return f != nil && f.source != ""
}

// Source says where the value of key came from: "default", "file <path>",
// "env VIGIL_…" or "flag --…".
func (c *Config) Source(key string) string {
	f := c.field(key)
	if f == nil {
		return ""
	}
	if f.source == "" {
		return "default"
	}
	return f.source
}

// WriteYAML writes the effective configuration as YAML, each value commented
// with where it came from when not the default.
func (c *Config) WriteYAML(w io.Writer) error {
	root := &yaml.Node{Kind: yaml.MappingNode}
	for _, f := range c.fields {
		parent := root
		parts := strings.Split(f.key, ".")
		for _, p := range parts[:len(parts)-1] {
			parent = mappingChild(parent, p)
		}
		val := &yaml.Node{}
		if err := val.Encode(f.value.Get()); err != nil {
			return fmt.Errorf("encode %s: %w", f.key, err)
		}
		if f.source != "" {
			val.LineComment = "from " + f.source
		}
		parent.Content = append(parent.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: parts[len(parts)-1]}, val)
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return err
	}
	return enc.Close()
}

// Keys lists the configuration keys with their flag, environment variable,
// default and usage, for documentation.
func (c *Config) Keys() []KeyInfo {
	out := make([]KeyInfo, 0, len(c.fields))
	for _, f := range c.fields {
		out = append(out, KeyInfo{Key: f.key, Flag: "--" + f.flag, Env: f.env(), Default: f.def, DevDefault: f.devDef, Usage: f.usage})
	}
	return out
}

// KeyInfo documents one configuration key.
type KeyInfo struct {
	Key, Flag, Env, Default, DevDefault, Usage string
}

func mappingChild(parent *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(parent.Content); i += 2 {
		if parent.Content[i].Value == key {
			return parent.Content[i+1]
		}
	}
	child := &yaml.Node{Kind: yaml.MappingNode}
	parent.Content = append(parent.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, child)
	return child
}

func (c *Config) field(key string) *field {
	for _, f := range c.fields {
		if f.key == key {
			return f
		}
	}
	return nil
}

// loadFile applies a YAML file. Unknown keys are errors: a misspelt key that
// silently did nothing is worse than a refusal.
func (c *Config) loadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return &Error{Key: "config", Reason: err.Error()}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return &Error{Key: "config", Source: "file " + path, Reason: err.Error()}
	}
	if len(doc.Content) == 0 {
		return nil
	}
	return c.applyNode(doc.Content[0], "", path)
}

func (c *Config) applyNode(n *yaml.Node, prefix, path string) error {
	if n.Kind != yaml.MappingNode {
		return &Error{Key: strings.TrimSuffix(prefix, "."), Source: "file " + path, Reason: fmt.Sprintf("line %d: expected a mapping", n.Line)}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := prefix + k.Value
		if v.Kind == yaml.MappingNode {
			if err := c.applyNode(v, key+".", path); err != nil {
				return err
			}
			continue
		}
		f := c.field(key)
		if f == nil {
			return &Error{Key: key, Source: "file " + path, Reason: fmt.Sprintf("line %d: unknown key", k.Line)}
		}
		raw := v.Value
		if v.Kind == yaml.SequenceNode {
			items := make([]string, 0, len(v.Content))
			for _, it := range v.Content {
				items = append(items, it.Value)
			}
			raw = strings.Join(items, ",")
		}
		if err := f.set(raw, fmt.Sprintf("file %s line %d", path, v.Line)); err != nil {
			return err
		}
	}
	return nil
}

// parseInterspersed parses flags that may follow positional arguments, as in
// `vigil sites add URL --interval 1m`.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		if rest[0] == "--" {
			return append(positional, rest[1:]...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// ErrHelp is returned by Load when -h or --help was given.
var ErrHelp = flag.ErrHelp

// field is one row of the table.
type field struct {
	key    string
	flag   string
	def    string
	devDef string
	usage  string
	value  value
	source string
}

func (f *field) env() string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(f.key, ".", "_"))
}

func (f *field) set(raw, source string) error {
	if err := f.value.Set(raw); err != nil {
		return &Error{Key: f.key, Source: source, Reason: err.Error()}
	}
	f.source = source
	return nil
}

// recorder is the flag.Value registered for a key: it keeps the raw text so
// flags can be applied after the file and the environment.
type recorder struct {
	key   string
	seen  map[string]string
	order *[]string
	value value
}

func (r *recorder) String() string {
	if r == nil || r.value == nil {
		return ""
	}
	return fmt.Sprint(r.value.Get())
}

// IsBoolFlag lets a boolean key be given as a bare flag (--deny-delete).
func (r *recorder) IsBoolFlag() bool {
	_, ok := r.value.(*boolValue)
	return ok
}

func (r *recorder) Set(s string) error {
	if _, ok := r.seen[r.key]; !ok {
		*r.order = append(*r.order, r.key)
	}
	r.seen[r.key] = s
	return nil
}
