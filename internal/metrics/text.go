package metrics

import (
	"bytes"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wanreact/wanreact/reactor"
)

// family starts a metric family: HELP and TYPE lines.
func family(b []byte, name, typ, help string) []byte {
	b = append(b, "# HELP "...)
	b = append(b, name...)
	b = append(b, ' ')
	b = append(b, escapeHelp(help)...)
	b = append(b, "\n# TYPE "...)
	b = append(b, name...)
	b = append(b, ' ')
	b = append(b, typ...)
	return append(b, '\n')
}

// sample writes one sample; labels alternate name, value.
func sample(b []byte, name string, v float64, labels ...string) []byte {
	b = append(b, name...)
	if len(labels) > 0 {
		b = append(b, '{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, labels[i]...)
			b = append(b, `="`...)
			b = append(b, escapeLabel(labels[i+1])...)
			b = append(b, '"')
		}
		b = append(b, '}')
	}
	b = append(b, ' ')
	b = strconv.AppendFloat(b, v, 'g', -1, 64)
	return append(b, '\n')
}

var (
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

func escapeLabel(s string) string { return labelEscaper.Replace(s) }
func escapeHelp(s string) string  { return helpEscaper.Replace(s) }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// sortedKeys returns a map's keys in order, for a stable output.
func sortedKeys[K interface{ ~string | ~[2]string }, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b K) int {
		return strings.Compare(keyString(a), keyString(b))
	})
	return keys
}

func keyString[K interface{ ~string | ~[2]string }](k K) string {
	switch v := any(k).(type) {
	case string:
		return v
	case [2]string:
		return v[0] + "\x00" + v[1]
	}
	return ""
}

var healthStates = []reactor.Health{reactor.Up, reactor.Degraded, reactor.Down, reactor.Unknown}

// appendText renders every metric. st is the status snapshot (valid when
// reactorOK), rtt the time the reactor took to answer.
func (m *Metrics) appendText(b []byte, st []reactor.WANStatus, rtt time.Duration, reactorOK bool) []byte {
	b = family(b, "wanreact_build_info", "gauge", "Always 1; the labels say which wanreact runs.")
	b = sample(b, "wanreact_build_info", 1, "version", m.o.Version, "goversion", runtime.Version())

	b = family(b, "wanreact_reactor_up", "gauge", "1 when the reactor loop answered this scrape's status request in time.")
	b = sample(b, "wanreact_reactor_up", b2f(reactorOK))
	if reactorOK {
		b = family(b, "wanreact_reactor_response_seconds", "gauge", "Time the reactor loop took to answer this scrape's status request.")
		b = sample(b, "wanreact_reactor_response_seconds", rtt.Seconds())
		b = m.appendWANs(b, st)
	}

	m.mu.Lock()
	b = family(b, "wanreact_events_total", "counter", "Events applied by the reducer, by source.")
	for _, k := range sortedKeys(m.events) {
		b = sample(b, "wanreact_events_total", float64(m.events[k]), "source", k)
	}
	b = family(b, "wanreact_probes_total", "counter", "ICMP probes through each WAN, by result (reply or lost).")
	for _, k := range sortedKeys(m.probes) {
		b = sample(b, "wanreact_probes_total", float64(m.probes[k]), "wan", k[0], "result", k[1])
	}
	b = family(b, "wanreact_wan_transitions_total", "counter", "Health changes of each WAN, by the state entered.")
	for _, k := range sortedKeys(m.transitions) {
		b = sample(b, "wanreact_wan_transitions_total", float64(m.transitions[k]), "wan", k[0], "state", k[1])
	}
	b = family(b, "wanreact_active_changes_total", "counter", "Changes of the set of WANs carrying new connections.")
	b = sample(b, "wanreact_active_changes_total", float64(m.activeChanges))
	b = family(b, "wanreact_failovers_total", "counter", "Active-set changes that took traffic off a WAN.")
	b = sample(b, "wanreact_failovers_total", float64(m.failovers))
	b = family(b, "wanreact_dhcp_lease_remaining_seconds", "gauge", "Time until each WAN's DHCP lease expires unless renewed.")
	now := m.o.Now()
	for _, w := range sortedKeys(m.leaseExpiry) {
		b = sample(b, "wanreact_dhcp_lease_remaining_seconds", max(m.leaseExpiry[w].Sub(now).Seconds(), 0), "wan", w)
	}
	b = family(b, "wanreact_actions_total", "counter", "Kernel writer passes (routing reconcile, conntrack flush), by result.")
	for _, k := range sortedKeys(m.actions) {
		b = sample(b, "wanreact_actions_total", float64(m.actions[k]), "kind", k[0], "result", k[1])
	}
	b = family(b, "wanreact_action_changes_total", "counter", "Kernel objects changed by the writers (rules and routes; conntrack entries deleted).")
	for _, k := range sortedKeys(m.actionChanges) {
		b = sample(b, "wanreact_action_changes_total", float64(m.actionChanges[k]), "kind", k)
	}
	b = family(b, "wanreact_action_duration_seconds", "summary", "Time the kernel writers took.")
	for _, k := range sortedKeys(m.actionSecs) {
		var n uint64
		for _, r := range []string{"ok", "error"} {
			n += m.actions[[2]string{k, r}]
		}
		b = sample(b, "wanreact_action_duration_seconds_sum", m.actionSecs[k], "kind", k)
		b = sample(b, "wanreact_action_duration_seconds_count", float64(n), "kind", k)
	}
	b = family(b, "wanreact_hooks_total", "counter", "Hook runs by event and result (ok, failed, timeout, dropped).")
	for _, k := range sortedKeys(m.hooks) {
		b = sample(b, "wanreact_hooks_total", float64(m.hooks[k]), "event", k[0], "result", k[1])
	}
	m.mu.Unlock()
	return appendProcess(b)
}

func (m *Metrics) appendWANs(b []byte, st []reactor.WANStatus) []byte {
	b = family(b, "wanreact_wan_state", "gauge", "1 for each WAN's current health (up, degraded, down, unknown), 0 for the others.")
	for _, w := range st {
		for _, h := range healthStates {
			b = sample(b, "wanreact_wan_state", b2f(w.State == h), "wan", w.Name, "interface", w.Interface, "state", string(h))
		}
	}
	b = family(b, "wanreact_wan_active", "gauge", "1 when the WAN carries new connections.")
	for _, w := range st {
		b = sample(b, "wanreact_wan_active", b2f(w.Active), "wan", w.Name)
	}
	b = family(b, "wanreact_wan_carrier", "gauge", "1 when the WAN's interface has carrier.")
	for _, w := range st {
		b = sample(b, "wanreact_wan_carrier", b2f(w.Carrier), "wan", w.Name)
	}
	b = family(b, "wanreact_wan_rtt_seconds", "gauge", "Average probe round-trip time over the WAN's windows (live targets pooled).")
	for _, w := range st {
		b = sample(b, "wanreact_wan_rtt_seconds", w.RTTms/1000, "wan", w.Name)
	}
	b = family(b, "wanreact_wan_loss_ratio", "gauge", "Probe loss (0 to 1) over the WAN's windows (live targets pooled).")
	for _, w := range st {
		b = sample(b, "wanreact_wan_loss_ratio", w.Loss, "wan", w.Name)
	}
	b = family(b, "wanreact_wan_state_since_seconds", "gauge", "Unix time at which the WAN entered its current state.")
	for _, w := range st {
		if !w.Since.IsZero() {
			b = sample(b, "wanreact_wan_state_since_seconds", float64(w.Since.UnixNano())/1e9, "wan", w.Name)
		}
	}
	b = family(b, "wanreact_wifi_signal_dbm", "gauge", "Signal of Wi-Fi WANs, in dBm.")
	for _, w := range st {
		if w.Signal != 0 {
			b = sample(b, "wanreact_wifi_signal_dbm", float64(w.Signal), "wan", w.Name)
		}
	}
	return b
}

var (
	processStart = time.Now()
	runtimeKeys  = []metrics.Sample{
		{Name: "/sched/goroutines:goroutines"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/gc/cycles/total:gc-cycles"},
	}
)

// appendProcess writes the few process metrics worth having on a router:
// memory, CPU, descriptors, goroutines. They come from /proc, getrusage and
// runtime/metrics, none of which stops the world.
func appendProcess(b []byte) []byte {
	b = family(b, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.")
	b = sample(b, "process_start_time_seconds", float64(processStart.Unix()))
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		b = family(b, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.")
		b = sample(b, "process_cpu_seconds_total", cpu.Seconds())
	}
	if rss, ok := residentBytes(); ok {
		b = family(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
		b = sample(b, "process_resident_memory_bytes", float64(rss))
	}
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		b = family(b, "process_open_fds", "gauge", "Number of open file descriptors.")
		b = sample(b, "process_open_fds", float64(len(ents)))
	}
	s := slices.Clone(runtimeKeys)
	metrics.Read(s)
	val := func(i int) float64 {
		if s[i].Value.Kind() == metrics.KindUint64 {
			return float64(s[i].Value.Uint64())
		}
		return 0
	}
	b = family(b, "go_goroutines", "gauge", "Number of goroutines that currently exist.")
	b = sample(b, "go_goroutines", val(0))
	b = family(b, "go_heap_objects_bytes", "gauge", "Memory occupied by live and not yet swept heap objects.")
	b = sample(b, "go_heap_objects_bytes", val(1))
	b = family(b, "go_memory_total_bytes", "gauge", "All memory mapped by the Go runtime.")
	b = sample(b, "go_memory_total_bytes", val(2))
	b = family(b, "go_gc_cycles_total", "counter", "Completed GC cycles.")
	b = sample(b, "go_gc_cycles_total", val(3))
	return b
}

// residentBytes reads the RSS from /proc/self/statm (pages).
func residentBytes() (int64, bool) {
	raw, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, false
	}
	f := bytes.Fields(raw)
	if len(f) < 2 {
		return 0, false
	}
	pages, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil {
		return 0, false
	}
	return pages * int64(os.Getpagesize()), true
}
