package hooks

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wanreact/wanreact/config"
	"github.com/wanreact/wanreact/reactor"
	"github.com/wanreact/wanreact/sources/dhcp"
)

// harness runs a Runner over a temporary hooks directory and collects results.
type harness struct {
	t       *testing.T
	dir     string
	r       *Runner
	mu      sync.Mutex
	results []Result
	got     chan Result
	cancel  context.CancelFunc
	stopped chan struct{}
}

func newHarness(t *testing.T, h config.Hooks) *harness {
	t.Helper()
	x := &harness{t: t, got: make(chan Result, 1000), stopped: make(chan struct{})}
	if h.Dir == "" {
		x.dir = filepath.Join(t.TempDir(), "hooks.d")
		if err := os.Mkdir(x.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		h.Dir = x.dir
	} else {
		x.dir = h.Dir
	}
	x.r = New(Options{Hooks: h, KillGrace: 200 * time.Millisecond, OnResult: func(r Result) {
		x.mu.Lock()
		x.results = append(x.results, r)
		x.mu.Unlock()
		x.got <- r
	}})
	ctx, cancel := context.WithCancel(context.Background())
	x.cancel = cancel
	go func() { x.r.Run(ctx); close(x.stopped) }()
	t.Cleanup(x.stop)
	return x
}

func (x *harness) stop() {
	x.cancel()
	select {
	case <-x.stopped:
	case <-time.After(10 * time.Second):
		x.t.Error("runner did not stop")
	}
}

func (x *harness) hook(name, script string, mode os.FileMode) string {
	x.t.Helper()
	p := filepath.Join(x.dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script+"\n"), mode); err != nil {
		x.t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // WriteFile's mode is filtered by umask
		x.t.Fatal(err)
	}
	return p
}

func (x *harness) wait(n int, timeout time.Duration) []Result {
	x.t.Helper()
	var out []Result
	deadline := time.After(timeout)
	for len(out) < n {
		select {
		case r := <-x.got:
			out = append(out, r)
		case <-deadline:
			x.t.Fatalf("got %d results in %v, want %d: %+v", len(out), timeout, n, out)
		}
	}
	return out
}

func job(key, event string, env ...string) Job {
	return Job{Key: key, Event: event, WAN: key, Env: append([]string{basePath}, env...), Queued: time.Now()}
}

func TestRunsHooksInNameOrderWithEnvironment(t *testing.T) {
	x := newHarness(t, config.Hooks{Timeout: 5 * time.Second})
	out := filepath.Join(t.TempDir(), "out")
	x.hook("20-second", `echo "second $WANREACT_EVENT $WANREACT_WAN" >> `+out, 0o755)
	x.hook("10-first", `echo "first $WANREACT_EVENT $WANREACT_WAN home=${HOME-unset}" >> `+out+`; echo said hello; echo oops >&2; exit 3`, 0o755)
	for _, skipped := range []string{".hidden", "30-old.dpkg-old", "40-x~", "50-y.disabled"} {
		x.hook(skipped, `echo "`+skipped+` ran" >> `+out, 0o755)
	}
	x.hook("60-not-executable", `echo "not executable ran" >> `+out, 0o644)
	if err := os.Mkdir(filepath.Join(x.dir, "70-dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if !x.r.Submit(job("isp1", "down", "WANREACT_EVENT=down", "WANREACT_WAN=isp1")) {
		t.Fatal("job refused")
	}
	res := x.wait(2, 10*time.Second)
	if res[0].Hook != "10-first" || res[1].Hook != "20-second" {
		t.Fatalf("order: %s, %s", res[0].Hook, res[1].Hook)
	}
	if res[0].Outcome != "failed" || res[0].ExitCode != 3 || res[0].Output != "said hello\noops" {
		t.Errorf("first hook result = %+v", res[0])
	}
	if res[1].Outcome != "ok" || res[1].ExitCode != 0 {
		t.Errorf("second hook result = %+v", res[1])
	}
	b, _ := os.ReadFile(out)
	// HOME is unset: hooks get a clean environment, not the daemon's.
	if want := "first down isp1 home=unset\nsecond down isp1\n"; string(b) != want {
		t.Errorf("hooks wrote %q, want %q", b, want)
	}
}

// TestTimeoutKillsProcessGroup: a hook that hangs (and leaves a background
// child hanging too) is killed at its timeout, child included.
func TestTimeoutKillsProcessGroup(t *testing.T) {
	x := newHarness(t, config.Hooks{Timeout: 300 * time.Millisecond})
	pidFile := filepath.Join(t.TempDir(), "pid")
	x.hook("10-hang", `sleep 1000 & echo $! > `+pidFile+`; trap "" TERM; echo started; while :; do sleep 1; done`, 0o755)
	start := time.Now()
	x.r.Submit(job("isp1", "up"))
	r := x.wait(1, 10*time.Second)[0]
	took := time.Since(start)
	if r.Outcome != "timeout" || r.ExitCode != -1 || r.Output != "started" {
		t.Fatalf("result = %+v", r)
	}
	// 300ms timeout + 200ms grace for the TERM-ignoring shell.
	if took > 2*time.Second {
		t.Errorf("hanging hook ended after %v", took)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("the hook's background child %d survived the timeout", pid)
	}
	t.Logf("hanging hook killed after %v", took.Round(time.Millisecond))
}

// TestConcurrencyAndOrdering: at most max_parallel jobs run at once; jobs of
// one key run one at a time in order; Submit never waits.
func TestConcurrencyAndOrdering(t *testing.T) {
	x := newHarness(t, config.Hooks{Timeout: 5 * time.Second, MaxParallel: 3, Queue: 100})
	log := filepath.Join(t.TempDir(), "log")
	// Each run records its start and end with nanosecond times.
	x.hook("10-rec", `echo "start $WANREACT_WAN $N $(date +%s%N)" >> `+log+`; sleep 0.2; echo "end $WANREACT_WAN $N $(date +%s%N)" >> `+log, 0o755)
	var maxSubmit time.Duration
	for i := 0; i < 4; i++ {
		for _, k := range []string{"a", "b", "c", "d", "e"} {
			s := time.Now()
			x.r.Submit(job(k, "up", "WANREACT_WAN="+k, "N="+strconv.Itoa(i)))
			maxSubmit = max(maxSubmit, time.Since(s))
		}
	}
	x.wait(20, 30*time.Second)
	if maxSubmit > 10*time.Millisecond {
		t.Errorf("Submit took up to %v", maxSubmit)
	}
	b, _ := os.ReadFile(log)
	type ev struct {
		at    int64
		start bool
		key   string
		n     int
	}
	var evs []ev
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) != 4 {
			t.Fatalf("bad log line %q", l)
		}
		at, _ := strconv.ParseInt(f[3], 10, 64)
		n, _ := strconv.Atoi(f[2])
		evs = append(evs, ev{at, f[0] == "start", f[1], n})
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].at < evs[j].at })
	running, peak := 0, 0
	perKey := map[string]int{}
	nextN := map[string]int{}
	for _, e := range evs {
		if e.start {
			running++
			perKey[e.key]++
			if perKey[e.key] > 1 {
				t.Errorf("two jobs of key %s overlap", e.key)
			}
			if e.n != nextN[e.key] {
				t.Errorf("key %s: job %d started, want %d (out of order)", e.key, e.n, nextN[e.key])
			}
			nextN[e.key]++
			peak = max(peak, running)
		} else {
			running--
			perKey[e.key]--
		}
	}
	if peak > 3 {
		t.Errorf("%d hooks ran at once, max_parallel is 3", peak)
	}
	if peak < 2 {
		t.Errorf("peak concurrency %d: jobs of different WANs should run in parallel", peak)
	}
	t.Logf("20 jobs, peak concurrency %d, slowest Submit %v", peak, maxSubmit)
}

// TestFullQueueDrops: with every worker stuck and the queue full, new jobs
// are dropped at once (and reported), never waited for.
func TestFullQueueDrops(t *testing.T) {
	x := newHarness(t, config.Hooks{Timeout: 30 * time.Second, MaxParallel: 1, Queue: 2})
	x.hook("10-hang", `sleep 30`, 0o755)
	x.r.Submit(job("a", "up"))
	for x.r.Pending() != 0 { // the first job is running
		time.Sleep(time.Millisecond)
	}
	if !x.r.Submit(job("b", "up")) || !x.r.Submit(job("c", "up")) {
		t.Fatal("queue of 2 refused a job")
	}
	start := time.Now()
	if x.r.Submit(job("d", "down")) {
		t.Fatal("third queued job accepted beyond queue: 2")
	}
	if d := time.Since(start); d > 10*time.Millisecond {
		t.Errorf("dropping took %v", d)
	}
	r := x.wait(1, time.Second)[0]
	if r.Outcome != "dropped" || r.Job.Key != "d" {
		t.Errorf("result = %+v", r)
	}
}

// TestStopEndsRunningHooks: stopping the daemon does not wait for a
// hanging hook's timeout.
func TestStopEndsRunningHooks(t *testing.T) {
	x := newHarness(t, config.Hooks{Timeout: time.Hour})
	x.hook("10-hang", `echo started; exec sleep 1000`, 0o755)
	x.r.Submit(job("a", "up"))
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	x.stop()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("stop took %v", d)
	}
	r := x.wait(1, time.Second)[0]
	if r.Outcome != "failed" || !strings.Contains(fmt.Sprint(r.Err), "shutting down") {
		t.Errorf("result = %+v", r)
	}
}

func TestRefusesUnsafeHooks(t *testing.T) {
	x := newHarness(t, config.Hooks{Timeout: time.Second})
	out := filepath.Join(t.TempDir(), "ran")
	x.hook("10-ok", "touch "+out, 0o755)
	x.hook("20-group-writable", "true", 0o775)
	x.r.Submit(job("a", "up"))
	r := x.wait(1, 5*time.Second)[0]
	if r.Outcome != "failed" || !strings.Contains(fmt.Sprint(r.Err), "writable by group or others") {
		t.Errorf("result = %+v", r)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a hook ran from a directory holding an unsafe hook")
	}
	// A world-writable directory is refused as a whole.
	os.Remove(filepath.Join(x.dir, "20-group-writable"))
	os.Chmod(x.dir, 0o777)
	if _, err := List(x.dir); err == nil || !strings.Contains(err.Error(), "writable") {
		t.Errorf("List of a 0777 dir: %v", err)
	}
	os.Chmod(x.dir, 0o755)
	if l, err := List(x.dir); err != nil || len(l) != 1 {
		t.Errorf("List = %v, %v", l, err)
	}
	if l, err := List(filepath.Join(x.dir, "missing")); err != nil || l != nil {
		t.Errorf("missing dir: %v, %v", l, err)
	}
}

// envOf waits for a hook printing its environment and returns it.
func envOf(t *testing.T, x *harness) map[string]string {
	t.Helper()
	return envs(t, x, 1)[0]
}

// envs waits for n env-printing hook runs; jobs of different keys run in
// parallel, so they are sorted by WANREACT_EVENT.
func envs(t *testing.T, x *harness, n int) []map[string]string {
	t.Helper()
	var out []map[string]string
	for _, r := range x.wait(n, 5*time.Second) {
		if r.Outcome != "ok" {
			t.Fatalf("env hook: %+v", r)
		}
		m := map[string]string{}
		for _, l := range strings.Split(r.Output, "\n") {
			if k, v, ok := strings.Cut(l, "="); ok {
				m[k] = v
			}
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i]["WANREACT_EVENT"] < out[j]["WANREACT_EVENT"] })
	return out
}

func testState(t *testing.T) *reactor.State {
	t.Helper()
	s := reactor.New()
	s.Apply(reactor.Event{Time: time.Unix(1000, 0), Data: reactor.ConfigLoaded{Config: config.Config{
		Routing: config.Routing{ActiveTable: 200, RulePriority: 10000, MarkMask: 0xff00},
		WANs: []config.WAN{
			{Name: "isp1", Interface: "wan0", Table: 11, Priority: 1, Weight: 1, Addressing: config.Static,
				Address: netip.MustParsePrefix("203.0.113.2/24"), Gateway: netip.MustParseAddr("203.0.113.1")},
			{Name: "isp2", Interface: "wan1", Table: 12, Priority: 2, Weight: 1, Addressing: config.External},
		},
	}}})
	return s
}

func TestObserveEnvironment(t *testing.T) {
	x := newHarness(t, config.Hooks{Timeout: 5 * time.Second})
	x.hook("10-env", "env", 0o755)
	s := testState(t)
	at := time.Date(2026, 11, 25, 10, 0, 0, 5, time.UTC)
	x.r.lastActive = []string{"isp1"}
	d := reactor.Decision{
		Transitions:   []reactor.Transition{{WAN: "isp1", From: reactor.Up, To: reactor.Down, Reason: "carrier lost"}},
		ActiveChanged: true, Active: []reactor.ActiveMember{{WAN: "isp2", Weight: 1}},
	}
	x.r.Observe(reactor.Event{Time: at, Data: reactor.CarrierChange{Name: "wan0"}}, d, s)
	got := envs(t, x, 2)
	active, down := got[0], got[1]
	want := map[string]string{
		"WANREACT_EVENT": "down", "WANREACT_WAN": "isp1", "WANREACT_INTERFACE": "wan0", "WANREACT_TABLE": "11",
		"WANREACT_PREVIOUS_STATE": "up", "WANREACT_REASON": "carrier lost",
		"WANREACT_ADDRESS": "203.0.113.2/24", "WANREACT_GATEWAY": "203.0.113.1",
		"WANREACT_TIME": "2026-11-25T10:00:00.000000005Z",
		// The state is read from the reducer (still unknown here: the
		// decision above was made up for the test).
		"WANREACT_STATE": "unknown",
	}
	for k, v := range want {
		if down[k] != v {
			t.Errorf("down hook: %s=%q, want %q", k, down[k], v)
		}
	}
	for k, v := range map[string]string{"WANREACT_EVENT": "active", "WANREACT_ACTIVE": "isp2", "WANREACT_PREVIOUS_ACTIVE": "isp1",
		"WANREACT_WAN": "isp2", "WANREACT_INTERFACE": "wan1", "WANREACT_REASON": "isp1 down: carrier lost"} {
		if active[k] != v {
			t.Errorf("active hook: %s=%q, want %q", k, active[k], v)
		}
	}
	if _, ok := active["NOTIFY_SOCKET"]; ok {
		t.Error("daemon environment leaked into hooks")
	}
	// Nothing visible changed: no job.
	x.r.Observe(reactor.Event{Time: at, Data: reactor.Synced{}}, reactor.Decision{DesiredChanged: true}, s)
	if n := x.r.Pending(); n != 0 {
		t.Errorf("%d jobs for an empty decision", n)
	}
}

func TestLeaseHookEnvironment(t *testing.T) {
	x := newHarness(t, config.Hooks{Timeout: 5 * time.Second})
	x.hook("10-env", "env", 0o755)
	old := &dhcp.Lease{WAN: "isp3", Interface: "wan2", Address: netip.MustParsePrefix("198.18.0.10/24"),
		Routers: []netip.Addr{netip.MustParseAddr("198.18.0.1")}, Duration: time.Hour, T1: 30 * time.Minute, T2: 52 * time.Minute}
	nl := *old
	nl.Address = netip.MustParsePrefix("198.18.0.11/24")
	x.r.LeaseHook("BOUND", old, &nl)
	env := envOf(t, x)
	for k, v := range map[string]string{
		"WANREACT_EVENT": "lease", "WANREACT_WAN": "isp3", "WANREACT_INTERFACE": "wan2", "WANREACT_REASON": "BOUND",
		"WANREACT_ADDRESS": "198.18.0.11/24", "WANREACT_GATEWAY": "198.18.0.1",
		"reason": "BOUND", "interface": "wan2", "new_ip_address": "198.18.0.11", "old_ip_address": "198.18.0.10",
		"new_routers": "198.18.0.1", "new_dhcp_lease_time": "3600",
	} {
		if env[k] != v {
			t.Errorf("lease hook: %s=%q, want %q", k, env[k], v)
		}
	}
	if _, ok := env["WANREACT_STATE"]; ok {
		t.Error("lease hook has WANREACT_STATE, which the DHCP client cannot know")
	}
}

// TestDisabled: without a directory nothing is queued.
func TestDisabled(t *testing.T) {
	r := New(Options{})
	if r.Enabled() || r.Submit(job("a", "up")) {
		t.Fatal("a runner without dir accepted a job")
	}
	r.Observe(reactor.Event{}, reactor.Decision{ActiveChanged: true, Active: []reactor.ActiveMember{{WAN: "x"}}}, testState(t))
	if !slices.Equal(r.lastActive, []string{"x"}) || r.Pending() != 0 {
		t.Errorf("disabled runner: lastActive %v, pending %d", r.lastActive, r.Pending())
	}
	r.SetConfig(config.Hooks{Dir: "/nonexistent"})
	if !r.Enabled() {
		t.Error("SetConfig did not enable")
	}
}
