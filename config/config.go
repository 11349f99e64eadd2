// Package config defines wanreact's configuration and parses it from strict
// YAML, reporting every problem as FILE:LINE:COL.
package config

import (
	"net/netip"
	"time"
)

// Config is the whole configuration. It is also logged (as JSON) at the start
// of every event log so that a replay runs under the same settings.
type Config struct {
	ControlSocket string `json:"control_socket"`
	EventLog      string `json:"event_log,omitempty"`
	MetricsListen string `json:"metrics_listen,omitempty"`
	// StateDir keeps what must survive a restart (DHCP leases).
	StateDir string   `json:"state_dir"`
	LAN      []string `json:"lan,omitempty"`
	Routing  Routing  `json:"routing"`
	WANs     []WAN    `json:"wans"`
	// ControlGroup, EventLogMaxSize and Hooks are operations settings;
	// see ops.go.
	ControlGroup    string `json:"control_group,omitempty"`
	EventLogMaxSize int64  `json:"event_log_max_size,omitempty"`
	Hooks           Hooks  `json:"hooks"`
}

// Routing holds the numbers the daemon uses in the kernel, so that they can be
// moved out of the way of other software.
type Routing struct {
	// ActiveTable holds the default route(s) of the WAN(s) currently carrying
	// new connections. Default 200.
	ActiveTable int `json:"active_table"`
	// RulePriority is the first policy-rule priority the daemon uses; it uses
	// a block of 300 from there. Default 10000.
	RulePriority int `json:"rule_priority"`
	// MarkMask selects the fwmark bits the daemon owns. Default 0xff00.
	MarkMask uint32 `json:"mark_mask"`
	// Slots is the number of balancing slots new connections are spread
	// over (see reactor.Desired.Slots); 0 turns balancing off. Default
	// DefaultSlots when lan: lists an interface, else 0.
	Slots int `json:"slots,omitempty"`
	// SlotTable is the first slot routing table: slot s routes through
	// table SlotTable+s. Default DefaultSlotTable.
	SlotTable int `json:"slot_table,omitempty"`
}

// Addressing modes.
const (
	Static   = "static"
	DHCP     = "dhcp"
	External = "external"
)

// WAN is one uplink.
type WAN struct {
	Name       string       `json:"name"`
	Interface  string       `json:"interface"`
	Table      int          `json:"table"`
	Priority   int          `json:"priority"`
	Weight     int          `json:"weight"`
	Addressing string       `json:"addressing"`
	Address    netip.Prefix `json:"address,omitzero"`
	Gateway    netip.Addr   `json:"gateway,omitzero"`
	Probe      Probe        `json:"probe"`
	Wifi       *Wifi        `json:"wifi,omitempty"`
	// DHCPOptions tunes the built-in DHCP client (addressing: dhcp).
	DHCPOptions *DHCPOptions `json:"dhcp,omitempty"`
	// NAT makes the daemon masquerade everything leaving through this
	// WAN (its own nat chain; see docs/balancing.md). Off by default:
	// most routers already have a MASQUERADE rule of their own.
	NAT bool `json:"nat,omitempty"`
}

// DHCPOptions configures the DHCPv4 client of a WAN.
type DHCPOptions struct {
	Hostname string `json:"hostname,omitempty"`
	ClientID string `json:"client_id,omitempty"`
	// Release sends DHCPRELEASE when the daemon stops (off by default: a
	// restart must not take the address down).
	Release bool `json:"release,omitempty"`
}

// Probe configures the ICMP prober of one WAN and the health rule fed by it.
type Probe struct {
	Targets  []netip.Addr  `json:"targets"`
	Interval time.Duration `json:"interval"`
	Timeout  time.Duration `json:"timeout"`
	// DownAfter consecutive lost probes (counted across all targets) declare
	// the WAN down. Default: the number of probes sent in 700ms, at least 3.
	DownAfter int `json:"down_after"`
	// UpAfter consecutive replies bring a WAN that is down (or not yet
	// known) up. Default 5.
	UpAfter int `json:"up_after"`
	// Window is the number of recent probes per target over which loss and
	// RTT are measured. Default 50.
	Window int `json:"window"`
	// DegradedLoss (percent) of the pooled windows of the live targets
	// marks the WAN degraded; it is up again below RecoverLoss. Defaults
	// 20 and 8.
	DegradedLoss float64 `json:"degraded_loss"`
	RecoverLoss  float64 `json:"recover_loss"`
	// DegradedRTT marks the WAN degraded when the pooled average RTT
	// exceeds it (0: never). Recovery below 80% of it.
	DegradedRTT time.Duration `json:"degraded_rtt,omitempty"`
}

// Wifi holds the settings of an nl80211 WAN.
type Wifi struct {
	// MinSignal in dBm: below it the WAN is degraded.
	MinSignal int `json:"min_signal"`
	// Hysteresis in dB around MinSignal for CQM and for recovery. Default 4.
	Hysteresis int `json:"hysteresis"`
}

// Defaults.
const (
	DefaultControlSocket = "/run/wanreact/wanreact.sock"
	DefaultStateDir      = "/var/lib/wanreact"
	DefaultActiveTable   = 200
	DefaultRulePriority  = 10000
	DefaultMarkMask      = 0xff00
	DefaultInterval      = 200 * time.Millisecond
	DefaultTimeout       = 250 * time.Millisecond
	DefaultUpAfter       = 5
	DefaultWindow        = 50
	DefaultDegradedLoss  = 20
	DefaultRecoverLoss   = 8
	DefaultHysteresis    = 4
	// downAfterSpan is how much probing time's worth of consecutive losses
	// declares a WAN down when down_after is not set.
	downAfterSpan = 700 * time.Millisecond
)

// DefaultDownAfter is the number of probes sent through a WAN in 700ms,
// at least 3: with 2 targets at 200ms, 7. With the default timeout (250ms)
// a silent outage is declared (7-1)*100ms + 250ms = 0.85-0.95 s after it
// began (docs/health.md).
func DefaultDownAfter(targets int, interval time.Duration) int {
	if targets < 1 || interval <= 0 {
		return 3
	}
	n := int(downAfterSpan * time.Duration(targets) / interval)
	if n < 3 {
		n = 3
	}
	return n
}
