package netlinksrc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// groups are the rtnetlink multicast groups the source listens to. One
// socket carries all four so that the kernel's ordering between them is
// kept: an RTM_NEWLINK "down" is read before any route change that follows
// it, which is what makes mirroring the kernel's silent route flush exact.
var groups = []uint32{unix.RTNLGRP_LINK, unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV4_RULE}

var (
	errTruncated = errors.New("datagram larger than the receive buffer")
	errClosed    = errors.New("socket closed")
)

// conn is a non-blocking rtnetlink socket registered with the Go poller, so
// that closing it wakes a goroutine blocked in recv.
type conn struct {
	f         *os.File
	rc        syscall.RawConn
	pid       uint32 // our port id: dump replies carry it
	seq       uint32
	closeOnce sync.Once
}

// openConn opens the subscription socket inside ns (the current namespace
// when ns is not open) with a receive buffer of rcvbuf bytes.
func openConn(ns netns.NsHandle, rcvbuf int) (*conn, error) {
	fd, err := socketIn(ns)
	if err != nil {
		return nil, err
	}
	fail := func(step string, err error) (*conn, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", step, err)
	}
	// SO_RCVBUFFORCE goes past net.core.rmem_max (CAP_NET_ADMIN): a
	// router loading a full table must not overflow on its own churn.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf); err != nil {
			return fail("set receive buffer", err)
		}
	}
	sa := &unix.SockaddrNetlink{Family: unix.AF_NETLINK}
	for _, g := range groups {
		sa.Groups |= 1 << (g - 1)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind rtnetlink groups", err)
	}
	local, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	nl, ok := local.(*unix.SockaddrNetlink)
	if !ok {
		return fail("getsockname", fmt.Errorf("unexpected address %T", local))
	}
	f := os.NewFile(uintptr(fd), "rtnetlink")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("rtnetlink raw conn: %w", err)
	}
	return &conn{f: f, rc: rc, pid: nl.Pid}, nil
}

// socketIn creates the netlink socket in ns. A socket stays in the
// namespace it was created in, so only its creation needs the switch.
func socketIn(ns netns.NsHandle) (int, error) {
	const typ = unix.SOCK_RAW | unix.SOCK_CLOEXEC | unix.SOCK_NONBLOCK
	if !ns.IsOpen() {
		fd, err := unix.Socket(unix.AF_NETLINK, typ, unix.NETLINK_ROUTE)
		if err != nil {
			return -1, fmt.Errorf("rtnetlink socket: %w", err)
		}
		return fd, nil
	}
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread is never unlocked: when this goroutine ends the
		// runtime destroys it, so no other goroutine can ever run in
		// the target namespace, even if switching back were to fail.
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			ch <- result{-1, fmt.Errorf("enter network namespace (fd %d): %w", int(ns), err)}
			return
		}
		fd, err := unix.Socket(unix.AF_NETLINK, typ, unix.NETLINK_ROUTE)
		if err != nil {
			err = fmt.Errorf("rtnetlink socket: %w", err)
		}
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}

// Close closes the socket; it is safe to call more than once and from
// another goroutine (it unblocks recv).
func (c *conn) Close() {
	c.closeOnce.Do(func() { c.f.Close() })
}

// recv reads one datagram (one or more netlink messages) into buf. It skips
// datagrams not sent by the kernel and reports errTruncated when buf was too
// small (the datagram is then lost).
func (c *conn) recv(buf []byte) (int, error) {
	for {
		var (
			n, rflags int
			from      unix.Sockaddr
			rerr      error
		)
		err := c.rc.Read(func(fd uintptr) bool {
			n, _, rflags, from, rerr = unix.Recvmsg(int(fd), buf, nil, 0)
			return rerr != unix.EAGAIN
		})
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return 0, errClosed
			}
			return 0, err
		}
		if rerr != nil {
			return 0, rerr
		}
		if rflags&unix.MSG_TRUNC != 0 {
			return 0, errTruncated
		}
		// Only privileged processes can send to our port, but a
		// message from anyone but the kernel is still not the
		// kernel's truth.
		if sa, ok := from.(*unix.SockaddrNetlink); ok && sa.Pid != 0 {
			continue
		}
		return n, nil
	}
}

// requestDump asks the kernel for a dump of one kind and returns the
// sequence number its replies carry.
func (c *conn) requestDump(k kind) (uint32, error) {
	var typ uint16
	var body []byte
	switch k {
	case kindLink:
		typ, body = unix.RTM_GETLINK, make([]byte, unix.SizeofIfInfomsg)
		body[0] = unix.AF_UNSPEC
	case kindAddr:
		typ, body = unix.RTM_GETADDR, make([]byte, unix.SizeofIfAddrmsg)
		body[0] = unix.AF_INET
	case kindRoute:
		typ, body = unix.RTM_GETROUTE, make([]byte, unix.SizeofRtMsg)
		body[0] = unix.AF_INET
	case kindRule:
		typ, body = unix.RTM_GETRULE, make([]byte, sizeofFibRuleHdr)
		body[0] = unix.AF_INET
	default:
		return 0, fmt.Errorf("no dump for kind %d", k)
	}
	c.seq++
	msg := make([]byte, unix.NLMSG_HDRLEN+len(body))
	binary.NativeEndian.PutUint32(msg[0:4], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:6], typ)
	binary.NativeEndian.PutUint16(msg[6:8], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(msg[8:12], c.seq)
	copy(msg[unix.NLMSG_HDRLEN:], body)
	var serr error
	err := c.rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return serr != unix.EAGAIN
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return 0, fmt.Errorf("request %s dump: %w", k, err)
	}
	return c.seq, nil
}
