package prober

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// socket is what a WAN's loop needs from its ICMP socket. The real one is a
// raw socket (rawSocket); unit tests use an in-memory fake. Only the WAN's
// loop goroutine calls it, except interrupt.
type socket interface {
	// send transmits one ICMP message to dst without blocking.
	send(msg []byte, dst [4]byte) error
	// setWait sets how long recv may block from now on; negative: no
	// limit. recv then fails with os.ErrDeadlineExceeded.
	setWait(d time.Duration) error
	// recv blocks until one IPv4 packet (header included) is read into
	// buf, the wait passes, or interrupt is called.
	recv(buf []byte) (int, error)
	// interrupt makes a recv in progress (or the next one, if no setWait
	// comes between) fail with os.ErrDeadlineExceeded. Safe to call from
	// any goroutine.
	interrupt()
	// close releases the socket.
	close() error
}

// opener opens the socket of one WAN, or says why it cannot (yet).
type opener func(t *Target) (socket, error)

// icmpFilterOpt is ICMP_FILTER from <linux/icmp.h> (level SOL_RAW), absent
// from x/sys. Its value is a bit mask of ICMP types the kernel must NOT
// deliver to the socket.
const icmpFilterOpt = 1

// icmpFilterEchoReplyOnly blocks every ICMP type but echo reply (type 0).
// SetsockoptInt passes a C int, whose 32 bits are the mask ^(1<<0).
const icmpFilterEchoReplyOnly = ^(1 << icmpEchoReply)

// rawSocket is a raw ICMP socket bound to one WAN.
//
// Sends go straight to the fd: only the WAN's loop sends, and the same
// goroutine is the only one that closes, so the fd cannot be reused under a
// send. Reads go through the runtime poller (os.File), whose read deadline
// doubles as the loop's timer, and a blocked read costs no OS thread.
type rawSocket struct {
	f  *os.File
	rc syscall.RawConn
	fd int
	// sa is reused for every send so that sendto allocates nothing.
	sa unix.SockaddrInet4

	// Read state. readFn is built
	// once because a closure passed to RawConn.Read escapes and would
	// otherwise be allocated on every read.
	rbuf   []byte
	rn     int
	rerr   error
	readFn func(fd uintptr) bool
}

func (s *rawSocket) send(msg []byte, dst [4]byte) error {
	s.sa.Addr = dst
	return unix.Sendto(s.fd, msg, 0, &s.sa)
}

func (s *rawSocket) recv(buf []byte) (int, error) {
	s.rbuf = buf
	if err := s.rc.Read(s.readFn); err != nil {
		return 0, err
	}
	return s.rn, s.rerr
}

func (s *rawSocket) setWait(d time.Duration) error {
	var dl time.Time
	if d >= 0 {
		dl = time.Now().Add(d)
	}
	return s.f.SetReadDeadline(dl)
}

// pastDeadline is any time in the past: a read deadline there fails reads
// at once.
var pastDeadline = time.Unix(1, 0)

func (s *rawSocket) interrupt() { s.f.SetReadDeadline(pastDeadline) }

func (s *rawSocket) close() error { return s.f.Close() }

// openRawSocket creates a raw ICMP socket in netns ns (<= 0: the current
// one) whose probes leave through iface carrying fwmark mark, with source
// address src, and which only sees echo replies that arrived on iface and
// are addressed to src.
func openRawSocket(ns netns.NsHandle, iface string, mark uint32, src netip.Addr) (*rawSocket, error) {
	fd, err := socketIn(ns)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	// SO_BINDTODEVICE makes the route lookup use iface as output device
	// and restricts reception to packets that came in on it, which is what
	// tells the WANs apart when they all share one subnet and gateway.
	if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, iface); err != nil {
		return nil, fmt.Errorf("bind to device %s: %w", iface, err)
	}
	// The mark selects the WAN's routing table through the daemon's
	// "fwmark <mark>/<mask> lookup <table>" rule.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
		return nil, fmt.Errorf("set mark %#x: %w", mark, err)
	}
	// Only echo replies wake us up: the router sees plenty of other ICMP
	// (unreachables, echo requests to itself) that is none of our business.
	if err := unix.SetsockoptInt(fd, unix.SOL_RAW, icmpFilterOpt, icmpFilterEchoReplyOnly); err != nil {
		return nil, fmt.Errorf("set ICMP filter: %w", err)
	}
	// Binding the source address pins it: without it, once the WAN loses
	// its address the kernel would pick another interface's address and
	// the probe would go out with a wrong source. With it, sendto fails
	// (ENETUNREACH) and the socket is reopened with the new address.
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src.As4()}); err != nil {
		return nil, fmt.Errorf("bind to %s: %w", src, err)
	}
	f := os.NewFile(uintptr(fd), "icmp:"+iface)
	if f == nil {
		return nil, fmt.Errorf("wrap socket of %s", iface)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		ok = true // f owns fd now and closed it
		return nil, fmt.Errorf("socket of %s: %w", iface, err)
	}
	s := &rawSocket{f: f, rc: rc, fd: fd}
	// The loop relies on read deadlines as its timer; they only work on
	// an fd the runtime poller accepted.
	if err := s.setWait(-1); err != nil {
		f.Close()
		ok = true
		return nil, fmt.Errorf("socket of %s: %w", iface, err)
	}
	s.readFn = func(fd uintptr) bool {
		s.rn, s.rerr = unix.Read(int(fd), s.rbuf)
		return s.rerr != unix.EAGAIN
	}
	ok = true
	return s, nil
}

// socketIn creates a non-blocking raw ICMP socket in netns ns. A socket
// stays in the namespace it was created in, so only the creation needs the
// thread switched over; that happens on a throwaway goroutine so that a
// thread that cannot be switched back is never reused (a goroutine that exits
// while locked takes its thread with it).
func socketIn(ns netns.NsHandle) (int, error) {
	create := func() (int, error) {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		if err != nil {
			return -1, fmt.Errorf("open raw ICMP socket: %w", err)
		}
		return fd, nil
	}
	if ns <= 0 {
		return create()
	}
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("get current netns: %w", err)}
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("enter netns: %w", err)}
			return
		}
		fd, err := create()
		if rerr := netns.Set(orig); rerr != nil {
			// Stay locked: the thread dies with this goroutine.
			if fd >= 0 {
				unix.Close(fd)
			}
			ch <- result{-1, fmt.Errorf("return from netns: %w", rerr)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}

// Reasons a WAN cannot be probed yet. They are reported in
// ProbeResult.Err; being constants keeps the not-ready state allocation-free
// and makes "log once per state change" a string comparison.
var (
	errNoInterface = errors.New("interface not found")
	errNoAddress   = errors.New("interface has no IPv4 address")
)

// netnsOpener opens raw sockets in one namespace after checking through
// netlink that the WAN's interface exists and has an address.
type netnsOpener struct {
	ns netns.NsHandle
	mu sync.Mutex // serialises use of h; cheap, only taken on (re)open
	h  *netlink.Handle
}

func newNetnsOpener(ns netns.NsHandle) (*netnsOpener, error) {
	var h *netlink.Handle
	var err error
	if ns > 0 {
		h, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	} else {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	return &netnsOpener{ns: ns, h: h}, nil
}

func (o *netnsOpener) close() {
	o.mu.Lock()
	o.h.Close()
	o.mu.Unlock()
}

func (o *netnsOpener) open(t *Target) (socket, error) {
	src, err := o.sourceAddr(t.Interface)
	if err != nil {
		return nil, err
	}
	s, err := openRawSocket(o.ns, t.Interface, t.Mark, src)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// sourceAddr returns the address probes of iface are sent from: its first
// primary IPv4 address of global scope, else its first IPv4 address.
func (o *netnsOpener) sourceAddr(iface string) (netip.Addr, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	link, err := o.h.LinkByName(iface)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return netip.Addr{}, errNoInterface
		}
		return netip.Addr{}, fmt.Errorf("look up interface %s: %w", iface, err)
	}
	addrs, err := o.h.AddrList(link, netlink.FAMILY_V4)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return netip.Addr{}, fmt.Errorf("list addresses of %s: %w", iface, err)
	}
	var first netip.Addr
	for _, a := range addrs {
		if a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok {
			continue
		}
		if a.Scope == unix.RT_SCOPE_UNIVERSE && a.Flags&unix.IFA_F_SECONDARY == 0 {
			return ip, nil
		}
		if !first.IsValid() {
			first = ip
		}
	}
	if !first.IsValid() {
		return netip.Addr{}, errNoAddress
	}
	return first, nil
}
