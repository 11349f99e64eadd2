package benchlib

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wanreact/wanreact/internal/lab"
)

// connStream sends one datagram per new UDP connection from the LAN client
// to a sink in inet: every datagram leaves from a fresh socket bound to a
// port not used for a while, so the router sees each as a new connection
// and routes it by the current decision. It measures when *new* traffic
// goes where; lab.Flow, one socket throughout, measures what happens to an
// established connection, which the balancer may keep pinned to its WAN.
type connStream struct {
	id    [8]byte
	pps   int
	sink  *net.UDPConn
	dst   unix.SockaddrInet4
	ports *portCycler
	start time.Time

	stop     chan struct{}
	sendDone chan error
	recvDone chan struct{}
	once     sync.Once
	report   lab.FlowReport

	mu    sync.Mutex
	sent  []time.Time
	pkts  []lab.Recv
	isps  int
	errs  int
	first error
}

// connMagic starts every datagram, so the sink ignores anything else.
var connMagic = [4]byte{'W', 'R', 'B', 'C'}

const connPayloadLen = 4 + 8 + 8 + 8 // magic, stream id, seq, send time

// portCycler hands out source ports in a wide range in order, so a port
// comes back only after 40 000 connections: long after conntrack forgot
// the previous one (30 s for unreplied UDP), which would otherwise route
// the "new" connection the old way.
type portCycler struct {
	mu   sync.Mutex
	next int
}

const (
	portFirst = 20000
	portLast  = 59999
)

func (p *portCycler) take() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.next < portFirst || p.next > portLast {
		p.next = portFirst
	}
	port := p.next
	p.next++
	return port
}

// startConnStream starts sending pps new connections per second from the
// client namespace.
func startConnStream(l *lab.Lab, pps int, ports *portCycler) (*connStream, error) {
	c := &connStream{pps: pps, ports: ports, isps: l.ISPs(), stop: make(chan struct{}),
		sendDone: make(chan error, 1), recvDone: make(chan struct{})}
	if _, err := rand.Read(c.id[:]); err != nil {
		return nil, err
	}
	err := l.Do(lab.RoleInet, func() error {
		s, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IP(lab.SinkAddr.AsSlice())})
		if err != nil {
			return err
		}
		c.sink = s
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("connection sink: %w", err)
	}
	if err := lab.EnableRxTimestamps(c.sink); err != nil {
		c.sink.Close()
		return nil, err
	}
	c.dst = unix.SockaddrInet4{Addr: lab.SinkAddr.As4(), Port: c.sink.LocalAddr().(*net.UDPAddr).Port}
	ns, err := netns.GetFromName(l.NS(lab.RoleClient))
	if err != nil {
		c.sink.Close()
		return nil, fmt.Errorf("client netns: %w", err)
	}
	c.start = time.Now()
	go c.receive()
	go func() {
		defer ns.Close()
		c.sendDone <- c.transmit(ns)
	}()
	return c, nil
}

// transmit runs on a thread of its own inside the client namespace: every
// socket it creates is the client's.
func (c *connStream) transmit(ns netns.NsHandle) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter client netns: %w", err)
	}
	defer func() {
		// On failure the thread stays locked and dies with the
		// goroutine rather than serve others from the wrong namespace.
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	interval := time.Second / time.Duration(c.pps)
	buf := make([]byte, connPayloadLen)
	copy(buf[0:4], connMagic[:])
	copy(buf[4:12], c.id[:])
	next := time.Now()
	for seq := uint64(0); ; seq++ {
		now := time.Now()
		binary.BigEndian.PutUint64(buf[12:20], seq)
		binary.BigEndian.PutUint64(buf[20:28], uint64(now.UnixNano()))
		err := c.sendOnce(buf)
		c.mu.Lock()
		if err != nil {
			c.errs++
			if c.first == nil {
				c.first = err
			}
			c.sent = append(c.sent, time.Time{})
		} else {
			c.sent = append(c.sent, now)
		}
		c.mu.Unlock()
		next = next.Add(interval)
		if time.Until(next) < -50*time.Millisecond {
			next = time.Now() // a stall: resume the schedule, no burst
		}
		select {
		case <-c.stop:
			return nil
		case <-time.After(time.Until(next)):
		}
	}
}

// sendOnce sends buf from a new socket on the next free port.
func (c *connStream) sendOnce(buf []byte) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	for try := 0; ; try++ {
		err = unix.Bind(fd, &unix.SockaddrInet4{Port: c.ports.take()})
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EADDRINUSE) || try == 10 {
			return fmt.Errorf("bind: %w", err)
		}
	}
	if err := unix.Sendto(fd, buf, 0, &c.dst); err != nil {
		return fmt.Errorf("sendto: %w", err)
	}
	return nil
}

func (c *connStream) receive() {
	defer close(c.recvDone)
	buf := make([]byte, 256)
	oob := make([]byte, 128)
	for {
		n, oobn, _, from, err := c.sink.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		at, ok := lab.RxTimestamp(oob[:oobn])
		if !ok {
			at = time.Now()
		}
		if n < connPayloadLen || [4]byte(buf[0:4]) != connMagic || [8]byte(buf[4:12]) != c.id {
			continue
		}
		src := from.Addr().Unmap()
		r := lab.Recv{
			Seq:    binary.BigEndian.Uint64(buf[12:20]),
			SentAt: time.Unix(0, int64(binary.BigEndian.Uint64(buf[20:28]))),
			At:     at, Src: src, ISP: lab.ISPOf(src),
		}
		c.mu.Lock()
		c.pkts = append(c.pkts, r)
		c.mu.Unlock()
	}
}

// Stop ends the stream and returns what it measured, in the form of a
// lab.FlowReport (one sequence number per connection).
func (c *connStream) Stop() (lab.FlowReport, error) {
	var err error
	c.once.Do(func() {
		close(c.stop)
		err = <-c.sendDone
		time.Sleep(100 * time.Millisecond) // in flight
		c.sink.Close()
		<-c.recvDone
		c.mu.Lock()
		defer c.mu.Unlock()
		c.report = lab.FlowReport{From: lab.RoleClient, PPS: c.pps, ISPs: c.isps, Start: c.start, End: time.Now(),
			SendTimes: c.sent, Packets: c.pkts, Received: len(c.pkts), SendErrors: c.errs}
		for _, t := range c.sent {
			if !t.IsZero() {
				c.report.Sent++
			}
		}
		if c.first != nil {
			c.report.LastSendError = c.first.Error()
		}
	})
	return c.report, err
}
