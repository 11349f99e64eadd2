package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wanreact/wanreact/config"
	"github.com/wanreact/wanreact/internal/hooks"
	"github.com/wanreact/wanreact/internal/metrics"
	"github.com/wanreact/wanreact/internal/sdnotify"
	"github.com/wanreact/wanreact/reactor"
)

// Operations wiring: user hooks, Prometheus metrics, the control socket's
// group and the service manager (sd_notify READY, WATCHDOG, STOPPING). None
// of it is on the failover path: hooks and metrics are observers that only
// queue or count, and the watchdog only asks the reactor for a snapshot.

// opsState is what the operations side keeps.
type opsState struct {
	hooks   *hooks.Runner
	metrics *metrics.Metrics // nil without metrics_listen
	socket  string           // the control socket's path
}

// startOps creates the hook runner and the metrics, registers them as
// observers and starts their goroutines with run. It must be called before
// any component goroutine starts: observers are read without a lock.
func (d *daemon) startOps(ctx context.Context, cfg *config.Config, socket string, run func(string, func(context.Context) error)) {
	d.ops.socket = socket
	d.applyControlGroup(socket, cfg.ControlGroup)
	d.ops.hooks = hooks.New(hooks.Options{Hooks: cfg.Hooks, Logger: d.log.With("component", "hooks"), OnResult: d.hookResult})
	d.observers = append(d.observers, d.ops.hooks)
	run("hooks", d.ops.hooks.Run)
	if cfg.MetricsListen != "" {
		d.ops.metrics = metrics.New(metrics.Options{Snapshot: d.snapshot, Version: d.opts.Version})
		d.observers = append(d.observers, d.ops.metrics)
		addr, h, log := cfg.MetricsListen, d.ops.metrics.Handler(), d.log.With("component", "metrics")
		run("metrics", func(ctx context.Context) error { return metrics.Serve(ctx, addr, h, log) })
	}
	run("sd_notify", d.notifyLoop)
}

// reloadOps takes what can change at run time: hook settings and the control
// group. The others say that they need a restart.
func (d *daemon) reloadOps(old, cfg *config.Config) {
	d.ops.hooks.SetConfig(cfg.Hooks)
	if cfg.ControlGroup != old.ControlGroup {
		d.applyControlGroup(d.ops.socket, cfg.ControlGroup)
	}
	for _, c := range []struct{ key, was, now string }{
		{"metrics_listen", old.MetricsListen, cfg.MetricsListen},
		{"event_log", old.EventLog, cfg.EventLog},
		{"event_log_max_size", strconv.FormatInt(old.EventLogMaxSize, 10), strconv.FormatInt(cfg.EventLogMaxSize, 10)},
		{"control_socket", old.ControlSocket, cfg.ControlSocket},
	} {
		if c.was != c.now {
			d.log.Warn("reload: this setting takes effect at the next restart", "key", c.key, "running", c.was, "new", c.now)
		}
	}
}

// hookResult logs a hook's outcome as an action line and counts it.
func (d *daemon) hookResult(r hooks.Result) {
	if d.ops.metrics != nil {
		d.ops.metrics.ObserveHook(r.Job.Event, r.Outcome)
	}
	data := map[string]any{"hook": r.Hook, "event": r.Job.Event, "result": r.Outcome, "exit_code": r.ExitCode,
		"duration_us": r.Duration.Microseconds()}
	if r.Output != "" {
		data["output"] = r.Output
	}
	if r.Err != nil {
		data["error"] = r.Err.Error()
	}
	d.logLine(actionLine{Time: time.Now().UTC(), Source: "action", Type: "hook", WAN: r.Job.WAN, Data: data})
}

// snapshot asks the reactor goroutine for every WAN's status. Answering
// proves the loop is alive and not stuck behind a slow step.
func (d *daemon) snapshot(ctx context.Context) ([]reactor.WANStatus, error) {
	ch := make(chan []reactor.WANStatus, 1)
	select {
	case d.statusReq <- ch:
	case <-ctx.Done():
		return nil, fmt.Errorf("reactor busy: %w", ctx.Err())
	}
	select {
	case st := <-ch:
		return st, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("reactor busy: %w", ctx.Err())
	}
}

// readyTimeout bounds the wait for the reactor's first answer at start.
const readyTimeout = 30 * time.Second

// notifyLoop talks to systemd (a no-op elsewhere): READY=1 once the reactor
// loop answers, WATCHDOG=1 at half the watchdog timeout but only after a
// round trip through the reactor succeeded (a timer alone would keep a
// wedged daemon alive), STATUS= with the WANs' states, STOPPING=1 at the end.
func (d *daemon) notifyLoop(ctx context.Context) error {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return nil
	}
	log := d.log.With("component", "sd_notify")
	interval, watchdog, err := sdnotify.WatchdogInterval()
	if err != nil {
		log.Warn("watchdog disabled", "err", err)
	}
	rctx, cancel := context.WithTimeout(ctx, readyTimeout)
	st, err := d.snapshot(rctx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		// Without READY systemd fails the start after TimeoutStartSec,
		// which is right for a daemon whose loop never ran.
		return fmt.Errorf("reactor did not answer at start: %w", err)
	}
	status := statusLine(st)
	if _, err := sdnotify.Notify(sdnotify.Ready + "\nSTATUS=" + status); err != nil {
		log.Warn("notify", "err", err)
	}
	defer func() { _, _ = sdnotify.Notify(sdnotify.Stopping) }()
	if !watchdog {
		<-ctx.Done()
		return nil
	}
	log.Info("watchdog on", "timeout", interval)
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		// The reactor gets a quarter of the timeout to answer, so a
		// ping still lands before systemd's deadline.
		rctx, cancel := context.WithTimeout(ctx, interval/4)
		st, err := d.snapshot(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Error("reactor did not answer; withholding the watchdog ping", "err", err)
			continue
		}
		msg := sdnotify.Watchdog
		if s := statusLine(st); s != status {
			status = s
			msg += "\nSTATUS=" + s
		}
		if _, err := sdnotify.Notify(msg); err != nil {
			log.Warn("notify", "err", err)
		}
	}
}

// statusLine is the one-line summary `systemctl status` shows.
func statusLine(st []reactor.WANStatus) string {
	parts := make([]string, len(st))
	for i, w := range st {
		parts[i] = w.Name + " " + string(w.State)
		if w.Active {
			parts[i] += " (active)"
		}
	}
	if len(parts) == 0 {
		return "no WANs"
	}
	return strings.Join(parts, ", ")
}

// applyControlGroup gives the control socket to group (mode 0660 is set by
// the control package), so that its members may run `wanreact status` and
// `events` without root. The socket's directory must let the group through
// too; only a directory named "wanreact" (the daemon's own, like
// /run/wanreact) is changed for that, never a shared one. Failures are
// logged, not fatal: the socket then stays root-only, which is safe.
func (d *daemon) applyControlGroup(socket, group string) {
	if group == "" {
		return
	}
	log := d.log.With("component", "control")
	gid, err := lookupGroup(group)
	if err != nil {
		log.Error("control_group not applied; the socket stays root-only", "group", group, "err", err)
		return
	}
	if err := os.Chown(socket, -1, gid); err != nil {
		log.Error("control_group not applied; the socket stays root-only", "group", group, "err", err)
		return
	}
	dir := filepath.Dir(socket)
	st, err := os.Stat(dir)
	if err != nil {
		log.Error("control socket directory", "err", err)
		return
	}
	sys, _ := st.Sys().(*syscall.Stat_t)
	if filepath.Base(dir) == "wanreact" && sys != nil && (sys.Uid == 0 || int(sys.Uid) == os.Geteuid()) {
		err := os.Chown(dir, -1, gid)
		if err == nil {
			err = os.Chmod(dir, st.Mode().Perm()|0o050)
		}
		if err != nil {
			log.Error("control socket directory: group access not granted", "dir", dir, "err", err)
		}
		return
	}
	if st.Mode().Perm()&0o001 == 0 && (sys == nil || int(sys.Gid) != gid || st.Mode().Perm()&0o010 == 0) {
		log.Warn("control_group cannot reach the socket: its directory does not let the group through", "dir", dir, "group", group)
	}
}

// lookupGroup resolves a group name or number. With CGO_ENABLED=0, os/user
// reads /etc/group itself (no NSS), which is what a router has.
func lookupGroup(group string) (int, error) {
	if n, err := strconv.Atoi(group); err == nil {
		return n, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		var unknown user.UnknownGroupError
		if errors.As(err, &unknown) {
			return 0, fmt.Errorf("no group %q in /etc/group", group)
		}
		return 0, err
	}
	return strconv.Atoi(g.Gid)
}
