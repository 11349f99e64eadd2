// Package benchlib measures wanreact in the netns lab: failover outages seen
// by a LAN client's flow, stability under random loss, the daemon's CPU and
// memory cost, behaviour under a netlink storm, and the Go micro-benchmarks.
// It runs the real daemon binary, so what it reports is what users get with
// the default probe settings.
//
// Run produces a Report; Report.Markdown, Report.JSON and Report.SVG render
// it. `make bench` (../main.go) writes those to docs/, and a smoke version
// runs in `make test` (../bench_test.go) so that the bench cannot rot.
package benchlib

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/wanreact/wanreact/internal/lab"
)

// Options selects what Run measures and how long it takes.
type Options struct {
	// Bin is the wanreact binary to measure (required).
	Bin string
	// Mode names the run in the report: "full" or "smoke".
	Mode string
	// Trials per failover kind.
	Trials int
	// StabilityLevels are the random loss rates (0..1) put on ISP 1, each
	// for StabilityDuration.
	StabilityLevels   []float64
	StabilityDuration time.Duration
	// CostWANs are the WAN counts whose idle cost is measured, each over
	// CostWindow with CostTargets probe targets per WAN (1..4).
	CostWANs    []int
	CostTargets int
	CostWindow  time.Duration
	// StartupRuns is how many daemon starts are timed.
	StartupRuns int
	// StormRoutes routes are added then deleted in an unwatched table;
	// StormRcvBuf is the netlink receive buffer of the in-process source
	// that must survive the storm by resyncing.
	StormRoutes int
	StormRcvBuf int
	// MicroPackages are the packages whose Benchmark functions run, with
	// -benchtime MicroBenchtime, from ModuleDir (the repository root).
	MicroPackages  []string
	MicroBenchtime string
	ModuleDir      string
	// Sections limits the run to some of: failover, stability, cost,
	// storm, micro (empty: all).
	Sections []string
	// WorkDir holds configs and event logs; empty: a temporary directory
	// removed afterwards.
	WorkDir string
	// Logf reports progress; nil: silent.
	Logf func(format string, args ...any)
}

// DefaultMicroPackages are the reducer and the decoders.
var DefaultMicroPackages = []string{"./reactor", "./sources/netlinksrc", "./sources/prober", "./sources/dhcp", "./sources/wifi"}

// FullOptions is what `make bench` runs: about 20 minutes on 2 cores.
func FullOptions(bin string) Options {
	return Options{
		Bin: bin, Mode: "full", Trials: 20,
		StabilityLevels: []float64{0.1, 0.3, 0.5}, StabilityDuration: 120 * time.Second,
		CostWANs: []int{2, 8, 32}, CostTargets: 4, CostWindow: 30 * time.Second,
		StartupRuns: 5,
		StormRoutes: 10000, StormRcvBuf: 4096,
		MicroPackages: DefaultMicroPackages, MicroBenchtime: "1s",
	}
}

// SmokeOptions is the short version for `make test`: every section runs,
// with few trials and short windows, in a few minutes.
func SmokeOptions(bin string) Options {
	return Options{
		Bin: bin, Mode: "smoke", Trials: 2,
		StabilityLevels: []float64{0.3}, StabilityDuration: 20 * time.Second,
		CostWANs: []int{2}, CostTargets: 4, CostWindow: 8 * time.Second,
		StartupRuns: 2,
		StormRoutes: 3000, StormRcvBuf: 4096,
		MicroPackages: DefaultMicroPackages, MicroBenchtime: "1x",
	}
}

func (o Options) want(section string) bool {
	if len(o.Sections) == 0 {
		return true
	}
	for _, s := range o.Sections {
		if s == section {
			return true
		}
	}
	return false
}

// Sections are the parts of a run, in order.
var Sections = []string{"failover", "stability", "cost", "storm", "micro"}

// bench is one Run in progress.
type bench struct {
	opts Options
	rep  *Report
	work string
	// ports feeds every connection stream of the run, so source ports
	// are not reused within conntrack's memory (see portCycler).
	ports portCycler
}

func (b *bench) logf(format string, args ...any) {
	if b.opts.Logf != nil {
		b.opts.Logf(format, args...)
	}
}

// Run measures everything opts selects. Sections fail independently: a
// failure is recorded in Report.Errors and the others still run, so that a
// report always says what was and was not measured. The error is for
// problems that prevent any measurement (not root, no binary).
func Run(ctx context.Context, opts Options) (*Report, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("bench: needs root (network namespaces)")
	}
	if opts.Bin == "" {
		return nil, errors.New("bench: Options.Bin not set")
	}
	bin, err := filepath.Abs(opts.Bin)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(bin); err != nil || st.IsDir() {
		return nil, fmt.Errorf("bench: binary %s: not a file (run `make build`)", opts.Bin)
	}
	opts.Bin = bin
	for _, s := range opts.Sections {
		if !contains(Sections, s) {
			return nil, fmt.Errorf("bench: unknown section %q (want %s)", s, strings.Join(Sections, ", "))
		}
	}
	if opts.Trials < 1 {
		opts.Trials = 1
	}
	if opts.CostTargets < 1 || opts.CostTargets > 4 {
		opts.CostTargets = 4
	}
	work := opts.WorkDir
	if work == "" {
		if work, err = os.MkdirTemp("", "wanreact-bench"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(work)
	}
	b := &bench{opts: opts, work: work, rep: &Report{Mode: opts.Mode, Started: time.Now().UTC(), Host: hostInfo()}}
	if _, err := lab.Sweep(); err != nil {
		// Leftovers of dead runs only cost memory; not a reason to stop.
		b.logf("lab sweep: %v", err)
	}
	b.rep.Version = binVersion(bin)
	start := time.Now()
	b.runSections(ctx)
	b.rep.Seconds = time.Since(start).Seconds()
	b.rep.Targets = b.rep.checkTargets()
	return b.rep, nil
}

func (b *bench) runSections(ctx context.Context) {
	sec := func(name string, f func(context.Context) error) {
		if !b.opts.want(name) || ctx.Err() != nil {
			return
		}
		t0 := time.Now()
		b.logf("== %s", name)
		if err := f(ctx); err != nil {
			b.rep.Errors = append(b.rep.Errors, fmt.Sprintf("%s: %v", name, err))
			b.logf("%s FAILED: %v", name, err)
		}
		b.logf("== %s done in %v", name, time.Since(t0).Round(time.Second))
	}
	// One 2-ISP lab serves every section that needs only two WANs; the
	// cost section builds its own labs for larger counts.
	needMain := b.opts.want("failover") || b.opts.want("stability") || b.opts.want("storm") || b.opts.want("cost")
	var m *mainLab
	if needMain {
		var err error
		if m, err = b.newMainLab(); err != nil {
			b.rep.Errors = append(b.rep.Errors, "lab: "+err.Error())
		} else {
			defer m.close()
		}
	}
	if m != nil {
		sec("failover", func(ctx context.Context) error { return b.failover(ctx, m) })
		sec("stability", func(ctx context.Context) error { return b.stability(ctx, m) })
		sec("cost", func(ctx context.Context) error { return b.cost(ctx, m) })
		sec("storm", func(ctx context.Context) error { return b.storm(ctx, m) })
		if err := m.env.stop(); err != nil {
			b.rep.Errors = append(b.rep.Errors, "daemon: "+err.Error())
		}
		rr, err := replayLogs(m.env.eventLogs())
		if err != nil {
			b.rep.Errors = append(b.rep.Errors, "replay: "+err.Error())
		}
		b.rep.Reducer = rr
	}
	sec("micro", b.micro)
}

// mainLab is the 2-ISP lab with its daemon.
type mainLab struct {
	lab *lab.Lab
	env *daemonEnv
}

func (m *mainLab) close() {
	_ = m.env.stop()
	_ = m.lab.Close()
}

func (b *bench) newMainLab() (*mainLab, error) {
	l, err := lab.New(lab.Options{ISPs: 2, RouterNAT: true})
	if err != nil {
		return nil, err
	}
	if err := addExtraTargets(l); err != nil {
		l.Close()
		return nil, err
	}
	env, err := newDaemonEnv(l, b.opts.Bin, filepath.Join(b.work, "main"), probeTargets(2), b.logf)
	if err != nil {
		l.Close()
		return nil, err
	}
	b.logf("lab %s: 2 ISPs", l.Prefix())
	return &mainLab{lab: l, env: env}, nil
}

// ensureRunning starts the main daemon (2 targets per WAN, the spec's
// example) if it is not running and waits for the steady state.
func (m *mainLab) ensureRunning(ctx context.Context) error {
	if err := m.env.crashed(); err != nil {
		// Measured on a daemon that died is not measured: say so,
		// even though the next call starts a fresh one.
		return err
	}
	if !m.env.running() {
		if _, err := m.env.start(probeTargets(2)); err != nil {
			return err
		}
		if err := m.env.checkPid(); err != nil {
			return err
		}
	}
	return m.env.waitStatus(ctx, "isp1 up and active, isp2 up", 30*time.Second, preferredActive)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Host describes the machine a report was measured on.
type Host struct {
	Kernel string `json:"kernel"`
	CPUs   int    `json:"cpus"`
	CPU    string `json:"cpu"`
	Go     string `json:"go"`
}

func hostInfo() Host {
	h := Host{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				h.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return h
}

func binVersion(bin string) string {
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "wanreact "))
}

// sleepCtx sleeps for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
