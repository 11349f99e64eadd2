package daemon

import (
	"context"
	"time"

	"github.com/wanreact/wanreact/actions"
	"github.com/wanreact/wanreact/actions/firewall"
	"github.com/wanreact/wanreact/config"
)

// Balancing wiring: the firewall's chains (connection marks, optional
// MASQUERADE) and the reconciler's slot tables follow the configuration
// only. They are written at start and on reload, and the firewall is
// re-checked every few seconds, never on the failover path.

// startFirewall creates the firewall manager and installs cfg's chains. A
// failure (no iptables) is logged and retried by the periodic check:
// failover still works without it, only balancing does not.
func (d *daemon) startFirewall(cfg *config.Config) {
	d.fw = firewall.New(firewall.Options{Logger: d.log.With("component", "firewall")})
	// Only the daemon log here: the event log must start with the
	// configuration, which the reactor goroutine writes later.
	if _, err := d.fw.Apply(firewall.FromConfig(*cfg)); err != nil {
		d.log.Error("firewall not installed; new connections are not balanced", "err", err)
	}
}

// runFirewall re-checks (and repairs) the chains until ctx ends.
func (d *daemon) runFirewall(ctx context.Context) error {
	return d.fw.Run(ctx, d.reportFirewall)
}

// reloadBalancing hands a reloaded config's slots to the reconciler and
// its firewall to the firewall goroutine, which rewrites the chains if they
// change. Neither waits: this runs on the reactor goroutine.
func (d *daemon) reloadBalancing(cfg *config.Config) {
	d.rec.SetSlots(actions.SlotConfigFrom(*cfg))
	d.fw.Set(firewall.FromConfig(*cfg))
}

func (d *daemon) reportFirewall(res firewall.Result, err error) {
	for _, o := range d.observers {
		o.ObserveAction("firewall", res.Lines, err, res.Duration)
	}
	if err == nil && len(res.Changed) == 0 {
		return
	}
	data := map[string]any{"tables": res.Changed, "reasons": res.Reasons, "rules": res.Lines,
		"duration_us": res.Duration.Microseconds()}
	if err != nil {
		data["error"] = err.Error()
	}
	d.logLine(actionLine{Time: time.Now().UTC(), Source: "action", Type: "firewall", Data: data})
}

// waitRerouted holds a conntrack flush until the routing writer has applied
// the newest Desired (bounded, so a stuck writer cannot hold flushes
// forever): flushing first would let the next packet of a flushed flow
// create its new entry along the old route and be pinned to the dead WAN.
func (d *daemon) waitRerouted(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := d.rec.WaitApplied(ctx, d.rec.Generation()); err != nil && ctx.Err() != nil {
		d.log.Warn("conntrack flush did not wait for the routing change", "err", err)
	}
}
