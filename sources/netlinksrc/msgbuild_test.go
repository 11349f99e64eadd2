package netlinksrc

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Builders of kernel-format message bodies, written from the UAPI headers
// independently of the decoders, for unit tests, fuzz seeds and benchmarks.

func attr(typ uint16, val []byte) []byte {
	l := unix.SizeofRtAttr + len(val)
	b := make([]byte, rtaAlign(l))
	binary.NativeEndian.PutUint16(b[0:2], uint16(l))
	binary.NativeEndian.PutUint16(b[2:4], typ)
	copy(b[4:], val)
	return b
}

func u32b(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
func ip4b(a string) []byte { x := netip.MustParseAddr(a).As4(); return x[:] }

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// linkBody builds an ifinfomsg + IFLA_IFNAME + IFLA_OPERSTATE (+ IFLA_MTU,
// which the tracker must ignore).
func linkBody(family uint8, index int, flags uint32, name string, oper uint8, mtu uint32) []byte {
	h := make([]byte, unix.SizeofIfInfomsg)
	h[0] = family
	binary.NativeEndian.PutUint32(h[4:8], uint32(index))
	binary.NativeEndian.PutUint32(h[8:12], flags)
	binary.NativeEndian.PutUint32(h[12:16], 0xffffffff) // ifi_change
	return cat(h,
		attr(unix.IFLA_IFNAME, append([]byte(name), 0)),
		attr(unix.IFLA_MTU, u32b(mtu)),
		attr(unix.IFLA_OPERSTATE, []byte{oper}))
}

// addrBody builds an IPv4 ifaddrmsg with IFA_ADDRESS (peer or local) and,
// if local is set, IFA_LOCAL.
func addrBody(index int, plen uint8, local, address string) []byte {
	h := make([]byte, unix.SizeofIfAddrmsg)
	h[0] = unix.AF_INET
	h[1] = plen
	binary.NativeEndian.PutUint32(h[4:8], uint32(index))
	b := cat(h, attr(unix.IFA_ADDRESS, ip4b(address)))
	if local != "" {
		b = cat(b, attr(unix.IFA_LOCAL, ip4b(local)))
	}
	return cat(b, attr(unix.IFA_LABEL, []byte("wan0\x00")))
}

type routeSpec struct {
	table    int
	dst      string // prefix; "" for default
	tos      uint8
	priority uint32
	protocol uint8
	scope    uint8
	typ      uint8
	flags    uint32
	gw       string
	oif      int
	prefsrc  string
	paths    []nexthop
}

func routeBody(r routeSpec) []byte {
	h := make([]byte, unix.SizeofRtMsg)
	h[0] = unix.AF_INET
	h[3] = r.tos
	h[4] = uint8(min(r.table, unix.RT_TABLE_COMPAT))
	h[5] = r.protocol
	h[6] = r.scope
	h[7] = r.typ
	if h[7] == 0 {
		h[7] = unix.RTN_UNICAST
	}
	binary.NativeEndian.PutUint32(h[8:12], r.flags)
	var dst []byte
	if r.dst != "" {
		p := netip.MustParsePrefix(r.dst)
		h[1] = uint8(p.Bits())
		a := p.Addr().As4()
		dst = attr(unix.RTA_DST, a[:])
	}
	b := cat(h, attr(unix.RTA_TABLE, u32b(uint32(r.table))), dst)
	if r.priority != 0 {
		b = cat(b, attr(unix.RTA_PRIORITY, u32b(r.priority)))
	}
	if r.prefsrc != "" {
		b = cat(b, attr(unix.RTA_PREFSRC, ip4b(r.prefsrc)))
	}
	if r.gw != "" {
		b = cat(b, attr(unix.RTA_GATEWAY, ip4b(r.gw)))
	}
	if r.oif != 0 {
		b = cat(b, attr(unix.RTA_OIF, u32b(uint32(r.oif))))
	}
	if len(r.paths) > 0 {
		var mp []byte
		for _, nh := range r.paths {
			var gw []byte
			if nh.gw.IsValid() {
				a := nh.gw.As4()
				gw = attr(unix.RTA_GATEWAY, a[:])
			}
			rtnh := make([]byte, unix.SizeofRtNexthop)
			binary.NativeEndian.PutUint16(rtnh[0:2], uint16(unix.SizeofRtNexthop+len(gw)))
			rtnh[2] = uint8(nh.flags)
			binary.NativeEndian.PutUint32(rtnh[4:8], uint32(nh.oif))
			mp = cat(mp, rtnh, gw)
		}
		b = cat(b, attr(unix.RTA_MULTIPATH, mp))
	}
	return b
}

type ruleSpec struct {
	priority uint32
	table    uint32
	mark     uint32
	mask     uint32
	protocol uint8
	src      string // prefix
	flags    uint32
}

// ruleBody builds a fib_rule_hdr with FRA_* attributes the way
// fib_nl_fill_rule orders them.
func ruleBody(r ruleSpec) []byte {
	h := make([]byte, sizeofFibRuleHdr)
	h[0] = unix.AF_INET
	h[4] = uint8(min(r.table, unix.RT_TABLE_COMPAT))
	h[7] = frActToTbl
	binary.NativeEndian.PutUint32(h[8:12], r.flags)
	var src []byte
	if r.src != "" {
		p := netip.MustParsePrefix(r.src)
		h[2] = uint8(p.Bits())
		a := p.Addr().As4()
		src = attr(unix.FRA_SRC, a[:])
	}
	b := cat(h, attr(unix.FRA_TABLE, u32b(r.table)), src)
	if r.priority != 0 {
		b = cat(b, attr(unix.FRA_PRIORITY, u32b(r.priority)))
	}
	if r.mark != 0 {
		b = cat(b, attr(unix.FRA_FWMARK, u32b(r.mark)))
	}
	if r.mask != 0 {
		b = cat(b, attr(unix.FRA_FWMASK, u32b(r.mask)))
	}
	return cat(b, attr(unix.FRA_PROTOCOL, []byte{r.protocol}))
}

// datagram frames bodies as netlink messages, the way recv returns them.
func datagram(msgs ...nlmsg) []byte {
	var b []byte
	for _, m := range msgs {
		l := unix.NLMSG_HDRLEN + len(m.data)
		h := make([]byte, unix.NLMSG_HDRLEN)
		binary.NativeEndian.PutUint32(h[0:4], uint32(l))
		binary.NativeEndian.PutUint16(h[4:6], m.typ)
		binary.NativeEndian.PutUint16(h[6:8], m.flags)
		binary.NativeEndian.PutUint32(h[8:12], m.seq)
		binary.NativeEndian.PutUint32(h[12:16], m.pid)
		b = cat(b, h, m.data, make([]byte, nlmAlign(l)-l))
	}
	return b
}
