package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wanreact/wanreact/internal/lab"
	"github.com/wanreact/wanreact/internal/testbin"
	"github.com/wanreact/wanreact/reactor"
)

func TestSlotLine(t *testing.T) {
	plain := &console{t0: time.Unix(100, 0)}
	b := lab.Bucket{Offset: 0, PerISP: []int{0, 40, 0}, Total: 40}
	got := plain.slotLine(time.Unix(103, 200e6), b, 40)
	want := "t=  3.20s  isp1 ████████████████████  40 │  isp2                        0"
	if got != want {
		t.Errorf("full slot:\n got %q\nwant %q", got, want)
	}
	half := plain.slotLine(time.Unix(100, 0), lab.Bucket{PerISP: []int{0, 1, 19}, Total: 20}, 40)
	if !strings.Contains(half, "isp1 █ ") || !strings.Contains(half, "isp2 ██████████ ") {
		t.Errorf("a trickle must show one block and half a slot ten: %q", half)
	}
	empty := plain.slotLine(time.Unix(100, 0), lab.Bucket{PerISP: []int{0, 0, 0}}, 40)
	if !strings.HasSuffix(empty, "← no packets") {
		t.Errorf("an empty slot must be flagged: %q", empty)
	}
	if strings.Contains(got+half+empty, "\x1b") {
		t.Error("ANSI escapes without a terminal")
	}
	colored := (&console{color: true}).slotLine(time.Unix(0, 0), b, 40)
	if !strings.Contains(colored, "\x1b[36m") {
		t.Errorf("no colour on a terminal: %q", colored)
	}
}

func TestConsoleOrdersTimedLines(t *testing.T) {
	var out bytes.Buffer
	c := &console{w: &out}
	t0 := time.Unix(1000, 0)
	c.at(t0, "before queueing")
	c.setQueueing(true)
	c.at(t0.Add(150*time.Millisecond), "B")
	c.at(t0.Add(50*time.Millisecond), "A")
	c.at(t0.Add(50*time.Millisecond), "A2")
	c.slot(t0.Add(100*time.Millisecond), "S1")
	c.at(t0.Add(300*time.Millisecond), "C")
	c.slot(t0.Add(200*time.Millisecond), "S2")
	c.setQueueing(false)
	want := "before queueing\nA\nA2\nS1\nB\nS2\nC\n"
	if out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}
}

// report builds a flow report with packets every 5ms in [0, end), except in
// the silences given, carried by isp(t).
func report(start time.Time, end time.Duration, silences [][2]time.Duration, isp func(time.Duration) int) lab.FlowReport {
	r := lab.FlowReport{ISPs: 2, Start: start, End: start.Add(end)}
	for d := time.Duration(0); d < end; d += 5 * time.Millisecond {
		silent := false
		for _, s := range silences {
			if d >= s[0] && d < s[1] {
				silent = true
			}
		}
		if !silent {
			r.Packets = append(r.Packets, lab.Recv{At: start.Add(d), ISP: isp(d)})
		}
	}
	return r
}

func TestOutage(t *testing.T) {
	start := time.Unix(2000, 0)
	via := func(d time.Duration) int {
		if d < time.Second {
			return 1
		}
		return 2
	}
	// The silence starts 20ms before the fault is stamped (the fault's
	// effect racing the timestamp) and must count whole: 1.0 s .. 1.4 s.
	r := report(start, 3*time.Second, [][2]time.Duration{{time.Second, 1400 * time.Millisecond}}, via)
	g := r.Outage(start.Add(1020 * time.Millisecond))
	if d := g.Duration(); d < 400*time.Millisecond || d > 410*time.Millisecond {
		t.Errorf("outage %v, want 0.40 s (+ one packet interval)", d)
	}
	if isp, share := carrierOf(r, start.Add(2*time.Second), start.Add(3*time.Second)); isp != 2 || share != 1 {
		t.Errorf("carrierOf = isp%d %.2f, want isp2 1.00", isp, share)
	}
	// A flow that never comes back is out from the fault to the end.
	dead := report(start, 3*time.Second, [][2]time.Duration{{time.Second, 3 * time.Second}}, via)
	if g := dead.Outage(start.Add(time.Second)); g.Duration() != 2*time.Second {
		t.Errorf("dead flow outage %v, want 2s", g.Duration())
	}
	if isp, _ := carrierOf(dead, start.Add(2*time.Second), start.Add(3*time.Second)); isp != 0 {
		t.Errorf("carrierOf with no packets = isp%d, want 0", isp)
	}
}

func TestParseLogLine(t *testing.T) {
	at := time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.UTC)
	dec := reactor.Decision{
		Transitions:   []reactor.Transition{{WAN: "isp1", From: reactor.Up, To: reactor.Down, Reason: "carrier lost"}},
		ActiveChanged: true, Active: []reactor.ActiveMember{{WAN: "isp2", Weight: 1}},
	}
	line, err := json.Marshal(dec.Record(at))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := parseLogLine(line)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Decision == nil || !ev.Time.Equal(at) {
		t.Fatalf("decision not decoded: %+v", ev)
	}
	if got := strings.Join(describe(ev.Decision), "; "); got != "isp1 up → down (carrier lost); active set: isp2" {
		t.Errorf("describe = %q", got)
	}

	probe, err := json.Marshal(reactor.Event{Time: at, WAN: "isp2", Data: reactor.ProbeResult{OK: false}})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := parseLogLine(probe); err != nil || ev.Source != "probe" || ev.WAN != "isp2" || ev.ProbeOK {
		t.Errorf("probe line: %+v, %v", ev, err)
	}
	ct := []byte(`{"time":"2026-11-25T10:00:00Z","source":"action","type":"conntrack","wan":"isp1","data":{"deleted":3}}`)
	if ev, err := parseLogLine(ct); err != nil || ev.Deleted != 3 {
		t.Errorf("conntrack line: %+v, %v", ev, err)
	}
	for _, bad := range []string{"", "{", `{"source":"probe"}`, `{"error":"follower fell behind; reconnect"}`, `[1,2]`} {
		if _, err := parseLogLine([]byte(bad)); err == nil {
			t.Errorf("parseLogLine(%q) accepted", bad)
		}
	}
}

func TestTimelineSVG(t *testing.T) {
	start := time.Unix(3000, 0)
	fault := start.Add(time.Second)
	via := func(d time.Duration) int {
		if d < 2*time.Second {
			return 1
		}
		return 2
	}
	r := report(start, 4*time.Second, [][2]time.Duration{{time.Second, 2 * time.Second}}, via)
	rec := reactor.Decision{
		Transitions:   []reactor.Transition{{WAN: "isp1", From: reactor.Up, To: reactor.Down, Reason: "8 consecutive probes lost <&>"}},
		ActiveChanged: true, Active: []reactor.ActiveMember{{WAN: "isp2"}},
	}.Record(start.Add(1990 * time.Millisecond))
	events := []logEvent{
		{Time: start.Add(900 * time.Millisecond), Source: "probe", WAN: "isp1", ProbeOK: true},
		{Time: start.Add(1400 * time.Millisecond), Source: "probe", WAN: "isp1"},
		{Time: rec.Time, Source: "reactor", Type: "decision", Decision: &rec},
	}
	p := panel{Title: "blackhole", Fault: fault, From: fault.Add(-500 * time.Millisecond), To: fault.Add(2 * time.Second),
		ISPs: 2, Packets: r.Packets, Events: events, Outage: r.Outage(fault)}
	var buf bytes.Buffer
	if err := renderTimeline(&buf, "test <title>", []panel{p}, timelineBin, flowPPS); err != nil {
		t.Fatal(err)
	}
	svg := buf.String()
	dec := xml.NewDecoder(strings.NewReader(svg))
	fills := map[string]int{}
	var texts []string
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, svg)
		}
		switch v := tok.(type) {
		case xml.StartElement:
			for _, a := range v.Attr {
				if a.Name.Local == "fill" {
					fills[v.Name.Local+" "+a.Value]++
				}
			}
		case xml.CharData:
			texts = append(texts, string(v))
		}
	}
	all := strings.Join(texts, "|")
	for _, want := range []string{"test <title>", "outage 1.00 s", "fault", "+0.99 s: isp1 up → down (8 consecutive probes lost <&>); active set: isp2", "first packet via isp2"} {
		if !strings.Contains(all, want) {
			t.Errorf("SVG text lacks %q: %s", want, all)
		}
	}
	// 0.5 s of isp1 bars before the fault, 1 s of isp2 bars after the
	// outage: 10 and 20 bars of 50 ms.
	if n := fills["rect "+fillOf(1)]; n != 10+1 { // +1: legend
		t.Errorf("%d isp1 bars, want 10", n-1)
	}
	if n := fills["rect "+fillOf(2)]; n != 20+1 {
		t.Errorf("%d isp2 bars, want 20", n-1)
	}
	if fills["circle #d62728"] != 1+1 || fills["circle #2ca02c"] != 1+1 {
		t.Errorf("probe dots: %v", fills)
	}
	if err := renderTimeline(io.Discard, "x", []panel{{From: fault, To: fault}}, timelineBin, flowPPS); err == nil {
		t.Error("an empty window was accepted")
	}
}

// --- lab runs (root) -------------------------------------------------------

func needRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("lab test skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root and network namespaces")
	}
}

func TestMain(m *testing.M) { testbin.Main(m) }

func wanreactBin(t *testing.T) string { return testbin.Wanreact(t) }

// syncBuffer collects the demo's output; the demo writes from several
// goroutines (under its console lock) while tests read.
type syncBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	onLine func(string)
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	n, err := s.b.Write(p)
	s.mu.Unlock()
	if s.onLine != nil {
		s.onLine(string(p))
	}
	return n, err
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// labGone fails the test if any namespace of the lab is left.
func labGone(t *testing.T, prefix string) {
	t.Helper()
	if prefix == "" {
		t.Fatal("no lab prefix reported")
	}
	left, _ := filepath.Glob(filepath.Join("/run/netns", prefix+"-*"))
	if len(left) > 0 {
		t.Errorf("namespaces left behind: %v", left)
	}
	if _, err := os.Stat(filepath.Join(lab.PidDir, prefix+".pid")); err == nil {
		t.Errorf("lab pid file left behind")
	}
}

// TestDemoFast runs the whole demo script with -fast against the real
// daemon, so `make demo` cannot rot: both failovers must stay within the
// core issue's budgets and everything must be gone afterwards.
func TestDemoFast(t *testing.T) {
	needRoot(t)
	bin := wanreactBin(t)
	out := &syncBuffer{}
	svg := filepath.Join(t.TempDir(), "timeline.svg")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	started := time.Now()
	res, err := run(ctx, options{Bin: bin, Fast: true, Out: out, Timeline: svg})
	t.Logf("demo took %v", time.Since(started).Round(time.Second))
	defer func() {
		if t.Failed() {
			t.Logf("demo output:\n%s", out.String())
		}
	}()
	if err != nil {
		t.Fatalf("demo: %v", err)
	}
	for _, p := range res.Phases {
		t.Logf("%-26s outage %6.3fs  via isp%d  decision %q after %.2fs  met=%v %s", p.Name, p.Outage.Seconds(), p.Via, p.Decision, p.DecisionAfter.Seconds(), p.Met, p.Note)
	}
	for _, c := range []struct {
		phase  string
		budget time.Duration
	}{{"carrier cut", carrierBudget}, {"silent blackhole", blackholeBudget}} {
		p, ok := res.Phase(c.phase)
		if !ok {
			t.Fatalf("no %q phase", c.phase)
		}
		if p.Outage > c.budget || p.Outage <= 0 {
			t.Errorf("%s: outage %v, want (0, %v]", c.phase, p.Outage, c.budget)
		}
		if p.Via != 2 {
			t.Errorf("%s: traffic via isp%d afterwards, want isp2", c.phase, p.Via)
		}
		if !strings.Contains(p.Decision, "isp1 up → down") {
			t.Errorf("%s: first decision %q, want isp1 up → down", c.phase, p.Decision)
		}
	}
	for _, name := range []string{"carrier back", "isp1 restored"} {
		if p, ok := res.Phase(name); !ok || p.Via != 1 {
			t.Errorf("%s: traffic via isp%d, want isp1 (found %v)", name, p.Via, ok)
		}
	}
	if p, ok := res.Phase("30% loss"); !ok || p.Changes > 2 {
		t.Errorf("30%% loss: %d state changes (found %v), want ≤ 2", p.Changes, ok)
	}
	if !res.OK() {
		t.Error("demo reported a promise not kept")
	}
	for _, want := range []string{"── carrier cut on isp1 ──", "▶ isp1 up → down (carrier lost)", "▶ active set: isp2", "Summary", "all promises kept"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(out.String(), "\x1b") {
		t.Error("ANSI escapes in output to a non-terminal")
	}
	labGone(t, res.Prefix)
	if b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(res.DaemonPID), "cmdline")); err == nil && bytes.Contains(b, []byte("wanreact")) {
		t.Errorf("daemon pid %d still running: %q", res.DaemonPID, b)
	}
	b, err := os.ReadFile(svg)
	if err != nil {
		t.Fatalf("timeline: %v", err)
	}
	if err := xml.Unmarshal(b, new(struct{})); err != nil || !bytes.Contains(b, []byte("silent blackhole on isp1")) {
		t.Errorf("timeline SVG unusable (%v): %.200s", err, b)
	}
}

// TestDemoInterrupted: Ctrl-C in the middle of the script removes the lab
// and stops the daemon.
func TestDemoInterrupted(t *testing.T) {
	needRoot(t)
	bin := wanreactBin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := &syncBuffer{}
	out.onLine = func(s string) {
		if strings.Contains(s, "── carrier cut on isp1 ──") {
			cancel() // what SIGINT does through signal.NotifyContext
		}
	}
	res, err := run(ctx, options{Bin: bin, Fast: true, Out: out})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted demo returned %v, %v; want context.Canceled\n%s", res, err, out.String())
	}
	m := regexp.MustCompile(`lab (wrl[0-9a-f]{4}):`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no lab prefix in output:\n%s", out.String())
	}
	labGone(t, m[1])
	pm := regexp.MustCompile(`\(pid (\d+), log`).FindStringSubmatch(out.String())
	if pm == nil {
		t.Fatalf("no daemon pid in output:\n%s", out.String())
	}
	if b, err := os.ReadFile("/proc/" + pm[1] + "/cmdline"); err == nil && bytes.Contains(b, []byte("wanreact")) {
		t.Errorf("daemon %s still running after the interrupt", pm[1])
	}
}

// TestDemoDaemonDies: when the daemon dies mid-script the demo says so, with
// the daemon's log, and still removes the lab.
func TestDemoDaemonDies(t *testing.T) {
	needRoot(t)
	bin := wanreactBin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pidRE := regexp.MustCompile(`\(pid (\d+), log`)
	var pid int
	out := &syncBuffer{}
	out.onLine = func(s string) {
		if m := pidRE.FindStringSubmatch(s); m != nil {
			pid, _ = strconv.Atoi(m[1])
		}
		if strings.Contains(s, "── carrier cut on isp1 ──") && pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL) // our own child
		}
	}
	_, err := run(ctx, options{Bin: bin, Fast: true, Out: out})
	if !errors.Is(err, errDaemonExited) {
		t.Fatalf("demo returned %v; want errDaemonExited\n%s", err, out.String())
	}
	if !strings.Contains(err.Error(), "signal: killed") || !strings.Contains(err.Error(), "daemon log (last lines)") ||
		!strings.Contains(err.Error(), `msg="wan state"`) {
		t.Errorf("error lacks the daemon's log: %v", err)
	}
	m := regexp.MustCompile(`lab (wrl[0-9a-f]{4}):`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no lab prefix in output:\n%s", out.String())
	}
	labGone(t, m[1])
}
