package benchlib

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wanreact/wanreact/config"
	"github.com/wanreact/wanreact/internal/lab"
	"github.com/wanreact/wanreact/reactor"
	"github.com/wanreact/wanreact/sources/netlinksrc"
)

// stormTable is the routing table the storm churns: nobody's, like a
// routing daemon's full table.
const stormTable = 4242

// maxStormRoutes: storm routes are 198.19.x.y/32, one /16.
const maxStormRoutes = 1 << 16

// stormRoute is storm route i.
func stormRoute(i, lanIndex int) *netlink.Route {
	dst := &net.IPNet{IP: net.IPv4(198, 19, byte(i>>8), byte(i)), Mask: net.CIDRMask(32, 32)}
	return &netlink.Route{Table: stormTable, Dst: dst, LinkIndex: lanIndex, Scope: netlink.SCOPE_LINK}
}

// storm adds n routes to stormTable in the router namespace, then deletes
// those for which keep is false (nil: all). onAdded, if set, is called once
// after half of the routes were added.
func storm(h *netlink.Handle, n int, keep func(int) bool, onAdded func()) (time.Duration, error) {
	lan, err := h.LinkByName(lab.RouterLANIf)
	if err != nil {
		return 0, fmt.Errorf("storm: %w", err)
	}
	idx := lan.Attrs().Index
	t0 := time.Now()
	for i := 0; i < n; i++ {
		if err := h.RouteAdd(stormRoute(i, idx)); err != nil {
			return 0, fmt.Errorf("storm: adding route %d: %w", i, err)
		}
		if i == n/2 && onAdded != nil {
			onAdded()
		}
	}
	for i := 0; i < n; i++ {
		if keep != nil && keep(i) {
			continue
		}
		if err := h.RouteDel(stormRoute(i, idx)); err != nil {
			return 0, fmt.Errorf("storm: deleting route %d: %w", i, err)
		}
	}
	return time.Since(t0), nil
}

// clearStormTable deletes whatever is left in stormTable.
func clearStormTable(h *netlink.Handle) error {
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: stormTable}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return err
	}
	for i := range routes {
		if err := h.RouteDel(&routes[i]); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) storm(ctx context.Context, m *mainLab) error {
	n := min(max(b.opts.StormRoutes, 2), maxStormRoutes)
	h, err := m.lab.Handle(lab.RoleRouter)
	if err != nil {
		return err
	}
	res := &StormResult{Routes: n, Changes: 2 * n}
	b.rep.Storm = res
	// A fresh daemon: its log and resync count start clean.
	if err := m.env.stop(); err != nil {
		return err
	}
	if err := m.ensureRunning(ctx); err != nil {
		return err
	}
	var errs []error
	if err := b.daemonStorm(ctx, m, h, res); err != nil {
		errs = append(errs, fmt.Errorf("daemon storm: %w", err))
	}
	if err := b.stormWithCut(ctx, m, h, res); err != nil {
		errs = append(errs, fmt.Errorf("carrier cut during a storm: %w", err))
	}
	ip, err := b.inProcessStorm(ctx, m, h, n)
	if err != nil {
		errs = append(errs, fmt.Errorf("in-process storm: %w", err))
	}
	res.InProcess = ip
	if err := clearStormTable(h); err != nil {
		errs = append(errs, fmt.Errorf("clearing table %d: %w", stormTable, err))
	}
	return errors.Join(errs...)
}

// resyncMarker is what the daemon's netlink source logs when it lost
// notifications and resynced.
const resyncMarker = "netlink subscription lost"

// daemonStorm: the storm alone; the daemon must spend little CPU on it and
// end exactly where it was.
func (b *bench) daemonStorm(ctx context.Context, m *mainLab, h *netlink.Handle, res *StormResult) error {
	before, err := snapshot(m.env, h)
	if err != nil {
		return err
	}
	resyncs0 := strings.Count(m.env.output(), resyncMarker)
	w, err := startCPUWindow(m.env.pid())
	if err != nil {
		return err
	}
	t0 := time.Now()
	dur, err := storm(h, res.Routes, nil, nil)
	if err != nil {
		return err
	}
	// The daemon reads behind the kernel: give it a second to drain.
	if err := sleepCtx(ctx, time.Second); err != nil {
		return err
	}
	cpu, wall, err := w.end()
	if err != nil {
		return err
	}
	res.StormMs = ms(dur)
	res.ChangesPerSec = float64(res.Changes) / dur.Seconds()
	res.DaemonCPUMs = ms(cpu)
	res.DaemonCPUPct = 100 * cpu.Seconds() / wall.Seconds()
	res.DaemonResyncs = strings.Count(m.env.output(), resyncMarker) - resyncs0
	after, err := snapshot(m.env, h)
	if err != nil {
		return err
	}
	res.StateDiff = diffLines(before, after)
	decs, err := m.env.decisionsSince(t0)
	if err != nil {
		return err
	}
	for _, d := range decs {
		res.StateDiff = append(res.StateDiff, fmt.Sprintf("decision during the storm: %+v", d.DecisionRecord))
	}
	res.StateEqual = len(res.StateDiff) == 0
	b.logf("storm of %d changes in %.0f ms: daemon used %.0f ms CPU (%.1f%% of a core), %d resyncs, state equal: %v",
		res.Changes, res.StormMs, res.DaemonCPUMs, res.DaemonCPUPct, res.DaemonResyncs, res.StateEqual)
	return nil
}

// snapshot is what "no lost state" compares: every WAN's state and active
// flag, the daemon's rules, and the routes of its tables.
func snapshot(env *daemonEnv, h *netlink.Handle) ([]string, error) {
	st, err := env.status()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, w := range st {
		out = append(out, fmt.Sprintf("wan %s %s active=%v carrier=%v", w.Name, w.State, w.Active, w.Carrier))
	}
	rules, err := h.RuleList(netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	for _, r := range rules {
		if r.Protocol != reactor.RouteProtocol {
			continue
		}
		mask := uint32(0)
		if r.Mask != nil {
			mask = *r.Mask
		}
		out = append(out, fmt.Sprintf("rule %d mark=%#x/%#x table=%d src=%v suppress=%d", r.Priority, r.Mark, mask, r.Table, r.Src, r.SuppressPrefixlen))
	}
	for _, t := range []int{11, 12, 200} {
		keys, err := kernelRoutes(h, t)
		if err != nil {
			return nil, err
		}
		out = append(out, keys...)
	}
	slices.Sort(out)
	return out, nil
}

// diffLines lists what is only in a ("-") or only in b ("+").
func diffLines(a, b []string) []string {
	var d []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			d = append(d, "- "+x)
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) {
			d = append(d, "+ "+x)
		}
	}
	return d
}

// routeKey projects a route onto the fields of reactor.RouteChange, so
// kernel routes and the source's view compare directly.
func routeKey(table int, dst netip.Prefix, gw netip.Addr, index, protocol int) string {
	g := "-"
	if gw.IsValid() {
		g = gw.String()
	}
	return fmt.Sprintf("route table=%d %s via %s dev %d proto %d", table, dst, g, index, protocol)
}

func kernelRoutes(h *netlink.Handle, table int) ([]string, error) {
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("listing table %d: %w", table, err)
	}
	var out []string
	for _, r := range routes {
		dst := netip.MustParsePrefix("0.0.0.0/0")
		if r.Dst != nil {
			a, _ := netip.AddrFromSlice(r.Dst.IP.To4())
			ones, _ := r.Dst.Mask.Size()
			dst = netip.PrefixFrom(a, ones)
		}
		var gw netip.Addr
		if len(r.Gw) > 0 {
			gw, _ = netip.AddrFromSlice(r.Gw.To4())
		}
		out = append(out, routeKey(r.Table, dst, gw, r.LinkIndex, int(r.Protocol)))
	}
	slices.Sort(out)
	return out, nil
}

// stormWithCut cuts ISP 1's carrier halfway through the storm's additions:
// the failover must not wait behind the storm.
func (b *bench) stormWithCut(ctx context.Context, m *mainLab, h *netlink.Handle, res *StormResult) error {
	if err := m.ensureRunning(ctx); err != nil {
		return err
	}
	f, err := m.lab.StartFlow(lab.RoleClient, flowPPS)
	if err != nil {
		return err
	}
	defer f.Stop()
	if err := sleepCtx(ctx, time.Second); err != nil {
		return err
	}
	var before, faultAt time.Time
	var cutErr error
	_, err = storm(h, res.Routes, nil, func() {
		before = time.Now()
		cutErr = m.lab.CarrierDown(1)
		faultAt = time.Now()
	})
	if err != nil || cutErr != nil {
		_ = m.lab.CarrierUp(1)
		return errors.Join(err, cutErr)
	}
	dec, ok, err := m.env.waitDecision(ctx, before, 5*time.Second, func(d decision) bool {
		return d.ActiveChanged && !d.activeHas("isp1")
	})
	if err != nil {
		_ = m.lab.CarrierUp(1)
		return err
	}
	if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
		_ = m.lab.CarrierUp(1)
		return err
	}
	restoreBefore := time.Now()
	if err := m.lab.CarrierUp(1); err != nil {
		return err
	}
	r := f.Stop()
	out := faultOutage(fates(r), 1, before, restoreBefore)
	res.CutOutageMs, res.CutOK = ms(out.duration()), out.Recovered && ok
	if ok {
		res.CutDetectMs = ms(max(dec.Time.Sub(faultAt), 0))
	}
	b.logf("carrier cut during the storm: outage %.0f ms, decision after %.0f ms", res.CutOutageMs, res.CutDetectMs)
	if !ok {
		return errors.New("no decision moved traffic off isp1 within 5s")
	}
	return m.ensureRunning(ctx)
}

// routeView is the set of routes a netlinksrc consumer believes exist.
type routeView map[string]bool

func (v routeView) apply(r reactor.RouteChange) {
	k := routeKey(r.Table, r.Dst, r.Gateway, r.Index, r.Protocol)
	if r.Deleted {
		delete(v, k)
	} else {
		v[k] = true
	}
}

func (v routeView) table(t int) []string {
	prefix := fmt.Sprintf("route table=%d ", t)
	var out []string
	for k := range v {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// stormConsumer is a reducer fed by sources/netlinksrc in this process,
// the way the daemon's loop is, with each Apply timed.
type stormConsumer struct {
	mu      sync.Mutex
	state   *reactor.State
	view    routeView
	lat     []time.Duration
	events  int
	timing  bool
	encoded int // bytes of event-log JSON, as the daemon writes per event
}

func (c *stormConsumer) emit(e reactor.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t0 := time.Now()
	c.state.Apply(e)
	d := time.Since(t0)
	if c.timing {
		c.lat = append(c.lat, d)
		c.events++
	}
	if r, ok := e.Data.(reactor.RouteChange); ok {
		c.view.apply(r)
	}
	// The daemon logs every event; doing the same keeps the consumer as
	// slow as the real one, which is what the receive buffer must absorb.
	if b, err := json.Marshal(e); err == nil {
		c.encoded += len(b)
	}
}

// inProcessStorm runs sources/netlinksrc with a tiny receive buffer through
// a storm: it must overflow, resync, and end with a view equal to the
// kernel's, and the reducer's desired routing must not move.
func (b *bench) inProcessStorm(ctx context.Context, m *mainLab, h *netlink.Handle, n int) (*InProcessStorm, error) {
	cfg, err := config.Load(m.env.cfgPath)
	if err != nil {
		return nil, err
	}
	nsh, err := netns.GetFromName(m.lab.NS(lab.RoleRouter))
	if err != nil {
		return nil, fmt.Errorf("router netns: %w", err)
	}
	defer nsh.Close()
	res := &InProcessStorm{RcvBuf: b.opts.StormRcvBuf}
	c := &stormConsumer{state: reactor.New(), view: routeView{}}
	c.emit(reactor.Event{Time: time.Now(), Data: reactor.ConfigLoaded{Config: *cfg}})
	src := netlinksrc.New(netlinksrc.Options{
		NetNS:             nsh,
		ReceiveBufferSize: b.opts.StormRcvBuf,
		Logger:            slog.New(slog.DiscardHandler),
	})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- src.Run(rctx, c.emit) }()
	defer func() {
		cancel()
		<-done
	}()
	select {
	case <-src.Synced():
	case err := <-done:
		done <- err
		return nil, fmt.Errorf("netlink source: %v", err)
	case <-time.After(10 * time.Second):
		return nil, errors.New("netlink source not synced after 10s")
	}
	c.emit(reactor.Event{Time: time.Now(), Data: reactor.Synced{}})
	c.mu.Lock()
	desiredBefore, _ := json.Marshal(c.state.Desired())
	c.timing = true
	c.mu.Unlock()

	keep := func(i int) bool { return i%100 == 0 }
	for i := 0; i < n; i++ {
		if keep(i) {
			res.RoutesLeft++
		}
	}
	dur, err := storm(h, n, keep, nil)
	if err != nil {
		return nil, err
	}
	want, err := kernelRoutes(h, stormTable)
	if err != nil {
		return nil, err
	}
	if len(want) != res.RoutesLeft {
		return nil, fmt.Errorf("kernel has %d routes in table %d, expected %d", len(want), stormTable, res.RoutesLeft)
	}
	// Wait for the source to catch up (and finish any resync).
	stormEnd := time.Now()
	deadline := stormEnd.Add(15 * time.Second)
	for {
		c.mu.Lock()
		got := c.view.table(stormTable)
		c.mu.Unlock()
		if slices.Equal(got, want) || time.Now().After(deadline) {
			break
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
	res.SettleMs = ms(time.Since(stormEnd))
	// Quiet for a moment, then compare everything.
	if err := sleepCtx(ctx, 300*time.Millisecond); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range []int{stormTable, unix.RT_TABLE_MAIN, 11, 12, 200} {
		k, err := kernelRoutes(h, t)
		if err != nil {
			return nil, err
		}
		res.ViewDiff = append(res.ViewDiff, diffLines(k, c.view.table(t))...)
	}
	res.ViewMatches = len(res.ViewDiff) == 0
	if len(res.ViewDiff) > 20 {
		res.ViewDiff = append(res.ViewDiff[:20], fmt.Sprintf("... %d more", len(res.ViewDiff)-20))
	}
	desiredAfter, _ := json.Marshal(c.state.Desired())
	res.DesiredEqual = string(desiredAfter) == string(desiredBefore)
	res.Events = c.events
	res.Resyncs = src.Resyncs()
	res.ReducerP50us = float64(durationPercentile(c.lat, 50)) / 1e3
	res.ReducerP99us = float64(durationPercentile(c.lat, 99)) / 1e3
	res.ReducerMaxus = float64(durationPercentile(c.lat, 100)) / 1e3
	b.logf("in-process storm (%d routes in %.0f ms, rcvbuf %d): %d events, %d resyncs, reducer p50 %.1f µs p99 %.1f µs, view matches kernel: %v, desired unchanged: %v",
		n, ms(dur), res.RcvBuf, res.Events, res.Resyncs, res.ReducerP50us, res.ReducerP99us, res.ViewMatches, res.DesiredEqual)
	return res, nil
}
