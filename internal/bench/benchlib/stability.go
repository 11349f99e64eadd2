package benchlib

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// stabilityWindow is the span the flapping target is stated over.
const stabilityWindow = 40 * time.Second

// stability puts random loss on ISP 1 at each level for StabilityDuration,
// each level with a freshly started daemon (so one level's history does not
// colour the next), and counts ISP 1's state changes.
func (b *bench) stability(ctx context.Context, m *mainLab) error {
	var errs []error
	for _, p := range b.opts.StabilityLevels {
		r, err := b.stabilityLevel(ctx, m, p)
		if err != nil {
			errs = append(errs, fmt.Errorf("%.0f%% loss: %w", p*100, err))
			continue
		}
		b.logf("loss %.0f%% for %.0fs: %d transitions (%.0f/h), %d active-set changes, max %d in 40s, isp1 active %.0f%% of the time",
			p*100, r.Seconds, r.Transitions, r.PerHour, r.ActiveChanges, r.Max40s, r.ActiveShare*100)
		b.rep.Stability = append(b.rep.Stability, r)
	}
	return errors.Join(errs...)
}

func (b *bench) stabilityLevel(ctx context.Context, m *mainLab, p float64) (StabilityResult, error) {
	if err := m.env.stop(); err != nil {
		return StabilityResult{}, err
	}
	if err := m.ensureRunning(ctx); err != nil {
		return StabilityResult{}, err
	}
	// Some history, as on a router that has been running.
	if err := sleepCtx(ctx, 2*time.Second); err != nil {
		return StabilityResult{}, err
	}
	start := time.Now()
	if err := m.lab.Loss(1, p); err != nil {
		return StabilityResult{}, err
	}
	sleepErr := sleepCtx(ctx, b.opts.StabilityDuration)
	end := time.Now()
	st, stErr := m.env.status()
	if err := m.lab.Restore(1); err != nil {
		return StabilityResult{}, err
	}
	if sleepErr != nil {
		return StabilityResult{}, sleepErr
	}
	decs, err := m.env.decisionsSince(start)
	if err != nil {
		return StabilityResult{}, err
	}
	r := analyzeStability(decs, start, end, p)
	if stErr == nil {
		w := st["isp1"]
		r.FinalState = string(w.State)
		if w.Active {
			r.FinalState += ", active"
		}
	}
	return r, nil
}

// analyzeStability counts ISP 1's transitions and active-set changes in
// decisions between start and end (ISP 1 active at start).
func analyzeStability(decs []decision, start, end time.Time, loss float64) StabilityResult {
	r := StabilityResult{Loss: loss, Seconds: end.Sub(start).Seconds()}
	var times []time.Time
	active, since := true, start
	var activeFor time.Duration
	for _, d := range decs {
		if d.Time.Before(start) || !d.Time.Before(end) {
			continue
		}
		at := d.Time.Sub(start).Seconds()
		for _, t := range d.Transitions {
			if t.WAN != "isp1" {
				continue
			}
			r.Transitions++
			times = append(times, d.Time)
			r.Timeline = append(r.Timeline, fmt.Sprintf("+%.1fs %s→%s (%s)", at, t.From, t.To, t.Reason))
		}
		if d.ActiveChanged {
			r.ActiveChanges++
			now := d.activeHas("isp1")
			if active && !now {
				activeFor += d.Time.Sub(since)
			}
			if !active && now {
				since = d.Time
			}
			active = now
		}
	}
	if active {
		activeFor += end.Sub(since)
	}
	if r.Seconds > 0 {
		r.PerHour = float64(r.Transitions) * 3600 / r.Seconds
		r.ActivePerHour = float64(r.ActiveChanges) * 3600 / r.Seconds
		r.ActiveShare = activeFor.Seconds() / r.Seconds
	}
	r.Max40s = maxInWindow(times, stabilityWindow)
	return r
}

// maxInWindow is the largest number of sorted times within any span of w.
func maxInWindow(times []time.Time, w time.Duration) int {
	best, j := 0, 0
	for i := range times {
		for times[i].Sub(times[j]) >= w {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}
