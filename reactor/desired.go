package reactor

import (
	"net/netip"
)

// Desired is the routing the kernel should have. The actions package turns it
// into rules and routes and reconciles level-triggered: it diffs Desired
// against the kernel and repairs whatever differs, whenever Desired changes
// and periodically.
type Desired struct {
	// ActiveTable, RulePriority and MarkMask are copied from the config.
	ActiveTable  int          `json:"active_table"`
	RulePriority int          `json:"rule_priority"`
	MarkMask     uint32       `json:"mark_mask"`
	WANs         []WANRouting `json:"wans"`
	// Active lists the WANs carrying new connections, best first. Empty
	// means no WAN can carry traffic: the active table is left empty and
	// the main table's own default route (if any) applies.
	Active []ActiveMember `json:"active"`
	// Slots spreads new connections over the active WANs by weight: the
	// firewall gives each new connection one of len(Slots) slot marks at
	// random, and slot s's routing table points at WAN Slots[s]. Only
	// these routes change on failover; the firewall rules never do.
	// Empty when balancing is off (routing.slots: 0).
	Slots []string `json:"slots,omitempty"`
}

// WANRouting is what one WAN needs in the kernel regardless of health: its
// own table (connected route + default route) and the rules steering its
// own traffic (probes via fwmark, packets sourced from its address) into it.
type WANRouting struct {
	Name      string `json:"name"`
	Interface string `json:"interface"`
	Index     int    `json:"index,omitempty"` // 0 while the link is absent
	Table     int    `json:"table"`
	// Mark is this WAN's fwmark value (within MarkMask): probes carry it
	// (SO_MARK) and, with balancing, connections pinned to the WAN.
	Mark uint32 `json:"mark"`
	// Address is the WAN's IPv4 address and prefix; invalid while unknown.
	Address netip.Prefix `json:"address,omitzero"`
	// Gateway is invalid for point-to-point links (PPP): the default route
	// then goes straight out of the interface.
	Gateway netip.Addr `json:"gateway,omitzero"`
	// Ready is true when the link is up and an address is known, i.e. the
	// table's routes can be installed.
	Ready bool `json:"ready"`
	// ManageAddress is true for addressing: static (and dhcp): the daemon
	// puts Address on the interface itself.
	ManageAddress bool `json:"manage_address,omitempty"`
	// ExtraRoutes are installed in the WAN's table too (DHCP option 121).
	ExtraRoutes []StaticRoute `json:"extra_routes,omitempty"`
}

// ActiveMember is one WAN of the active set with its share of new connections.
type ActiveMember struct {
	WAN    string `json:"wan"`
	Weight int    `json:"weight"`
}

// Intent is a one-shot action the reducer asks for, in addition to the
// level-triggered Desired routing.
type Intent interface {
	Kind() string
}

// FlushConntrack asks to delete the connection-tracking entries pinned to a
// WAN that stopped carrying traffic (by its address and, with balancing, its
// mark), so long-lived flows (VoIP, WireGuard) re-route instead of being stuck
// to a dead uplink. Never a global flush.
type FlushConntrack struct {
	WAN     string       `json:"wan"`
	Address netip.Prefix `json:"address,omitzero"`
	Mark    uint32       `json:"mark,omitempty"`
	Mask    uint32       `json:"mask,omitempty"`
	Reason  string       `json:"reason"`
}

func (FlushConntrack) Kind() string { return "flush_conntrack" }

// Reconcile asks the routing writer to resync now (not at its next period),
// e.g. because a rule or route of ours was deleted by someone else.
type Reconcile struct {
	Reason string `json:"reason"`
}

func (Reconcile) Kind() string { return "reconcile" }

// Transition records a WAN's health change, for the log, status and hooks.
type Transition struct {
	WAN    string `json:"wan"`
	From   Health `json:"from"`
	To     Health `json:"to"`
	Reason string `json:"reason"`
}

// Decision is what one event produced.
type Decision struct {
	// Transitions of WAN health caused by the event.
	Transitions []Transition `json:"transitions,omitempty"`
	// ActiveChanged is true when the active set changed; Active is then the
	// new one.
	ActiveChanged bool           `json:"active_changed,omitempty"`
	Active        []ActiveMember `json:"active,omitempty"`
	// DesiredChanged is true when Desired differs from before the event.
	DesiredChanged bool     `json:"desired_changed,omitempty"`
	Intents        []Intent `json:"-"`
}

// Empty reports whether the event changed nothing visible.
func (d Decision) Empty() bool {
	return len(d.Transitions) == 0 && !d.ActiveChanged && !d.DesiredChanged && len(d.Intents) == 0
}
