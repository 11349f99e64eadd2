package reactor

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/wanreact/wanreact/config"
)

// Benchmarks of Apply, the reducer's only entry point: every event the
// daemon reads goes through it on the one reactor goroutine, so its cost
// bounds how fast the daemon can follow the kernel.

// benchState is a reducer with n static WANs (wan0.. on links 2..), all
// links up, synced, and every WAN proven up by probes.
type benchState struct {
	s    *State
	now  time.Time
	seq  uint16
	wans []string
}

func newBenchState(b *testing.B, n int) *benchState {
	c := testConfig()
	probe := c.WANs[0].Probe
	c.WANs = nil
	for i := 0; i < n; i++ {
		c.WANs = append(c.WANs, config.WAN{
			Name: fmt.Sprintf("isp%d", i+1), Interface: fmt.Sprintf("wan%d", i), Table: 10 + i, Priority: i + 1, Weight: 1,
			Addressing: config.Static, Address: netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(2 + i)}), 24),
			Gateway: gw, Probe: probe,
		})
	}
	bs := &benchState{s: New(), now: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	bs.apply("", ConfigLoaded{Config: c})
	for i := 0; i < n; i++ {
		bs.wans = append(bs.wans, c.WANs[i].Name)
		bs.apply("", LinkChange{Index: 2 + i, Name: c.WANs[i].Interface, AdminUp: true, Carrier: true, OperUp: true})
	}
	bs.apply("", Synced{})
	for range 2 * config.DefaultUpAfter {
		for _, w := range bs.wans {
			bs.probe(w, true)
		}
	}
	for _, st := range bs.s.Status() {
		if st.State != Up {
			b.Fatalf("setup: %s is %s", st.Name, st.State)
		}
	}
	return bs
}

func (bs *benchState) apply(wan string, p Payload) Decision {
	return bs.s.Apply(Event{Time: bs.now, WAN: wan, Data: p})
}

// probe feeds one probe result, alternating targets, 10ms after the last.
func (bs *benchState) probe(wan string, ok bool) Decision {
	bs.now = bs.now.Add(10 * time.Millisecond)
	bs.seq++
	target := t1
	if bs.seq%2 == 0 {
		target = t2
	}
	r := ProbeResult{Target: target, Seq: bs.seq, OK: ok}
	if ok {
		r.RTT = 2 * time.Millisecond
	}
	return bs.apply(wan, r)
}

// BenchmarkApplyProbeReply is the steady state: a reply on a healthy WAN,
// deciding nothing. Most events a running daemon sees are these.
func BenchmarkApplyProbeReply(b *testing.B) {
	for _, n := range []int{2, 8, 32} {
		b.Run(fmt.Sprintf("wans=%d", n), func(b *testing.B) {
			bs := newBenchState(b, n)
			b.ReportAllocs()
			for b.Loop() {
				if d := bs.probe("isp1", true); !d.Empty() {
					b.Fatalf("steady reply decided %+v", d)
				}
			}
		})
	}
}

// BenchmarkApplyUnwatchedRoute is a route change in a table the daemon
// does not own: what each event of a routing daemon's churn would cost if
// the netlink source's filter did not drop it first.
func BenchmarkApplyUnwatchedRoute(b *testing.B) {
	bs := newBenchState(b, 2)
	r := RouteChange{Table: 4242, Dst: netip.MustParsePrefix("198.19.0.0/32"), Index: 2, Protocol: 3}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r.Deleted = i%2 == 1
		if d := bs.apply("", r); !d.Empty() {
			b.Fatalf("unwatched route decided %+v", d)
		}
	}
}

// BenchmarkFailoverCycle is one whole outage of the preferred WAN per op:
// down_after lost probes (the last one deciding the failover), then
// up_after replies (the last one deciding the failback). It reports the
// cost per event, the unit the other benchmarks use.
func BenchmarkFailoverCycle(b *testing.B) {
	bs := newBenchState(b, 2)
	down := config.DefaultDownAfter(2, 200*time.Millisecond)
	events := 0
	b.ReportAllocs()
	for b.Loop() {
		failed, back := false, false
		for range down {
			d := bs.probe("isp1", false)
			failed = failed || d.ActiveChanged
			events++
		}
		for range config.DefaultUpAfter {
			d := bs.probe("isp1", true)
			back = back || d.ActiveChanged
			events++
		}
		if !failed || !back {
			b.Fatalf("cycle did not fail over and back (failed %v, back %v)", failed, back)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(events), "ns/event")
}

// BenchmarkApplyCarrierLoss is a carrier loss and its return on the
// preferred WAN: the fastest failover path, two decisions per op.
func BenchmarkApplyCarrierLoss(b *testing.B) {
	bs := newBenchState(b, 2)
	b.ReportAllocs()
	for b.Loop() {
		if d := bs.apply("", CarrierChange{Name: "wan0", Carrier: false}); !d.ActiveChanged {
			b.Fatalf("carrier loss did not fail over: %+v", d)
		}
		bs.apply("", CarrierChange{Name: "wan0", Carrier: true})
		// Prove it again, as the prober would, so every op starts equal.
		for range config.DefaultUpAfter {
			bs.probe("isp1", true)
		}
	}
}
