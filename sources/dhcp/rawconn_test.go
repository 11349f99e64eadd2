package dhcp

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestBuildParseIPv4UDP(t *testing.T) {
	src, dst := netip.MustParseAddr("198.18.0.10"), netip.MustParseAddr("198.18.0.1")
	payload := []byte("hello, dhcp")
	b := buildIPv4UDP(payload, src, dst, clientPort, serverPort)
	if checksum(b[:20], 0) != 0xffff {
		t.Fatal("IP header checksum does not verify")
	}
	pseudo := append(append([]byte{}, b[12:20]...), 0, unix.IPPROTO_UDP, b[24], b[25])
	if checksum(b[20:], uint32(checksum(pseudo, 0))) != 0xffff {
		t.Fatal("UDP checksum does not verify")
	}
	got, gotSrc, ok := parseIPv4UDP(b, serverPort)
	if !ok || !bytes.Equal(got, payload) || gotSrc != src {
		t.Fatalf("parse: %q %v %v", got, gotSrc, ok)
	}
	// Trailing link-layer padding is not payload.
	if got, _, ok := parseIPv4UDP(append(b, 0, 0, 0, 0), serverPort); !ok || !bytes.Equal(got, payload) {
		t.Fatal("padding leaked into the payload")
	}
	mut := func(f func([]byte)) []byte {
		c := append([]byte(nil), b...)
		f(c)
		return c
	}
	for name, bad := range map[string][]byte{
		"wrong port":     b,
		"fragment":       mut(func(c []byte) { c[6] = 0x20 }),
		"ipv6":           mut(func(c []byte) { c[0] = 0x65 }),
		"ihl too small":  mut(func(c []byte) { c[0] = 0x44 }),
		"tcp":            mut(func(c []byte) { c[9] = unix.IPPROTO_TCP }),
		"total too long": mut(func(c []byte) { binary.BigEndian.PutUint16(c[2:], 2000) }),
		"udp len short":  mut(func(c []byte) { binary.BigEndian.PutUint16(c[24:], 4) }),
		"udp len long":   mut(func(c []byte) { binary.BigEndian.PutUint16(c[24:], 500) }),
		"truncated":      b[:27],
		"empty":          nil,
	} {
		port := uint16(serverPort)
		if name == "wrong port" {
			port = clientPort
		}
		if _, _, ok := parseIPv4UDP(bad, port); ok {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestRawSocketFilter checks the BPF filter against the kernel: of several
// datagrams sent over a veth pair, the raw socket must see only the
// unfragmented one to UDP port 68, with its link-layer source.
func TestRawSocketFilter(t *testing.T) {
	n := newTestNet(t)
	n.setWAN(t, true)
	wan := n.link(t, n.hCli, "wan0")
	isp := n.link(t, n.hIsp, "isp0")

	var rx, tx *rawConn
	if err := inNetNS(n.cli, func() (err error) { rx, err = openRaw(wan.Attrs().Index); return err }); err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	if err := inNetNS(n.isp, func() (err error) { tx, err = openRaw(isp.Attrs().Index); return err }); err != nil {
		t.Fatal(err)
	}
	defer tx.Close()

	// Wait for carrier on the pair.
	for i := 0; i < 200 && !carrier(n.link(t, n.hCli, "wan0")); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	src, bc := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("255.255.255.255")
	sendIP := func(pkt []byte) {
		t.Helper()
		sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: tx.ifindex, Halen: 6}
		copy(sa.Addr[:], broadcastHW)
		var serr error
		if err := tx.rc.Write(func(fd uintptr) bool { serr = unix.Sendto(int(fd), pkt, 0, sa); return serr != unix.EAGAIN }); err != nil || serr != nil {
			t.Fatalf("send: %v %v", err, serr)
		}
	}
	wrongPort := buildIPv4UDP([]byte("to 67"), src, bc, 68, 67)
	frag := buildIPv4UDP([]byte("fragment"), src, bc, 67, 68)
	frag[6] = 0x20 // more fragments
	binary.BigEndian.PutUint16(frag[10:], 0)
	binary.BigEndian.PutUint16(frag[10:], ^checksum(frag[:20], 0))
	tcp := buildIPv4UDP([]byte("tcp"), src, bc, 67, 68)
	tcp[9] = unix.IPPROTO_TCP
	sendIP(wrongPort)
	sendIP(frag)
	sendIP(tcp)
	sendIP(buildIPv4UDP([]byte("the one"), src, bc, 67, 68))

	got := make(chan string, 4)
	go func() {
		buf := make([]byte, 2048)
		for {
			p, from, hw, err := rx.recv(buf)
			if err != nil {
				close(got)
				return
			}
			got <- string(p) + " from " + from.String() + " " + hw.String()
		}
	}()
	want := "the one from 198.18.0.1 " + isp.Attrs().HardwareAddr.String()
	select {
	case g := <-got:
		if g != want {
			t.Fatalf("received %q first, want %q", g, want)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("datagram to port 68 not received")
	}
	// Nothing else may follow: the filter dropped the rest in the kernel
	// (parseIPv4UDP would also drop them, so check the socket's own
	// counters: packets that passed the filter).
	select {
	case g := <-got:
		t.Fatalf("also received %q", g)
	case <-time.After(200 * time.Millisecond):
	}
	st, err := unix.GetsockoptTpacketStats(int(rawFD(t, rx)), unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		t.Fatal(err)
	}
	if st.Packets != 1 {
		t.Fatalf("%d packets passed the filter, want 1", st.Packets)
	}
}

func rawFD(t *testing.T, c *rawConn) uintptr {
	var fd uintptr
	if err := c.rc.Control(func(f uintptr) { fd = f }); err != nil {
		t.Fatal(err)
	}
	return fd
}
