package benchlib

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wanreact/wanreact/internal/control"
	"github.com/wanreact/wanreact/internal/lab"
	"github.com/wanreact/wanreact/reactor"
)

// extraTargets are added to inet's loopback so that a WAN can probe four
// targets (the cost target is stated for 2 WANs × 4 targets); the lab itself
// only provides Target1 and Target2.
var extraTargets = []netip.Addr{netip.MustParseAddr("198.51.100.3"), netip.MustParseAddr("198.51.100.4")}

// addExtraTargets puts extraTargets on inet's lo.
func addExtraTargets(l *lab.Lab) error {
	h, err := l.Handle(lab.RoleInet)
	if err != nil {
		return err
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("inet lo: %w", err)
	}
	for _, a := range extraTargets {
		if err := h.AddrAdd(lo, nlAddr(netip.PrefixFrom(a, 32))); err != nil {
			return fmt.Errorf("inet lo %s: %w", a, err)
		}
	}
	return nil
}

// probeTargets returns n probe targets (1..4) reachable in a lab prepared by
// addExtraTargets.
func probeTargets(n int) []netip.Addr {
	all := append([]netip.Addr{lab.Target1, lab.Target2}, extraTargets...)
	return all[:max(1, min(n, len(all)))]
}

// daemonConfig renders the daemon's YAML for a lab: every ISP a static WAN
// (ISP i is "isp<i>" on WANName(i), table 10+i, priority i) probing targets
// with the daemon's default probe settings, so that the numbers measured are
// those of the defaults. A non-empty interval overrides the probe interval
// (the cost baseline only).
func daemonConfig(isps int, targets []netip.Addr, interval, dir, socket, evlog string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "control_socket: %s\nevent_log: %s\nstate_dir: %s\nlan: [%s]\nwans:\n", socket, evlog, dir, lab.RouterLANIf)
	ts := make([]string, len(targets))
	for i, t := range targets {
		ts[i] = t.String()
	}
	for i := 1; i <= isps; i++ {
		fmt.Fprintf(&b, "  - name: isp%d\n    interface: %s\n    table: %d\n    priority: %d\n", i, lab.WANName(i), 10+i, i)
		fmt.Fprintf(&b, "    addressing: static\n    address: %s\n    gateway: %s\n", lab.RouterWANAddr(i), lab.ISPGateway)
		fmt.Fprintf(&b, "    probe:\n      targets: [%s]\n", strings.Join(ts, ", "))
		if interval != "" {
			fmt.Fprintf(&b, "      interval: %s\n", interval)
		}
	}
	return b.String()
}

// daemonEnv runs the real wanreact binary in a lab's router namespace, the
// way a user runs it, and reads what it reports (control socket, event log,
// /proc).
type daemonEnv struct {
	lab     *lab.Lab
	bin     string
	dir     string
	cfgPath string
	socket  string
	logf    func(string, ...any)
	// interval, when set, overrides the probe interval of the next start.
	interval string

	mu      sync.Mutex
	cmd     *exec.Cmd
	out     *lockedBuffer
	exited  chan struct{}
	started time.Time
	evlog   string
	runs    int
	tail    *eventTail
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *lockedBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *lockedBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newDaemonEnv writes a config for every ISP of l probing targets.
func newDaemonEnv(l *lab.Lab, bin, dir string, targets []netip.Addr, logf func(string, ...any)) (*daemonEnv, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	d := &daemonEnv{lab: l, bin: bin, dir: dir, cfgPath: filepath.Join(dir, "wanreact.yaml"),
		socket: filepath.Join(dir, "wanreact.sock"), logf: logf}
	// The event log path is per run (see start), so the config names a
	// placeholder that start rewrites.
	return d, d.writeConfig(targets, filepath.Join(dir, "events-0.jsonl"))
}

func (d *daemonEnv) writeConfig(targets []netip.Addr, evlog string) error {
	d.evlog = evlog
	cfg := daemonConfig(d.lab.ISPs(), targets, d.interval, d.dir, d.socket, evlog)
	if err := os.WriteFile(d.cfgPath, []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("writing config: %w", err)
	}
	return nil
}

// start runs the daemon with a fresh event log, so every run's log begins
// with its configuration (complete for replay, and never rotated by the
// previous run's volume). It returns the time just before the process was
// started.
func (d *daemonEnv) start(targets []netip.Addr) (time.Time, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil {
		return time.Time{}, errors.New("daemon already running")
	}
	d.runs++
	if err := d.writeConfig(targets, filepath.Join(d.dir, fmt.Sprintf("events-%d.jsonl", d.runs))); err != nil {
		return time.Time{}, err
	}
	cmd := d.lab.Command(lab.RoleRouter, d.bin, "run", "-c", d.cfgPath)
	d.out = &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return time.Time{}, fmt.Errorf("starting %s: %w", d.bin, err)
	}
	d.cmd, d.started = cmd, t0
	d.exited = make(chan struct{})
	exited := d.exited
	go func() { _ = cmd.Wait(); close(exited) }()
	d.tail = newEventTail(d.evlog)
	return t0, nil
}

// stop ends the daemon with SIGTERM (routing stays in place, as in real
// use), SIGKILL after 10 s.
func (d *daemonEnv) stop() error {
	d.mu.Lock()
	cmd, exited := d.cmd, d.exited
	d.cmd = nil
	d.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return nil
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		return errors.New("daemon ignored SIGTERM for 10s; killed")
	}
}

// pid is the daemon's process id: `ip netns exec` execs the command, so
// the process started is the daemon itself (checked by checkPid).
func (d *daemonEnv) pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil || d.cmd.Process == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// checkPid verifies that pid() is the daemon and not an `ip` wrapper, which
// would make every /proc measurement wrong. Right after start the process
// may still be ip(8) about to exec, so it waits up to 2 s for the exec.
func (d *daemonEnv) checkPid() error {
	pid := d.pid()
	if pid == 0 {
		return errors.New("daemon not running")
	}
	want, err := filepath.EvalSymlinks(d.bin)
	if err != nil {
		want = d.bin
	}
	if abs, err := filepath.Abs(want); err == nil {
		want = abs
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil {
			return fmt.Errorf("daemon exe: %w", err)
		}
		if exe == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d runs %s, not %s", pid, exe, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (d *daemonEnv) running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return false
	}
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// crashed reports a daemon that exited without being stopped, with the end
// of its output, and forgets it so that the next start is possible.
func (d *daemonEnv) crashed() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return nil
	}
	select {
	case <-d.exited:
	default:
		return nil
	}
	err := fmt.Errorf("daemon exited unexpectedly (%v); its last output:\n%s", d.cmd.ProcessState, tailLines(d.out.String(), 20))
	d.cmd = nil
	return err
}

// output is what the daemon printed (its slog lines).
func (d *daemonEnv) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.out == nil {
		return ""
	}
	return d.out.String()
}

// status asks the daemon over its control socket, like `wanreact status`.
func (d *daemonEnv) status() (map[string]reactor.WANStatus, error) {
	conn, dec, err := control.Dial(d.socket, control.Request{Cmd: "status"})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	// Decoded by the documented JSON field names (interface.md), not the
	// daemon's Go type: the bench measures the user-facing contract.
	var st struct {
		WANs []reactor.WANStatus `json:"wans"`
	}
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	m := make(map[string]reactor.WANStatus, len(st.WANs))
	for _, w := range st.WANs {
		m[w.Name] = w
	}
	return m, nil
}

// waitStatus polls status until cond holds or timeout passes; the error
// then says what was last seen.
func (d *daemonEnv) waitStatus(ctx context.Context, what string, timeout time.Duration, cond func(map[string]reactor.WANStatus) bool) error {
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for {
		if !d.running() {
			return fmt.Errorf("daemon exited while waiting for %s; its output:\n%s", what, tailLines(d.output(), 20))
		}
		st, err := d.status()
		if err == nil && cond(st) {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = summarize(st)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting %v for %s: last status %s", timeout, what, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// preferredActive holds when ISP 1 is up and the only active WAN and every
// other WAN is up: the steady state each measurement starts from.
func preferredActive(st map[string]reactor.WANStatus) bool {
	if len(st) == 0 {
		return false
	}
	for name, w := range st {
		if w.State != reactor.Up {
			return false
		}
		if w.Active != (name == "isp1") {
			return false
		}
	}
	return true
}

func summarize(st map[string]reactor.WANStatus) string {
	var parts []string
	for i := 1; i <= len(st); i++ {
		w, ok := st[fmt.Sprintf("isp%d", i)]
		if !ok {
			continue
		}
		a := ""
		if w.Active {
			a = "*"
		}
		parts = append(parts, fmt.Sprintf("%s=%s%s(%s)", w.Name, w.State, a, w.Reason))
		if len(parts) == 4 && len(st) > 4 {
			parts = append(parts, fmt.Sprintf("... %d more", len(st)-4))
			break
		}
	}
	return strings.Join(parts, " ")
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// decision is a reactor decision line of the event log.
type decision struct {
	reactor.DecisionRecord
}

// activeHas reports whether the decision's active set contains wan.
func (d decision) activeHas(wan string) bool {
	for _, m := range d.Active {
		if m.WAN == wan {
			return true
		}
	}
	return false
}

// eventTail reads an event log incrementally as the daemon appends to it,
// following the daemon's rotation (FILE -> FILE.1), and keeps its decisions.
type eventTail struct {
	path      string
	off       int64
	ino       uint64
	partial   []byte
	decisions []decision
	lines     int
}

func newEventTail(path string) *eventTail { return &eventTail{path: path} }

// poll reads what was appended since the last call.
func (t *eventTail) poll() error {
	var st syscall.Stat_t
	if err := syscall.Stat(t.path, &st); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil // not yet created
		}
		return fmt.Errorf("event log: %w", err)
	}
	if t.ino != 0 && st.Ino != t.ino {
		// Rotated: finish the old file (now FILE.1), then start over.
		if err := t.readFrom(t.path+".1", t.off); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		t.off, t.partial = 0, nil
	}
	t.ino = st.Ino
	return t.readFrom(t.path, t.off)
}

func (t *eventTail) readFrom(path string, off int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	t.off = off + int64(len(b))
	t.feed(b)
	return nil
}

var decisionMarker = []byte(`"type":"decision"`)

// feed parses complete lines; a trailing partial line waits for the rest.
func (t *eventTail) feed(b []byte) {
	if len(t.partial) > 0 {
		b = append(t.partial, b...)
		t.partial = nil
	}
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if len(b) > 0 {
				t.partial = append([]byte(nil), b...)
			}
			return
		}
		line := b[:i]
		b = b[i+1:]
		t.lines++
		if !bytes.Contains(line, decisionMarker) {
			continue
		}
		var d decision
		if json.Unmarshal(line, &d.DecisionRecord) == nil && d.Source == "reactor" && d.Type == "decision" {
			t.decisions = append(t.decisions, d)
		}
	}
}

// decisionsSince polls and returns the decisions at or after since.
func (d *daemonEnv) decisionsSince(since time.Time) ([]decision, error) {
	d.mu.Lock()
	t := d.tail
	d.mu.Unlock()
	if t == nil {
		return nil, errors.New("daemon never started")
	}
	if err := t.poll(); err != nil {
		return nil, err
	}
	var out []decision
	for _, dec := range t.decisions {
		if !dec.Time.Before(since) {
			out = append(out, dec)
		}
	}
	return out, nil
}

// waitDecision polls the event log until a decision at or after since
// satisfies match, and returns it; ok is false on timeout.
func (d *daemonEnv) waitDecision(ctx context.Context, since time.Time, timeout time.Duration, match func(decision) bool) (decision, bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		decs, err := d.decisionsSince(since)
		if err != nil {
			return decision{}, false, err
		}
		for _, dec := range decs {
			if match(dec) {
				return dec, true, nil
			}
		}
		if time.Now().After(deadline) || !d.running() {
			return decision{}, false, nil
		}
		select {
		case <-ctx.Done():
			return decision{}, false, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// eventLogs lists the event-log files of every run, oldest first.
func (d *daemonEnv) eventLogs() []string {
	var out []string
	for i := 1; i <= d.runs; i++ {
		out = append(out, filepath.Join(d.dir, fmt.Sprintf("events-%d.jsonl", i)))
	}
	return out
}
