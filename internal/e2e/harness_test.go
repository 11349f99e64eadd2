// Package e2e runs the real wanreact binary in a network-namespace lab and
// checks the user-visible promises: failover times, repair, restarts.
package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/wanreact/wanreact/internal/lab"
	"github.com/wanreact/wanreact/internal/testbin"
)

func TestMain(m *testing.M) { testbin.Main(m) }

// wanreactBin is the daemon under test, built once per test binary.
func wanreactBin(t *testing.T) string { return testbin.Wanreact(t) }

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root and network namespaces")
	}
	if testing.Short() {
		t.Skip("lab test skipped in -short mode")
	}
}

// env is one lab with a daemon running in its router namespace.
type env struct {
	t       *testing.T
	lab     *lab.Lab
	dir     string
	cfgPath string
	socket  string
	evlog   string
	daemon  *exec.Cmd
	logBuf  *syncBuffer
	exited  chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type labConfig struct {
	ISPs        int
	External    bool // lab sets the addresses, config says addressing: external
	Interval    string
	Timeout     string
	SamePrio    bool
	ExtraConfig string
	// DHCP lists ISPs (1-based) whose WAN uses addressing: dhcp.
	DHCP []int
	// WANExtra holds extra YAML lines for ISP i's WAN (1-based), indented
	// as WAN keys ("    weight: 2\n").
	WANExtra map[int]string
	// NoRouterNAT leaves out the lab's own MASQUERADE on the router (the
	// "user's firewall"), e.g. to test the daemon's nat: true.
	NoRouterNAT bool
}

func newEnv(t *testing.T, lc labConfig) *env {
	t.Helper()
	needRoot(t)
	if lc.ISPs == 0 {
		lc.ISPs = 2
	}
	if _, err := lab.Sweep(); err != nil {
		t.Logf("sweep: %v", err)
	}
	l, err := lab.New(lab.Options{ISPs: lc.ISPs, RouterAddrs: lc.External, RouterNAT: !lc.NoRouterNAT})
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	dir := t.TempDir()
	e := &env{t: t, lab: l, dir: dir, cfgPath: filepath.Join(dir, "wanreact.yaml"),
		socket: filepath.Join(dir, "wanreact.sock"), evlog: filepath.Join(dir, "events.jsonl")}
	e.writeConfig(lc)
	return e
}

func (e *env) configText(lc labConfig) string {
	var b strings.Builder
	fmt.Fprintf(&b, "control_socket: %s\nevent_log: %s\nstate_dir: %s\nlan: [lan0]\nwans:\n", e.socket, e.evlog, e.dir)
	for i := 1; i <= e.lab.ISPs(); i++ {
		prio := i
		if lc.SamePrio {
			prio = 1
		}
		fmt.Fprintf(&b, "  - name: isp%d\n    interface: %s\n    table: %d\n    priority: %d\n", i, lab.WANName(i), 10+i, prio)
		b.WriteString(lc.WANExtra[i])
		if slices.Contains(lc.DHCP, i) {
			b.WriteString("    addressing: dhcp\n")
		} else if lc.External {
			b.WriteString("    addressing: external\n")
		} else {
			fmt.Fprintf(&b, "    addressing: static\n    address: %s\n    gateway: %s\n", lab.RouterWANAddr(i), lab.ISPGateway)
		}
		fmt.Fprintf(&b, "    probe:\n      targets: [%s, %s]\n", lab.Target1, lab.Target2)
		if lc.Interval != "" {
			fmt.Fprintf(&b, "      interval: %s\n", lc.Interval)
		}
		if lc.Timeout != "" {
			fmt.Fprintf(&b, "      timeout: %s\n", lc.Timeout)
		}
	}
	b.WriteString(lc.ExtraConfig)
	return b.String()
}

func (e *env) writeConfig(lc labConfig) {
	if err := os.WriteFile(e.cfgPath, []byte(e.configText(lc)), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// start runs the daemon in the router namespace.
func (e *env) start() {
	e.t.Helper()
	e.startWithEnv()
}

// startWithEnv is e.start with extra environment for the daemon.
func (e *env) startWithEnv(extra ...string) {
	e.t.Helper()
	cmd := e.lab.Command(lab.RoleRouter, wanreactBin(e.t), "run", "-c", e.cfgPath)
	cmd.Env = append(os.Environ(), extra...)
	e.logBuf = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = e.logBuf, e.logBuf
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("start daemon: %v", err)
	}
	e.daemon = cmd
	e.exited = make(chan struct{})
	go func() { cmd.Wait(); close(e.exited) }()
	e.t.Cleanup(func() {
		e.stop(syscall.SIGKILL)
		if e.t.Failed() {
			e.t.Logf("daemon log:\n%s", e.logBuf.String())
		}
	})
}

func (e *env) stop(sig syscall.Signal) {
	if e.daemon == nil {
		return
	}
	_ = e.daemon.Process.Signal(sig)
	select {
	case <-e.exited:
	case <-time.After(10 * time.Second):
		_ = e.daemon.Process.Kill()
		<-e.exited
	}
	e.daemon = nil
}

// cli runs a wanreact subcommand (in the router namespace: status talks to
// the socket by path, which is namespace-independent, but cleanup needs it).
func (e *env) cli(args ...string) (string, int) {
	cmd := e.lab.Command(lab.RoleRouter, wanreactBin(e.t), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("%v: %v", args, err)
	}
	return out.String(), code
}

type wanStatus struct {
	Name   string  `json:"name"`
	State  string  `json:"state"`
	Active bool    `json:"active"`
	Loss   float64 `json:"loss"`
}

func (e *env) status() (map[string]wanStatus, error) {
	out, code := e.cli("status", "--json", "--socket", e.socket)
	if code != 0 {
		return nil, fmt.Errorf("status exit %d: %s", code, out)
	}
	var st struct{ WANs []wanStatus }
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("status: %v: %s", err, out)
	}
	m := map[string]wanStatus{}
	for _, w := range st.WANs {
		m[w.Name] = w
	}
	return m, nil
}

// waitFor polls cond until it holds or the timeout passes.
func (e *env) waitFor(what string, timeout time.Duration, cond func() (bool, string)) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		ok, s := cond()
		if ok {
			return
		}
		last = s
		select {
		case <-e.exited:
			e.t.Fatalf("daemon exited while waiting for %s:\n%s", what, e.logBuf.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	e.t.Fatalf("timed out after %v waiting for %s (last: %s)", timeout, what, last)
}

// waitActive waits until the WAN is up and the only active one.
func (e *env) waitActive(wan string, timeout time.Duration) {
	e.t.Helper()
	e.waitFor(wan+" up and active", timeout, func() (bool, string) {
		st, err := e.status()
		if err != nil {
			return false, err.Error()
		}
		return st[wan].State == "up" && st[wan].Active, fmt.Sprint(st)
	})
}

// transitions reads the event log and returns the health transitions of a
// WAN recorded after since.
func (e *env) transitions(wan string, since time.Time) []string {
	f, err := os.Open(e.evlog)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var r struct {
			Time        time.Time
			Source      string
			Type        string
			Transitions []struct{ WAN, From, To, Reason string }
		}
		if json.Unmarshal(sc.Bytes(), &r) != nil || r.Source != "reactor" || r.Type != "decision" || r.Time.Before(since) {
			continue
		}
		for _, tr := range r.Transitions {
			if tr.WAN == wan {
				out = append(out, fmt.Sprintf("%s %s→%s (%s)", r.Time.Format("15:04:05.000"), tr.From, tr.To, tr.Reason))
			}
		}
	}
	return out
}

// ourRules lists the policy rules of protocol 87 in the router namespace
// (read through netlink: iproute2 6.1 ignores "proto" in rule listings).
func (e *env) ourRules() []string {
	h, err := e.lab.Handle(lab.RoleRouter)
	if err != nil {
		e.t.Fatal(err)
	}
	rules, err := h.RuleList(netlink.FAMILY_V4)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, r := range rules {
		if r.Protocol == 87 {
			mask := uint32(0)
			if r.Mask != nil {
				mask = *r.Mask
			}
			out = append(out, fmt.Sprintf("%d mark=%#x/%#x table=%d src=%v suppress=%d", r.Priority, r.Mark, mask, r.Table, r.Src, r.SuppressPrefixlen))
		}
	}
	return out
}

func (e *env) routes(table int) []string {
	out, err := e.lab.Exec(lab.RoleRouter, "ip", "-4", "route", "show", "table", fmt.Sprint(table))
	if err != nil {
		e.t.Fatalf("ip route: %v %s", err, out)
	}
	return nonEmptyLines(string(out))
}

func nonEmptyLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

// measureFailover runs a 200 packets/s flow from `from`, applies fault at
// a steady moment, and returns the outage the flow saw and the flow report.
func (e *env) measureFailover(from string, fault func() error, settle time.Duration) (time.Duration, lab.FlowReport, time.Time) {
	e.t.Helper()
	f, err := e.lab.StartFlow(from, 200)
	if err != nil {
		e.t.Fatal(err)
	}
	time.Sleep(time.Second)
	faultAt := time.Now()
	if err := fault(); err != nil {
		f.Stop()
		e.t.Fatal(err)
	}
	time.Sleep(settle)
	r := f.Stop()
	gap := r.Outage(faultAt)
	if os.Getenv("WANREACT_E2E_DEBUG") != "" {
		for _, p := range r.Packets {
			if !p.At.Before(gap.Start.Add(-10*time.Millisecond)) && !p.At.After(gap.End.Add(10*time.Millisecond)) {
				e.t.Logf("seq=%d sent=%s at=%s isp=%d", p.Seq, p.SentAt.Format("05.000000"), p.At.Format("05.000000"), p.ISP)
			}
		}
	}
	return gap.Duration(), r, faultAt
}

func ispCounts(r lab.FlowReport, from, to time.Time) string {
	c := r.ByISP(from, to)
	var parts []string
	for i, n := range c {
		if i > 0 {
			parts = append(parts, fmt.Sprintf("isp%d=%d", i, n))
		}
	}
	return strings.Join(parts, " ")
}

var _ = netip.Addr{}

func runCmd(bin string, args ...string) (string, error) {
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}
