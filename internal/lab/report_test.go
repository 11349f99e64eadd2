package lab

import (
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// These tests need no root: they cover the pure parts of the package.

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func ms(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }

// report builds a flow report from (receive ms, isp) pairs; seq follows
// arrival order and every packet was sent 1ms before it arrived.
func report(isps int, end int, pkts ...[2]int) FlowReport {
	r := FlowReport{ISPs: isps, Start: t0, End: ms(end)}
	for i, p := range pkts {
		r.SendTimes = append(r.SendTimes, ms(p[0]-1))
		r.Packets = append(r.Packets, Recv{Seq: uint64(i), SentAt: ms(p[0] - 1), At: ms(p[0]), ISP: p[1]})
	}
	r.Sent, r.Received = len(pkts), len(pkts)
	return r
}

func TestLongestGap(t *testing.T) {
	r := report(2, 1000, [2]int{0, 1}, [2]int{10, 1}, [2]int{20, 1}, [2]int{400, 2}, [2]int{410, 2})
	for _, c := range []struct {
		name     string
		from, to int
		want     [2]int
	}{
		{"outage inside window", 5, 500, [2]int{20, 400}},
		// The silence started before the window: measured whole.
		{"window starts inside outage", 100, 300, [2]int{20, 400}},
		{"no outage in window", 0, 15, [2]int{0, 10}},
		// Nothing after 410 until the end: counts up to `to`.
		{"unfinished outage", 405, 900, [2]int{410, 900}},
		{"zero to means End", 405, -1, [2]int{410, 1000}},
	} {
		to := time.Time{}
		if c.to >= 0 {
			to = ms(c.to)
		}
		g := r.LongestGap(ms(c.from), to)
		if !g.Start.Equal(ms(c.want[0])) || !g.End.Equal(ms(c.want[1])) {
			t.Errorf("%s: gap %v..%v, want %dms..%dms", c.name, g.Start.Sub(t0), g.End.Sub(t0), c.want[0], c.want[1])
		}
	}
	empty := report(2, 1000)
	if g := empty.LongestGap(ms(100), ms(300)); g.Duration() != 200*time.Millisecond {
		t.Errorf("no packets: gap %v, want the whole window", g.Duration())
	}
}

func TestByISPAndLast(t *testing.T) {
	r := report(3, 100, [2]int{1, 1}, [2]int{2, 1}, [2]int{50, 3}, [2]int{60, 0}, [2]int{70, 3})
	if got := r.ByISP(time.Time{}, time.Time{}); !reflect.DeepEqual(got, []int{1, 2, 0, 2}) {
		t.Errorf("ByISP all = %v", got)
	}
	if got := r.ByISP(ms(2), ms(70)); !reflect.DeepEqual(got, []int{1, 1, 0, 1}) {
		t.Errorf("ByISP [2,70) = %v", got)
	}
	if r.LastISP() != 3 {
		t.Errorf("LastISP = %d", r.LastISP())
	}
	if p, ok := r.FirstAfter(ms(3), 3); !ok || p.Seq != 2 {
		t.Errorf("FirstAfter = %+v %v", p, ok)
	}
	if _, ok := r.FirstAfter(ms(71), 0); ok {
		t.Error("FirstAfter past the end found a packet")
	}
}

func TestSentBetween(t *testing.T) {
	r := report(1, 100, [2]int{10, 1}, [2]int{20, 1}, [2]int{30, 1})
	// seq 3 and 4 sent but lost, seq 5 failed at sendto.
	r.SendTimes = append(r.SendTimes, ms(39), ms(49), time.Time{})
	r.Sent = 5
	if s, g := r.SentBetween(ms(15), ms(100)); s != 4 || g != 2 {
		t.Errorf("SentBetween = %d, %d; want 4, 2", s, g)
	}
	// A duplicate delivery must not count twice.
	r.Packets = append(r.Packets, r.Packets[1])
	if s, g := r.SentBetween(ms(0), ms(100)); s != 5 || g != 3 {
		t.Errorf("with duplicate: %d, %d; want 5, 3", s, g)
	}
}

func TestBuckets(t *testing.T) {
	r := report(2, 250, [2]int{5, 1}, [2]int{99, 1}, [2]int{100, 2}, [2]int{249, 0})
	b := r.Buckets(100 * time.Millisecond)
	if len(b) != 3 {
		t.Fatalf("%d buckets, want 3", len(b))
	}
	want := [][]int{{0, 2, 0}, {0, 0, 1}, {1, 0, 0}}
	for i := range b {
		if !reflect.DeepEqual(b[i].PerISP, want[i]) || b[i].Offset != time.Duration(i)*100*time.Millisecond {
			t.Errorf("bucket %d = %+v, want %v", i, b[i], want[i])
		}
	}
	if r.Buckets(0) != nil {
		t.Error("zero width should give nil")
	}
}

func TestISPOf(t *testing.T) {
	for s, want := range map[string]int{
		"198.18.1.2": 1, "198.18.32.2": 32, "198.18.1.1": 0, "198.18.0.2": 0,
		"198.18.100.2": 0, "203.0.113.2": 0, "::ffff:198.18.7.2": 7, "2001:db8::1": 0,
	} {
		if got := ISPOf(netip.MustParseAddr(s)); got != want {
			t.Errorf("ISPOf(%s) = %d, want %d", s, got, want)
		}
	}
	for i := 1; i <= MaxISPs; i++ {
		if ISPOf(ISPUpstreamAddr(i)) != i {
			t.Fatalf("ISPOf(ISPUpstreamAddr(%d)) != %d", i, i)
		}
	}
	if RouterWANAddr(1).String() != "203.0.113.2/24" || WANName(1) != "wan0" || ISPRole(3) != "isp3" {
		t.Error("naming helpers disagree with the documented topology")
	}
}

func TestFaultRules(t *testing.T) {
	for _, c := range []struct {
		st   faultState
		want string
	}{
		{faultState{}, ""},
		{faultState{blackhole: true, upLoss: 0.5}, "-A LABFAULT -j DROP"},
		{faultState{upLoss: 0.3}, "-A LABFAULT -i cust0 -m statistic --mode random --probability 0.3 -j DROP"},
		{faultState{upLoss: 1, downLoss: 0.05}, "-A LABFAULT -i cust0 -j DROP|" +
			"-A LABFAULT -o cust0 -m statistic --mode random --probability 0.05 -j DROP"},
	} {
		if got := strings.Join(c.st.rules(), "|"); got != c.want {
			t.Errorf("%+v: %q, want %q", c.st, got, c.want)
		}
	}
}

func TestOptionValidation(t *testing.T) {
	for _, o := range []Options{{ISPs: -1}, {ISPs: MaxISPs + 1}, {Prefix: "Bad-Prefix"}, {Prefix: "waytoolongprefix17"}} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
	for role, want := range map[string]bool{"isp1": true, "isp12": true, "isp01": false, "isp": false, "ispx": false, "isp-1": false} {
		_, ok := ispIndex(role)
		if ok != want {
			t.Errorf("ispIndex(%q) ok = %v", role, ok)
		}
	}
}

func TestCreatorAlive(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := dir + "/x.pid"
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	self, err := selfIdentity()
	if err != nil {
		t.Fatal(err)
	}
	if !creatorAlive(write(self)) {
		t.Error("own identity reported dead")
	}
	pid := strings.Fields(self)[0]
	if creatorAlive(write(pid + " 1\n")) {
		t.Error("recycled pid (wrong start time) reported alive")
	}
	if creatorAlive(write("garbage\n")) {
		t.Error("malformed file reported alive")
	}
	if !creatorAlive(write("")) {
		t.Error("empty file (being written) must count as alive")
	}
}
