// Package daemon wires wanreact together: sources emit events onto one bus,
// a single goroutine applies the reducer, and the decisions drive the
// routing reconciler and one-shot actions. Nothing on the failover path
// shells out or waits for anything slower than a netlink write.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wanreact/wanreact/actions"
	"github.com/wanreact/wanreact/actions/firewall"
	"github.com/wanreact/wanreact/config"
	"github.com/wanreact/wanreact/internal/control"
	"github.com/wanreact/wanreact/internal/eventlog"
	"github.com/wanreact/wanreact/reactor"
	"github.com/wanreact/wanreact/sources/carrier"
	"github.com/wanreact/wanreact/sources/dhcp"
	"github.com/wanreact/wanreact/sources/netlinksrc"
	"github.com/wanreact/wanreact/sources/prober"
	"github.com/wanreact/wanreact/sources/wifi"
)

// Options configures Run.
type Options struct {
	ConfigPath string
	// SocketPath overrides the config's control_socket.
	SocketPath string
	Logger     *slog.Logger
	Version    string
}

// busSize bounds the event bus. Sources block when it is full (netlink then
// overflows its socket and resyncs), which is the back-pressure we want
// rather than unbounded memory.
const busSize = 4096

// daemon holds what the reactor goroutine owns plus the workers it feeds.
type daemon struct {
	opts   Options
	log    *slog.Logger
	bus    chan reactor.Event
	state  *reactor.State
	events *eventlog.Log
	rec    *actions.Reconciler
	fw     *firewall.Manager // see firewall.go
	flush  chan reactor.FlushConntrack
	probe  *prober.Prober
	cpoll  *carrier.Poller
	dhcp   *dhcpClients
	wifi   *wifi.Source
	// tables is the set of routing tables the netlink source must forward
	// route changes for (ours), swapped on reload.
	tables atomic.Pointer[map[int]bool]
	// rulePrio is the first of our rule priorities, for the rule filter.
	rulePrio atomic.Int64
	// statusReq asks the reactor goroutine for a consistent snapshot.
	statusReq chan chan []reactor.WANStatus
	// observers see every event and decision (metrics, hooks).
	observers []Observer
	// ops: hooks, metrics, sd_notify (see ops.go).
	ops opsState
}

// Observer sees, on the reactor goroutine, every event with the decision it
// caused, and every result of the kernel writers. It must not block: the
// failover path runs through here.
type Observer interface {
	// Observe is called after each event is applied.
	Observe(e reactor.Event, d reactor.Decision, s *reactor.State)
	// ObserveAction is called after a routing pass or conntrack flush
	// (kind "routing" or "conntrack"), from the writer's goroutine.
	ObserveAction(kind string, changed int, err error, took time.Duration)
}

// Run runs the daemon until ctx is done or SIGTERM/SIGINT.
func Run(ctx context.Context, o Options) error {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	cfg, err := config.Load(o.ConfigPath)
	if err != nil {
		return err
	}
	socket := cfg.ControlSocket
	if o.SocketPath != "" {
		socket = o.SocketPath
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	d := &daemon{
		opts: o, log: log, bus: make(chan reactor.Event, busSize), state: reactor.New(),
		flush: make(chan reactor.FlushConntrack, 64), statusReq: make(chan chan []reactor.WANStatus),
	}
	d.setFilters(cfg)
	if d.events, err = eventlog.Open(cfg.EventLog, cfg.EventLogMaxSize); err != nil {
		return err
	}
	defer d.events.Close()

	if d.rec, err = actions.NewReconciler(actions.Options{Logger: log.With("component", "routing"), Slots: actions.SlotConfigFrom(*cfg)}); err != nil {
		return fmt.Errorf("routing: %w", err)
	}
	defer d.rec.Close()
	d.startFirewall(cfg)
	flusher, err := actions.NewConntrackFlusher(0)
	if err != nil {
		// Without ctnetlink failover still works; pinned flows just take
		// longer to move (until their conntrack entries time out).
		log.Warn("conntrack unavailable: flows of a failed WAN will not be moved at once", "err", err)
	} else {
		defer flusher.Close()
	}

	srv, err := control.Listen(socket, d.handleControl, log.With("component", "control"))
	if err != nil {
		return err
	}
	defer srv.Close()

	var wg sync.WaitGroup
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				log.Error("component stopped", "component", name, "err", err)
			}
		}()
	}
	d.startOps(ctx, cfg, socket, run)
	// The configuration goes first on the bus: every log starts with the
	// settings its decisions were made under.
	d.bus <- reactor.Event{Time: time.Now(), Data: reactor.ConfigLoaded{Config: *cfg}}

	nl := netlinksrc.New(netlinksrc.Options{
		Now:         time.Now,
		RouteFilter: d.routeFilter,
		RuleFilter:  d.ruleFilter,
		Logger:      log.With("component", "netlink"),
	})
	go func() {
		// The initial dump's events are on the bus before Synced
		// closes, so this lands after them.
		select {
		case <-nl.Synced():
			d.emit(reactor.Event{Time: time.Now(), Data: reactor.Synced{}})
		case <-ctx.Done():
		}
	}()
	d.probe = prober.New(prober.Options{Logger: log.With("component", "prober")})
	if err := d.probe.SetTargets(probeTargets(cfg)); err != nil {
		return fmt.Errorf("prober: %w", err)
	}
	d.cpoll = carrier.New(carrier.Options{Logger: log.With("component", "carrier")})
	d.cpoll.SetInterfaces(wanInterfaces(cfg))

	d.dhcp = newDHCPClients(ctx, log, d.emit)
	d.dhcp.onHook = d.ops.hooks.LeaseHook
	d.dhcp.set(cfg, nil)
	defer d.dhcp.wait()
	d.wifi = wifi.New(wifi.Options{Logger: log.With("component", "wifi")})
	d.wifi.SetInterfaces(wifiInterfaces(cfg))

	run("netlink", func(ctx context.Context) error { return nl.Run(ctx, d.emit) })
	run("wifi", func(ctx context.Context) error { return d.wifi.Run(ctx, d.emit) })
	run("prober", func(ctx context.Context) error { return d.probe.Run(ctx, d.emit) })
	run("carrier", func(ctx context.Context) error { return d.cpoll.Run(ctx, d.emit) })
	run("routing", func(ctx context.Context) error { return d.rec.Run(ctx, d.reportRouting) })
	run("conntrack", func(ctx context.Context) error { return d.flushLoop(ctx, flusher) })
	run("firewall", d.runFirewall)
	go srv.Serve(ctx)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	log.Info("wanreact running", "version", o.Version, "config", o.ConfigPath, "wans", len(cfg.WANs), "socket", socket)
	d.loop(ctx, hup)
	// Routing stays as it is: stopping the daemon must not cut the
	// user's connectivity. `wanreact cleanup` removes it.
	log.Info("wanreact stopping; routing left in place")
	wg.Wait()
	return nil
}

// emit puts an event on the bus; sources call it from their goroutines.
func (d *daemon) emit(e reactor.Event) { d.bus <- e }

// loop is the reactor goroutine: the only place the state is touched.
func (d *daemon) loop(ctx context.Context, hup <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			d.reload()
		case ch := <-d.statusReq:
			ch <- d.state.Status()
		case e := <-d.bus:
			d.apply(e)
		}
	}
}

func (d *daemon) apply(e reactor.Event) {
	dec := d.state.Apply(e)
	d.dhcp.observe(e, d.state)
	for _, o := range d.observers {
		o.Observe(e, dec, d.state)
	}
	d.logLine(e)
	if dec.Empty() {
		return
	}
	d.logLine(dec.Record(e.Time))
	for _, t := range dec.Transitions {
		d.log.Info("wan state", "wan", t.WAN, "from", t.From, "to", t.To, "reason", t.Reason)
	}
	if dec.ActiveChanged {
		d.log.Info("active set changed", "active", activeNames(dec.Active))
	}
	if dec.DesiredChanged {
		d.rec.Set(d.state.Desired())
	}
	for _, in := range dec.Intents {
		switch v := in.(type) {
		case reactor.FlushConntrack:
			select {
			case d.flush <- v:
			default:
				d.log.Warn("conntrack flush queue full; dropping", "wan", v.WAN)
			}
		case reactor.Reconcile:
			d.rec.Kick()
		}
	}
}

func (d *daemon) logLine(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		d.log.Error("event log: encode", "err", err)
		return
	}
	if err := d.events.Write(b); err != nil {
		d.log.Error("event log", "err", err)
	}
}

// actionLine is an event-log line describing what the kernel writers did.
type actionLine struct {
	Time   time.Time `json:"time"`
	Source string    `json:"source"`
	Type   string    `json:"type"`
	WAN    string    `json:"wan,omitempty"`
	Data   any       `json:"data"`
}

func (d *daemon) reportRouting(r actions.Result) {
	for _, o := range d.observers {
		o.ObserveAction("routing", len(r.Added)+len(r.Removed)+len(r.Replaced), errors.Join(r.Errors...), r.Duration)
	}
	if !r.Changed() && len(r.Errors) == 0 {
		return
	}
	errs := make([]string, len(r.Errors))
	for i, e := range r.Errors {
		errs[i] = e.Error()
	}
	d.logLine(actionLine{Time: time.Now().UTC(), Source: "action", Type: "routing", Data: map[string]any{
		"added": r.Added, "removed": r.Removed, "replaced": r.Replaced, "errors": errs,
		"duration_us": r.Duration.Microseconds(),
	}})
}

func (d *daemon) flushLoop(ctx context.Context, f *actions.ConntrackFlusher) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case in := <-d.flush:
			if f == nil {
				continue
			}
			d.waitRerouted(ctx)
			start := time.Now()
			n, err := f.Flush(in)
			for _, o := range d.observers {
				o.ObserveAction("conntrack", n, err, time.Since(start))
			}
			data := map[string]any{"deleted": n, "reason": in.Reason, "duration_us": time.Since(start).Microseconds()}
			if err != nil {
				data["error"] = err.Error()
				d.log.Error("conntrack flush", "wan", in.WAN, "err", err)
			} else {
				d.log.Info("conntrack flushed", "wan", in.WAN, "deleted", n)
			}
			d.logLine(actionLine{Time: time.Now().UTC(), Source: "action", Type: "conntrack", WAN: in.WAN, Data: data})
		}
	}
}

// reload re-reads the config on SIGHUP. A bad file changes nothing.
func (d *daemon) reload() {
	cfg, err := config.Load(d.opts.ConfigPath)
	if err != nil {
		d.log.Error("reload rejected; keeping the running config", "config", d.opts.ConfigPath, "err", err)
		return
	}
	d.setFilters(cfg)
	if err := d.probe.SetTargets(probeTargets(cfg)); err != nil {
		// The config parser accepts nothing the prober refuses; if it
		// ever does, say so rather than probe half the WANs quietly.
		d.log.Error("reload: prober refused part of the config", "err", err)
	}
	d.cpoll.SetInterfaces(wanInterfaces(cfg))
	d.dhcp.set(cfg, d.state.LinkUp)
	d.wifi.SetInterfaces(wifiInterfaces(cfg))
	d.reloadBalancing(cfg)
	old := d.state.Config()
	d.reloadOps(&old, cfg)
	d.apply(reactor.Event{Time: time.Now(), Data: reactor.ConfigLoaded{Config: *cfg}})
	d.log.Info("config reloaded", "wans", len(cfg.WANs))
}

func (d *daemon) setFilters(cfg *config.Config) {
	t := map[int]bool{cfg.Routing.ActiveTable: true}
	for _, w := range cfg.WANs {
		t[w.Table] = true
	}
	d.tables.Store(&t)
	d.rulePrio.Store(int64(cfg.Routing.RulePriority))
}

// routeFilter keeps route events that matter: main-table default routes
// (external WANs learn their gateway) and anything in our tables (repair).
// Everything else, e.g. a routing daemon churning another table, is dropped
// at the source.
func (d *daemon) routeFilter(table int, dst netip.Prefix) bool {
	if table == 254 && dst.Bits() == 0 {
		return true
	}
	return (*d.tables.Load())[table]
}

func (d *daemon) ruleFilter(priority, table int) bool {
	base := int(d.rulePrio.Load())
	return priority >= base && priority < base+reactor.RulePriorities
}

func probeTargets(cfg *config.Config) []prober.Target {
	out := make([]prober.Target, 0, len(cfg.WANs))
	for i, w := range cfg.WANs {
		out = append(out, prober.Target{
			WAN: w.Name, Interface: w.Interface, Mark: reactor.Mark(cfg.Routing.MarkMask, i),
			Addrs: w.Probe.Targets, Interval: w.Probe.Interval, Timeout: w.Probe.Timeout,
		})
	}
	return out
}

func wanInterfaces(cfg *config.Config) []string {
	out := make([]string, len(cfg.WANs))
	for i, w := range cfg.WANs {
		out[i] = w.Interface
	}
	return out
}

func activeNames(a []reactor.ActiveMember) []string {
	out := make([]string, len(a))
	for i, m := range a {
		out[i] = m.WAN
	}
	return out
}

// Status is the JSON of `wanreact status --json`.
type Status struct {
	WANs []WANStatus `json:"wans"`
}

// WANStatus is the reducer's view of a WAN plus what its DHCP client and
// Wi-Fi source know.
type WANStatus struct {
	reactor.WANStatus
	DHCP *dhcp.LeaseStatus `json:"dhcp,omitempty"`
	Wifi *wifi.Status      `json:"wifi,omitempty"`
}

func (d *daemon) handleControl(ctx context.Context, req control.Request, w *json.Encoder) error {
	switch req.Cmd {
	case "status":
		ch := make(chan []reactor.WANStatus, 1)
		select {
		case d.statusReq <- ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
			return errors.New("reactor busy")
		}
		st := Status{WANs: []WANStatus{}}
		leases := d.dhcp.status()
		for _, w := range <-ch {
			full := WANStatus{WANStatus: w}
			if l, ok := leases[w.Name]; ok {
				full.DHCP = &l
			}
			if ws, ok := d.wifi.Status(w.Name); ok {
				full.Wifi = &ws
			}
			st.WANs = append(st.WANs, full)
		}
		return w.Encode(st)
	case "events":
		return d.serveEvents(ctx, req, w)
	}
	return fmt.Errorf("unknown command %q", req.Cmd)
}

// serveEvents sends the log's history, then (with Follow) live lines.
func (d *daemon) serveEvents(ctx context.Context, req control.Request, w *json.Encoder) error {
	// Stream delivers each line once even across a rotation (see eventlog).
	return d.events.Stream(ctx, req.Follow, func(line []byte) error {
		if !eventlog.Match(line, req.WAN, req.Source) {
			return nil
		}
		return w.Encode(json.RawMessage(line))
	})
}
