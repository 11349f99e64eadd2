package hooks

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wanreact/wanreact/reactor"
	"github.com/wanreact/wanreact/sources/dhcp"
)

// Environment variable names, documented in docs/operations.md.
const (
	EnvEvent         = "WANREACT_EVENT"          // up, down, degraded, unknown, active, lease
	EnvWAN           = "WANREACT_WAN"            // the WAN concerned (active: the first active WAN)
	EnvInterface     = "WANREACT_INTERFACE"      // its interface
	EnvTable         = "WANREACT_TABLE"          // its routing table
	EnvState         = "WANREACT_STATE"          // its health now
	EnvPreviousState = "WANREACT_PREVIOUS_STATE" // its health before
	EnvReason        = "WANREACT_REASON"         // why (the reducer's reason, or the DHCP reason)
	EnvActive        = "WANREACT_ACTIVE"         // comma-separated active WANs, best first
	EnvPrevActive    = "WANREACT_PREVIOUS_ACTIVE"
	EnvAddress       = "WANREACT_ADDRESS" // address/prefix, if known
	EnvGateway       = "WANREACT_GATEWAY" // gateway, if known
	EnvTime          = "WANREACT_TIME"    // when the event happened, RFC 3339
)

// Observe turns a decision into hook jobs: one per WAN health transition
// (event = the new state) and one when the active set changed (event
// "active"). It runs on the reactor goroutine: it only formats strings and
// queues, never waits.
func (r *Runner) Observe(e reactor.Event, d reactor.Decision, s *reactor.State) {
	if len(d.Transitions) == 0 && !d.ActiveChanged {
		return
	}
	if !r.Enabled() {
		// Still track the active set, so that the first "active" job
		// after hooks are enabled by a reload has the right "previous".
		if d.ActiveChanged {
			r.lastActive = names(d.Active)
		}
		return
	}
	status := s.Status()
	byName := func(name string) reactor.WANStatus {
		for _, w := range status {
			if w.Name == name {
				return w
			}
		}
		return reactor.WANStatus{Name: name}
	}
	active := names(s.Desired().Active)
	at := e.Time.UTC().Format(time.RFC3339Nano)
	for _, t := range d.Transitions {
		env := wanEnv(string(t.To), byName(t.WAN), at)
		env = append(env, EnvPreviousState+"="+string(t.From), EnvReason+"="+t.Reason, EnvActive+"="+strings.Join(active, ","))
		r.Submit(Job{Key: t.WAN, Event: string(t.To), WAN: t.WAN, Env: env, Queued: e.Time})
	}
	if d.ActiveChanged {
		now := names(d.Active)
		primary := reactor.WANStatus{}
		if len(now) > 0 {
			primary = byName(now[0])
		}
		reasons := make([]string, 0, len(d.Transitions))
		for _, t := range d.Transitions {
			reasons = append(reasons, t.WAN+" "+string(t.To)+": "+t.Reason)
		}
		env := wanEnv("active", primary, at)
		env = append(env, EnvActive+"="+strings.Join(now, ","), EnvPrevActive+"="+strings.Join(r.lastActive, ","),
			EnvReason+"="+strings.Join(reasons, "; "))
		r.lastActive = now
		r.Submit(Job{Key: "active", Event: "active", WAN: primary.Name, Env: env, Queued: e.Time})
	}
}

// ObserveAction is part of the daemon's Observer interface; the kernel
// writers' results start no hooks.
func (r *Runner) ObserveAction(string, int, error, time.Duration) {}

// wanEnv is the environment every job about one WAN has.
func wanEnv(event string, w reactor.WANStatus, at string) []string {
	env := []string{basePath, EnvEvent + "=" + event, EnvTime + "=" + at, EnvWAN + "=" + w.Name, EnvInterface + "=" + w.Interface}
	if w.Table != 0 {
		env = append(env, EnvTable+"="+strconv.Itoa(w.Table))
	}
	if w.State != "" {
		env = append(env, EnvState+"="+string(w.State))
	}
	if w.Address != "" {
		env = append(env, EnvAddress+"="+w.Address)
	}
	if w.Gateway != "" {
		env = append(env, EnvGateway+"="+w.Gateway)
	}
	return env
}

// LeaseHook queues a "lease" job; it has the signature of
// dhcp.Options.OnHook and is called from a DHCP client's goroutine. The
// environment is dhclient-script's (dhcp.HookEnv: reason, interface,
// new_*, old_*) plus WANREACT_EVENT=lease, WANREACT_WAN, WANREACT_INTERFACE,
// WANREACT_REASON (the dhclient reason), WANREACT_ADDRESS and
// WANREACT_GATEWAY (of the new lease) and WANREACT_TIME. WANREACT_STATE is
// absent: the DHCP client does not know the WAN's health.
func (r *Runner) LeaseHook(reason string, old, new *dhcp.Lease) {
	l := new
	if l == nil {
		l = old
	}
	if l == nil {
		return
	}
	w := reactor.WANStatus{Name: l.WAN, Interface: l.Interface}
	if new != nil {
		if new.Address.IsValid() {
			w.Address = new.Address.String()
		}
		if gw := new.Gateway(); gw.IsValid() {
			w.Gateway = gw.String()
		}
	}
	env := wanEnv("lease", w, time.Now().UTC().Format(time.RFC3339Nano))
	env = append(env, EnvReason+"="+reason)
	env = append(env, dhcp.HookEnv(old, new, reason)...)
	r.Submit(Job{Key: l.WAN, Event: "lease", WAN: l.WAN, Env: env, Queued: time.Now()})
}

func names(a []reactor.ActiveMember) []string {
	out := make([]string, len(a))
	for i, m := range a {
		out[i] = m.WAN
	}
	return slices.Clip(out)
}
