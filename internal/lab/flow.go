package lab

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// MaxPPS bounds StartFlow's rate; beyond it the sender's timer resolution,
// not the network, would decide what is measured.
const MaxPPS = 20000

// flowMagic starts every flow datagram, so the sink ignores stray traffic.
var flowMagic = [4]byte{'W', 'R', 'L', 'F'}

// flowPayloadLen: magic, flow id, sequence number, send time (ns).
const flowPayloadLen = 4 + 8 + 8 + 8

// stopGrace is how long Stop keeps receiving after the last send, for
// packets still in flight (veth hops take microseconds; this also absorbs
// scheduling delays on a loaded machine).
const stopGrace = 100 * time.Millisecond

// Recv is one datagram received by the sink.
type Recv struct {
	Seq uint64
	// SentAt is the sender's clock when it sent the packet.
	SentAt time.Time
	// At is the kernel's receive timestamp (SO_TIMESTAMPNS, wall clock),
	// so it is exact even when the receiving goroutine was scheduled late.
	At time.Time
	// Src is the source address seen by the sink, ISP the ISP it belongs
	// to (ISPOf), 0 if none.
	Src netip.Addr
	ISP int
}

// Flow is a running UDP flow from a lab namespace to the sink in inet.
type Flow struct {
	from  string
	pps   int
	isps  int
	id    [8]byte
	dst   *net.UDPAddr
	send  *net.UDPConn
	recv  *net.UDPConn
	start time.Time

	stop     chan struct{}
	sendDone chan struct{}
	recvDone chan struct{}
	stopOnce sync.Once
	final    FlowReport

	mu        sync.Mutex
	sendTimes []time.Time // index = seq; zero where sendto failed
	sent      int
	sendErrs  int
	lastErr   error
	pkts      []Recv
	stoppedAt time.Time // zero while running
}

// StartFlow sends UDP datagrams at pps packets per second from the `from`
// namespace (normally "client" or "rtr"; any role but "inet") to
// SinkAddr:port in inet, where port is picked freely. Each datagram carries
// its sequence number and send time. The sender uses one unconnected socket
// and a sendto per packet, so a router-originated flow takes a fresh route
// and source address for every packet, exactly as the routing changes.
func (l *Lab) StartFlow(from string, pps int) (*Flow, error) {
	if from == RoleInet {
		return nil, errors.New("lab: a flow from inet would never leave it")
	}
	if pps < 1 || pps > MaxPPS {
		return nil, fmt.Errorf("lab: pps %d out of range 1..%d", pps, MaxPPS)
	}
	f := &Flow{
		from:     from,
		pps:      pps,
		isps:     l.n,
		stop:     make(chan struct{}),
		sendDone: make(chan struct{}),
		recvDone: make(chan struct{}),
	}
	if _, err := rand.Read(f.id[:]); err != nil {
		return nil, fmt.Errorf("lab: flow id: %w", err)
	}
	err := l.Do(RoleInet, func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IP(SinkAddr.AsSlice())})
		if err != nil {
			return err
		}
		f.recv = c
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lab: flow sink: %w", err)
	}
	f.dst = f.recv.LocalAddr().(*net.UDPAddr)
	if err := EnableRxTimestamps(f.recv); err != nil {
		f.recv.Close()
		return nil, fmt.Errorf("lab: flow sink: %w", err)
	}
	// Bursts after a stall (e.g. a failover) must not overflow the default
	// buffer and pass for network loss.
	_ = f.recv.SetReadBuffer(4 << 20)

	err = l.Do(from, func() error {
		// nil local address: bound to 0.0.0.0:ephemeral, never connected.
		c, err := net.ListenUDP("udp4", nil)
		if err != nil {
			return err
		}
		f.send = c
		return nil
	})
	if err != nil {
		f.recv.Close()
		return nil, fmt.Errorf("lab: flow sender in %s: %w", from, err)
	}

	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		f.recv.Close()
		f.send.Close()
		return nil, errors.New("lab: closed")
	}
	l.flows = append(l.flows, f)
	l.mu.Unlock()

	f.start = time.Now()
	go f.receive()
	go f.transmit()
	return f, nil
}

// SinkPort is the UDP port the flow sends to.
func (f *Flow) SinkPort() int { return f.dst.Port }

// Start is when the flow started sending.
func (f *Flow) Start() time.Time { return f.start }

func (f *Flow) transmit() {
	defer close(f.sendDone)
	interval := time.Second / time.Duration(f.pps)
	buf := make([]byte, flowPayloadLen)
	copy(buf[0:4], flowMagic[:])
	copy(buf[4:12], f.id[:])
	next := f.start
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for seq := uint64(0); ; seq++ {
		now := time.Now()
		binary.BigEndian.PutUint64(buf[12:20], seq)
		binary.BigEndian.PutUint64(buf[20:28], uint64(now.UnixNano()))
		_, err := f.send.WriteToUDP(buf, f.dst)
		f.mu.Lock()
		if err != nil {
			// ENETUNREACH while the router has no route, for example:
			// part of what an outage looks like, not a reason to stop.
			f.sendErrs++
			f.lastErr = err
			f.sendTimes = append(f.sendTimes, time.Time{})
		} else {
			f.sent++
			f.sendTimes = append(f.sendTimes, now)
		}
		f.mu.Unlock()

		next = next.Add(interval)
		// After a stall (machine busy) restart the schedule rather than
		// send a burst that would distort gap measurements.
		if lag := time.Since(next); lag > 50*time.Millisecond {
			next = time.Now()
		}
		if d := time.Until(next); d > 0 {
			timer.Reset(d)
			select {
			case <-f.stop:
				return
			case <-timer.C:
			}
		} else {
			select {
			case <-f.stop:
				return
			default:
			}
		}
	}
}

func (f *Flow) receive() {
	defer close(f.recvDone)
	buf := make([]byte, 256)
	oob := make([]byte, 128)
	for {
		n, oobn, _, from, err := f.recv.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient errors (ICMP-induced) are not fatal for a sink;
			// keep reading until Stop closes the socket.
			continue
		}
		at, ok := RxTimestamp(oob[:oobn])
		if !ok {
			at = time.Now()
		}
		if n < flowPayloadLen || [4]byte(buf[0:4]) != flowMagic || [8]byte(buf[4:12]) != f.id {
			continue
		}
		src := from.Addr().Unmap()
		r := Recv{
			Seq:    binary.BigEndian.Uint64(buf[12:20]),
			SentAt: time.Unix(0, int64(binary.BigEndian.Uint64(buf[20:28]))),
			At:     at,
			Src:    src,
			ISP:    ISPOf(src),
		}
		f.mu.Lock()
		f.pkts = append(f.pkts, r)
		f.mu.Unlock()
	}
}

// EnableRxTimestamps asks the kernel to stamp every datagram received on c
// (SO_TIMESTAMPNS), so receive times stay exact when the reader runs late;
// read them with RxTimestamp.
func EnableRxTimestamps(c *net.UDPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("SO_TIMESTAMPNS: %w", serr)
	}
	return nil
}

// RxTimestamp extracts the SCM_TIMESTAMPNS control message of a datagram
// read with ReadMsgUDP.
func RxTimestamp(oob []byte) (time.Time, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}, false
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_TIMESTAMPNS {
			continue
		}
		switch len(m.Data) {
		case 16: // struct timespec with 64-bit fields
			sec := int64(binary.NativeEndian.Uint64(m.Data[0:8]))
			nsec := int64(binary.NativeEndian.Uint64(m.Data[8:16]))
			return time.Unix(sec, nsec), true
		case 8: // 32-bit platforms
			sec := int64(int32(binary.NativeEndian.Uint32(m.Data[0:4])))
			nsec := int64(int32(binary.NativeEndian.Uint32(m.Data[4:8])))
			return time.Unix(sec, nsec), true
		}
	}
	return time.Time{}, false
}

// Stop ends the flow: it stops sending, keeps receiving for a short grace
// period for packets in flight, closes both sockets and returns the report.
// Later calls return the same report.
func (f *Flow) Stop() FlowReport {
	f.stopOnce.Do(func() {
		close(f.stop)
		<-f.sendDone
		time.Sleep(stopGrace)
		f.recv.Close()
		<-f.recvDone
		f.send.Close()
		end := time.Now()
		f.mu.Lock()
		f.stoppedAt = end
		f.mu.Unlock()
		f.final = f.snapshot(end)
	})
	return f.final
}

// Snapshot returns the report so far while the flow keeps running: the
// live view for a demo (see FlowReport.Buckets).
func (f *Flow) Snapshot() FlowReport { return f.snapshot(time.Now()) }

func (f *Flow) snapshot(end time.Time) FlowReport {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := FlowReport{
		From:       f.from,
		PPS:        f.pps,
		ISPs:       f.isps,
		Start:      f.start,
		End:        end,
		Sent:       f.sent,
		SendErrors: f.sendErrs,
		Received:   len(f.pkts),
		SendTimes:  append([]time.Time(nil), f.sendTimes...),
		Packets:    append([]Recv(nil), f.pkts...),
	}
	if f.lastErr != nil {
		r.LastSendError = f.lastErr.Error()
	}
	return r
}

// FlowReport is what a flow measured. Times compare by wall clock: At
// comes from the kernel, so pass time.Now() values or event times freely.
type FlowReport struct {
	From  string
	PPS   int
	ISPs  int // of the lab: PerISP slices have ISPs+1 entries
	Start time.Time
	End   time.Time
	// Sent counts datagrams the kernel accepted; SendErrors those sendto
	// refused (no route, for example), LastSendError the last such error.
	Sent, SendErrors int
	LastSendError    string
	Received         int
	// SendTimes[seq] is when datagram seq was sent (zero if sendto
	// failed).
	SendTimes []time.Time
	// Packets in arrival order.
	Packets []Recv
}

// DeliveryRatio is Received/Sent (0 when nothing was sent).
func (r FlowReport) DeliveryRatio() float64 {
	if r.Sent == 0 {
		return 0
	}
	return float64(r.Received) / float64(r.Sent)
}

// SentBetween counts datagrams sent in [from, to) and how many of those
// arrived: the loss of a phase, independent of when packets were received.
func (r FlowReport) SentBetween(from, to time.Time) (sent, received int) {
	inWindow := map[uint64]bool{}
	for seq, t := range r.SendTimes {
		if !t.IsZero() && !t.Before(from) && t.Before(to) {
			sent++
			inWindow[uint64(seq)] = true
		}
	}
	seen := map[uint64]bool{}
	for _, p := range r.Packets {
		if inWindow[p.Seq] && !seen[p.Seq] {
			seen[p.Seq] = true
			received++
		}
	}
	return sent, received
}

// ByISP counts packets received in [from, to) per ISP; index 0 counts
// packets from an unknown source. Zero times mean unbounded.
func (r FlowReport) ByISP(from, to time.Time) []int {
	c := make([]int, r.ISPs+1)
	for _, p := range r.Packets {
		if inRange(p.At, from, to) && p.ISP < len(c) {
			c[p.ISP]++
		}
	}
	return c
}

func inRange(t, from, to time.Time) bool {
	return (from.IsZero() || !t.Before(from)) && (to.IsZero() || t.Before(to))
}

// LastISP is the ISP that carried the last packet received, 0 if none.
func (r FlowReport) LastISP() int {
	if len(r.Packets) == 0 {
		return 0
	}
	return r.Packets[len(r.Packets)-1].ISP
}

// FirstAfter returns the first packet received at or after t, carried by
// isp (0: any ISP), e.g. to see when traffic came back or moved.
func (r FlowReport) FirstAfter(t time.Time, isp int) (Recv, bool) {
	for _, p := range r.Packets {
		if !p.At.Before(t) && (isp == 0 || p.ISP == isp) {
			return p, true
		}
	}
	return Recv{}, false
}

// Gap is an interval in which the sink received nothing.
type Gap struct {
	Start, End time.Time
}

// Duration is End - Start.
func (g Gap) Duration() time.Duration { return g.End.Sub(g.Start) }

// LongestGap returns the longest silence overlapping [from, to]: the
// intervals between consecutive receptions, where the reception just
// before `from` (or `from` itself if there is none) and the first one after
// `to` (or `to` if there is none) bound the ends. So an outage that starts
// just before a fault is injected is measured whole, and one that has not
// ended by `to` counts up to `to`. With a zero `to`, End of the report is
// used.
func (r FlowReport) LongestGap(from, to time.Time) Gap {
	if to.IsZero() {
		to = r.End
	}
	at := make([]time.Time, 0, len(r.Packets))
	for _, p := range r.Packets {
		at = append(at, p.At)
	}
	// Arrival order is receive order, but be safe against timestamp
	// quirks rather than report negative gaps.
	sort.Slice(at, func(i, j int) bool { return at[i].Before(at[j]) })
	points := []time.Time{from}
	for i, t := range at {
		if t.Before(from) {
			if i+1 == len(at) || !at[i+1].Before(from) {
				points[0] = t
			}
			continue
		}
		if t.After(to) {
			points = append(points, t)
			break
		}
		points = append(points, t)
	}
	if last := points[len(points)-1]; !last.After(to) {
		points = append(points, to)
	}
	var g Gap
	for i := 1; i < len(points); i++ {
		if d := points[i].Sub(points[i-1]); d > g.Duration() || g.Start.IsZero() {
			g = Gap{Start: points[i-1], End: points[i]}
		}
	}
	return g
}

// Outage is the longest silence of the flow from just before a fault to its
// last received packet: a gap that began shortly before the fault (the
// fault's own effect racing the timestamp) counts whole, Stop's wind-down
// after the last packet is not an outage, and a flow that never came back
// counts from the fault to the end of the report.
func (r FlowReport) Outage(faultAt time.Time) Gap {
	last, ok := r.FirstAfter(faultAt, 0)
	if !ok {
		return Gap{Start: faultAt, End: r.End}
	}
	if n := len(r.Packets); n > 0 {
		last = r.Packets[n-1]
	}
	return r.LongestGap(faultAt.Add(-100*time.Millisecond), last.At)
}

// Bucket is the traffic received in one time slot of a flow.
type Bucket struct {
	// Offset of the slot's start from the flow's start.
	Offset time.Duration
	// PerISP[i] counts packets carried by ISP i (0: unknown source).
	PerISP []int
	Total  int
}

// Buckets slices the flow from Start to End into slots of width (e.g.
// 100ms) and counts received packets per ISP in each: the data of a live
// display like "t=3.2s isp1 ████ 20  isp2 0". The last slot may be partial.
func (r FlowReport) Buckets(width time.Duration) []Bucket {
	if width <= 0 || !r.End.After(r.Start) {
		return nil
	}
	n := int((r.End.Sub(r.Start) + width - 1) / width)
	b := make([]Bucket, n)
	for i := range b {
		b[i] = Bucket{Offset: time.Duration(i) * width, PerISP: make([]int, r.ISPs+1)}
	}
	for _, p := range r.Packets {
		d := p.At.Sub(r.Start)
		if d < 0 {
			continue
		}
		i := int(d / width)
		if i >= n || p.ISP >= len(b[i].PerISP) {
			continue
		}
		b[i].PerISP[p.ISP]++
		b[i].Total++
	}
	return b
}

// Buckets is Snapshot().Buckets(width) without copying the send log: cheap
// enough to call every 100ms from a terminal UI.
func (f *Flow) Buckets(width time.Duration) []Bucket {
	f.mu.Lock()
	end := f.stoppedAt
	if end.IsZero() {
		end = time.Now()
	}
	r := FlowReport{ISPs: f.isps, Start: f.start, End: end, Packets: f.pkts}
	b := r.Buckets(width)
	f.mu.Unlock()
	return b
}
