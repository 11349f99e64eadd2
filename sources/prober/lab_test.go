package prober

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The lab: a "router" namespace with two WANs on the same subnet behind the
// same gateway address, each cabled to its own "isp" namespace that owns
// the gateway address and, on its loopback, the very same target addresses.
// Only the WAN a probe leaves through decides which ISP answers it.
//
//	router: wan0 203.0.113.2/24 ---- up0 203.0.113.1/24  isp1 (lo: 198.51.100.1-4, .99)
//	        wan1 203.0.113.3/24 ---- up0 203.0.113.1/24  isp2 (lo: 198.51.100.1-4, .99)
//
// In the router, as the daemon's actions set it up: table 10/11 hold the
// default route of wan0/wan1, "fwmark 0x100/0xff00 lookup 10" and
// "fwmark 0x200/0xff00 lookup 11" steer the probes, rp_filter is loose. The
// main table's default via wan0 stands in for the active table: loose
// rp_filter needs *some* route back to the target to accept replies.
// The ISPs answer ARP only for their link address (arp_ignore=1).
const (
	labMark0 = 0x100
	labMark1 = 0x200
	labMask  = 0xff00
)

var (
	labTargets = []netip.Addr{
		netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2"),
		netip.MustParseAddr("198.51.100.3"), netip.MustParseAddr("198.51.100.4"),
	}
	labOther = netip.MustParseAddr("198.51.100.99") // a non-target address of the ISPs
	wan0Addr = netip.MustParseAddr("203.0.113.2")
	wan1Addr = netip.MustParseAddr("203.0.113.3")
)

type lab struct {
	tb                 testing.TB
	router, isp1, isp2 string // netns names
	routerNS, isp1NS   netns.NsHandle
	haveIptables       bool
}

func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to build network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		tb.Skip("needs iproute2's ip to build the namespace lab")
	}
}

func newLab(tb testing.TB) *lab {
	requireRoot(tb)
	var rnd [3]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		tb.Fatal(err)
	}
	id := hex.EncodeToString(rnd[:])
	l := &lab{tb: tb, router: "wrpr-" + id + "-rt", isp1: "wrpr-" + id + "-i1", isp2: "wrpr-" + id + "-i2"}
	_, err := exec.LookPath("iptables")
	l.haveIptables = err == nil

	for _, ns := range []string{l.router, l.isp1, l.isp2} {
		l.ip("netns", "add", ns)
		ns := ns
		// Deleting a namespace deletes its interfaces (and the veth peers).
		tb.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	for i, isp := range []string{l.isp1, l.isp2} {
		wan := fmt.Sprintf("wan%d", i)
		l.ip("-n", l.router, "link", "add", wan, "type", "veth", "peer", "name", "up0", "netns", isp)
		l.ip("-n", isp, "addr", "add", "203.0.113.1/24", "dev", "up0")
		for _, a := range append(labTargets, labOther) {
			l.ip("-n", isp, "addr", "add", a.String()+"/32", "dev", "lo")
		}
		l.ip("-n", isp, "link", "set", "lo", "up")
		l.ip("-n", isp, "link", "set", "up0", "up")
		l.ip("-n", l.router, "addr", "add", fmt.Sprintf("203.0.113.%d/24", 2+i), "dev", wan)
		l.ip("-n", l.router, "link", "set", wan, "up")
		l.ip("-n", l.router, "route", "add", "default", "via", "203.0.113.1", "dev", wan, "table", strconv.Itoa(10+i))
		l.ip("-n", l.router, "rule", "add", "fwmark", fmt.Sprintf("%#x/%#x", labMark0<<i, labMask),
			"lookup", strconv.Itoa(10+i), "pref", strconv.Itoa(100+i))
	}
	l.ip("-n", l.router, "link", "set", "lo", "up")
	l.ip("-n", l.router, "route", "add", "default", "via", "203.0.113.1", "dev", "wan0")
	for _, k := range []string{"all", "wan0", "wan1"} {
		l.sysctl(l.router, "net.ipv4.conf."+k+".rp_filter", "2")
	}
	// Like a real gateway, an ISP answers ARP only for addresses on the
	// link, not for the targets (which a real ISP has far away): a probe
	// that skipped its WAN's table and went "on-link" gets no answer.
	for _, isp := range []string{l.isp1, l.isp2} {
		l.sysctl(isp, "net.ipv4.conf.all.arp_ignore", "1")
	}

	l.routerNS = l.nsHandle(l.router)
	l.isp1NS = l.nsHandle(l.isp1)
	return l
}

func (l *lab) nsHandle(name string) netns.NsHandle {
	h, err := netns.GetFromName(name)
	if err != nil {
		l.tb.Fatalf("open netns %s: %v", name, err)
	}
	l.tb.Cleanup(func() { h.Close() })
	return h
}

func (l *lab) ip(args ...string) {
	l.tb.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.tb.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// exec runs a command inside netns ns.
func (l *lab) exec(ns string, args ...string) string {
	l.tb.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	if err != nil {
		l.tb.Fatalf("in %s: %s: %v\n%s", ns, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (l *lab) sysctl(ns, key, value string) {
	l.tb.Helper()
	l.exec(ns, "sh", "-c", fmt.Sprintf("echo %s > /proc/sys/%s", value, strings.ReplaceAll(key, ".", "/")))
}

func (l *lab) needIptables() {
	l.tb.Helper()
	if !l.haveIptables {
		l.tb.Skip("needs iptables (apt-get install -y iptables) to count packets in the ISP namespaces")
	}
}

func (l *lab) iptables(ns string, args ...string) {
	l.tb.Helper()
	l.exec(ns, append([]string{"iptables", "-w"}, args...)...)
}

// countProbes installs a counter of echo requests of our probes' size
// (20+24 bytes) from src in ns's INPUT chain; counter reads it.
func (l *lab) countProbes(ns, src, name string) {
	l.tb.Helper()
	l.iptables(ns, "-A", "INPUT", "-p", "icmp", "--icmp-type", "echo-request", "-s", src,
		"-m", "length", "--length", strconv.Itoa(20+echoLen), "-m", "comment", "--comment", name)
}

func (l *lab) counter(ns, name string) int {
	l.tb.Helper()
	for _, line := range strings.Split(l.exec(ns, "iptables", "-w", "-nvxL", "INPUT"), "\n") {
		if strings.Contains(line, "/* "+name+" */") {
			n, err := strconv.Atoi(strings.Fields(line)[0])
			if err != nil {
				l.tb.Fatalf("counter %s: %q", name, line)
			}
			return n
		}
	}
	l.tb.Fatalf("counter %s not found in %s", name, ns)
	return 0
}

// labSocket is a raw ICMP socket in one of the lab's namespaces, for the
// tests' own pingers and responders.
type labSocket struct {
	f  *os.File
	fd int
}

// openLabSocket opens a raw ICMP socket in ns; bindDev and bindAddr are
// optional.
func openLabSocket(tb testing.TB, ns netns.NsHandle, bindDev string, mark uint32, bindAddr netip.Addr) *labSocket {
	tb.Helper()
	fd, err := socketIn(ns)
	if err != nil {
		tb.Fatal(err)
	}
	if bindDev != "" {
		if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, bindDev); err != nil {
			tb.Fatal(err)
		}
	}
	if mark != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
			tb.Fatal(err)
		}
	}
	if bindAddr.IsValid() {
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: bindAddr.As4()}); err != nil {
			tb.Fatalf("bind %v: %v", bindAddr, err)
		}
	}
	s := &labSocket{f: os.NewFile(uintptr(fd), "lab-icmp"), fd: fd}
	tb.Cleanup(func() { s.f.Close() })
	return s
}

func (s *labSocket) send(tb testing.TB, dst netip.Addr, msg []byte) {
	if err := unix.Sendto(s.fd, msg, 0, &unix.SockaddrInet4{Addr: dst.As4()}); err != nil {
		tb.Errorf("lab send to %v: %v", dst, err)
	}
}

// read returns the next IPv4 packet, or nil once the deadline passed or
// the socket was closed.
func (s *labSocket) read(buf []byte, deadline time.Time) []byte {
	s.f.SetReadDeadline(deadline)
	n, err := s.f.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

// echoRequest is a probe as seen by the ISP.
type echoRequest struct {
	src, dst [4]byte
	id, seq  uint16
	nonce    nonce
	at       time.Time
}

func parseEchoRequest(pkt []byte) (echoRequest, bool) {
	if len(pkt) < 20 {
		return echoRequest{}, false
	}
	ihl := int(pkt[0]&0x0f) * 4
	m := pkt[ihl:]
	if len(m) != echoLen || m[0] != icmpEchoRequest {
		return echoRequest{}, false
	}
	r := echoRequest{id: binary.BigEndian.Uint16(m[4:]), seq: binary.BigEndian.Uint16(m[6:]), at: time.Now()}
	copy(r.src[:], pkt[12:16])
	copy(r.dst[:], pkt[16:20])
	copy(r.nonce[:], m[icmpHdr:])
	return r, true
}

// replyMsg builds an echo reply with the given fields.
func replyMsg(id, seq uint16, n nonce) []byte {
	var buf [echoLen]byte
	return echoToReply(encodeEcho(buf[:], id, seq, &n))
}
