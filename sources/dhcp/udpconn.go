package dhcp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// openUnicast opens the RENEWING socket in the calling thread's network
// namespace: UDP bound to leased-address:68 and to the interface, so the
// server's unicast ACK lands here (and not as an ICMP port unreachable).
// IP_FREEBIND lets the bind succeed even if the reducer has not put the
// address on the interface (yet); sending then fails and the driver falls
// back to the raw socket.
func openUnicast(ifname string, src netip.Addr) (*net.UDPConn, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("udp socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), "dhcp-udp")
	// net.FilePacketConn duplicates the descriptor.
	defer f.Close()
	for _, o := range []struct {
		level, opt int
	}{{unix.SOL_SOCKET, unix.SO_REUSEADDR}, {unix.IPPROTO_IP, unix.IP_FREEBIND}} {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, 1); err != nil {
			return nil, fmt.Errorf("udp socket option %d: %w", o.opt, err)
		}
	}
	if err := unix.BindToDevice(fd, ifname); err != nil {
		return nil, fmt.Errorf("bind udp socket to %s: %w", ifname, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: clientPort, Addr: src.As4()}); err != nil {
		return nil, fmt.Errorf("bind udp socket to %v:%d: %w", src, clientPort, err)
	}
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("udp socket: %w", err)
	}
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, errors.New("udp socket: not a UDPConn")
	}
	return uc, nil
}

// inNetNS runs fn on a thread switched into ns (ns <= 0: fn runs here, in
// the current namespace). Sockets created by fn stay in ns. The thread is
// never switched back: its goroutine exits still locked, so the runtime
// discards it rather than reuse a thread in a foreign namespace.
func inNetNS(ns netns.NsHandle, fn func() error) error {
	if ns <= 0 {
		return fn()
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			done <- fmt.Errorf("enter netns: %w", err)
			return
		}
		done <- fn()
	}()
	return <-done
}
