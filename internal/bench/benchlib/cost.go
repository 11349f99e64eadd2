package benchlib

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/wanreact/wanreact/config"
	"github.com/wanreact/wanreact/internal/lab"
	"github.com/wanreact/wanreact/reactor"
)

// costSettle lets the start-up work (dumps, first routing pass, the burst
// of first probes) finish before the idle window opens.
const costSettle = 3 * time.Second

// cost measures the daemon idle (every WAN up, probing at the default rate)
// with each WAN count, then times start-ups in the 2-ISP lab.
func (b *bench) cost(ctx context.Context, m *mainLab) error {
	var errs []error
	for _, n := range b.opts.CostWANs {
		r, err := b.costOf(ctx, m, n, "")
		if err != nil {
			errs = append(errs, fmt.Errorf("%d WANs: %w", n, err))
			continue
		}
		b.logCost(r)
		b.rep.Cost = append(b.rep.Cost, r)
	}
	// The same 2 WANs probing once every 10 s: what the daemon costs
	// besides probing (carrier polling, periodic reconciliation, runtime),
	// which tells a probing cost from a fixed one.
	if contains2(b.opts.CostWANs) {
		r, err := b.costOf(ctx, m, 2, baselineInterval)
		if err != nil {
			errs = append(errs, fmt.Errorf("baseline: %w", err))
		} else {
			b.logCost(r)
			b.rep.Cost = append(b.rep.Cost, r)
		}
	}
	if err := b.startup(ctx, m); err != nil {
		errs = append(errs, fmt.Errorf("startup: %w", err))
	}
	return errors.Join(errs...)
}

// baselineInterval probes so rarely that probing costs next to nothing.
const baselineInterval = "10s"

func contains2(ns []int) bool {
	for _, n := range ns {
		if n == 2 {
			return true
		}
	}
	return false
}

func (b *bench) logCost(r CostResult) {
	b.logf("%d WANs × %d targets, %.1f probes/s: %.2f%% of a core, RSS %.1f MB (peak %.1f MB), all up after %.1fs",
		r.WANs, r.TargetsPerWAN, r.ProbesPerSec, r.CPUPercent, r.RSSMB, r.PeakRSSMB, r.UpAfterSeconds)
}

// costOf measures n WANs idle; interval overrides the probe interval
// ("" = the default).
func (b *bench) costOf(ctx context.Context, m *mainLab, n int, interval string) (CostResult, error) {
	env := m.env
	if n != m.lab.ISPs() {
		l, err := lab.New(lab.Options{ISPs: n, RouterNAT: true})
		if err != nil {
			return CostResult{}, err
		}
		defer l.Close()
		if err := addExtraTargets(l); err != nil {
			return CostResult{}, err
		}
		env, err = newDaemonEnv(l, b.opts.Bin, filepath.Join(b.work, fmt.Sprintf("cost-%d", n)), probeTargets(b.opts.CostTargets), b.logf)
		if err != nil {
			return CostResult{}, err
		}
		b.logf("lab %s: %d ISPs", l.Prefix(), n)
	}
	defer env.stop()
	if err := env.stop(); err != nil {
		return CostResult{}, err
	}
	env.interval = interval
	defer func() { env.interval = "" }()
	t0, err := env.start(probeTargets(b.opts.CostTargets))
	if err != nil {
		return CostResult{}, err
	}
	if err := env.checkPid(); err != nil {
		return CostResult{}, err
	}
	if err := env.waitStatus(ctx, fmt.Sprintf("all %d WANs up", n), 60*time.Second+time.Duration(n)*time.Second, preferredActive); err != nil {
		return CostResult{}, err
	}
	r := CostResult{WANs: n, TargetsPerWAN: b.opts.CostTargets, UpAfterSeconds: time.Since(t0).Seconds(), ProbeInterval: interval}
	if err := sleepCtx(ctx, costSettle); err != nil {
		return r, err
	}
	pid := env.pid()
	w, err := startCPUWindow(pid)
	if err != nil {
		return r, err
	}
	if err := sleepCtx(ctx, b.opts.CostWindow); err != nil {
		return r, err
	}
	cpu, wall, err := w.end()
	if err != nil {
		return r, err
	}
	mem, err := memoryOf(pid)
	if err != nil {
		return r, err
	}
	// Still the steady state? Otherwise the window measured something else.
	st, err := env.status()
	if err != nil {
		return r, err
	}
	if !preferredActive(st) {
		return r, fmt.Errorf("state changed during the idle window: %s", summarize(st))
	}
	every, err := probeInterval(env.cfgPath)
	if err != nil {
		return r, err
	}
	r.ProbesPerSec = float64(n*b.opts.CostTargets) * float64(time.Second) / float64(every)
	r.WindowSeconds = wall.Seconds()
	r.CPUSeconds = cpu.Seconds()
	r.CPUPercent = 100 * cpu.Seconds() / wall.Seconds()
	r.RSSMB = float64(mem.RSS) / 1e6
	r.PeakRSSMB = float64(mem.HWM) / 1e6
	return r, nil
}

// startup times daemon starts: process start to the first decision, and
// to ISP 1 proven up by probes. Each start finds the routing the previous
// run left, as a restart on a real router does.
func (b *bench) startup(ctx context.Context, m *mainLab) error {
	var first, up []float64
	for i := 0; i < b.opts.StartupRuns; i++ {
		if err := m.env.stop(); err != nil {
			return err
		}
		t0, err := m.env.start(probeTargets(2))
		if err != nil {
			return err
		}
		d, ok, err := m.env.waitDecision(ctx, t0, 10*time.Second, func(decision) bool { return true })
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("no decision within 10s of starting")
		}
		first = append(first, ms(d.Time.Sub(t0)))
		d, ok, err = m.env.waitDecision(ctx, t0, 10*time.Second, func(d decision) bool {
			for _, t := range d.Transitions {
				if t.WAN == "isp1" && t.To == reactor.Up {
					return true
				}
			}
			return false
		})
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("isp1 not up within 10s of starting")
		}
		up = append(up, ms(d.Time.Sub(t0)))
		b.logf("start %d: first decision after %.0f ms, isp1 up after %.0f ms", i+1, first[i], up[i])
	}
	b.rep.Startup = &StartupResult{Runs: len(first), FirstDecision: floatStats(first), ISP1Up: floatStats(up)}
	return nil
}

// probeInterval is the probe interval of the first WAN as the daemon's own
// parser resolves the config.
func probeInterval(path string) (time.Duration, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return 0, fmt.Errorf("reading back the daemon config: %w", err)
	}
	if len(cfg.WANs) == 0 || cfg.WANs[0].Probe.Interval <= 0 {
		return 0, errors.New("daemon config has no probe interval")
	}
	return cfg.WANs[0].Probe.Interval, nil
}
