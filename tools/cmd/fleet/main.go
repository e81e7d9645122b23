// Command fleet serves a simulated fleet of websites on loopback for Vigil's
// capacity harness and for manual experiments:
//
//	go run ./cmd/fleet --sites 1000 --mix 5xx=0.01,timeout=0.01
//
// It prints one JSON line describing where it listens (fleet.Info: the
// control API, the listeners, the CA certificate) and serves until
// interrupted, until --max-duration has passed, or, with --exit-on-eof, until
// its standard input closes (so a parent that dies takes it along).
//
// Site host names (s000123.fleet.test) resolve only through fleet.Resolver;
// point a checker at it (httpcheck.Options.Resolver) rather than at DNS.
package main

import (
	"os"

	"github.com/vigil-dev/vigil/tools/fleet"
)

func main() {
	os.Exit(fleet.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
