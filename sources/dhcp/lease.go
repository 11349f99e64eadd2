package dhcp

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/wanreact/wanreact/reactor"
)

// Lease is one DHCPv4 lease as granted by a server's ACK, decoded and
// sanitised: every field that reaches the reducer, the lease file or a hook's
// environment went through the checks in leaseFromAck, so nothing downstream
// has to distrust it.
type Lease struct {
	WAN       string `json:"wan"`
	Interface string `json:"interface"`
	// HWAddr is the interface's MAC the lease was obtained with; a stored
	// lease for another MAC is not reused.
	HWAddr string `json:"hwaddr,omitempty"`
	// Address is yiaddr with the option 1 netmask (classful when absent).
	Address netip.Prefix `json:"address"`
	// Routers is option 3 as sent. Gateway() decides which router counts.
	Routers []netip.Addr `json:"routers,omitempty"`
	// Server is option 54 (else the IP source of the ACK): where RENEWING
	// unicasts and DHCPRELEASE goes.
	Server netip.Addr `json:"server"`
	// ServerHWAddr is the link-layer source of the ACK (the server or the
	// relay in front of it), used when a unicast must go out through the
	// raw socket because the kernel cannot route it yet.
	ServerHWAddr string       `json:"server_hwaddr,omitempty"`
	DNS          []netip.Addr `json:"dns,omitempty"`         // option 6
	DomainName   string       `json:"domain_name,omitempty"` // option 15
	HostName     string       `json:"host_name,omitempty"`   // option 12
	MTU          int          `json:"mtu,omitempty"`         // option 26
	// ClasslessRoutes is option 121 exactly as sent, including a default
	// route if the server sent one (see Gateway and ExtraRoutes).
	ClasslessRoutes []reactor.StaticRoute `json:"classless_routes,omitempty"`
	// Duration is option 51; T1 and T2 are options 58 and 59 or the RFC
	// 2131 defaults (0.5 and 0.875 of Duration), always 0 < T1 < T2 < Duration.
	Duration time.Duration `json:"lease_ns"`
	T1       time.Duration `json:"t1_ns"`
	T2       time.Duration `json:"t2_ns"`
	// Acquired is when the DHCPREQUEST that obtained this lease was first
	// sent (RFC 2131 4.4.1: the lease runs from there, not from the ACK).
	Acquired time.Time `json:"acquired"`
}

// Expiry is when the lease ends unless renewed.
func (l *Lease) Expiry() time.Time { return l.Acquired.Add(l.Duration) }

// RenewAt is T1 as an absolute time.
func (l *Lease) RenewAt() time.Time { return l.Acquired.Add(l.T1) }

// RebindAt is T2 as an absolute time.
func (l *Lease) RebindAt() time.Time { return l.Acquired.Add(l.T2) }

// Gateway is the default router. RFC 3442: when option 121 is present the
// client ignores option 3, so the gateway is then the one of a 0.0.0.0/0
// entry of option 121 (invalid if it has none, or if that entry is on-link).
func (l *Lease) Gateway() netip.Addr {
	if len(l.ClasslessRoutes) > 0 {
		for _, r := range l.ClasslessRoutes {
			if r.Dst.Bits() == 0 {
				return r.Gateway
			}
		}
		return netip.Addr{}
	}
	if len(l.Routers) > 0 {
		return l.Routers[0]
	}
	return netip.Addr{}
}

// ExtraRoutes is option 121 without its default route, which Gateway
// already carries: the reducer installs the default route from the
// gateway and these in addition, so neither is installed twice.
func (l *Lease) ExtraRoutes() []reactor.StaticRoute {
	var out []reactor.StaticRoute
	for _, r := range l.ClasslessRoutes {
		if r.Dst.Bits() != 0 {
			out = append(out, r)
		}
	}
	return out
}

// sameBinding reports whether two leases give the same address, so that an
// ACK is a renewal rather than a new binding.
func (l *Lease) sameBinding(o *Lease) bool {
	return l != nil && o != nil && l.Address == o.Address
}

// LeaseChange turns the lease into the bus payload of the given kind.
func (l *Lease) LeaseChange(kind string) reactor.LeaseChange {
	return reactor.LeaseChange{
		Kind:    kind,
		Prefix:  l.Address,
		Gateway: l.Gateway(),
		Server:  l.Server,
		DNS:     append([]netip.Addr(nil), l.DNS...),
		MTU:     l.MTU,
		Routes:  l.ExtraRoutes(),
		Lease:   l.Duration,
		Expiry:  l.Expiry(),
	}
}

// Bounds applied to what servers send, so that a broken or hostile server
// cannot make the client spin (tiny leases) or fill memory and hook
// environments with junk (long strings).
const (
	// MinLeaseTime is the shortest lease honoured: shorter ones are
	// stretched to it, or the client would renew in a tight loop.
	MinLeaseTime = 10 * time.Second
	// maxStringOption bounds option 12 and 15 values.
	maxStringOption = 255
	// MaxClasslessRoutes bounds option 121: a longer one (possible through
	// RFC 3396 concatenation) is refused as a whole rather than turned
	// into thousands of kernel routes.
	MaxClasslessRoutes = 128
	// minMTU is RFC 2132 3.1's lower bound for option 26.
	minMTU = 68
)

// leaseFromAck decodes and validates an OFFER or ACK. src is the IP source
// of the packet, used when the server forgot option 54. The lease's time
// fields are relative; the caller sets Acquired.
func leaseFromAck(p *dhcpv4.DHCPv4, src netip.Addr) (*Lease, error) {
	addr, ok := netip.AddrFromSlice(p.YourIPAddr.To4())
	if !ok || !usableUnicast(addr) {
		return nil, fmt.Errorf("unusable yiaddr %v", p.YourIPAddr)
	}
	bits := -1
	if m := p.Options.Get(dhcpv4.OptionSubnetMask); len(m) == 4 {
		ones, size := net.IPMask(m).Size()
		if size == 32 && ones > 0 {
			bits = ones
		}
	}
	if bits < 0 {
		bits = classfulBits(addr)
	}
	prefix := netip.PrefixFrom(addr, bits)
	if bits < 31 && (addr == prefix.Masked().Addr() || addr == lastAddr(prefix)) {
		return nil, fmt.Errorf("yiaddr %v is the network or broadcast address of %v", addr, prefix.Masked())
	}
	l := &Lease{Address: prefix}

	l.Server = ipOption(p.Options.Get(dhcpv4.OptionServerIdentifier))
	if !l.Server.IsValid() && usableUnicast(src) {
		l.Server = src
	}
	if !l.Server.IsValid() {
		return nil, errors.New("no server identifier")
	}
	l.Routers = ipListOption(p.Options.Get(dhcpv4.OptionRouter))
	l.DNS = ipListOption(p.Options.Get(dhcpv4.OptionDomainNameServer))
	l.DomainName = stringOption(p.Options.Get(dhcpv4.OptionDomainName))
	l.HostName = stringOption(p.Options.Get(dhcpv4.OptionHostName))
	if b := p.Options.Get(dhcpv4.OptionInterfaceMTU); len(b) == 2 {
		if mtu := int(binary.BigEndian.Uint16(b)); mtu >= minMTU {
			l.MTU = mtu
		}
	}
	if b := p.Options.Get(dhcpv4.OptionClasslessStaticRoute); len(b) > 0 {
		// A malformed option 121 is dropped as a whole: half a route
		// table is worse than the option 3 fallback.
		if routes, err := DecodeClasslessRoutes(b); err == nil {
			l.ClasslessRoutes = routes
		}
	}

	l.Duration = time.Hour
	if s, ok := secondsOption(p.Options.Get(dhcpv4.OptionIPAddressLeaseTime)); ok {
		l.Duration = s
	}
	if l.Duration < MinLeaseTime {
		l.Duration = MinLeaseTime
	}
	l.T2 = l.Duration - l.Duration/8 // 7/8 without overflowing an infinite lease
	if s, ok := secondsOption(p.Options.Get(dhcpv4.OptionRebindingTimeValue)); ok && s > 0 && s < l.Duration {
		l.T2 = s
	}
	l.T1 = l.Duration / 2
	if s, ok := secondsOption(p.Options.Get(dhcpv4.OptionRenewTimeValue)); ok && s > 0 && s < l.T2 {
		l.T1 = s
	} else if l.T1 >= l.T2 {
		l.T1 = l.T2 / 2
	}
	return l, nil
}

// validate checks a lease read back from disk, which may have been edited
// or truncated: the same invariants leaseFromAck guarantees.
func (l *Lease) validate() error {
	switch {
	case !l.Address.IsValid() || !l.Address.Addr().Is4() || !usableUnicast(l.Address.Addr()):
		return fmt.Errorf("bad address %v", l.Address)
	case !l.Server.IsValid() || !l.Server.Is4():
		return fmt.Errorf("bad server %v", l.Server)
	case l.Duration < MinLeaseTime || l.T1 <= 0 || l.T1 >= l.T2 || l.T2 >= l.Duration:
		return fmt.Errorf("bad lease times %v/%v/%v", l.T1, l.T2, l.Duration)
	case l.Acquired.IsZero():
		return errors.New("no acquisition time")
	case l.MTU != 0 && l.MTU < minMTU:
		return fmt.Errorf("bad mtu %d", l.MTU)
	}
	for _, a := range append(append([]netip.Addr(nil), l.Routers...), l.DNS...) {
		if !a.Is4() {
			return fmt.Errorf("bad router or dns %v", a)
		}
	}
	if len(l.ClasslessRoutes) > MaxClasslessRoutes || len(l.Routers) > maxAddrs || len(l.DNS) > maxAddrs {
		return errors.New("too many routes, routers or dns servers")
	}
	for _, r := range l.ClasslessRoutes {
		if !r.Dst.IsValid() || !r.Dst.Addr().Is4() || r.Dst != r.Dst.Masked() || (r.Gateway.IsValid() && !r.Gateway.Is4()) {
			return fmt.Errorf("bad route %v via %v", r.Dst, r.Gateway)
		}
	}
	if cleanString(l.DomainName) != l.DomainName || cleanString(l.HostName) != l.HostName {
		return errors.New("bad domain or host name")
	}
	return nil
}

// DecodeClasslessRoutes parses option 121 (RFC 3442): a sequence of
// <width> <significant destination octets> <4 router octets>. Any
// truncation, width above 32 or more than MaxClasslessRoutes entries fails
// the whole option. Destination bits
// beyond the width are cleared; a router of 0.0.0.0 (on-link) becomes the
// invalid Addr, which is how reactor.StaticRoute spells "no gateway".
func DecodeClasslessRoutes(b []byte) ([]reactor.StaticRoute, error) {
	var out []reactor.StaticRoute
	for len(b) > 0 {
		width := int(b[0])
		if width > 32 {
			return nil, fmt.Errorf("route width %d > 32", width)
		}
		n := (width + 7) / 8
		if len(b) < 1+n+4 {
			return nil, errors.New("truncated route")
		}
		var dst [4]byte
		copy(dst[:], b[1:1+n])
		var gw [4]byte
		copy(gw[:], b[1+n:1+n+4])
		b = b[1+n+4:]
		if len(out) == MaxClasslessRoutes {
			return nil, fmt.Errorf("more than %d routes", MaxClasslessRoutes)
		}
		r := reactor.StaticRoute{Dst: netip.PrefixFrom(netip.AddrFrom4(dst), width).Masked()}
		if g := netip.AddrFrom4(gw); !g.IsUnspecified() {
			r.Gateway = g
		}
		out = append(out, r)
	}
	return out, nil
}

// EncodeClasslessRoutes is the inverse of DecodeClasslessRoutes.
func EncodeClasslessRoutes(routes []reactor.StaticRoute) []byte {
	var b []byte
	for _, r := range routes {
		bits := r.Dst.Bits()
		a := r.Dst.Addr().As4()
		b = append(b, byte(bits))
		b = append(b, a[:(bits+7)/8]...)
		g := [4]byte{}
		if r.Gateway.Is4() {
			g = r.Gateway.As4()
		}
		b = append(b, g[:]...)
	}
	return b
}

func usableUnicast(a netip.Addr) bool {
	return a.Is4() && !a.IsUnspecified() && !a.IsLoopback() && !a.IsMulticast() &&
		a != netip.AddrFrom4([4]byte{255, 255, 255, 255}) && a.As4()[0] != 0 && a.As4()[0] < 240
}

// classfulBits is the pre-CIDR mask used when a server omits option 1,
// as dhclient does.
func classfulBits(a netip.Addr) int {
	switch b := a.As4()[0]; {
	case b < 128:
		return 8
	case b < 192:
		return 16
	default:
		return 24
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	v := binary.BigEndian.Uint32(a[:]) | (1<<(32-p.Bits()) - 1)
	binary.BigEndian.PutUint32(a[:], v)
	return netip.AddrFrom4(a)
}

func ipOption(b []byte) netip.Addr {
	if len(b) != 4 {
		return netip.Addr{}
	}
	a := netip.AddrFrom4([4]byte(b))
	if !usableUnicast(a) {
		return netip.Addr{}
	}
	return a
}

// maxAddrs bounds option 3 and 6 lists (a 255-byte option holds 63
// addresses; concatenated options more, which nothing legitimate needs).
const maxAddrs = 16

// ipListOption decodes an address list, skipping unusable entries.
func ipListOption(b []byte) []netip.Addr {
	var out []netip.Addr
	for i := 0; i+4 <= len(b) && len(out) < maxAddrs; i += 4 {
		if a := netip.AddrFrom4([4]byte(b[i : i+4])); usableUnicast(a) {
			out = append(out, a)
		}
	}
	return out
}

// stringOption returns a name-like option or "" when it holds anything a
// hook could misinterpret. dhclient likewise refuses domain names with shell
// metacharacters before handing them to dhclient-script.
func stringOption(b []byte) string {
	s := strings.TrimRight(string(b), "\x00")
	if len(s) > maxStringOption {
		return ""
	}
	return cleanString(s)
}

func cleanString(s string) string {
	for _, c := range []byte(s) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '-' || c == '_' || c == ' '
		if !ok {
			return ""
		}
	}
	return s
}

func secondsOption(b []byte) (time.Duration, bool) {
	if len(b) != 4 {
		return 0, false
	}
	return time.Duration(binary.BigEndian.Uint32(b)) * time.Second, true
}

// Lease files.

// maxLeaseFile bounds what is read back from disk.
const maxLeaseFile = 64 << 10

// LeasePath is where the lease of a WAN is stored.
func LeasePath(dir, wan string) string { return filepath.Join(dir, wan+".lease") }

// ParseLeaseFile decodes and validates the contents of a lease file.
func ParseLeaseFile(b []byte) (*Lease, error) {
	var l Lease
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("decode lease: %w", err)
	}
	if err := l.validate(); err != nil {
		return nil, fmt.Errorf("invalid lease: %w", err)
	}
	return &l, nil
}

// LoadLease reads the stored lease of a WAN; (nil, nil) when there is none.
func LoadLease(dir, wan string) (*Lease, error) {
	f, err := os.Open(LeasePath(dir, wan))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open lease: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxLeaseFile+1))
	if err != nil {
		return nil, fmt.Errorf("read lease %s: %w", f.Name(), err)
	}
	if len(b) > maxLeaseFile {
		return nil, fmt.Errorf("lease file %s larger than %d bytes", f.Name(), maxLeaseFile)
	}
	l, err := ParseLeaseFile(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return l, nil
}

// StoreLease writes the lease atomically: a crash leaves either the old or
// the new file, never a truncated one (temp file, fsync, rename, fsync dir).
func StoreLease(dir string, l *Lease) error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return fmt.Errorf("encode lease: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("lease dir: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+l.WAN+".lease.*")
	if err != nil {
		return fmt.Errorf("create temp lease: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, LeasePath(dir, l.WAN)); err != nil {
		return fmt.Errorf("rename lease: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		// The rename is only durable once the directory is.
		err = d.Sync()
		d.Close()
		if err != nil {
			return fmt.Errorf("sync lease dir: %w", err)
		}
	}
	return nil
}

// RemoveLease deletes the stored lease of a WAN, if any.
func RemoveLease(dir, wan string) error {
	if err := os.Remove(LeasePath(dir, wan)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove lease: %w", err)
	}
	return nil
}
