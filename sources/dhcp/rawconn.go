package dhcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

const (
	clientPort = 68
	serverPort = 67
)

var broadcastHW = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// udp68Filter passes only what a DHCP client can use: unfragmented IPv4
// UDP to port 68. The socket is SOCK_DGRAM, so offset 0 is the IP header.
// Everything else is dropped in the kernel, which is what keeps a busy
// link from waking the client up during a transaction.
var udp68Filter = []bpf.Instruction{
	bpf.LoadAbsolute{Off: 9, Size: 1}, // IP protocol
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.IPPROTO_UDP, SkipTrue: 6},
	bpf.LoadAbsolute{Off: 6, Size: 2},                           // flags + fragment offset
	bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x3fff, SkipTrue: 4}, // MF or offset: a fragment
	bpf.LoadMemShift{Off: 0},                                    // X = IP header length
	bpf.LoadIndirect{Off: 2, Size: 2},                           // UDP destination port
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: clientPort, SkipFalse: 1},
	bpf.RetConstant{Val: 0xffff},
	bpf.RetConstant{Val: 0},
}

// rawConn is an AF_PACKET datagram socket on one interface: it sends and
// receives IPv4/UDP built by hand, so it works before the interface has an
// address and regardless of the routing tables.
type rawConn struct {
	f       *os.File
	rc      syscall.RawConn
	ifindex int
}

// openRaw opens the socket in the calling thread's network namespace.
func openRaw(ifindex int) (*rawConn, error) {
	// Protocol 0 receives nothing until bind, so no unfiltered packet can
	// be queued before the filter is attached.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	raw, err := bpf.Assemble(udp68Filter)
	if err != nil {
		return nil, fmt.Errorf("assemble filter: %w", err)
	}
	prog := make([]unix.SockFilter, len(raw))
	for i, ins := range raw {
		prog[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}); err != nil {
		return nil, fmt.Errorf("attach filter: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifindex}); err != nil {
		return nil, fmt.Errorf("bind packet socket to ifindex %d: %w", ifindex, err)
	}
	f := os.NewFile(uintptr(fd), "dhcp-raw")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		ok = true // f owns fd now
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	ok = true
	return &rawConn{f: f, rc: rc, ifindex: ifindex}, nil
}

func (c *rawConn) Close() error { return c.f.Close() }

// send wraps payload into IPv4/UDP 68→67 from src to dst (broadcast when
// dst is invalid) and sends it to dstHW (broadcast when nil).
func (c *rawConn) send(payload []byte, src, dst netip.Addr, dstHW net.HardwareAddr) error {
	if !src.IsValid() {
		src = netip.IPv4Unspecified()
	}
	if !dst.IsValid() {
		dst = netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	if len(dstHW) != 6 {
		dstHW = broadcastHW
	}
	pkt := buildIPv4UDP(payload, src, dst, clientPort, serverPort)
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: c.ifindex, Halen: 6}
	copy(sa.Addr[:], dstHW)
	var serr error
	err := c.rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), pkt, 0, sa)
		return serr != unix.EAGAIN
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("raw send: %w", err)
	}
	return nil
}

// recv returns the next DHCP payload with its IP and link-layer sources,
// skipping anything the filter let through that is not well-formed.
func (c *rawConn) recv(buf []byte) ([]byte, netip.Addr, net.HardwareAddr, error) {
	for {
		var n int
		var from unix.Sockaddr
		var rerr error
		err := c.rc.Read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), buf, 0)
			return rerr != unix.EAGAIN
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			return nil, netip.Addr{}, nil, err
		}
		payload, src, ok := parseIPv4UDP(buf[:n], clientPort)
		if !ok {
			continue
		}
		var hw net.HardwareAddr
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Halen > 0 && int(ll.Halen) <= len(ll.Addr) {
			hw = append(hw, ll.Addr[:ll.Halen]...)
		}
		return payload, src, hw, nil
	}
}

// buildIPv4UDP encodes an IPv4 header (no options, TTL 64) and a UDP
// header with a full checksum around payload.
func buildIPv4UDP(payload []byte, src, dst netip.Addr, sport, dport uint16) []byte {
	const ihl, udpLen = 20, 8
	b := make([]byte, ihl+udpLen+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8] = 64
	b[9] = unix.IPPROTO_UDP
	s, d := src.As4(), dst.As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	binary.BigEndian.PutUint16(b[10:], ^checksum(b[:ihl], 0))

	u := b[ihl:]
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(udpLen+len(payload)))
	copy(u[udpLen:], payload)
	// Pseudo header: addresses, protocol, UDP length.
	sum := checksum(b[12:20], uint32(unix.IPPROTO_UDP)+uint32(len(u)))
	cs := ^checksum(u, uint32(sum))
	if cs == 0 {
		cs = 0xffff // 0 means "no checksum" in UDP over IPv4
	}
	binary.BigEndian.PutUint16(u[6:], cs)
	return b
}

// checksum is the ones' complement sum of RFC 1071, folded to 16 bits.
func checksum(b []byte, initial uint32) uint16 {
	sum := initial
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

// parseIPv4UDP validates an IPv4/UDP datagram to dport and returns its
// payload and IP source. The UDP checksum is deliberately not verified:
// on veth and with checksum offload, AF_PACKET sees packets whose checksum
// the kernel has not filled in yet (dhclient has the same problem); the
// DHCP decoder validates the payload's structure instead.
func parseIPv4UDP(b []byte, dport uint16) ([]byte, netip.Addr, bool) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return nil, netip.Addr{}, false
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:]))
	if ihl < 20 || total < ihl+8 || total > len(b) || b[9] != unix.IPPROTO_UDP ||
		binary.BigEndian.Uint16(b[6:])&0x3fff != 0 {
		return nil, netip.Addr{}, false
	}
	u := b[ihl:total]
	ulen := int(binary.BigEndian.Uint16(u[4:]))
	if binary.BigEndian.Uint16(u[2:]) != dport || ulen < 8 || ulen > len(u) {
		return nil, netip.Addr{}, false
	}
	return u[8:ulen], netip.AddrFrom4([4]byte(b[12:16])), true
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// errClosed reports whether err comes from reading a socket we closed.
func errClosed(err error) bool {
	return errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed)
}
