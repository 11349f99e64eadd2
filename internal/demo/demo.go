package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/wanreact/wanreact/internal/lab"
	"github.com/wanreact/wanreact/reactor"
)

// options are the demo's flags.
type options struct {
	Bin      string
	Fast     bool
	Keep     bool
	Timeline string
	Slot     time.Duration
	Out      io.Writer
	Color    bool
}

// The core issue's outage budgets for a 200 packets/s flow.
const (
	flowPPS         = 200
	carrierBudget   = 500 * time.Millisecond
	blackholeBudget = 1500 * time.Millisecond
	lossRate        = 0.3
	// viaWindow is the end of a phase over which "then via" is judged.
	viaWindow = 500 * time.Millisecond
)

// timing is how long each part of the script lasts.
type timing struct {
	steady     time.Duration // before the first fault
	afterFault time.Duration // watching a failover
	hold       time.Duration // watching traffic after a failback
	loss       time.Duration // under 30% loss
	failback   time.Duration // longest wait for a restored ISP to be proven
	recover    time.Duration // longest wait for a degraded ISP to recover
	ready      time.Duration // longest wait for the daemon's first verdicts
}

func timings(fast bool) timing {
	if fast {
		return timing{steady: 1500 * time.Millisecond, afterFault: 2500 * time.Millisecond, hold: time.Second,
			loss: 5 * time.Second, failback: 10 * time.Second, recover: 3 * time.Second, ready: 20 * time.Second}
	}
	// About 60 s of script: enough to watch each failover settle, and a
	// loss phase long enough (14 s, ~140 probes) for the pooled 100-sample
	// loss window to reach the degraded threshold (typically after 6-8 s).
	return timing{steady: 6 * time.Second, afterFault: 6 * time.Second, hold: 4 * time.Second,
		loss: 14 * time.Second, failback: 15 * time.Second, recover: 25 * time.Second, ready: 20 * time.Second}
}

// phaseResult is one row of the summary table.
type phaseResult struct {
	Name string
	// At is when the phase's fault (or repair) was applied.
	At time.Time
	// Outage is the flow's longest silence from just before At to the end
	// of the phase (see outage); HasOutage is false for phases where a
	// silence is not the measure (steady, loss).
	Outage    time.Duration
	Gap       lab.Gap
	HasOutage bool
	// Budget is the outage the core issue allows (0: none).
	Budget time.Duration
	// Via is the ISP that carried the flow at the end of the phase (its
	// last viaWindow),
	// ViaShare its share of the packets.
	Via      int
	ViaShare float64
	// Decision is the daemon's first health transition of isp1 after At,
	// DecisionAfter how long after At it was made.
	Decision      string
	DecisionAfter time.Duration
	// Changes counts isp1's health transitions during the phase.
	Changes int
	// Delivery is the fraction of the flow's packets sent during the phase
	// that arrived.
	Delivery float64
	Expect   string
	Met      bool
	Note     string
}

// result is what a run measured.
type result struct {
	Prefix    string
	DaemonPID int
	Kept      bool
	Phases    []phaseResult
}

// OK reports whether every phase met its expectation.
func (r *result) OK() bool {
	if r == nil || len(r.Phases) == 0 {
		return false
	}
	for _, p := range r.Phases {
		if !p.Met {
			return false
		}
	}
	return true
}

// Phase returns the first phase whose name starts with prefix.
func (r *result) Phase(prefix string) (phaseResult, bool) {
	for _, p := range r.Phases {
		if strings.HasPrefix(p.Name, prefix) {
			return p, true
		}
	}
	return phaseResult{}, false
}

// demo is one run: the lab, the daemon, the flow and what watches them.
type demo struct {
	o   options
	t   timing
	con *console
	bin string

	lab     *lab.Lab
	dir     string
	cfgPath string
	socket  string
	logPath string

	daemon *exec.Cmd
	exited chan struct{}
	// exitErr is the daemon's exit status; read only after exited closed.
	exitErr error

	track     *tracker
	stopTrack context.CancelFunc
	trackDone chan struct{}

	flow       *lab.Flow
	stopRender context.CancelFunc
	renderDone chan struct{}

	// logTail is the end of the daemon's log, read by close for errors.
	logTail string

	res result
}

// run plays the whole script. Whatever happens (error, Ctrl-C via ctx), the
// lab and the daemon are gone when it returns, unless o.Keep and the script
// completed.
func run(ctx context.Context, o options) (res *result, err error) {
	if o.Slot == 0 {
		o.Slot = 200 * time.Millisecond
	}
	if o.Slot < 100*time.Millisecond || o.Slot > 250*time.Millisecond {
		return nil, fmt.Errorf("-slot %v: want 100ms..250ms", o.Slot)
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("needs root for network namespaces: run `sudo make demo`")
	}
	bin, err := filepath.Abs(o.Bin)
	if err != nil {
		return nil, fmt.Errorf("-bin %s: %w", o.Bin, err)
	}
	if st, err := os.Stat(bin); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("-bin %s: not an executable file (run `make build` first)", o.Bin)
	}
	d := &demo{o: o, t: timings(o.Fast), bin: bin, con: &console{w: o.Out, color: o.Color}}
	keep := false
	defer func() {
		if cerr := d.close(keep); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup: %w", cerr))
		}
		if err != nil && d.logTail != "" && !keep && !errors.Is(err, context.Canceled) {
			// The daemon's own words are the best clue to a failure,
			// and its log goes with the temp dir.
			err = fmt.Errorf("%w\ndaemon log (last lines):\n%s", err, d.logTail)
		}
	}()
	if err := d.setUp(ctx); err != nil {
		return nil, err
	}
	if err := d.script(ctx); err != nil {
		return nil, err
	}
	d.stopWatching()
	d.printSummary()
	if o.Timeline != "" {
		if err := d.writeTimeline(o.Timeline); err != nil {
			return nil, err
		}
		d.con.printf("timeline of the failovers written to %s", o.Timeline)
	}
	if o.Keep {
		keep = true
		d.res.Kept = true
		d.printKeepHelp()
	}
	out := d.res
	return &out, nil
}

// setUp builds the lab, writes and checks the config, starts the daemon and
// waits for its first verdicts.
func (d *demo) setUp(ctx context.Context) error {
	// Leftovers of an earlier demo or test killed with SIGKILL: Sweep only
	// removes labs whose creator is dead, so it is safe next to live ones.
	if gone, err := lab.Sweep(); err != nil {
		d.con.printf("note: removing leftover labs: %v", err)
	} else if len(gone) > 0 {
		d.con.printf("removed %d namespaces left over by earlier runs", len(gone))
	}
	d.con.println(d.con.paint(sgrBold, "wanreact demo") + ": building a lab of network namespaces…")
	l, err := lab.New(lab.Options{ISPs: 2, RouterNAT: true})
	if err != nil {
		return err
	}
	d.lab = l
	d.res.Prefix = l.Prefix()
	d.con.printf("  lab %s: client (%s) → rtr (wanreact: wan0, wan1) → isp1, isp2 → inet (probe targets %s, %s; sink %s)",
		l.Prefix(), lab.ClientAddr, lab.Target1, lab.Target2, lab.SinkAddr)
	d.con.printf("  both ISPs hand out the same subnet 203.0.113.0/24 with gateway %s; the router masquerades", lab.ISPGateway)

	if d.dir, err = os.MkdirTemp("", "wanreact-demo-"); err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	d.cfgPath = filepath.Join(d.dir, "wanreact.yaml")
	d.socket = filepath.Join(d.dir, "wanreact.sock")
	d.logPath = filepath.Join(d.dir, "daemon.log")
	cfg := demoConfig(d.socket, filepath.Join(d.dir, "events.jsonl"))
	if err := os.WriteFile(d.cfgPath, []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	d.con.printf("  config %s:", d.cfgPath)
	for _, line := range strings.Split(strings.TrimRight(cfg, "\n"), "\n") {
		d.con.println("    " + d.con.paint(sgrDim, line))
	}
	out, err := exec.CommandContext(ctx, d.bin, "check", "-c", d.cfgPath).CombinedOutput()
	if err != nil {
		return fmt.Errorf("wanreact check: %w: %s", err, out)
	}
	d.con.printf("  $ wanreact check -c %s\n    %s", d.cfgPath, strings.TrimSpace(string(out)))

	if err := d.startDaemon(); err != nil {
		return err
	}
	d.track = newTracker(d.bin, d.socket, d.printEvent)
	tctx, cancel := context.WithCancel(ctx)
	d.stopTrack, d.trackDone = cancel, make(chan struct{})
	go func() {
		defer close(d.trackDone)
		d.track.run(tctx)
	}()
	d.con.println("  waiting for the daemon's first verdicts (isp1 preferred, isp2 backup)…")
	if _, err := d.waitFor(ctx, d.t.ready, func(v view) bool {
		return v.activeOnly("isp1") && v.Health["isp2"] == reactor.Up
	}); err != nil {
		return fmt.Errorf("daemon never reported isp1 up and active and isp2 up: %w", err)
	}
	if out, err := exec.CommandContext(ctx, d.bin, "status", "--socket", d.socket).CombinedOutput(); err == nil {
		d.con.printf("  $ wanreact status --socket %s", d.socket)
		for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
			d.con.println("    " + line)
		}
	} else {
		return fmt.Errorf("wanreact status: %w: %s", err, out)
	}

	f, err := d.lab.StartFlow(lab.RoleClient, flowPPS)
	if err != nil {
		return err
	}
	d.flow = f
	d.con.printf("  client → %s:%d, %d UDP packets/s; one line per %v slot (a full bar is %d packets)",
		lab.SinkAddr, f.SinkPort(), flowPPS, d.o.Slot, flowPPS*int(d.o.Slot/time.Millisecond)/1000)
	rctx, rcancel := context.WithCancel(context.Background())
	d.stopRender, d.renderDone = rcancel, make(chan struct{})
	d.con.setQueueing(true)
	go d.render(rctx)
	return nil
}

// demoConfig is the daemon's config for the lab: static addressing on both
// WANs (the lab leaves them unaddressed), ISP 1 preferred, and the default
// probe settings a user gets (200ms interval, 300ms timeout, 2 targets).
//
// It has no lan: section on purpose. lan: turns balancing on, and balancing
// pins every connection to the WAN it started on until that WAN goes down;
// the demo's single long-running stream would then stay on isp2 after the
// first failover and never show a failback. Without it, forwarded traffic
// follows the active table, and the backup's connections are flushed when
// it leaves the active set, so the stream moves back.
func demoConfig(socket, eventLog string) string {
	var b strings.Builder
	b.WriteString("# one WAN at a time (no lan: section, so no balancing); probe settings are the defaults\n")
	fmt.Fprintf(&b, "control_socket: %s\nevent_log: %s\nwans:\n", socket, eventLog)
	for i := 1; i <= 2; i++ {
		fmt.Fprintf(&b, "  - name: %s\n    interface: %s\n    table: %d\n    priority: %d\n",
			lab.ISPRole(i), lab.WANName(i), 10+i, i)
		fmt.Fprintf(&b, "    addressing: static\n    address: %s\n    gateway: %s\n", lab.RouterWANAddr(i), lab.ISPGateway)
		fmt.Fprintf(&b, "    probe:\n      targets: [%s, %s]\n", lab.Target1, lab.Target2)
	}
	return b.String()
}

func (d *demo) startDaemon() error {
	logf, err := os.Create(d.logPath)
	if err != nil {
		return fmt.Errorf("daemon log: %w", err)
	}
	cmd := d.lab.Command(lab.RoleRouter, d.bin, "run", "-c", d.cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: Ctrl-C in the terminal reaches only the demo,
	// which stops the daemon itself, in order, before removing the lab.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start daemon: %w", err)
	}
	d.daemon = cmd
	d.res.DaemonPID = cmd.Process.Pid
	d.exited = make(chan struct{})
	go func() {
		d.exitErr = cmd.Wait()
		logf.Close()
		close(d.exited)
	}()
	d.con.t0 = time.Now()
	d.con.printf("  $ ip netns exec %s %s run -c %s   (pid %d, log %s)",
		d.lab.NS(lab.RoleRouter), d.o.Bin, d.cfgPath, cmd.Process.Pid, d.logPath)
	return nil
}

// errDaemonExited is returned when the daemon stops by itself mid-demo.
var errDaemonExited = errors.New("the daemon exited unexpectedly")

// daemonGone wraps errDaemonExited with how the daemon ended; call it only
// once d.exited is closed.
func (d *demo) daemonGone() error {
	status := "exit status 0"
	if d.exitErr != nil {
		status = d.exitErr.Error()
	}
	return fmt.Errorf("%w (%s)", errDaemonExited, status)
}

// sleep waits for dur, or until ctx ends or the daemon dies.
func (d *demo) sleep(ctx context.Context, dur time.Duration) error {
	t := time.NewTimer(dur)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-d.exited:
		return d.daemonGone()
	case <-t.C:
		return nil
	}
}

// waitFor is tracker.waitFor that also gives up when the daemon dies.
func (d *demo) waitFor(ctx context.Context, timeout time.Duration, cond func(view) bool) (view, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-d.exited:
			cancel()
		case <-wctx.Done():
		}
	}()
	v, err := d.track.waitFor(wctx, timeout, cond)
	if err != nil && ctx.Err() == nil && wctx.Err() != nil {
		return v, d.daemonGone()
	}
	return v, err
}

// render prints one line per completed slot of the flow.
func (d *demo) render(ctx context.Context) {
	defer close(d.renderDone)
	full := flowPPS * int(d.o.Slot/time.Millisecond) / 1000
	// A slot is complete once its end has passed by more than the time a
	// packet takes to be received and counted (microseconds on veth;
	// the margin absorbs a busy machine).
	const settle = 60 * time.Millisecond
	printed := 0
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		complete := int((time.Since(d.flow.Start()) - settle) / d.o.Slot)
		if complete <= printed {
			continue
		}
		b := d.flow.Buckets(d.o.Slot)
		for ; printed < complete && printed < len(b); printed++ {
			start := d.flow.Start().Add(b[printed].Offset)
			d.con.slot(start, d.con.slotLine(start, b[printed], full))
		}
	}
}

// printEvent shows the daemon's decisions (and what the kernel writers did
// about them) as they stream in.
func (d *demo) printEvent(ev logEvent) {
	c := d.con
	switch {
	case ev.Decision != nil:
		for _, tr := range ev.Decision.Transitions {
			color := sgrYellow
			switch tr.To {
			case reactor.Down:
				color = sgrRed
			case reactor.Up:
				color = sgrGreen
			}
			c.at(ev.Time, c.stamp(ev.Time)+"  ▶ "+c.paint(sgrBold+";"+color, fmt.Sprintf("%s %s → %s", tr.WAN, tr.From, tr.To))+
				" ("+tr.Reason+")")
		}
		if ev.Decision.ActiveChanged {
			c.at(ev.Time, c.stamp(ev.Time)+"  ▶ "+c.paint(sgrBold, "active set: "+activeString(ev.Decision.Active)))
		}
	case ev.Source == "action" && ev.Type == "conntrack":
		c.at(ev.Time, c.stamp(ev.Time)+"    "+c.paint(sgrDim, fmt.Sprintf("conntrack: %d entries of %s deleted", ev.Deleted, ev.WAN)))
	}
}

func (d *demo) banner(at time.Time, title, how string) {
	c := d.con
	c.at(at, "\n"+c.stamp(at)+"  "+c.paint(sgrBold, "── "+title+" ──")+" "+c.paint(sgrDim, how))
}

// script runs the phases of the demo in order.
func (d *demo) script(ctx context.Context) error {
	isp1 := d.lab.NS(lab.ISPRole(1))
	steps := []func(context.Context) error{
		func(ctx context.Context) error {
			return d.steady(ctx)
		},
		func(ctx context.Context) error {
			return d.failover(ctx, "carrier cut on isp1", carrierBudget,
				"ip netns exec "+isp1+" ip link set cust0 down  (wan0 loses carrier, like a pulled cable)",
				func() error { return d.lab.CarrierDown(1) })
		},
		func(ctx context.Context) error {
			return d.failback(ctx, "carrier back on isp1", "ip netns exec "+isp1+" ip link set cust0 up",
				func() error { return d.lab.CarrierUp(1) })
		},
		func(ctx context.Context) error {
			return d.failover(ctx, "silent blackhole on isp1", blackholeBudget,
				"ip netns exec "+isp1+" iptables -A FORWARD -j DROP  (link stays up: only probes can tell)",
				func() error { return d.lab.Blackhole(1) })
		},
		func(ctx context.Context) error {
			return d.failback(ctx, "isp1 restored", "iptables rule removed", func() error { return d.lab.Restore(1) })
		},
		func(ctx context.Context) error { return d.lossPhase(ctx, isp1) },
		func(ctx context.Context) error { return d.recoverPhase(ctx) },
	}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (d *demo) steady(ctx context.Context) error {
	at := time.Now()
	d.banner(at, "steady", "(isp1 preferred: priority 1)")
	if err := d.sleep(ctx, d.t.steady); err != nil {
		return err
	}
	r := d.flow.Snapshot()
	p := phaseResult{Name: "steady", At: at, Expect: "isp1 carries the flow"}
	p.Via, p.ViaShare = carrierOf(r, time.Now().Add(-viaWindow), time.Now())
	sent, recv := r.SentBetween(at, time.Now())
	p.Delivery = ratio(recv, sent)
	p.Met = p.Via == 1
	d.finish(p)
	return nil
}

// failover injects a fault on isp1 and measures the outage the flow sees.
func (d *demo) failover(ctx context.Context, name string, budget time.Duration, how string, fault func() error) error {
	at := time.Now()
	d.banner(at, name, how)
	if err := fault(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := d.sleep(ctx, d.t.afterFault); err != nil {
		return err
	}
	end := time.Now()
	r := d.flow.Snapshot()
	p := phaseResult{Name: name, At: at, Budget: budget, HasOutage: true,
		Expect: fmt.Sprintf("outage ≤ %.1f s, then isp2", budget.Seconds())}
	p.Gap = r.Outage(at)
	p.Outage = p.Gap.Duration()
	p.Via, p.ViaShare = carrierOf(r, end.Add(-viaWindow), end)
	p.Decision, p.DecisionAfter, p.Changes = d.isp1Transitions(at, end, "")
	sent, recv := r.SentBetween(at, end)
	p.Delivery = ratio(recv, sent)
	p.Met = p.Outage <= budget && p.Via == 2
	d.finish(p)
	return nil
}

// failback repairs isp1 and waits until the daemon has proven it and moved
// traffic back.
func (d *demo) failback(ctx context.Context, name, how string, repair func() error) error {
	at := time.Now()
	d.banner(at, name, how)
	if err := repair(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	_, werr := d.waitFor(ctx, d.t.failback, func(v view) bool { return v.activeOnly("isp1") })
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(werr, errDaemonExited) {
		return werr
	}
	if err := d.sleep(ctx, d.t.hold); err != nil {
		return err
	}
	end := time.Now()
	r := d.flow.Snapshot()
	p := phaseResult{Name: name, At: at, HasOutage: true, Expect: "isp1 proven, carries the flow again"}
	p.Gap = r.Outage(at)
	p.Outage = p.Gap.Duration()
	p.Via, p.ViaShare = carrierOf(r, end.Add(-viaWindow), end)
	p.Decision, p.DecisionAfter, p.Changes = d.isp1Transitions(at, end, reactor.Up)
	sent, recv := r.SentBetween(at, end)
	p.Delivery = ratio(recv, sent)
	p.Met = werr == nil && p.Via == 1
	if werr != nil {
		p.Note = "isp1 not back: " + werr.Error()
	}
	d.finish(p)
	return nil
}

// lossPhase puts 30% random loss on isp1: the daemon should judge it
// degraded (once its loss window fills) without flapping.
func (d *demo) lossPhase(ctx context.Context, isp1 string) error {
	at := time.Now()
	d.banner(at, fmt.Sprintf("%.0f%% loss on isp1", lossRate*100),
		fmt.Sprintf("ip netns exec %s iptables -A FORWARD -i cust0 -m statistic --probability %.1f -j DROP", isp1, lossRate))
	if err := d.lab.Loss(1, lossRate); err != nil {
		return fmt.Errorf("loss: %w", err)
	}
	if err := d.sleep(ctx, d.t.loss); err != nil {
		return err
	}
	end := time.Now()
	r := d.flow.Snapshot()
	p := phaseResult{Name: fmt.Sprintf("%.0f%% loss on isp1", lossRate*100), At: at,
		Expect: "≤ 2 state changes (no flapping)"}
	p.Via, p.ViaShare = carrierOf(r, end.Add(-viaWindow), end)
	p.Decision, p.DecisionAfter, p.Changes = d.isp1Transitions(at, end, "")
	sent, recv := r.SentBetween(at, end)
	p.Delivery = ratio(recv, sent)
	p.Met = p.Changes <= 2
	v, _, _ := d.track.snapshot()
	switch {
	case v.Health["isp1"] == reactor.Degraded && p.Via == 2:
		p.Note = "isp1 degraded: new traffic moved to isp2, isp1 kept as backup"
	case v.Health["isp1"] == reactor.Degraded:
		p.Note = "isp1 degraded"
	default:
		p.Note = fmt.Sprintf("isp1 %s: loss becomes a verdict only once ≥20%% of the pooled 100-probe window is lost", v.Health["isp1"])
	}
	d.finish(p)
	return nil
}

// recoverPhase removes the loss and waits (bounded) for isp1 to recover:
// its window must fall below 8% loss first, which takes a while by design.
func (d *demo) recoverPhase(ctx context.Context) error {
	at := time.Now()
	d.banner(at, "loss removed", "(degraded → up needs the loss window below 8%)")
	if err := d.lab.Restore(1); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	_, werr := d.waitFor(ctx, d.t.recover, func(v view) bool { return v.activeOnly("isp1") })
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(werr, errDaemonExited) {
		return werr
	}
	if werr == nil {
		if err := d.sleep(ctx, d.t.hold); err != nil {
			return err
		}
	}
	end := time.Now()
	r := d.flow.Snapshot()
	p := phaseResult{Name: "loss removed", At: at, HasOutage: true, Expect: "isp1 recovers"}
	p.Gap = r.Outage(at)
	p.Outage = p.Gap.Duration()
	p.Via, p.ViaShare = carrierOf(r, end.Add(-viaWindow), end)
	p.Decision, p.DecisionAfter, p.Changes = d.isp1Transitions(at, end, reactor.Up)
	sent, recv := r.SentBetween(at, end)
	p.Delivery = ratio(recv, sent)
	p.Met = werr == nil
	if werr != nil {
		if d.o.Fast {
			// -fast does not wait the ~10 s a clean window takes.
			p.Met = true
			p.Expect = "(-fast: not waited for)"
		}
		v, _, _ := d.track.snapshot()
		p.Note = fmt.Sprintf("isp1 still %s after %v", v.Health["isp1"], d.t.recover)
	}
	d.finish(p)
	return nil
}

// finish prints a phase's measurement and records it.
func (d *demo) finish(p phaseResult) {
	c := d.con
	var parts []string
	if p.HasOutage {
		s := fmt.Sprintf("outage %.2f s", p.Outage.Seconds())
		if p.Budget > 0 {
			s += fmt.Sprintf(" (budget %.2f s)", p.Budget.Seconds())
		}
		parts = append(parts, s)
	}
	if p.Decision != "" {
		parts = append(parts, fmt.Sprintf("decided after %.2f s: %s", p.DecisionAfter.Seconds(), p.Decision))
	}
	parts = append(parts, fmt.Sprintf("then via %s", viaString(p.Via, p.ViaShare)))
	if p.Changes > 0 && !p.HasOutage {
		parts = append(parts, fmt.Sprintf("%d state changes of isp1", p.Changes))
	}
	if !p.HasOutage {
		parts = append(parts, fmt.Sprintf("%.0f%% of packets delivered", p.Delivery*100))
	}
	mark := c.paint(sgrGreen, "✓")
	if !p.Met {
		mark = c.paint(sgrRed, "✗ expected "+p.Expect)
	}
	line := c.stamp(time.Now()) + "  ⇒ " + c.paint(sgrBold, strings.Join(parts, "; ")) + " " + mark
	if p.Note != "" {
		line += "\n            " + p.Note
	}
	c.at(time.Now(), line)
	d.res.Phases = append(d.res.Phases, p)
}

// isp1Transitions describes isp1's first health transition in [from, to)
// (the first to health `want`, if given), how long after `from` it came,
// and how many transitions there were.
func (d *demo) isp1Transitions(from, to time.Time, want reactor.Health) (first string, after time.Duration, n int) {
	for _, ev := range d.track.eventsBetween(from, to) {
		if ev.Decision == nil {
			continue
		}
		for _, tr := range ev.Decision.Transitions {
			if tr.WAN != "isp1" {
				continue
			}
			if first == "" && (want == "" || tr.To == want) {
				first = fmt.Sprintf("isp1 %s → %s (%s)", tr.From, tr.To, tr.Reason)
				after = ev.Time.Sub(from)
			}
			n++
		}
	}
	return first, after, n
}

// carrierOf returns the ISP that carried most of the flow in [from, to) and
// its share; ISP 0 when nothing arrived.
func carrierOf(r lab.FlowReport, from, to time.Time) (int, float64) {
	c := r.ByISP(from, to)
	best, total := 0, 0
	for i, n := range c {
		total += n
		if i > 0 && n > 0 && (best == 0 || n > c[best]) {
			best = i
		}
	}
	if best == 0 {
		return 0, 0
	}
	return best, float64(c[best]) / float64(total)
}

func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func viaString(isp int, share float64) string {
	if isp == 0 {
		return "nothing (no packets)"
	}
	return fmt.Sprintf("%s (%.0f%%)", lab.ISPRole(isp), share*100)
}

// printSummary prints the table of all phases.
func (d *demo) printSummary() {
	c := d.con
	c.println("")
	c.println(c.paint(sgrBold, "Summary") + fmt.Sprintf(" (flow: client → inet, %d packets/s; outage = longest silence from just before the fault)", flowPPS))
	tw := tabwriter.NewWriter(c.w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PHASE\tOUTAGE\tBUDGET\tFIRST DECISION ON isp1\tAFTER\tTHEN VIA\tDELIVERED\tOK")
	for _, p := range d.res.Phases {
		out, budget, after, decision := "-", "-", "-", "-"
		if p.HasOutage {
			out = fmt.Sprintf("%.2f s", p.Outage.Seconds())
		}
		if p.Budget > 0 {
			budget = fmt.Sprintf("%.2f s", p.Budget.Seconds())
		}
		if p.Decision != "" {
			decision, after = p.Decision, fmt.Sprintf("%.2f s", p.DecisionAfter.Seconds())
		}
		ok := "yes"
		if !p.Met {
			ok = "NO: expected " + p.Expect
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.1f%%\t%s\n", p.Name, out, budget, decision, after,
			viaString(p.Via, p.ViaShare), p.Delivery*100, ok)
	}
	c.mu.Lock()
	tw.Flush()
	c.mu.Unlock()
	if d.res.OK() {
		c.println(c.paint(sgrGreen+";"+sgrBold, "all promises kept"))
	} else {
		c.println(c.paint(sgrRed+";"+sgrBold, "some promises NOT kept (see OK column)"))
	}
}

func (d *demo) printKeepHelp() {
	c := d.con
	rtr, isp1 := d.lab.NS(lab.RoleRouter), d.lab.NS(lab.ISPRole(1))
	c.println("")
	c.println(c.paint(sgrBold, "-keep: the lab and the daemon keep running.") + " Try:")
	for _, l := range []string{
		fmt.Sprintf("%s status --socket %s", d.o.Bin, d.socket),
		fmt.Sprintf("%s events -f --socket %s", d.o.Bin, d.socket),
		fmt.Sprintf("ip netns exec %s ip rule", rtr),
		fmt.Sprintf("ip netns exec %s ip route show table 200", rtr),
		fmt.Sprintf("ip netns exec %s ip route get %s from %s iif %s   # which WAN the client's traffic takes", rtr, lab.SinkAddr, lab.ClientAddr, lab.RouterLANIf),
		fmt.Sprintf("ip netns exec %s ip link set cust0 down     # pull isp1's cable (up: back)", isp1),
	} {
		c.println("  " + l)
	}
	var names []string
	for _, r := range d.lab.Roles() {
		names = append(names, d.lab.NS(r))
	}
	c.println("When done:")
	c.printf("  kill %d; for n in %s; do ip netns del $n; done; rm -rf %s %s",
		d.res.DaemonPID, strings.Join(names, " "), d.dir, filepath.Join(lab.PidDir, d.lab.Prefix()+".pid"))
	c.println("  (a later lab test's lab.Sweep also removes it, since this demo's process is gone)")
}

// stopWatching ends the live display and the event stream.
func (d *demo) stopWatching() {
	if d.stopRender != nil {
		d.stopRender()
		<-d.renderDone
		d.stopRender = nil
		d.con.setQueueing(false)
	}
	if d.flow != nil {
		d.flow.Stop()
	}
	if d.stopTrack != nil {
		d.stopTrack()
		<-d.trackDone
		d.stopTrack = nil
	}
}

// tail returns the last lines of the daemon's log.
func (d *demo) tail() string {
	b, err := os.ReadFile(d.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// close stops everything the demo started, in dependency order: watchers,
// flow, daemon (SIGTERM, then SIGKILL), lab, temp dir. With keep, the
// daemon, lab and temp dir stay.
func (d *demo) close(keep bool) error {
	d.stopWatching()
	if keep {
		return nil
	}
	var errs []error
	if d.daemon != nil {
		d.logTail = d.tail()
		_ = d.daemon.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(5 * time.Second):
			_ = d.daemon.Process.Kill()
			<-d.exited
		}
	}
	if d.lab != nil {
		if err := d.lab.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if d.dir != "" {
		if err := os.RemoveAll(d.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
