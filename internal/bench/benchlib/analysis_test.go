package benchlib

import (
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wanreact/wanreact/internal/lab"
	"github.com/wanreact/wanreact/reactor"
)

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func TestStats(t *testing.T) {
	var v []float64
	for i := 20; i >= 1; i-- {
		v = append(v, float64(i))
	}
	s := floatStats(v)
	if s.N != 20 || s.Min != 1 || s.Max != 20 || s.Median != 10.5 || s.P99 != 20 || s.Mean != 10.5 {
		t.Fatalf("stats of 1..20: %+v", s)
	}
	// With 200 samples p99 is no longer the maximum.
	v = v[:0]
	for i := 1; i <= 200; i++ {
		v = append(v, float64(i))
	}
	if s := floatStats(v); s.P99 != 198 || s.Median != 100.5 {
		t.Fatalf("stats of 1..200: %+v", s)
	}
	if s := floatStats([]float64{7}); s.Min != 7 || s.Median != 7 || s.P99 != 7 {
		t.Fatalf("one sample: %+v", s)
	}
	if s := floatStats(nil); s != (Stats{}) {
		t.Fatalf("no samples: %+v", s)
	}
	if d := durationPercentile([]time.Duration{3, 1, 2}, 50); d != 2 {
		t.Fatalf("duration median %v", d)
	}
}

// synthFlow builds a 200 pps flow of n datagrams; deliver decides, per
// sequence number and send time, whether it arrives, when, and via which ISP.
func synthFlow(n int, deliver func(seq int, sent time.Time) (ok bool, delay time.Duration, isp int)) lab.FlowReport {
	r := lab.FlowReport{PPS: 200, ISPs: 2, Start: t0}
	for seq := 0; seq < n; seq++ {
		sent := t0.Add(time.Duration(seq) * 5 * time.Millisecond)
		r.SendTimes = append(r.SendTimes, sent)
		if ok, d, isp := deliver(seq, sent); ok {
			r.Packets = append(r.Packets, lab.Recv{Seq: uint64(seq), SentAt: sent, At: sent.Add(d), ISP: isp})
		}
	}
	r.End = t0.Add(time.Duration(n) * 5 * time.Millisecond)
	return r
}

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func TestFaultOutage(t *testing.T) {
	fault, restore := at(1000), at(3000)
	cases := []struct {
		name      string
		deliver   func(int, time.Time) (bool, time.Duration, int)
		want      time.Duration
		packets   int
		recovered bool
	}{
		{"carrier: 200ms lost, then isp2", func(_ int, s time.Time) (bool, time.Duration, int) {
			switch {
			case s.Before(fault):
				return true, 100 * time.Microsecond, 1
			case s.Before(at(1200)):
				return false, 0, 0
			}
			return true, 100 * time.Microsecond, 2
		}, 200 * time.Millisecond, 40, true},
		{"one-way: delivered via isp1 until the switch", func(_ int, s time.Time) (bool, time.Duration, int) {
			if s.Before(at(2100)) {
				return true, 100 * time.Microsecond, 1
			}
			return true, 100 * time.Microsecond, 2
		}, 1100 * time.Millisecond, 220, true},
		{"latency: late via isp1, on time via isp2", func(_ int, s time.Time) (bool, time.Duration, int) {
			switch {
			case s.Before(fault):
				return true, 100 * time.Microsecond, 1
			case s.Before(at(2000)):
				return true, time.Second, 1
			}
			return true, 100 * time.Microsecond, 2
		}, 1000 * time.Millisecond, 200, true},
		{"late via isp2 counts too", func(_ int, s time.Time) (bool, time.Duration, int) {
			switch {
			case s.Before(fault):
				return true, 100 * time.Microsecond, 1
			case s.Before(at(1500)):
				return true, 200 * time.Millisecond, 2
			}
			return true, 100 * time.Microsecond, 2
		}, 500 * time.Millisecond, 100, true},
		{"never recovers: lower bound up to the removal", func(_ int, s time.Time) (bool, time.Duration, int) {
			return s.Before(fault), 0, 1
		}, 2000 * time.Millisecond, 400, false},
		{"a stray loss after the recovery is a separate, shorter run", func(seq int, s time.Time) (bool, time.Duration, int) {
			switch {
			case seq == 400:
				return false, 0, 0
			case s.Before(fault):
				return true, 0, 1
			case s.Before(at(1050)):
				return false, 0, 0
			}
			return true, 0, 2
		}, 50 * time.Millisecond, 10, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := synthFlow(1000, c.deliver)
			// The window starts at the fault, as in a trial: before it,
			// isp1 carrying the flow is no fault.
			got := faultOutage(fates(r), 1, fault, restore)
			if got.duration() != c.want || got.Packets != c.packets || got.Recovered != c.recovered {
				t.Fatalf("outage %v (%d packets, recovered %v), want %v (%d, %v)",
					got.duration(), got.Packets, got.Recovered, c.want, c.packets, c.recovered)
			}
		})
	}
}

func TestPlainOutageAndFirstVia(t *testing.T) {
	// Back on isp1 at 1.5 s with exactly one datagram lost in the switch.
	r := synthFlow(600, func(seq int, s time.Time) (bool, time.Duration, int) {
		switch {
		case seq == 300:
			return false, 0, 0
		case s.Before(at(1500)):
			return true, 0, 2
		}
		return true, 0, 1
	})
	fs := fates(r)
	if o := plainOutage(fs, t0, r.End); o.duration() != 5*time.Millisecond || o.Packets != 1 {
		t.Fatalf("one lost datagram: %v, %d packets", o.duration(), o.Packets)
	}
	if o := plainOutage(fs, t0, at(1400)); o.duration() != 0 || !o.Recovered {
		t.Fatalf("nothing lost before 1.4s: %+v", o)
	}
	if s, ok := firstVia(fs, t0, 1); !ok || !s.Equal(at(1505)) {
		t.Fatalf("first via isp1: %v %v", s, ok)
	}
	if _, ok := firstVia(fs, at(3000), 1); ok {
		t.Fatal("found a datagram sent after the flow ended")
	}
}

func TestFatesInterpolatesFailedSends(t *testing.T) {
	r := synthFlow(10, func(seq int, _ time.Time) (bool, time.Duration, int) { return seq != 4, 0, 1 })
	r.SendTimes[4] = time.Time{} // sendto refused it
	fs := fates(r)
	if !fs[4].sent.Equal(at(20)) || fs[4].received {
		t.Fatalf("failed send: %+v", fs[4])
	}
}

func TestBucketize(t *testing.T) {
	r := synthFlow(400, func(_ int, s time.Time) (bool, time.Duration, int) {
		if s.Before(at(1000)) {
			return true, 0, 1
		}
		return true, 0, 2
	})
	s := bucketize(r, at(500), at(1500), 25*time.Millisecond)
	if len(s.Counts) != 2 || len(s.Counts[0]) != 40 {
		t.Fatalf("shape %d×%d", len(s.Counts), len(s.Counts[0]))
	}
	if s.Counts[0][0] != 5 || s.Counts[0][19] != 5 || s.Counts[0][20] != 0 || s.Counts[1][20] != 5 || s.Counts[1][19] != 0 {
		t.Fatalf("counts isp1 %v isp2 %v", s.Counts[0], s.Counts[1])
	}
}

func dec(ms int, active []string, tr ...reactor.Transition) decision {
	d := decision{reactor.DecisionRecord{Time: at(ms), Source: "reactor", Type: "decision", Transitions: tr}}
	for _, a := range active {
		d.Active = append(d.Active, reactor.ActiveMember{WAN: a, Weight: 1})
	}
	d.ActiveChanged = active != nil
	return d
}

func TestAnalyzeStability(t *testing.T) {
	decs := []decision{
		dec(-500, []string{"isp2"}), // before the run: ignored
		dec(10_000, []string{"isp2"}, reactor.Transition{WAN: "isp1", From: reactor.Up, To: reactor.Degraded, Reason: "loss"}),
		dec(15_000, nil, reactor.Transition{WAN: "isp2", From: reactor.Up, To: reactor.Degraded}),
		dec(40_000, []string{"isp1"}, reactor.Transition{WAN: "isp1", From: reactor.Degraded, To: reactor.Up}),
		dec(45_000, nil, reactor.Transition{WAN: "isp1", From: reactor.Up, To: reactor.Degraded}),
	}
	r := analyzeStability(decs, t0, at(60_000), 0.3)
	if r.Transitions != 3 || r.ActiveChanges != 2 || r.Max40s != 3 || len(r.Timeline) != 3 {
		t.Fatalf("%+v", r)
	}
	if r.PerHour != 180 || r.ActivePerHour != 120 {
		t.Fatalf("per hour %v / %v", r.PerHour, r.ActivePerHour)
	}
	// isp1 active 0..10 s and 40..60 s of 60 s.
	if math.Abs(r.ActiveShare-0.5) > 1e-9 {
		t.Fatalf("active share %v", r.ActiveShare)
	}
	if n := maxInWindow([]time.Time{at(0), at(39_999), at(40_000), at(80_000)}, 40*time.Second); n != 2 {
		t.Fatalf("maxInWindow %d", n)
	}
}

func TestProcParsers(t *testing.T) {
	line := []byte("1800 (a (weird) name) R 1797 1797 12439 0 -1 4194304 125 0 0 0 250 130 0 0 20 0 1 0 195162 3133440 408\n")
	d, err := parseStatCPU(line)
	if err != nil || d != 3800*time.Millisecond {
		t.Fatalf("cpu %v %v", d, err)
	}
	if _, err := parseStatCPU([]byte("12 (x) R 1 2")); err == nil {
		t.Fatal("short line accepted")
	}
	m, err := parseStatusMemory([]byte("Name:\tx\nVmHWM:\t   12000 kB\nVmRSS:\t    9000 kB\n"))
	if err != nil || m.RSS != 9000<<10 || m.HWM != 12000<<10 {
		t.Fatalf("memory %+v %v", m, err)
	}
	if _, err := parseStatusMemory([]byte("VmRSS:\t9000 kB\n")); err == nil {
		t.Fatal("missing VmHWM accepted")
	}
	// Our own process: burn some CPU and see it counted.
	c0, err := cpuTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(60 * time.Millisecond); time.Now().Before(end); {
	}
	c1, _ := cpuTime(os.Getpid())
	if c1-c0 < 20*time.Millisecond {
		t.Fatalf("60 ms of spinning counted as %v", c1-c0)
	}
	if m, err := memoryOf(os.Getpid()); err != nil || m.RSS <= 0 || m.HWM < m.RSS {
		t.Fatalf("own memory %+v %v", m, err)
	}
}

func TestEventTail(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "events.jsonl")
	tail := newEventTail(p)
	if err := tail.poll(); err != nil {
		t.Fatalf("missing file: %v", err)
	}
	line := func(ms int) string {
		return `{"time":"` + at(ms).Format(time.RFC3339Nano) + `","source":"reactor","type":"decision","active":[{"wan":"isp2","weight":1}],"active_changed":true}` + "\n"
	}
	probe := `{"time":"2026-11-30T12:00:00Z","source":"probe","type":"reply","wan":"isp1","data":{}}` + "\n"
	// A partial line must wait for its end.
	first := line(1) + probe + line(2)
	if err := os.WriteFile(p, []byte(first[:len(first)-20]), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := tail.poll(); err != nil || len(tail.decisions) != 1 {
		t.Fatalf("after a partial write: %d decisions, %v", len(tail.decisions), err)
	}
	f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(first[len(first)-20:] + line(3))
	f.Close()
	if err := tail.poll(); err != nil || len(tail.decisions) != 3 {
		t.Fatalf("after completing: %d decisions, %v", len(tail.decisions), err)
	}
	// Rotation: the rest of the old file is read from FILE.1.
	f, _ = os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(line(4))
	f.Close()
	if err := os.Rename(p, p+".1"); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p, []byte(line(5)), 0o644)
	if err := tail.poll(); err != nil || len(tail.decisions) != 5 {
		t.Fatalf("after rotation: %d decisions, %v", len(tail.decisions), err)
	}
	if !tail.decisions[4].Time.Equal(at(5)) || tail.decisions[4].activeHas("isp1") || !tail.decisions[4].activeHas("isp2") {
		t.Fatalf("last decision %+v", tail.decisions[4])
	}
}

func TestParseBenchOutput(t *testing.T) {
	out := `goos: linux
pkg: github.com/wanreact/wanreact/reactor
cpu: Intel(R) Xeon(R) Processor
BenchmarkApplyProbeReply/wans=2-2         	    2000	      2344 ns/op	     736 B/op	       7 allocs/op
BenchmarkFailoverCycle-2                  	    2000	     24509 ns/op	      1885 ns/event	   10120 B/op	     106 allocs/op
BenchmarkNoMem-8   100   12.5 ns/op
    bench_test.go:12: some log line
--- FAIL: BenchmarkBroken
pkg: github.com/wanreact/wanreact/sources/prober
BenchmarkParseEchoReply-2   	    1000	        10.33 ns/op	       0 B/op	       0 allocs/op
PASS
`
	got, err := parseBenchOutput(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []MicroResult{
		{"reactor", "BenchmarkApplyProbeReply/wans=2", 2000, 2344, 736, 7},
		{"reactor", "BenchmarkFailoverCycle", 2000, 24509, 10120, 106},
		{"reactor", "BenchmarkNoMem", 100, 12.5, 0, 0},
		{"sources/prober", "BenchmarkParseEchoReply", 1000, 10.33, 0, 0},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}
