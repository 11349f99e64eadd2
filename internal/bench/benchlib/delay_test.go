package benchlib

import (
	"net"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/wanreact/wanreact/internal/lab"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root and network namespaces")
	}
	if testing.Short() {
		t.Skip("lab test skipped in -short mode")
	}
}

// TestDelay checks the lab's NFQUEUE delayer (internal/lab/delay.go), which
// the latency-jump failover relies on, against real round trips: pings from
// the router through ISP 1 take the delay longer, in either direction, and
// are fast again once it stops.
func TestDelay(t *testing.T) {
	needRoot(t)
	l, err := lab.New(lab.Options{ISPs: 1, RouterAddrs: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	h, err := l.Handle(lab.RoleRouter)
	if err != nil {
		t.Fatal(err)
	}
	wan, err := h.LinkByName(lab.WANName(1))
	if err != nil {
		t.Fatal(err)
	}
	// The lab gives the router no default route; the daemon would.
	if err := h.RouteAdd(&netlink.Route{LinkIndex: wan.Attrs().Index, Gw: net.IP(lab.ISPGateway.AsSlice())}); err != nil {
		t.Fatal(err)
	}
	ping := func(timeout time.Duration) time.Duration {
		t.Helper()
		rtt, err := l.Ping(lab.RoleRouter, lab.Target1, timeout)
		if err != nil {
			t.Fatalf("ping: %v", err)
		}
		return rtt
	}
	if rtt := ping(time.Second); rtt > 50*time.Millisecond {
		t.Fatalf("undelayed rtt %v", rtt)
	}

	for _, c := range []struct {
		dir   lab.Direction
		delay time.Duration
	}{{lab.Upstream, 300 * time.Millisecond}, {lab.Downstream, 200 * time.Millisecond}} {
		d, err := l.Delay(1, c.dir, c.delay)
		if err != nil {
			t.Fatalf("%v: %v", c.dir, err)
		}
		t.Cleanup(func() { d.Stop() })
		if _, err := l.Delay(1, c.dir, c.delay); err == nil {
			t.Errorf("%v: a second delayer on the same direction was accepted", c.dir)
		}
		rtt := ping(2 * time.Second)
		if rtt < c.delay || rtt > c.delay+300*time.Millisecond {
			t.Errorf("%v: rtt %v with a %v delay", c.dir, rtt, c.delay)
		}
		if err := d.Stop(); err != nil {
			t.Fatalf("%v stop: %v", c.dir, err)
		}
		if st := d.Stats(); st.Delayed < 1 || st.VerdictErrors != 0 || st.Dropped != 0 {
			t.Errorf("%v stats %+v", c.dir, st)
		}
		if rtt := ping(time.Second); rtt > 50*time.Millisecond {
			t.Errorf("%v: rtt %v after Stop", c.dir, rtt)
		}
		if out, err := l.Exec(lab.ISPRole(1), "iptables", "-S", "LABDELAY_"+c.dir.String()); err == nil {
			t.Errorf("%v: chain still there after Stop: %s", c.dir, out)
		}
	}

	// Stop releases what it holds at once instead of dropping it.
	d, err := l.Delay(1, lab.Upstream, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		rtt time.Duration
		err error
	}
	done := make(chan result, 1)
	go func() {
		rtt, err := l.Ping(lab.RoleRouter, lab.Target1, 5*time.Second)
		done <- result{rtt, err}
	}()
	time.Sleep(300 * time.Millisecond)
	if d.Held() < 1 {
		t.Errorf("the echo request is not held (held %d)", d.Held())
	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.rtt > 1500*time.Millisecond {
		t.Errorf("held ping after Stop: rtt %v, %v", r.rtt, r.err)
	}
	if st := d.Stats(); st.Flushed < 1 {
		t.Errorf("nothing flushed: %+v", st)
	}

	for name, f := range map[string]func() error{
		"ISP 2 of 1":    func() error { _, err := l.Delay(2, lab.Upstream, time.Second); return err },
		"zero delay":    func() error { _, err := l.Delay(1, lab.Upstream, 0); return err },
		"11 s":          func() error { _, err := l.Delay(1, lab.Upstream, 11*time.Second); return err },
		"bad direction": func() error { _, err := l.Delay(1, lab.Direction(7), time.Second); return err },
	} {
		if f() == nil {
			t.Errorf("%s accepted", name)
		}
	}
}
