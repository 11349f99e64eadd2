package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/wanreact/wanreact/internal/lab"
)

// Operations acceptance tests: hooks that hang, replay of a lab recording,
// control socket permissions, metrics, `events -f` across rotations,
// sd_notify.

// waitUp waits until every listed WAN is up.
func (e *env) waitUp(timeout time.Duration, wans ...string) {
	e.t.Helper()
	e.waitFor(strings.Join(wans, ",")+" up", timeout, func() (bool, string) {
		st, err := e.status()
		if err != nil {
			return false, err.Error()
		}
		for _, w := range wans {
			if st[w].State != "up" {
				return false, fmt.Sprint(st)
			}
		}
		return true, ""
	})
}

// logLines reads the event log file (FILE.1 then FILE) as raw lines.
func (e *env) logLines() []string {
	var out []string
	for _, p := range []string{e.evlog + ".1", e.evlog} {
		b, err := os.ReadFile(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, nonEmptyLines(string(b))...)
	}
	return out
}

type hookLine struct {
	Time time.Time
	WAN  string
	Data struct {
		Hook, Event, Result string
		ExitCode            int `json:"exit_code"`
	}
}

// hookResults lists the hook results recorded in the event log.
func (e *env) hookResults() []hookLine {
	var out []hookLine
	for _, l := range e.logLines() {
		var h struct {
			Source, Type string
		}
		if json.Unmarshal([]byte(l), &h) != nil || h.Source != "action" || h.Type != "hook" {
			continue
		}
		var r hookLine
		json.Unmarshal([]byte(l), &r)
		out = append(out, r)
	}
	return out
}

// TestHangingHookDoesNotDelayFailover: every hook sleeps forever. While they
// hang (one per WAN and one for the active set, each holding its queue), a
// carrier cut must fail over within the same budget as without hooks; the
// hooks are killed at their timeout and the queued "down" hook runs after.
func TestHangingHookDoesNotDelayFailover(t *testing.T) {
	e := newEnv(t, labConfig{Timeout: "600ms"})
	hooksDir := filepath.Join(e.dir, "hooks.d")
	hookLog := filepath.Join(e.dir, "hook.log")
	if err := os.Mkdir(hooksDir, 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\necho \"$WANREACT_EVENT $WANREACT_WAN $WANREACT_PREVIOUS_STATE\" >> " + hookLog + "\nexec sleep 1000000\n"
	if err := os.WriteFile(filepath.Join(hooksDir, "10-hang"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	const hookTimeout = 8 * time.Second
	e.writeConfig(labConfig{Timeout: "600ms", ExtraConfig: fmt.Sprintf("hooks:\n  dir: %s\n  timeout: %v\n  max_parallel: 4\n", hooksDir, hookTimeout)})
	e.start()
	e.waitActive("isp1", 10*time.Second)
	e.waitUp(10*time.Second, "isp2")
	// The hooks for isp1 up, isp2 up and the active set are hanging now.
	e.waitFor("hooks hanging", 5*time.Second, func() (bool, string) {
		b, _ := os.ReadFile(hookLog)
		return strings.Contains(string(b), "up isp1") && strings.Contains(string(b), "active isp1"), string(b)
	})
	if r := e.hookResults(); len(r) != 0 {
		t.Fatalf("hooks already finished before the cut: %+v", r)
	}

	gap, r, at := e.measureFailover(lab.RoleClient, func() error { return e.lab.CarrierDown(1) }, 2*time.Second)
	t.Logf("carrier cut with 3 hooks hanging: outage %v; after: %s", gap.Round(time.Millisecond), ispCounts(r, at.Add(gap+200*time.Millisecond), r.End))
	if gap > carrierBudget {
		t.Errorf("carrier cut outage %v > %v with hanging hooks", gap, carrierBudget)
	}
	if c := r.ByISP(at.Add(time.Second), r.End); c[2] == 0 || c[1] != 0 {
		t.Errorf("after the cut traffic should go via isp2 only: %s", ispCounts(r, at.Add(time.Second), r.End))
	}
	// The decision itself was not delayed either.
	if tr := e.transitions("isp1", at); len(tr) == 0 {
		t.Error("no isp1 transition recorded after the cut")
	} else {
		t.Logf("isp1: %s", tr[0])
	}

	// The hanging hooks are killed at their timeout; then the queued
	// "down" hook for isp1 runs (and hangs in its turn).
	e.waitFor("down hook for isp1", hookTimeout+10*time.Second, func() (bool, string) {
		b, _ := os.ReadFile(hookLog)
		return strings.Contains(string(b), "down isp1 up"), string(b)
	})
	var timeouts int
	for _, h := range e.hookResults() {
		if h.Data.Result == "timeout" && h.Data.Hook == "10-hang" {
			timeouts++
		}
	}
	if timeouts < 2 {
		t.Errorf("%d hook timeouts logged, want the first hooks killed: %+v", timeouts, e.hookResults())
	}
	out, _ := e.cli("events", "--socket", e.socket, "--source", "action")
	if !strings.Contains(out, "action/hook") || !strings.Contains(out, "10-hang for up: timeout") {
		t.Errorf("events does not show the hook timeouts readably:\n%s", out)
	}
}

// TestReplayLabRecording: a recording of a real failover and recovery
// replays to exactly the recorded decisions; one altered decision makes
// replay fail with a MISMATCH report.
func TestReplayLabRecording(t *testing.T) {
	e := newEnv(t, labConfig{})
	e.start()
	e.waitActive("isp1", 10*time.Second)
	e.waitUp(10*time.Second, "isp2")
	if err := e.lab.CarrierDown(1); err != nil {
		t.Fatal(err)
	}
	e.waitActive("isp2", 5*time.Second)
	if err := e.lab.CarrierUp(1); err != nil {
		t.Fatal(err)
	}
	e.waitActive("isp1", 10*time.Second)
	if err := e.lab.Blackhole(2); err != nil {
		t.Fatal(err)
	}
	e.waitFor("isp2 down", 5*time.Second, func() (bool, string) {
		st, _ := e.status()
		return st["isp2"].State == "down", st["isp2"].State
	})
	e.stop(syscall.SIGTERM)

	rec := e.evlog
	out, code := e.cli("replay", rec)
	summary := lastLine(out)
	t.Logf("replay: %s", summary)
	if code != 0 || !strings.Contains(summary, " 0 mismatches") {
		t.Fatalf("replay of the recording exited %d:\n%s", code, out)
	}
	var events, decisions int
	fmt.Sscanf(summary, "%d events, %d recorded decisions", &events, &decisions)
	if decisions < 5 || events < 50 {
		t.Errorf("recording too small to mean anything: %s", summary)
	}
	for _, want := range []string{`"to":"down"`, `"to":"up"`, `"active_changed":true`} {
		if !strings.Contains(out, want) {
			t.Errorf("replayed decisions lack %s", want)
		}
	}

	// Corrupt one decision: isp1's recorded down becomes degraded.
	b, err := os.ReadFile(rec)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	changed := -1
	for i, l := range lines {
		if strings.Contains(l, `"type":"decision"`) && strings.Contains(l, `"wan":"isp1","from":"up","to":"down"`) {
			lines[i] = strings.Replace(l, `"to":"down"`, `"to":"degraded"`, 1)
			changed = i + 1
			break
		}
	}
	if changed < 0 {
		t.Fatal("no isp1 up→down decision in the recording")
	}
	bad := filepath.Join(e.dir, "corrupt.jsonl")
	os.WriteFile(bad, []byte(strings.Join(lines, "\n")), 0o644)
	out, code = e.cli("replay", "-q", bad)
	if code != 1 || !strings.Contains(out, "MISMATCH") || !strings.Contains(out, " 1 mismatches") {
		t.Fatalf("replay of a corrupted recording exited %d:\n%s", code, out)
	}
	t.Logf("corrupted line %d: %s", changed, strings.SplitN(out, "\n", 2)[0])
}

func lastLine(s string) string {
	l := nonEmptyLines(s)
	if len(l) == 0 {
		return ""
	}
	return l[len(l)-1]
}

// TestControlSocketPermissions: the socket is 0660; a user outside its group
// is refused (exit 2, permission denied); a member of control_group is let
// in.
func TestControlSocketPermissions(t *testing.T) {
	e := newEnv(t, labConfig{})
	const gid = 4242 // needs no /etc/group entry: control_group takes numbers
	// Let uid 65534 reach the socket's directory and the binary, so that
	// only the socket's own permissions decide.
	for _, d := range []string{filepath.Dir(e.dir), e.dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(e.dir, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.socket = filepath.Join(e.dir, "run", "wanreact", "wanreact.sock")
	e.writeConfig(labConfig{ExtraConfig: fmt.Sprintf("control_group: %d\n", gid)})
	bin := filepath.Join(e.dir, "wanreact")
	copyFile(t, wanreactBin(t), bin, 0o755)
	e.start()
	e.waitActive("isp1", 10*time.Second)

	st, err := os.Stat(e.socket)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o660 || st.Sys().(*syscall.Stat_t).Gid != gid {
		t.Errorf("socket mode %v gid %d, want 0660 and %d", st.Mode().Perm(), st.Sys().(*syscall.Stat_t).Gid, gid)
	}
	as := func(groups ...uint32) (string, int) {
		cmd := exec.Command(bin, "status", "--socket", e.socket)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: groups}}
		out, err := cmd.CombinedOutput()
		return string(out), exitCode(err)
	}
	out, code := as()
	if code != 2 || !strings.Contains(out, "permission denied") {
		t.Errorf("uid 65534 without the group: exit %d:\n%s", code, out)
	}
	out, code = as(gid)
	if code != 0 || !strings.Contains(out, "isp1") {
		t.Errorf("uid 65534 in control_group: exit %d:\n%s", code, out)
	}
	t.Logf("refused: exit 2 (permission denied); member of gid %d: exit 0", gid)
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

// httpIn returns a client whose connections are made in role's namespace.
func (e *env) httpIn(role string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := e.lab.Do(role, func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
}

func (e *env) scrape(c *http.Client) map[string]*dto.MetricFamily {
	e.t.Helper()
	resp, err := c.Get("http://127.0.0.1:9343/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		e.t.Fatalf("metrics do not parse: %v", err)
	}
	return fams
}

func metricValue(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		}
	}
	return 0, false
}

// TestMetricsAndNotifyInLab: the daemon runs as systemd would start it
// (NOTIFY_SOCKET, WATCHDOG_USEC): it says READY, pings the watchdog, serves
// metrics that Prometheus' parser accepts and that follow a failover, and
// says STOPPING on SIGTERM.
func TestMetricsAndNotifyInLab(t *testing.T) {
	e := newEnv(t, labConfig{})
	e.writeConfig(labConfig{ExtraConfig: "metrics_listen: 127.0.0.1:9343\n"})
	notify := filepath.Join(e.dir, "notify.sock")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var mu sync.Mutex
	var msgs []string
	var times []time.Time
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := nc.Read(b)
			if err != nil {
				return
			}
			mu.Lock()
			msgs = append(msgs, string(b[:n]))
			times = append(times, time.Now())
			mu.Unlock()
		}
	}()
	got := func(prefix string) []time.Time {
		mu.Lock()
		defer mu.Unlock()
		var out []time.Time
		for i, m := range msgs {
			if strings.HasPrefix(m, prefix) {
				out = append(out, times[i])
			}
		}
		return out
	}
	started := time.Now()
	e.startWithEnv("NOTIFY_SOCKET="+notify, "WATCHDOG_USEC=1000000")
	e.waitFor("READY=1", 10*time.Second, func() (bool, string) { return len(got("READY=1")) > 0, "" })
	t.Logf("READY after %v", got("READY=1")[0].Sub(started).Round(time.Millisecond))
	e.waitActive("isp1", 10*time.Second)
	e.waitUp(10*time.Second, "isp2")

	c := e.httpIn(lab.RoleRouter)
	fams := e.scrape(c)
	for _, want := range []struct {
		name   string
		labels []string
		min    float64
	}{
		{"wanreact_reactor_up", nil, 1},
		{"wanreact_wan_state", []string{"wan", "isp1", "state", "up"}, 1},
		{"wanreact_wan_active", []string{"wan", "isp1"}, 1},
		{"wanreact_probes_total", []string{"wan", "isp1", "result", "reply"}, 5},
		{"wanreact_actions_total", []string{"kind", "routing", "result", "ok"}, 1},
		{"process_resident_memory_bytes", nil, 1 << 20},
	} {
		if v, ok := metricValue(fams, want.name, want.labels...); !ok || v < want.min {
			t.Errorf("%s%v = %v (found %v), want >= %v", want.name, want.labels, v, ok, want.min)
		}
	}
	rss, _ := metricValue(fams, "process_resident_memory_bytes")
	t.Logf("daemon RSS %.1f MB", rss/1e6)

	if err := e.lab.CarrierDown(1); err != nil {
		t.Fatal(err)
	}
	e.waitActive("isp2", 5*time.Second)
	fams = e.scrape(c)
	if v, _ := metricValue(fams, "wanreact_failovers_total"); v < 1 {
		t.Errorf("failovers_total = %v after a failover", v)
	}
	if v, _ := metricValue(fams, "wanreact_wan_state", "wan", "isp1", "state", "down"); v != 1 {
		t.Errorf("isp1 not down in metrics")
	}
	resp, err := c.Get("http://127.0.0.1:9343/health.json")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var h struct {
		Status string
		Active []string
	}
	json.Unmarshal(body, &h)
	if resp.StatusCode != 200 || h.Status != "degraded" || len(h.Active) != 1 || h.Active[0] != "isp2" {
		t.Errorf("health.json: %d %s", resp.StatusCode, body)
	}

	// Watchdog pings at half of WATCHDOG_USEC (1s).
	e.waitFor("watchdog pings", 5*time.Second, func() (bool, string) { return len(got("WATCHDOG=1")) >= 6, "" })
	w := got("WATCHDOG=1")
	var maxGap time.Duration
	for i := 1; i < len(w); i++ {
		maxGap = max(maxGap, w[i].Sub(w[i-1]))
	}
	if maxGap > 900*time.Millisecond {
		t.Errorf("watchdog gap %v, want about 500ms", maxGap)
	}
	mu.Lock()
	var status string
	for _, m := range msgs {
		if i := strings.Index(m, "STATUS="); i >= 0 {
			status = m[i+len("STATUS="):]
		}
	}
	mu.Unlock()
	if !strings.Contains(status, "isp1 down") || !strings.Contains(status, "isp2 up (active)") {
		t.Errorf("last STATUS=%q", status)
	}
	t.Logf("%d watchdog pings, largest gap %v; STATUS=%s", len(w), maxGap.Round(time.Millisecond), status)
	e.stop(syscall.SIGTERM)
	time.Sleep(100 * time.Millisecond)
	if len(got("STOPPING=1")) != 1 {
		t.Error("no STOPPING=1 on SIGTERM")
	}
}

// TestEventsFollowAcrossRotation: `wanreact events -f --json` runs while the
// log rotates several times (event_log_max_size: 8K); when the daemon stops,
// the follower has every line the files hold, in order, none twice.
func TestEventsFollowAcrossRotation(t *testing.T) {
	e := newEnv(t, labConfig{})
	e.writeConfig(labConfig{ExtraConfig: "event_log_max_size: 8K\n"})
	e.start()
	e.waitActive("isp1", 10*time.Second)
	inode := func() uint64 {
		st, err := os.Stat(e.evlog)
		if err != nil {
			return 0
		}
		return st.Sys().(*syscall.Stat_t).Ino
	}
	follower := func(args ...string) (*exec.Cmd, *syncBuffer) {
		cmd := exec.Command(wanreactBin(t), append([]string{"events", "-f", "--socket", e.socket}, args...)...)
		var out syncBuffer
		cmd.Stdout = &out
		cmd.Stderr = &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd, &out
	}
	jsonF, jsonOut := follower("--json")
	humanF, humanOut := follower()
	wanF, wanOut := follower("--json", "--wan", "isp2")

	rotations, last := 0, inode()
	deadline := time.Now().Add(30 * time.Second)
	for rotations < 3 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		if n := inode(); n != 0 && n != last {
			rotations++
			last = n
		}
	}
	if rotations < 3 {
		t.Fatalf("only %d rotations in 30s", rotations)
	}
	// A failover while following, so decisions are in the stream too.
	if err := e.lab.CarrierDown(2); err != nil {
		t.Fatal(err)
	}
	e.waitFor("isp2 down", 5*time.Second, func() (bool, string) {
		st, _ := e.status()
		return st["isp2"].State == "down", ""
	})
	e.stop(syscall.SIGTERM)
	for _, f := range []*exec.Cmd{jsonF, humanF, wanF} {
		done := make(chan error, 1)
		go func() { done <- f.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("follower %v: %v", f.Args[1:], err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("follower %v did not end with the daemon", f.Args[1:])
		}
	}
	got := nonEmptyLines(jsonOut.String())
	files := e.logLines()
	seen := map[string]bool{}
	for _, l := range got {
		if seen[l] {
			t.Fatalf("line twice in the follower's output: %s", l)
		}
		seen[l] = true
	}
	// The files now hold the last rotation's worth: the follower's output
	// must end with exactly those lines. The daemon may log a line or two
	// while shutting down after the followers were let go (a conntrack
	// flush finishing): those may be missing at the end, nothing else.
	if len(files) == 0 || len(got) == 0 {
		t.Fatalf("follower has %d lines, files %d", len(got), len(files))
	}
	end := len(files) - 1
	for end >= 0 && files[end] != got[len(got)-1] {
		end--
	}
	if end < 0 || len(files)-1-end > 3 {
		t.Fatalf("the follower's last line is not among the files' last lines:\n%s", got[len(got)-1])
	}
	kept := files[:end+1]
	if len(got) < len(kept) {
		t.Fatalf("follower has %d lines, files %d", len(got), len(kept))
	}
	tail := got[len(got)-len(kept):]
	for i := range kept {
		if tail[i] != kept[i] {
			t.Fatalf("follower line %d differs from the file:\n got  %s\n want %s", len(got)-len(kept)+i, tail[i], kept[i])
		}
	}
	t.Logf("%d rotations while following; follower got %d lines, the last %d identical to FILE.1+FILE (%d written during shutdown not streamed)",
		rotations, len(got), len(kept), len(files)-len(kept))

	human := nonEmptyLines(humanOut.String())
	if len(human) < len(got)/2 {
		t.Errorf("human follower got %d lines, JSON %d", len(human), len(got))
	}
	var sawDown bool
	for _, l := range human {
		if strings.HasPrefix(l, "{") {
			t.Fatalf("human format printed JSON: %s", l)
		}
		sawDown = sawDown || strings.Contains(l, "reactor/decision  isp2 up→down")
	}
	if !sawDown {
		t.Errorf("human follower lacks the isp2 up→down decision")
	}
	for _, l := range nonEmptyLines(wanOut.String()) {
		if !strings.Contains(l, `"wan":"isp2"`) {
			t.Errorf("--wan isp2 passed %s", l)
			break
		}
	}
}

// TestLeaseHookInLab: a DHCP lease from dnsmasq runs the hooks with the
// dhclient-compatible environment.
func TestLeaseHookInLab(t *testing.T) {
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Fatal("dnsmasq missing: `make test` installs it (scripts/deps.sh)")
	}
	e := newEnv(t, labConfig{DHCP: []int{1}})
	hooksDir := filepath.Join(e.dir, "hooks.d")
	os.Mkdir(hooksDir, 0o755)
	out := filepath.Join(e.dir, "lease.env")
	script := "#!/bin/sh\n[ \"$WANREACT_EVENT\" = lease ] && env | sort > " + out + "\nexit 0\n"
	os.WriteFile(filepath.Join(hooksDir, "10-lease"), []byte(script), 0o755)
	e.writeConfig(labConfig{DHCP: []int{1}, ExtraConfig: "hooks:\n  dir: " + hooksDir + "\n"})
	e.startDnsmasq(1)
	e.start()
	var env string
	e.waitFor("lease hook", 10*time.Second, func() (bool, string) {
		b, _ := os.ReadFile(out)
		env = string(b)
		return strings.Contains(env, "reason=BOUND"), env
	})
	for _, want := range []string{"WANREACT_WAN=isp1", "WANREACT_INTERFACE=wan0", "interface=wan0", "new_ip_address=203.0.113.", "new_routers=203.0.113.1", "new_rfc3442_classless_static_routes="} {
		if !strings.Contains(env, want) {
			t.Errorf("lease hook environment lacks %s:\n%s", want, env)
		}
	}
	sc := bufio.NewScanner(bytes.NewReader([]byte(env)))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "NOTIFY_SOCKET=") || strings.HasPrefix(sc.Text(), "HOME=") {
			t.Errorf("daemon environment leaked: %s", sc.Text())
		}
	}
}

// unitCapabilities reads CapabilityBoundingSet from the packaged unit, so
// that this test checks the capabilities the unit really grants.
func unitCapabilities(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../packaging/systemd/wanreact.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapabilityBoundingSet="); ok {
			return strings.Fields(v)
		}
	}
	t.Fatal("no CapabilityBoundingSet in the unit")
	return nil
}

// TestRunsWithUnitCapabilities: the daemon, limited to the capabilities the
// systemd unit grants (as setpriv limits root's bounding set), obtains and
// renews a DHCP lease, installs its routing, and fails over.
func TestRunsWithUnitCapabilities(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Fatal("dnsmasq missing: `make test` installs it (scripts/deps.sh)")
	}
	caps := unitCapabilities(t)
	set := "-all"
	for _, c := range caps {
		set += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
	}
	e := newEnv(t, labConfig{DHCP: []int{1}})
	e.startDnsmasq(1)
	cmd := e.lab.Command(lab.RoleRouter, "setpriv", "--bounding-set="+set, "--inh-caps=-all", "--no-new-privs", "--",
		wanreactBin(t), "run", "-c", e.cfgPath)
	e.logBuf = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = e.logBuf, e.logBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.daemon, e.exited = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(e.exited) }()
	t.Cleanup(func() {
		e.stop(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("daemon log:\n%s", e.logBuf.String())
		}
	})
	e.waitActive("isp1", 15*time.Second)
	e.waitUp(10*time.Second, "isp2")
	// The daemon really runs with those capabilities only.
	pid := fmt.Sprint(cmd.Process.Pid)
	if out, err := exec.Command("pgrep", "-P", pid).Output(); err == nil && len(bytes.TrimSpace(out)) > 0 {
		pid = strings.Fields(string(out))[0] // ip netns exec → setpriv → exec'd daemon
	}
	status, _ := os.ReadFile("/proc/" + pid + "/status")
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "CapEff:") {
			t.Logf("daemon %s %s (unit: %s)", pid, l, strings.Join(caps, " "))
		}
	}
	// A renewal (T1 = 1 minute of dnsmasq's 2-minute lease) works too:
	// the unicast exchange falls back to the packet socket when the UDP
	// socket cannot bind port 68 without CAP_NET_BIND_SERVICE.
	if !testing.Short() {
		start := time.Now()
		e.waitFor("DHCP renewal", 100*time.Second, func() (bool, string) {
			for _, l := range e.logLines() {
				if strings.Contains(l, `"source":"dhcp","type":"renewed"`) {
					return true, ""
				}
			}
			return false, ""
		})
		t.Logf("lease renewed after %v", time.Since(start).Round(time.Second))
	}
	if err := e.lab.CarrierDown(1); err != nil {
		t.Fatal(err)
	}
	e.waitActive("isp2", 3*time.Second)
	for _, l := range []string{"permission denied", "operation not permitted"} {
		if strings.Contains(strings.ToLower(e.logBuf.String()), l) {
			t.Errorf("daemon log mentions %q", l)
		}
	}
}
