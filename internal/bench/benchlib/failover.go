package benchlib

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/wanreact/wanreact/config"
	"github.com/wanreact/wanreact/internal/lab"
)

// flowPPS is the test flow's rate: one datagram every 5 ms, which is the
// resolution of every outage below.
const flowPPS = 200

// latencyJump is the delay the latency fault adds to ISP 1's path.
const latencyJump = time.Second

// faultKind is one way ISP 1 breaks. inject returns how to undo it.
type faultKind struct {
	name, desc string
	inject     func(l *lab.Lab) (restore func() error, err error)
}

var faultKinds = []faultKind{
	{"carrier", "carrier loss (ISP side of the cable down)", func(l *lab.Lab) (func() error, error) {
		return func() error { return l.CarrierUp(1) }, l.CarrierDown(1)
	}},
	{"blackhole", "silent blackhole (ISP drops all forwarded traffic, link stays up)", func(l *lab.Lab) (func() error, error) {
		return func() error { return l.Restore(1) }, l.Blackhole(1)
	}},
	{"oneway", "100 % loss in one direction only (internet → router: every reply lost)", func(l *lab.Lab) (func() error, error) {
		return func() error { return l.Restore(1) }, l.OneWayLoss(1, lab.Downstream, 1)
	}},
	{"latency", "latency jump to +1 s (NFQUEUE delayer on the ISP's upstream)", func(l *lab.Lab) (func() error, error) {
		d, err := l.Delay(1, lab.Upstream, latencyJump)
		if err != nil {
			return nil, err
		}
		return d.Stop, nil
	}},
}

// trial is one failover and failback, with what is needed to draw it.
type trial struct {
	sample     TrialSample
	flow       lab.FlowReport
	faultAt    time.Time
	decisionAt time.Time
	restoreAt  time.Time
}

func (b *bench) failover(ctx context.Context, m *mainLab) error {
	if err := m.ensureRunning(ctx); err != nil {
		return err
	}
	if err := b.recordProbeSettings(m.env.cfgPath); err != nil {
		return err
	}
	var errs []error
	for _, k := range faultKinds {
		var trials []trial
		for i := 0; i < b.opts.Trials; i++ {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			tr, err := b.failoverTrial(ctx, m, k)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s trial %d: %w", k.name, i+1, err))
				if len(tr.flow.SendTimes) == 0 {
					// Nothing measured (setup failed): the next
					// trial would fail the same way.
					break
				}
				// A failover that did not happen is a result: it
				// counts (as not recovered, its outage a lower
				// bound). The next trial starts only if the steady
				// state comes back.
			}
			s := tr.sample
			b.logf("%s %d/%d: outage %.0f ms (%d bad), detect %.0f ms; failback: back on isp1 after %.0f ms, outage %.0f ms",
				k.name, i+1, b.opts.Trials, s.OutageMs, s.LostPackets, s.DetectMs, s.ReturnMs, s.FailbackMs)
			trials = append(trials, tr)
		}
		if len(trials) == 0 {
			continue
		}
		b.rep.Failover = append(b.rep.Failover, summarizeFailover(k, trials))
		b.rep.Failback = append(b.rep.Failback, summarizeFailback(k, trials))
		if k.name == "carrier" || k.name == "blackhole" {
			b.rep.Pictures = append(b.rep.Pictures, panelOf(k, trials))
		}
	}
	return errors.Join(errs...)
}

// failoverTrial: steady state, a flow from the LAN client, the fault, the
// decision, removal of the fault, the return to ISP 1.
func (b *bench) failoverTrial(ctx context.Context, m *mainLab, k faultKind) (trial, error) {
	if err := m.ensureRunning(ctx); err != nil {
		return trial{}, err
	}
	f, err := m.lab.StartFlow(lab.RoleClient, flowPPS)
	if err != nil {
		return trial{}, err
	}
	defer f.Stop()
	if err := sleepCtx(ctx, 1200*time.Millisecond); err != nil {
		return trial{}, err
	}

	before := time.Now()
	restore, err := k.inject(m.lab)
	faultAt := time.Now()
	if err != nil {
		// Whatever half-happened, Restore undoes the lab's own faults.
		_ = m.lab.Restore(1)
		return trial{}, fmt.Errorf("injecting: %w", err)
	}
	dec, detected, err := m.env.waitDecision(ctx, before, 8*time.Second, func(d decision) bool {
		return d.ActiveChanged && !d.activeHas("isp1")
	})
	if err != nil {
		_ = restore()
		return trial{}, err
	}
	// Watch the flow settle on ISP 2 for a while.
	if err := sleepCtx(ctx, time.Second); err != nil {
		_ = restore()
		return trial{}, err
	}

	// New connections, one datagram each, show when the daemon sends new
	// traffic back to isp1; the long-lived flow may stay where it is
	// (the balancer pins established connections to their WAN).
	cs, err := startConnStream(m.lab, flowPPS, &b.ports)
	if err != nil {
		_ = restore()
		return trial{}, err
	}
	defer cs.Stop()
	if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
		_ = restore()
		return trial{}, err
	}

	restoreBefore := time.Now()
	rerr := restore()
	restoreAt := time.Now()
	if rerr != nil {
		_ = m.lab.Restore(1)
		return trial{}, fmt.Errorf("removing the fault: %w", rerr)
	}
	back, returned, err := m.env.waitDecision(ctx, restoreBefore, 20*time.Second, func(d decision) bool {
		return d.ActiveChanged && d.activeHas("isp1")
	})
	if err != nil {
		return trial{}, err
	}
	if err := sleepCtx(ctx, time.Second); err != nil {
		return trial{}, err
	}
	conns, cerr := cs.Stop()
	r := f.Stop()
	if cerr != nil {
		return trial{}, fmt.Errorf("connection stream: %w", cerr)
	}
	if conns.Received == 0 {
		return trial{}, fmt.Errorf("connection stream: nothing received (%d sent, %d errors, last %q)",
			conns.Sent, conns.SendErrors, conns.LastSendError)
	}

	fs := fates(r)
	out := faultOutage(fs, 1, before, restoreBefore)
	fb := plainOutage(fs, restoreBefore, r.End.Add(-200*time.Millisecond))
	tr := trial{flow: r, faultAt: faultAt, restoreAt: restoreAt}
	s := TrialSample{
		OutageMs:    ms(out.duration()),
		LostPackets: out.Packets,
		Recovered:   out.Recovered,
		Detected:    detected,
		FaultCallMs: ms(faultAt.Sub(before)),
		FailbackMs:  ms(fb.duration()),
		Returned:    returned,
	}
	if detected {
		tr.decisionAt = dec.Time
		s.DetectMs = ms(max(dec.Time.Sub(faultAt), 0))
	}
	if returned {
		s.BackDetectMs = ms(max(back.Time.Sub(restoreAt), 0))
	}
	if t, ok := firstVia(fates(conns), restoreBefore, 1); ok {
		s.ReturnMs = ms(max(t.Sub(restoreAt), 0))
	} else {
		s.Returned = false
	}
	_, s.FlowMovedBack = firstVia(fs, restoreBefore, 1)
	tr.sample = s
	if !detected {
		return tr, fmt.Errorf("no decision moved traffic off isp1 within 8s (outage %.0f ms)", s.OutageMs)
	}
	if !returned {
		return tr, errors.New("isp1 not back in the active set 20s after the fault was removed")
	}
	return tr, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func summarizeFailover(k faultKind, trials []trial) FailoverResult {
	res := FailoverResult{Kind: k.name, Description: k.desc, Trials: len(trials)}
	var out, det []float64
	for _, t := range trials {
		res.Samples = append(res.Samples, t.sample)
		out = append(out, t.sample.OutageMs)
		if t.sample.Detected {
			det = append(det, t.sample.DetectMs)
		}
		if !t.sample.Recovered {
			res.Unrecovered++
		}
	}
	res.Outage, res.Detect = floatStats(out), floatStats(det)
	return res
}

func summarizeFailback(k faultKind, trials []trial) FailbackResult {
	res := FailbackResult{After: k.name, Trials: len(trials)}
	var ret, det, out []float64
	for _, t := range trials {
		s := t.sample
		if s.FlowMovedBack {
			res.FlowMovedBack++
		}
		if !s.Returned {
			res.NotReturned++
			continue
		}
		ret = append(ret, s.ReturnMs)
		det = append(det, s.BackDetectMs)
		out = append(out, s.FailbackMs)
	}
	res.Return, res.Detect, res.Outage = floatStats(ret), floatStats(det), floatStats(out)
	return res
}

// pictureBucket and the window around the fault drawn in the picture.
const (
	pictureBucket = 25 * time.Millisecond
	pictureBefore = 800 * time.Millisecond
	pictureAfter  = 2200 * time.Millisecond
)

// panelOf draws the trial with the median outage: the typical failover,
// not the best or the worst.
func panelOf(k faultKind, trials []trial) Panel {
	idx := make([]int, len(trials))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		x, y := trials[a].sample.OutageMs, trials[b].sample.OutageMs
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	})
	t := trials[idx[(len(idx)-1)/2]]
	from := t.faultAt.Add(-pictureBefore)
	p := Panel{
		Title:      k.desc,
		Kind:       k.name,
		FaultMs:    ms(pictureBefore),
		DecisionMs: -1,
		OutageMs:   t.sample.OutageMs,
		Series:     bucketize(t.flow, from, t.faultAt.Add(pictureAfter), pictureBucket),
	}
	if !t.decisionAt.IsZero() {
		p.DecisionMs = ms(t.decisionAt.Sub(from))
	}
	if !t.restoreAt.IsZero() {
		p.RestoreMs = ms(t.restoreAt.Sub(from))
	}
	return p
}

// recordProbeSettings notes the effective probe settings of ISP 1, as the
// daemon's own config parser resolves its defaults.
func (b *bench) recordProbeSettings(path string) error {
	cfg, err := config.Load(path)
	if err != nil {
		return fmt.Errorf("reading back the daemon config: %w", err)
	}
	if len(cfg.WANs) == 0 {
		return errors.New("daemon config has no WAN")
	}
	p := cfg.WANs[0].Probe
	down := p.DownAfter
	if down <= 0 {
		down = config.DefaultDownAfter(len(p.Targets), p.Interval)
	}
	b.rep.Probe = &ProbeSettings{
		Targets: len(p.Targets), IntervalMs: ms(p.Interval), TimeoutMs: ms(p.Timeout),
		DownAfter: down, UpAfter: p.UpAfter, Window: p.Window,
		DegradedPct: p.DegradedLoss, RecoverPct: p.RecoverLoss,
	}
	return nil
}
