package actions

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ifaProto is IFA_PROTO (Linux 6.1): who added an address. Neither x/sys nor
// vishvananda/netlink know it yet, which is why addresses are handled with
// hand-built messages here instead of netlink.Handle.AddrAdd.
const ifaProto = 11

// kernelAddr is one IPv4 address as dumped.
type kernelAddr struct {
	Index  int
	Prefix netip.Prefix // local address and prefix length
	Flags  uint32       // IFA_F_*
	Proto  uint8
}

func (a kernelAddr) String() string {
	s := fmt.Sprintf("address %s dev if%d", a.Prefix, a.Index)
	if a.Flags&unix.IFA_F_NOPREFIXROUTE != 0 {
		s += " noprefixroute"
	}
	return s
}

// addrConn is a NETLINK_ROUTE socket opened in the target netns, used for
// the address messages that need IFA_PROTO.
type addrConn struct {
	sh *nl.SocketHandle
}

func newAddrConn(ns netns.NsHandle) (*addrConn, error) {
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open address netlink socket: %w", err)
	}
	return &addrConn{sh: &nl.SocketHandle{Socket: s}}, nil
}

func (c *addrConn) close() {
	if c != nil && c.sh != nil {
		c.sh.Close()
	}
}

func (c *addrConn) request(typ, flags int) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(typ, flags)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: c.sh}
	return req
}

// list dumps the IPv4 addresses of the netns. A dump interrupted by a
// concurrent change is retried a few times, then reported.
func (c *addrConn) list() ([]kernelAddr, error) {
	var err error
	for range 3 {
		var msgs [][]byte
		req := c.request(unix.RTM_GETADDR, unix.NLM_F_DUMP)
		req.AddData(nl.NewIfAddrmsg(unix.AF_INET))
		msgs, err = req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWADDR)
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("dump addresses: %w", err)
		}
		return parseAddrs(msgs)
	}
	return nil, fmt.Errorf("dump addresses: %w", err)
}

func parseAddrs(msgs [][]byte) ([]kernelAddr, error) {
	out := make([]kernelAddr, 0, len(msgs))
	for _, m := range msgs {
		if len(m) < unix.SizeofIfAddrmsg {
			return nil, fmt.Errorf("short RTM_NEWADDR message (%d bytes)", len(m))
		}
		hdr := nl.DeserializeIfAddrmsg(m)
		if hdr.Family != unix.AF_INET {
			continue
		}
		attrs, err := nl.ParseRouteAttr(m[hdr.Len():])
		if err != nil {
			return nil, fmt.Errorf("parse RTM_NEWADDR: %w", err)
		}
		a := kernelAddr{Index: int(hdr.Index), Flags: uint32(hdr.Flags)}
		var local, address netip.Addr
		for _, at := range attrs {
			switch at.Attr.Type {
			case unix.IFA_LOCAL:
				local, _ = netip.AddrFromSlice(at.Value)
			case unix.IFA_ADDRESS:
				address, _ = netip.AddrFromSlice(at.Value)
			case unix.IFA_FLAGS:
				if len(at.Value) >= 4 {
					a.Flags = nl.NativeEndian().Uint32(at.Value[:4])
				}
			case ifaProto:
				if len(at.Value) >= 1 {
					a.Proto = at.Value[0]
				}
			}
		}
		// On point-to-point links IFA_ADDRESS is the peer; IFA_LOCAL is
		// always ours when present.
		if !local.IsValid() {
			local = address
		}
		if !local.IsValid() || int(hdr.Prefixlen) > 32 {
			continue
		}
		a.Prefix = netip.PrefixFrom(local.Unmap(), int(hdr.Prefixlen))
		out = append(out, a)
	}
	return out, nil
}

// add puts p on the link with IFA_F_NOPREFIXROUTE and IFA_PROTO 87. The
// broadcast address is set like `ip addr add ... brd +` would for subnets
// that have one.
func (c *addrConn) add(index int, p netip.Prefix) error {
	if !p.Addr().Is4() {
		return fmt.Errorf("add address %s: not IPv4", p)
	}
	req := c.request(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	msg := nl.NewIfAddrmsg(unix.AF_INET)
	msg.Index = uint32(index)
	msg.Prefixlen = uint8(p.Bits())
	msg.Scope = unix.RT_SCOPE_UNIVERSE
	req.AddData(msg)
	ip := p.Addr().AsSlice()
	req.AddData(nl.NewRtAttr(unix.IFA_LOCAL, ip))
	req.AddData(nl.NewRtAttr(unix.IFA_ADDRESS, ip))
	if p.Bits() < 31 {
		req.AddData(nl.NewRtAttr(unix.IFA_BROADCAST, broadcast(p).AsSlice()))
	}
	req.AddData(nl.NewRtAttr(unix.IFA_FLAGS, nl.Uint32Attr(unix.IFA_F_NOPREFIXROUTE)))
	req.AddData(nl.NewRtAttr(ifaProto, nl.Uint8Attr(Proto)))
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("add address %s to if%d: %w", p, index, err)
	}
	return nil
}

// del removes the address p from the link. Only the local address and the
// prefix length are given, which is what the kernel matches on.
func (c *addrConn) del(index int, p netip.Prefix) error {
	req := c.request(unix.RTM_DELADDR, unix.NLM_F_ACK)
	msg := nl.NewIfAddrmsg(unix.AF_INET)
	msg.Index = uint32(index)
	msg.Prefixlen = uint8(p.Bits())
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFA_LOCAL, p.Addr().AsSlice()))
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("delete address %s from if%d: %w", p, index, err)
	}
	return nil
}

func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
