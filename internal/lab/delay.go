package lab

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// MaxDelayQueue bounds the packets one Delayer holds at a time (kernel queue
// and user space alike). At 1 s of delay that is 4096 packets/s through the
// ISP in the delayed direction, well above what the lab's flows and probes
// send; beyond it packets are dropped, as a real bloated buffer would.
const MaxDelayQueue = 4096

// MaxDelay bounds Delay's d: the lab emulates a latency jump, not a dead
// link (Blackhole is that).
const MaxDelay = 10 * time.Second

// Delayer holds every packet ISP i forwards in one direction for a fixed
// time before letting it go: a latency jump on the ISP's path, which only
// probing with a timeout shorter than the new RTT notices. Packets go
// through NFQUEUE to this process and are re-injected (accepted) in arrival
// order once their time has come.
//
// Stop it before closing the lab: its netfilter socket lives in the ISP's
// namespace and would keep that namespace alive.
type Delayer struct {
	isp   int
	dir   Direction
	delay time.Duration
	ns    string // namespace name, for iptables
	chain string
	key   delayKey

	nf     *nfqueue.Nfqueue
	cancel context.CancelFunc
	wake   chan struct{}
	done   chan struct{} // closed when the releaser has returned

	mu      sync.Mutex
	held    []heldPacket // FIFO: constant delay keeps it sorted by due time
	stopped bool
	stats   DelayStats

	stopOnce sync.Once
	stopErr  error
}

type heldPacket struct {
	id  uint32
	due time.Time
}

// DelayStats counts what a Delayer did with the packets it saw.
type DelayStats struct {
	// Delayed packets were held for the full delay, then accepted.
	Delayed int
	// Flushed packets were still held at Stop and accepted early.
	Flushed int
	// Dropped packets arrived while MaxDelayQueue packets were held.
	Dropped int
	// VerdictErrors counts verdicts the kernel refused (the packet is
	// then lost); non-zero means the measurement is suspect.
	VerdictErrors int
}

// delayKey identifies the one Delayer a (lab, ISP, direction) may have: a
// second one would share its iptables chain.
type delayKey struct {
	prefix string
	isp    int
	dir    Direction
}

var (
	delayMu     sync.Mutex
	delayActive = map[delayKey]bool{}
)

// Delay starts holding the packets ISP i forwards in direction dir for d.
// Upstream delays router -> internet (so ICMP echo requests and the lab's
// flows), Downstream internet -> router; one Delayer per direction may run
// at a time. Round-trip time through the ISP grows by d either way.
//
// Delay returns once packets are being delayed: the queue listener is
// bound before the iptables rule that feeds it is installed.
func (l *Lab) Delay(i int, dir Direction, d time.Duration) (*Delayer, error) {
	if err := l.checkISP(i); err != nil {
		return nil, err
	}
	if dir != Upstream && dir != Downstream {
		return nil, fmt.Errorf("lab: bad direction %v", dir)
	}
	if d <= 0 || d > MaxDelay {
		return nil, fmt.Errorf("lab: delay %v out of range (0, %v]", d, MaxDelay)
	}
	nsh, err := l.nsHandle(ISPRole(i))
	if err != nil {
		return nil, err
	}
	key := delayKey{l.prefix, i, dir}
	delayMu.Lock()
	if delayActive[key] {
		delayMu.Unlock()
		return nil, fmt.Errorf("lab: ISP %d already delays %v traffic", i, dir)
	}
	delayActive[key] = true
	delayMu.Unlock()
	release := func() {
		delayMu.Lock()
		delete(delayActive, key)
		delayMu.Unlock()
	}

	dl := &Delayer{
		isp: i, dir: dir, delay: d, key: key,
		ns:    l.NS(ISPRole(i)),
		chain: "LABDELAY_" + dir.String(),
		wake:  make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	// Queues are per namespace, so the direction alone keeps the two
	// Delayers an ISP may have apart.
	queue := uint16(dir)
	nf, err := nfqueue.Open(&nfqueue.Config{
		NetNS:        int(nsh),
		NfQueue:      queue,
		MaxQueueLen:  MaxDelayQueue,
		Copymode:     nfqueue.NfQnlCopyMeta,
		AfFamily:     unix.AF_INET,
		WriteTimeout: time.Second,
	})
	if err != nil {
		release()
		return nil, fmt.Errorf("lab: nfqueue in %s: %w", ISPRole(i), err)
	}
	// Without this a burst larger than the socket buffer would end the
	// registration with ENOBUFS instead of just losing those packets.
	if err := nf.SetOption(netlink.NoENOBUFS, true); err != nil {
		nf.Close()
		release()
		return nil, fmt.Errorf("lab: nfqueue NoENOBUFS: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	dl.nf, dl.cancel = nf, cancel
	err = nf.RegisterWithErrorFunc(ctx, dl.hold, func(err error) int {
		// Timeouts are how the library notices cancellation; anything
		// else on a socket we own is fatal for the registration.
		var oe *netlink.OpError
		if ctx.Err() != nil || (errors.As(err, &oe) && oe.Timeout()) {
			return 0
		}
		return 1
	})
	if err != nil {
		cancel()
		nf.Close()
		release()
		return nil, fmt.Errorf("lab: nfqueue register: %w", err)
	}
	go dl.releaser()

	match := "-i " + ISPCustIf
	if dir == Downstream {
		match = "-o " + ISPCustIf
	}
	// --queue-bypass: if this process dies, packets flow undelayed rather
	// than being dropped by a queue nobody reads.
	rules := fmt.Sprintf("*filter\n:%s - [0:0]\n-A %s %s -j NFQUEUE --queue-num %d --queue-bypass\n-I FORWARD 1 -j %s\nCOMMIT\n",
		dl.chain, dl.chain, match, queue, dl.chain)
	if _, err := run([]byte(rules), "ip", "netns", "exec", dl.ns, "iptables-restore", "--noflush"); err != nil {
		dl.shutdown()
		release()
		return nil, fmt.Errorf("lab: delay rule in %s: %w", ISPRole(i), err)
	}
	return dl, nil
}

// hold is the queue callback: it runs on the library's receive goroutine
// and must not block.
func (dl *Delayer) hold(a nfqueue.Attribute) int {
	if a.PacketID == nil {
		return 0
	}
	now := time.Now()
	dl.mu.Lock()
	if dl.stopped || len(dl.held) >= MaxDelayQueue {
		if !dl.stopped {
			dl.stats.Dropped++
		}
		dl.mu.Unlock()
		verdict := nfqueue.NfDrop
		if dl.stopped {
			// Stop has removed the rule; stragglers already queued
			// pass at once rather than vanish.
			verdict = nfqueue.NfAccept
		}
		dl.verdict(*a.PacketID, verdict)
		return 0
	}
	dl.held = append(dl.held, heldPacket{id: *a.PacketID, due: now.Add(dl.delay)})
	first := len(dl.held) == 1
	dl.mu.Unlock()
	if first {
		select {
		case dl.wake <- struct{}{}:
		default:
		}
	}
	return 0
}

func (dl *Delayer) verdict(id uint32, v int) {
	if err := dl.nf.SetVerdict(id, v); err != nil {
		dl.mu.Lock()
		dl.stats.VerdictErrors++
		dl.mu.Unlock()
	}
}

// releaser accepts held packets when they are due. It exits when Stop has
// flushed the queue.
func (dl *Delayer) releaser() {
	defer close(dl.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		dl.mu.Lock()
		if dl.stopped {
			dl.mu.Unlock()
			return
		}
		var wait time.Duration = -1
		var due []uint32
		now := time.Now()
		n := 0
		for n < len(dl.held) && !dl.held[n].due.After(now) {
			due = append(due, dl.held[n].id)
			n++
		}
		dl.held = dl.held[n:]
		dl.stats.Delayed += n
		if len(dl.held) > 0 {
			wait = dl.held[0].due.Sub(now)
		}
		dl.mu.Unlock()
		for _, id := range due {
			dl.verdict(id, nfqueue.NfAccept)
		}
		if wait < 0 {
			wait = time.Hour // idle until hold wakes us
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-dl.wake:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		}
	}
}

// Stop removes the delay: the iptables rule goes first (no new packets are
// queued), then the packets still held are accepted at once, then the queue
// is closed. It is idempotent and returns the first call's error.
func (dl *Delayer) Stop() error {
	dl.stopOnce.Do(func() {
		rules := fmt.Sprintf("*filter\n-D FORWARD -j %s\n-F %s\n-X %s\nCOMMIT\n", dl.chain, dl.chain, dl.chain)
		var errs []error
		if _, err := run([]byte(rules), "ip", "netns", "exec", dl.ns, "iptables-restore", "--noflush"); err != nil {
			errs = append(errs, fmt.Errorf("lab: removing delay rule of ISP %d: %w", dl.isp, err))
		}
		errs = append(errs, dl.shutdown())
		delayMu.Lock()
		delete(delayActive, dl.key)
		delayMu.Unlock()
		dl.stopErr = errors.Join(errs...)
	})
	return dl.stopErr
}

// shutdown flushes the held packets and closes the queue.
func (dl *Delayer) shutdown() error {
	dl.mu.Lock()
	dl.stopped = true
	flush := dl.held
	dl.held = nil
	dl.stats.Flushed += len(flush)
	dl.mu.Unlock()
	select {
	case dl.wake <- struct{}{}:
	default:
	}
	<-dl.done
	for _, p := range flush {
		dl.verdict(p.id, nfqueue.NfAccept)
	}
	dl.cancel()
	if err := dl.nf.Close(); err != nil {
		return fmt.Errorf("lab: closing nfqueue of ISP %d: %w", dl.isp, err)
	}
	return nil
}

// Stats returns the counters so far.
func (dl *Delayer) Stats() DelayStats {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	return dl.stats
}

// Held is the number of packets currently held.
func (dl *Delayer) Held() int {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	return len(dl.held)
}
