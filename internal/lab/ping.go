package lab

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// Ping sends one ICMP echo request from role's namespace to dst and waits up
// to timeout for the matching reply, returning the round-trip time. It uses
// a raw socket (root), so tests do not depend on a ping binary being
// installed. The route is whatever the namespace's routing picks.
func (l *Lab) Ping(role string, dst netip.Addr, timeout time.Duration) (time.Duration, error) {
	if !dst.Is4() {
		return 0, fmt.Errorf("lab: ping %s: IPv4 only", dst)
	}
	var c *icmp.PacketConn
	if err := l.Do(role, func() error {
		var err error
		c, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		return 0, fmt.Errorf("lab: ping socket in %s: %w", role, err)
	}
	defer c.Close()

	// The raw socket sees every ICMP packet of the namespace; a random id
	// and payload tell our reply from anyone else's.
	var token [18]byte
	if _, err := rand.Read(token[:]); err != nil {
		return 0, fmt.Errorf("lab: ping: %w", err)
	}
	id := int(binary.BigEndian.Uint16(token[:2]))
	payload := token[2:]
	req, err := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: 1, Data: payload}}).Marshal(nil)
	if err != nil {
		return 0, fmt.Errorf("lab: ping: %w", err)
	}
	start := time.Now()
	if err := c.SetDeadline(start.Add(timeout)); err != nil {
		return 0, fmt.Errorf("lab: ping: %w", err)
	}
	if _, err := c.WriteTo(req, &net.IPAddr{IP: net.IP(dst.AsSlice())}); err != nil {
		return 0, fmt.Errorf("lab: ping %s from %s: %w", dst, role, err)
	}
	buf := make([]byte, 1500)
	for {
		n, peer, err := c.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return 0, fmt.Errorf("lab: ping %s from %s: no reply within %v", dst, role, timeout)
			}
			return 0, fmt.Errorf("lab: ping %s from %s: %w", dst, role, err)
		}
		rtt := time.Since(start)
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		ip, _ := peer.(*net.IPAddr)
		if !ok || ip == nil || e.ID != id || !bytes.Equal(e.Data, payload) || !ip.IP.Equal(net.IP(dst.AsSlice())) {
			continue
		}
		return rtt, nil
	}
}
