package lab

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// MaxConns bounds OpenConns' N (one socket each).
const MaxConns = 4096

// connMagic starts every Conns datagram.
var connMagic = [4]byte{'W', 'R', 'L', 'C'}

// connPayloadLen: magic, set id, connection index, round.
const connPayloadLen = 4 + 8 + 4 + 4

// ConnOptions selects what OpenConns opens.
type ConnOptions struct {
	// N is the number of connections, 1..MaxConns.
	N int
	// Dsts are the destinations, used round robin by connection index;
	// empty means SinkAddr. Addresses other than the lab's must first be
	// put on inet's lo by the caller (the sink listens on every address).
	Dsts []netip.Addr
	// Bind, when valid, binds every socket to this source address (as an
	// application bound to one WAN's address would).
	Bind netip.Addr
}

// Conns is a set of UDP "connections" from one lab namespace to a sink in
// inet: one socket each, hence one source port and one conntrack entry
// each, which is what a router balances. Datagrams are only sent when asked
// (Round), so a test decides when a connection is new and when it is
// established, and which rounds straddle a fault.
type Conns struct {
	id   [8]byte
	n    int
	dsts []*net.UDPAddr
	send []*net.UDPConn
	sink *net.UDPConn
	done chan struct{}

	mu     sync.Mutex
	rounds int
	sent   int
	// got[i] lists, per round, the ISP that carried connection i's
	// datagram (-1: not received (yet)).
	got [][]int
}

// OpenConns opens the sockets and starts the sink; nothing is sent yet.
func (l *Lab) OpenConns(from string, o ConnOptions) (*Conns, error) {
	if from == RoleInet {
		return nil, errors.New("lab: connections from inet would never leave it")
	}
	if o.N < 1 || o.N > MaxConns {
		return nil, fmt.Errorf("lab: %d connections, want 1..%d", o.N, MaxConns)
	}
	c := &Conns{n: o.N, got: make([][]int, o.N), done: make(chan struct{})}
	if _, err := rand.Read(c.id[:]); err != nil {
		return nil, fmt.Errorf("lab: conns id: %w", err)
	}
	err := l.Do(RoleInet, func() error {
		s, err := net.ListenUDP("udp4", &net.UDPAddr{})
		c.sink = s
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lab: conns sink: %w", err)
	}
	_ = c.sink.SetReadBuffer(8 << 20) // a round is a burst of N datagrams
	port := c.sink.LocalAddr().(*net.UDPAddr).Port
	dsts := o.Dsts
	if len(dsts) == 0 {
		dsts = []netip.Addr{SinkAddr}
	}
	for _, d := range dsts {
		c.dsts = append(c.dsts, &net.UDPAddr{IP: net.IP(d.AsSlice()), Port: port})
	}
	var local *net.UDPAddr
	if o.Bind.IsValid() {
		local = &net.UDPAddr{IP: net.IP(o.Bind.AsSlice())}
	}
	err = l.Do(from, func() error {
		for range o.N {
			s, err := net.ListenUDP("udp4", local)
			if err != nil {
				return err
			}
			c.send = append(c.send, s)
		}
		return nil
	})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("lab: conns in %s: %w", from, err)
	}
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		c.Close()
		return nil, errors.New("lab: closed")
	}
	go c.receive()
	return c, nil
}

// SinkPort is the UDP port every connection sends to.
func (c *Conns) SinkPort() int { return c.dsts[0].Port }

// LocalPort is connection i's source port on the sending side.
func (c *Conns) LocalPort(i int) int { return c.send[i].LocalAddr().(*net.UDPAddr).Port }

// Round sends one datagram from every connection, in index order, and
// returns the round's number (0-based). Send errors (no route) count as
// datagrams that never arrive.
func (c *Conns) Round() int {
	c.mu.Lock()
	r := c.rounds
	c.rounds++
	for i := range c.got {
		c.got[i] = append(c.got[i], -1)
	}
	c.mu.Unlock()
	buf := make([]byte, connPayloadLen)
	copy(buf[0:4], connMagic[:])
	copy(buf[4:12], c.id[:])
	binary.BigEndian.PutUint32(buf[16:20], uint32(r))
	sent := 0
	for i, s := range c.send {
		binary.BigEndian.PutUint32(buf[12:16], uint32(i))
		if _, err := s.WriteToUDP(buf, c.dsts[i%len(c.dsts)]); err == nil {
			sent++
		}
	}
	c.mu.Lock()
	c.sent += sent
	c.mu.Unlock()
	return r
}

// Wait waits until every datagram of round r arrived or timeout passed, and
// reports whether all did.
func (c *Conns) Wait(r int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if c.missing(r) == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *Conns) missing(r int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, g := range c.got {
		if r >= len(g) || g[r] < 0 {
			n++
		}
	}
	return n
}

// ISPs returns, per connection, the ISP that carried each round's datagram
// (-1 where it did not arrive).
func (c *Conns) ISPs() [][]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([][]int, len(c.got))
	for i, g := range c.got {
		out[i] = append([]int(nil), g...)
	}
	return out
}

// Split counts, for round r, how many connections each ISP carried (index
// 0: not received or not from an ISP).
func (c *Conns) Split(r int, isps int) []int {
	out := make([]int, isps+1)
	for _, g := range c.ISPs() {
		if r < len(g) && g[r] > 0 && g[r] <= isps {
			out[g[r]]++
		} else {
			out[0]++
		}
	}
	return out
}

// Close closes every socket and stops the sink.
func (c *Conns) Close() {
	for _, s := range c.send {
		s.Close()
	}
	if c.sink != nil {
		c.sink.Close()
		<-c.done
	}
}

func (c *Conns) receive() {
	defer close(c.done)
	buf := make([]byte, 64)
	for {
		n, from, err := c.sink.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if n < connPayloadLen || [4]byte(buf[0:4]) != connMagic || [8]byte(buf[4:12]) != c.id {
			continue
		}
		i, r := int(binary.BigEndian.Uint32(buf[12:16])), int(binary.BigEndian.Uint32(buf[16:20]))
		c.mu.Lock()
		if i < len(c.got) && r < len(c.got[i]) {
			c.got[i][r] = ISPOf(from.Addr())
		}
		c.mu.Unlock()
	}
}
