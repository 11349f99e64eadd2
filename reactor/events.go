// Package reactor holds wanreact's pure state machine: typed events in,
// state and desired routing out. Nothing here performs a syscall or reads a
// clock: every timestamp arrives inside an event, so replaying a recorded
// event log reproduces the same decisions byte for byte.
package reactor

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/wanreact/wanreact/config"
)

// Event is one thing that happened, as reported by one source. Exactly one
// payload is set; the envelope carries the time and, where the source knows
// it, the WAN name. Sources that only know interface names (netlink) leave WAN
// empty and the reducer resolves it.
type Event struct {
	Time time.Time `json:"time"`
	WAN  string    `json:"wan,omitempty"`
	Data Payload   `json:"-"`
}

// Payload is implemented by every event body. Source and Type name it in the
// event log (see ../shared/spec/interface.md: source is one of link, addr,
// route, rule, wifi, dhcp, probe, reactor, action).
type Payload interface {
	Source() string
	Type() string
}

// LinkChange reports an interface's state (netlink RTM_NEWLINK/DELLINK).
type LinkChange struct {
	Index   int    `json:"index"`
	Name    string `json:"name"`
	AdminUp bool   `json:"admin_up"`
	// Carrier is IFF_LOWER_UP: the physical (or veth peer, or PPP) link.
	Carrier bool `json:"carrier"`
	// OperUp is IF_OPER_UP (or UNKNOWN for drivers that never report it).
	OperUp  bool `json:"oper_up"`
	Deleted bool `json:"deleted,omitempty"`
}

func (LinkChange) Source() string { return "link" }
func (l LinkChange) Type() string {
	switch {
	case l.Deleted:
		return "deleted"
	case l.AdminUp && l.Carrier:
		return "up"
	default:
		return "down"
	}
}

// CarrierChange is a carrier change seen by polling the interface's carrier
// bit, which can be faster than netlink's notification (see sources/carrier).
type CarrierChange struct {
	Name    string `json:"name"`
	Carrier bool   `json:"carrier"`
}

func (CarrierChange) Source() string { return "link" }
func (c CarrierChange) Type() string {
	if c.Carrier {
		return "carrier_on"
	}
	return "carrier_off"
}

// AddrChange reports an IPv4 address added to or removed from an interface.
type AddrChange struct {
	Index   int          `json:"index"`
	Name    string       `json:"name,omitempty"`
	Prefix  netip.Prefix `json:"prefix"`
	Deleted bool         `json:"deleted,omitempty"`
}

func (AddrChange) Source() string { return "addr" }
func (a AddrChange) Type() string {
	if a.Deleted {
		return "removed"
	}
	return "added"
}

// RouteChange reports an IPv4 route change. The netlink source only forwards
// routes that matter: default routes of the main table (to learn an external
// WAN's gateway) and any route in a table the daemon owns (to repair quickly).
type RouteChange struct {
	Table    int          `json:"table"`
	Dst      netip.Prefix `json:"dst"`
	Gateway  netip.Addr   `json:"gateway,omitzero"`
	Index    int          `json:"index,omitempty"`
	Protocol int          `json:"protocol,omitempty"`
	Deleted  bool         `json:"deleted,omitempty"`
}

func (RouteChange) Source() string { return "route" }
func (r RouteChange) Type() string {
	if r.Deleted {
		return "removed"
	}
	return "added"
}

// RuleChange reports an IPv4 policy rule change.
type RuleChange struct {
	Priority int    `json:"priority"`
	Table    int    `json:"table"`
	Mark     uint32 `json:"mark,omitempty"`
	Protocol int    `json:"protocol,omitempty"`
	Deleted  bool   `json:"deleted,omitempty"`
}

func (RuleChange) Source() string { return "rule" }
func (r RuleChange) Type() string {
	if r.Deleted {
		return "removed"
	}
	return "added"
}

// ProbeResult is the outcome of one ICMP echo sent through one WAN: either a
// matching reply (OK, with RTT) or none before the probe's timeout (lost).
// Sources emit exactly one result per probe sent.
type ProbeResult struct {
	Target netip.Addr    `json:"target"`
	Seq    uint16        `json:"seq"`
	OK     bool          `json:"ok"`
	RTT    time.Duration `json:"rtt_ns,omitempty"`
	// Err is set when the probe could not be sent at all (no route, link
	// gone); it counts as lost.
	Err string `json:"err,omitempty"`
}

func (ProbeResult) Source() string { return "probe" }
func (p ProbeResult) Type() string {
	if p.OK {
		return "reply"
	}
	return "lost"
}

// LeaseChange is emitted by the DHCP client of a WAN with addressing: dhcp.
type LeaseChange struct {
	// Kind is one of "bound", "renewed", "expired", "nak", "released".
	Kind    string        `json:"kind"`
	Prefix  netip.Prefix  `json:"prefix,omitzero"`
	Gateway netip.Addr    `json:"gateway,omitzero"`
	Server  netip.Addr    `json:"server,omitzero"`
	DNS     []netip.Addr  `json:"dns,omitempty"`
	MTU     int           `json:"mtu,omitempty"`
	Routes  []StaticRoute `json:"routes,omitempty"` // option 121
	Lease   time.Duration `json:"lease_ns,omitempty"`
	Expiry  time.Time     `json:"expiry,omitzero"`
}

// StaticRoute is one classless static route (DHCP option 121).
type StaticRoute struct {
	Dst     netip.Prefix `json:"dst"`
	Gateway netip.Addr   `json:"gateway,omitzero"`
}

func (LeaseChange) Source() string { return "dhcp" }
func (l LeaseChange) Type() string { return l.Kind }

// WifiChange is emitted by the nl80211 source for a Wi-Fi WAN interface.
type WifiChange struct {
	Index int    `json:"index"`
	Name  string `json:"name,omitempty"`
	// Kind is one of "connected", "disconnected", "signal" (a CQM threshold
	// crossing or a poll), "beacon_loss", "packet_loss", "roamed".
	Kind      string `json:"kind"`
	SSID      string `json:"ssid,omitempty"`
	BSSID     string `json:"bssid,omitempty"`
	Frequency int    `json:"freq_mhz,omitempty"`
	// Signal in dBm; 0 means unknown.
	Signal  int    `json:"signal_dbm,omitempty"`
	Bitrate int    `json:"bitrate_kbps,omitempty"`
	Reason  int    `json:"reason,omitempty"`
	Detail  string `json:"detail,omitempty"`
}

func (WifiChange) Source() string { return "wifi" }
func (w WifiChange) Type() string { return w.Kind }

// ConfigLoaded starts every event log and follows every successful reload, so
// that a replay knows the configuration each decision was made under.
type ConfigLoaded struct {
	Config config.Config `json:"config"`
}

func (ConfigLoaded) Source() string { return "reactor" }
func (ConfigLoaded) Type() string   { return "config" }

// Synced tells the reducer that the link and address sources have reported
// the kernel's existing state; it makes no decision before that.
type Synced struct{}

func (Synced) Source() string { return "reactor" }
func (Synced) Type() string   { return "synced" }

// payloadFor maps the (source, type) pair of a logged line back to a payload
// value, so that event logs round-trip through JSON.
func payloadFor(source, typ string) (Payload, error) {
	switch source {
	case "link":
		if typ == "carrier_on" || typ == "carrier_off" {
			return &CarrierChange{}, nil
		}
		return &LinkChange{}, nil
	case "addr":
		return &AddrChange{}, nil
	case "route":
		return &RouteChange{}, nil
	case "rule":
		return &RuleChange{}, nil
	case "probe":
		return &ProbeResult{}, nil
	case "dhcp":
		return &LeaseChange{}, nil
	case "wifi":
		return &WifiChange{}, nil
	case "reactor":
		switch typ {
		case "config":
			return &ConfigLoaded{}, nil
		case "synced":
			return &Synced{}, nil
		}
	}
	return nil, fmt.Errorf("unknown event %s/%s", source, typ)
}

type eventHeader struct {
	Time   time.Time       `json:"time"`
	Source string          `json:"source"`
	Type   string          `json:"type"`
	WAN    string          `json:"wan,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
}

// MarshalJSON writes the event as one event-log object:
// {"time":…,"source":…,"type":…,"wan":…,"data":{…}}.
func (e Event) MarshalJSON() ([]byte, error) {
	if e.Data == nil {
		return nil, fmt.Errorf("event without payload")
	}
	d, err := json.Marshal(e.Data)
	if err != nil {
		return nil, err
	}
	return json.Marshal(eventHeader{Time: e.Time.UTC(), Source: e.Data.Source(), Type: e.Data.Type(), WAN: e.WAN, Data: d})
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (e *Event) UnmarshalJSON(b []byte) error {
	var h eventHeader
	if err := json.Unmarshal(b, &h); err != nil {
		return err
	}
	p, err := payloadFor(h.Source, h.Type)
	if err != nil {
		return err
	}
	if len(h.Data) > 0 {
		if err := json.Unmarshal(h.Data, p); err != nil {
			return fmt.Errorf("%s/%s: %w", h.Source, h.Type, err)
		}
	}
	e.Time, e.WAN = h.Time, h.WAN
	// Store values, not pointers, so that type switches in the reducer see
	// the same dynamic types whether an event came from a source or a log.
	switch v := p.(type) {
	case *LinkChange:
		e.Data = *v
	case *CarrierChange:
		e.Data = *v
	case *AddrChange:
		e.Data = *v
	case *RouteChange:
		e.Data = *v
	case *RuleChange:
		e.Data = *v
	case *ProbeResult:
		e.Data = *v
	case *LeaseChange:
		e.Data = *v
	case *WifiChange:
		e.Data = *v
	case *ConfigLoaded:
		e.Data = *v
	case *Synced:
		e.Data = *v
	}
	return nil
}
