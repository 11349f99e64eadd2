package lab

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
)

// faultChain is the lab's own filter chain in every ISP namespace, jumped to
// from FORWARD. Every fault rule lives there so that Restore is one flush.
const faultChain = "LABFAULT"

// Direction selects which way a one-way fault applies, seen from the
// router.
type Direction int

const (
	// Upstream is router -> internet (packets entering the ISP on cust0).
	Upstream Direction = iota + 1
	// Downstream is internet -> router (packets leaving the ISP on cust0).
	Downstream
)

func (d Direction) String() string {
	switch d {
	case Upstream:
		return "upstream"
	case Downstream:
		return "downstream"
	}
	return "Direction(" + strconv.Itoa(int(d)) + ")"
}

// faultState is what LABFAULT of one ISP should contain. The chain is
// rewritten from it as a whole on every change, so faults combine
// predictably (a later Loss replaces an earlier one in the same direction).
type faultState struct {
	blackhole bool
	upLoss    float64
	downLoss  float64
}

func (f faultState) rules() []string {
	if f.blackhole {
		return []string{"-A " + faultChain + " -j DROP"}
	}
	var r []string
	for _, d := range []struct {
		match string
		p     float64
	}{{"-i " + ISPCustIf, f.upLoss}, {"-o " + ISPCustIf, f.downLoss}} {
		switch {
		case d.p >= 1:
			r = append(r, fmt.Sprintf("-A %s %s -j DROP", faultChain, d.match))
		case d.p > 0:
			r = append(r, fmt.Sprintf("-A %s %s -m statistic --mode random --probability %s -j DROP",
				faultChain, d.match, strconv.FormatFloat(d.p, 'f', -1, 64)))
		}
	}
	return r
}

func (l *Lab) checkISP(i int) error {
	if i < 1 || i > l.n {
		return fmt.Errorf("lab: ISP %d out of range 1..%d", i, l.n)
	}
	return nil
}

// setFaults records and applies ISP i's filter faults. faultMu is held
// across iptables-restore so that concurrent calls cannot apply their states
// out of order; it is separate from mu so that a slow iptables run does not
// block the rest of the API.
func (l *Lab) setFaults(i int, change func(*faultState)) error {
	if err := l.checkISP(i); err != nil {
		return err
	}
	l.faultMu.Lock()
	defer l.faultMu.Unlock()
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return fmt.Errorf("lab: closed")
	}
	st := l.faults[i]
	change(&st)
	// Flush and refill in one iptables-restore transaction: there is never
	// a moment with the old and new rules mixed, or with none at all.
	var b strings.Builder
	b.WriteString("*filter\n-F " + faultChain + "\n")
	for _, r := range st.rules() {
		b.WriteString(r + "\n")
	}
	b.WriteString("COMMIT\n")
	if _, err := run([]byte(b.String()), "ip", "netns", "exec", l.prefix+"-"+ISPRole(i), "iptables-restore", "--noflush"); err != nil {
		return fmt.Errorf("lab: faults of ISP %d: %w", i, err)
	}
	l.faults[i] = st
	return nil
}

// CarrierDown sets ISP i's router-facing veth end down, so that the
// router's WANName(i) loses carrier (NO-CARRIER, operstate down) while
// staying administratively up, like an unplugged cable.
func (l *Lab) CarrierDown(i int) error { return l.setCustLink(i, false) }

// CarrierUp undoes CarrierDown.
func (l *Lab) CarrierUp(i int) error { return l.setCustLink(i, true) }

func (l *Lab) setCustLink(i int, up bool) error {
	if err := l.checkISP(i); err != nil {
		return err
	}
	h, err := l.Handle(ISPRole(i))
	if err != nil {
		return err
	}
	link, err := h.LinkByName(ISPCustIf)
	if err != nil {
		return fmt.Errorf("lab: ISP %d %s: %w", i, ISPCustIf, err)
	}
	if up {
		err = h.LinkSetUp(link)
	} else {
		err = h.LinkSetDown(link)
	}
	if err != nil {
		return fmt.Errorf("lab: ISP %d %s up=%v: %w", i, ISPCustIf, up, err)
	}
	return nil
}

// Blackhole makes ISP i silently drop everything it would forward, in both
// directions. The link, ARP and the ISP's own address (203.0.113.1 answers
// pings) stay up: the failure only probing through the ISP can detect.
func (l *Lab) Blackhole(i int) error {
	return l.setFaults(i, func(f *faultState) { f.blackhole = true })
}

// Loss makes ISP i drop a random fraction p (0..1) of the packets it
// forwards upstream (router -> internet). Replies are never dropped, so for
// request/response traffic such as ICMP echo the round-trip loss is p as
// well: a dropped request simply has no reply. p = 0 removes upstream loss.
func (l *Lab) Loss(i int, p float64) error { return l.OneWayLoss(i, Upstream, p) }

// OneWayLoss drops a random fraction p (0..1) of the packets ISP i forwards
// in one direction; p = 1 is a one-way blackhole, p = 0 removes the loss of
// that direction. Upstream and downstream loss combine.
func (l *Lab) OneWayLoss(i int, dir Direction, p float64) error {
	if !(p >= 0 && p <= 1) { // also rejects NaN
		return fmt.Errorf("lab: loss %v out of range 0..1", p)
	}
	switch dir {
	case Upstream:
		return l.setFaults(i, func(f *faultState) { f.upLoss = p })
	case Downstream:
		return l.setFaults(i, func(f *faultState) { f.downLoss = p })
	}
	return fmt.Errorf("lab: bad direction %v", dir)
}

// Restore removes ISP i's blackhole and loss rules and brings its carrier
// back up.
func (l *Lab) Restore(i int) error {
	if err := l.setFaults(i, func(f *faultState) { *f = faultState{} }); err != nil {
		return err
	}
	return l.CarrierUp(i)
}

// HasCarrier reports whether link has carrier (IFF_LOWER_UP) and is
// operationally up, for use with WaitLink.
func HasCarrier(link netlink.Link) bool {
	a := link.Attrs()
	return a.RawFlags&lowerUp != 0 && a.OperState == netlink.OperUp
}

// NoCarrier reports whether link has lost carrier: no IFF_LOWER_UP and
// operationally down (or lower-layer down), for use with WaitLink.
func NoCarrier(link netlink.Link) bool {
	a := link.Attrs()
	return a.RawFlags&lowerUp == 0 && (a.OperState == netlink.OperDown || a.OperState == netlink.OperLowerLayerDown)
}

// lowerUp is IFF_LOWER_UP, which net.Flags does not carry.
const lowerUp = 1 << 16
