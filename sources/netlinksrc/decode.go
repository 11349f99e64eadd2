package netlinksrc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// The decoders below read only the fields wanreact needs, straight from the
// kernel's wire format. They never allocate for messages that get filtered
// out: during a route storm (a full BGP table loading into a table we do not
// watch) every notification passes through decodeRoute, so its cost is the
// cost of the storm.

// Operational states from <linux/if.h> (not exported by x/sys/unix).
const (
	operUnknown = 0
	operUp      = 6
)

// Rule attributes and sizes from <linux/fib_rules.h>.
const (
	sizeofFibRuleHdr = 12
	frActToTbl       = 1
)

var (
	errShort     = errors.New("message too short")
	errBadAttr   = errors.New("malformed attribute")
	errBadLength = errors.New("bad address length")
)

// nlmsg is one netlink message: header fields plus the payload after the
// 16-byte nlmsghdr.
type nlmsg struct {
	typ   uint16
	flags uint16
	seq   uint32
	pid   uint32
	data  []byte
}

// nextMessage splits the first netlink message off b and returns it with the
// rest of the buffer (nil when b held a single message).
func nextMessage(b []byte) (m nlmsg, rest []byte, err error) {
	if len(b) < unix.NLMSG_HDRLEN {
		return nlmsg{}, nil, fmt.Errorf("netlink header: %w (%d bytes)", errShort, len(b))
	}
	l := int(binary.NativeEndian.Uint32(b[0:4]))
	if l < unix.NLMSG_HDRLEN || l > len(b) {
		return nlmsg{}, nil, fmt.Errorf("netlink header: length %d outside 16..%d", l, len(b))
	}
	m = nlmsg{
		typ:   binary.NativeEndian.Uint16(b[4:6]),
		flags: binary.NativeEndian.Uint16(b[6:8]),
		seq:   binary.NativeEndian.Uint32(b[8:12]),
		pid:   binary.NativeEndian.Uint32(b[12:16]),
		data:  b[unix.NLMSG_HDRLEN:l],
	}
	next := nlmAlign(l)
	if next >= len(b) {
		return m, nil, nil
	}
	return m, b[next:], nil
}

func nlmAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }
func rtaAlign(n int) int { return (n + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1) }

// attrs iterates over a run of rtattr/nlattr TLVs without allocating.
type attrs struct {
	b   []byte
	typ uint16
	val []byte
	err error
}

// next advances to the following attribute; it returns false at the end of
// the run or on a malformed attribute (then a.err is set).
func (a *attrs) next() bool {
	if len(a.b) == 0 {
		return false
	}
	if len(a.b) < unix.SizeofRtAttr {
		a.err = fmt.Errorf("%w: %d trailing bytes", errBadAttr, len(a.b))
		return false
	}
	l := int(binary.NativeEndian.Uint16(a.b[0:2]))
	if l < unix.SizeofRtAttr || l > len(a.b) {
		a.err = fmt.Errorf("%w: length %d with %d bytes left", errBadAttr, l, len(a.b))
		return false
	}
	// Mask NLA_F_NESTED and NLA_F_NET_BYTEORDER: only the type number matters.
	a.typ = binary.NativeEndian.Uint16(a.b[2:4]) & 0x3fff
	a.val = a.b[unix.SizeofRtAttr:l]
	if al := rtaAlign(l); al < len(a.b) {
		a.b = a.b[al:]
	} else {
		a.b = nil
	}
	return true
}

func u32(v []byte) (uint32, error) {
	if len(v) < 4 {
		return 0, fmt.Errorf("u32 attribute: %w", errShort)
	}
	return binary.NativeEndian.Uint32(v), nil
}

func ipv4(v []byte) (netip.Addr, error) {
	if len(v) != 4 {
		return netip.Addr{}, fmt.Errorf("%w: %d, want 4", errBadLength, len(v))
	}
	return netip.AddrFrom4([4]byte(v)), nil
}

// cstring returns a NUL-terminated attribute string without the terminator.
func cstring(v []byte) []byte {
	for i, c := range v {
		if c == 0 {
			return v[:i]
		}
	}
	return v
}

// linkMsg is the part of an RTM_NEWLINK/RTM_DELLINK wanreact uses.
type linkMsg struct {
	family    uint8
	index     int
	flags     uint32
	name      []byte // aliases the message buffer
	operState uint8
	// hasName and hasOperState are false for partial messages: the
	// wireless extensions' RTM_NEWLINK events carry flags and name only.
	hasName, hasOperState bool
}

func decodeLink(b []byte) (linkMsg, error) {
	if len(b) < unix.SizeofIfInfomsg {
		return linkMsg{}, fmt.Errorf("ifinfomsg: %w (%d bytes)", errShort, len(b))
	}
	m := linkMsg{
		family: b[0],
		index:  int(int32(binary.NativeEndian.Uint32(b[4:8]))),
		flags:  binary.NativeEndian.Uint32(b[8:12]),
	}
	a := attrs{b: b[unix.SizeofIfInfomsg:]}
	for a.next() {
		switch a.typ {
		case unix.IFLA_IFNAME:
			m.name, m.hasName = cstring(a.val), true
		case unix.IFLA_OPERSTATE:
			if len(a.val) >= 1 {
				m.operState, m.hasOperState = a.val[0], true
			}
		}
	}
	if a.err != nil {
		return linkMsg{}, fmt.Errorf("link %d: %w", m.index, a.err)
	}
	return m, nil
}

// addrMsg is an RTM_NEWADDR/RTM_DELADDR message.
type addrMsg struct {
	family    uint8
	prefixLen uint8
	index     int
	// local is IFA_LOCAL (the interface's own address) or, when absent,
	// IFA_ADDRESS. For point-to-point links IFA_ADDRESS is the peer.
	local netip.Addr
	peer  netip.Addr
}

func decodeAddr(b []byte) (addrMsg, error) {
	if len(b) < unix.SizeofIfAddrmsg {
		return addrMsg{}, fmt.Errorf("ifaddrmsg: %w (%d bytes)", errShort, len(b))
	}
	m := addrMsg{
		family:    b[0],
		prefixLen: b[1],
		index:     int(binary.NativeEndian.Uint32(b[4:8])),
	}
	if m.family != unix.AF_INET {
		return m, nil
	}
	var address netip.Addr
	a := attrs{b: b[unix.SizeofIfAddrmsg:]}
	for a.next() {
		var err error
		switch a.typ {
		case unix.IFA_LOCAL:
			m.local, err = ipv4(a.val)
		case unix.IFA_ADDRESS:
			address, err = ipv4(a.val)
		}
		if err != nil {
			return addrMsg{}, fmt.Errorf("address on link %d: attribute %d: %w", m.index, a.typ, err)
		}
	}
	if a.err != nil {
		return addrMsg{}, fmt.Errorf("address on link %d: %w", m.index, a.err)
	}
	switch {
	case m.local.IsValid():
		m.peer = address
	case address.IsValid():
		m.local = address
	default:
		return addrMsg{}, fmt.Errorf("address on link %d: no IFA_LOCAL nor IFA_ADDRESS", m.index)
	}
	if m.prefixLen > 32 {
		return addrMsg{}, fmt.Errorf("address %s on link %d: prefix length %d", m.local, m.index, m.prefixLen)
	}
	return m, nil
}

// nexthop is one path of a route.
type nexthop struct {
	gw    netip.Addr
	oif   int
	flags uint32 // RTNH_F_*
}

// routeMsg is an RTM_NEWROUTE/RTM_DELROUTE message. Multipath nexthops are
// kept raw until the route has passed the filter.
type routeMsg struct {
	family   uint8
	tos      uint8
	protocol uint8
	scope    uint8
	typ      uint8
	flags    uint32 // rtm_flags: RTM_F_* and, for single-path routes, RTNH_F_*
	table    int
	dst      netip.Prefix
	priority uint32
	prefsrc  netip.Addr
	gw       netip.Addr
	oif      int
	mpRaw    []byte // RTA_MULTIPATH payload, aliases the message buffer
}

func decodeRoute(b []byte) (routeMsg, error) {
	if len(b) < unix.SizeofRtMsg {
		return routeMsg{}, fmt.Errorf("rtmsg: %w (%d bytes)", errShort, len(b))
	}
	m := routeMsg{
		family:   b[0],
		tos:      b[3],
		table:    int(b[4]),
		protocol: b[5],
		scope:    b[6],
		typ:      b[7],
		flags:    binary.NativeEndian.Uint32(b[8:12]),
	}
	if m.family != unix.AF_INET {
		return m, nil
	}
	dstLen := int(b[1])
	if dstLen > 32 {
		return routeMsg{}, fmt.Errorf("route: destination prefix length %d", dstLen)
	}
	dst := netip.IPv4Unspecified()
	a := attrs{b: b[unix.SizeofRtMsg:]}
	for a.next() {
		var err error
		switch a.typ {
		case unix.RTA_TABLE:
			var t uint32
			t, err = u32(a.val)
			m.table = int(t)
		case unix.RTA_DST:
			dst, err = ipv4(a.val)
		case unix.RTA_PRIORITY:
			m.priority, err = u32(a.val)
		case unix.RTA_PREFSRC:
			m.prefsrc, err = ipv4(a.val)
		case unix.RTA_GATEWAY:
			m.gw, err = ipv4(a.val)
		case unix.RTA_OIF:
			var o uint32
			o, err = u32(a.val)
			m.oif = int(o)
		case unix.RTA_MULTIPATH:
			m.mpRaw = a.val
		}
		if err != nil {
			return routeMsg{}, fmt.Errorf("route: attribute %d: %w", a.typ, err)
		}
	}
	if a.err != nil {
		return routeMsg{}, fmt.Errorf("route: %w", a.err)
	}
	m.dst = netip.PrefixFrom(dst, dstLen)
	return m, nil
}

// nexthops returns the route's paths: the RTA_MULTIPATH entries, or the
// single RTA_GATEWAY/RTA_OIF pair. A route without any (blackhole,
// unreachable, prohibit) has none.
func (m *routeMsg) nexthops() ([]nexthop, error) {
	if m.mpRaw == nil {
		if !m.gw.IsValid() && m.oif == 0 {
			return nil, nil
		}
		return []nexthop{{gw: m.gw, oif: m.oif, flags: m.flags & 0xff}}, nil
	}
	var nhs []nexthop
	b := m.mpRaw
	for len(b) > 0 {
		if len(b) < unix.SizeofRtNexthop {
			return nil, fmt.Errorf("multipath: %w (%d bytes)", errShort, len(b))
		}
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		if l < unix.SizeofRtNexthop || l > len(b) {
			return nil, fmt.Errorf("multipath: nexthop length %d with %d bytes left", l, len(b))
		}
		nh := nexthop{flags: uint32(b[2]), oif: int(int32(binary.NativeEndian.Uint32(b[4:8])))}
		a := attrs{b: b[unix.SizeofRtNexthop:l]}
		for a.next() {
			if a.typ == unix.RTA_GATEWAY {
				gw, err := ipv4(a.val)
				if err != nil {
					return nil, fmt.Errorf("multipath gateway: %w", err)
				}
				nh.gw = gw
			}
		}
		if a.err != nil {
			return nil, fmt.Errorf("multipath: %w", a.err)
		}
		nhs = append(nhs, nh)
		if al := rtaAlign(l); al < len(b) {
			b = b[al:]
		} else {
			b = nil
		}
	}
	return nhs, nil
}

// ruleMsg is an RTM_NEWRULE/RTM_DELRULE message (struct fib_rule_hdr plus
// FRA_* attributes).
type ruleMsg struct {
	family   uint8
	action   uint8
	priority uint32
	table    uint32
	mark     uint32
	mask     uint32
	hasMark  bool
	hasMask  bool
	protocol uint8
}

func decodeRule(b []byte) (ruleMsg, error) {
	if len(b) < sizeofFibRuleHdr {
		return ruleMsg{}, fmt.Errorf("fib_rule_hdr: %w (%d bytes)", errShort, len(b))
	}
	m := ruleMsg{
		family: b[0],
		table:  uint32(b[4]),
		action: b[7],
	}
	a := attrs{b: b[sizeofFibRuleHdr:]}
	for a.next() {
		var err error
		switch a.typ {
		case unix.FRA_PRIORITY:
			m.priority, err = u32(a.val)
		case unix.FRA_TABLE:
			// FRA_TABLE carries the full 32-bit table; the header's u8
			// field reads RT_TABLE_COMPAT (252) for tables above 255.
			m.table, err = u32(a.val)
		case unix.FRA_FWMARK:
			m.mark, err = u32(a.val)
			m.hasMark = true
		case unix.FRA_FWMASK:
			m.mask, err = u32(a.val)
			m.hasMask = true
		case unix.FRA_PROTOCOL:
			if len(a.val) < 1 {
				err = errShort
			} else {
				m.protocol = a.val[0]
			}
		}
		if err != nil {
			return ruleMsg{}, fmt.Errorf("rule: attribute %d: %w", a.typ, err)
		}
	}
	if a.err != nil {
		return ruleMsg{}, fmt.Errorf("rule: %w", a.err)
	}
	return m, nil
}
