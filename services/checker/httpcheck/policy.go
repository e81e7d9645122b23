package httpcheck

import (
	"fmt"
	"net/netip"
)

// TargetPolicy says which addresses a Checker may connect to. Sites are
// untrusted input: without a policy, anyone who can add a site could make the
// checker probe the network it runs in (an SSRF). The policy is enforced when
// a socket connects, after DNS resolution, so a name that resolves to a public
// address at validation time and to a private one at check time (DNS
// rebinding) is still refused.
type TargetPolicy int

const (
	// PublicOnly, the zero value, allows only globally routable unicast
	// addresses. It refuses loopback, private (RFC 1918, fc00::/7),
	// link-local, shared (CGNAT 100.64.0.0/10), unspecified, multicast,
	// broadcast, reserved (0.0.0.0/8, 240.0.0.0/4), documentation and
	// benchmarking ranges and the IPv6 transition ranges that can embed such
	// addresses, in both IPv4 and IPv4-mapped IPv6 form. It is the mode for
	// production.
	PublicOnly TargetPolicy = iota
	// AllowPrivate allows any unicast address, including loopback and
	// private ranges: for development, tests and checkers that monitor a
	// private network on purpose. Unspecified, multicast and broadcast
	// addresses are still refused: they never name a single server.
	AllowPrivate
)

// String returns "public_only" or "allow_private".
func (p TargetPolicy) String() string {
	switch p {
	case PublicOnly:
		return "public_only"
	case AllowPrivate:
		return "allow_private"
	}
	return fmt.Sprintf("TargetPolicy(%d)", int(p))
}

// Allows reports whether the policy lets a check connect to addr. It never
// touches the network, so callers such as a site registry may use it to
// reject literal addresses early; the Checker applies it again at dial time.
func (p TargetPolicy) Allows(addr netip.Addr) bool {
	if !addr.IsValid() {
		return false
	}
	// ::ffff:a.b.c.d reaches a.b.c.d: judge the IPv4 address.
	addr = addr.Unmap()
	if addr.IsUnspecified() || addr.IsMulticast() || addr == broadcast {
		return false
	}
	switch p {
	case AllowPrivate:
		return true
	case PublicOnly:
		if addr.Is4() {
			return !inAny(addr, deniedV4)
		}
		return allowedV6(addr)
	}
	return false // an unknown policy allows nothing
}

var broadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// deniedV4 lists the IPv4 ranges that are not globally reachable unicast
// (IANA IPv4 Special-Purpose Address Registry, plus multicast and reserved).
var deniedV4 = prefixes(
	"0.0.0.0/8",       // "this network"
	"10.0.0.0/8",      // private
	"100.64.0.0/10",   // shared address space (CGNAT)
	"127.0.0.0/8",     // loopback
	"169.254.0.0/16",  // link-local (includes cloud metadata 169.254.169.254)
	"172.16.0.0/12",   // private
	"192.0.0.0/24",    // IETF protocol assignments
	"192.0.2.0/24",    // documentation (TEST-NET-1)
	"192.88.99.0/24",  // deprecated 6to4 relay anycast
	"192.168.0.0/16",  // private
	"198.18.0.0/15",   // benchmarking
	"198.51.100.0/24", // documentation (TEST-NET-2)
	"203.0.113.0/24",  // documentation (TEST-NET-3)
	"224.0.0.0/4",     // multicast
	"240.0.0.0/4",     // reserved, includes broadcast
)

// globalV6 is the only IPv6 range with globally routable unicast addresses;
// everything outside it (ULA fc00::/7, link-local fe80::/10, site-local,
// multicast, discard 100::/64, ::/8 with IPv4-compatible addresses) is
// refused.
var globalV6 = netip.MustParsePrefix("2000::/3")

// deniedV6 lists the parts of 2000::/3 that are not ordinary global unicast.
var deniedV6 = prefixes(
	"2001::/23",     // IETF protocol assignments: Teredo, benchmarking, ORCHID
	"2001:db8::/32", // documentation
	"2002::/16",     // 6to4: embeds an IPv4 address that may be private
	"3fff::/20",     // documentation (RFC 9637)
)

// nat64 is the well-known NAT64 prefix (RFC 6052): the address is judged by
// the IPv4 address embedded in its last 32 bits, so a checker behind DNS64
// can reach public IPv4 sites but not private ones.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

func allowedV6(addr netip.Addr) bool {
	if nat64.Contains(addr) {
		b := addr.As16()
		return PublicOnly.Allows(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
	}
	return globalV6.Contains(addr) && !inAny(addr, deniedV6)
}

func inAny(addr netip.Addr, list []netip.Prefix) bool {
	for _, p := range list {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, p := range s {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}
