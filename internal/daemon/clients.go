package daemon

import (
	"context"
	"log/slog"
	"sync"

	"github.com/wanreact/wanreact/config"
	"github.com/wanreact/wanreact/reactor"
	"github.com/wanreact/wanreact/sources/dhcp"
	"github.com/wanreact/wanreact/sources/wifi"
)

// dhcpClients runs one DHCP client per WAN with addressing: dhcp, restarting
// only the clients whose settings a reload changed.
type dhcpClients struct {
	ctx      context.Context
	log      *slog.Logger
	emit     func(reactor.Event)
	stateDir string
	wg       sync.WaitGroup

	mu      sync.Mutex
	clients map[string]*dhcpClient // by WAN name
	// onHook runs the user's lease hooks (see ops.go); set before set().
	onHook func(reason string, old, new *dhcp.Lease)
}

type dhcpClient struct {
	c      *dhcp.Client
	cfg    config.WAN
	cancel context.CancelFunc
}

func newDHCPClients(ctx context.Context, log *slog.Logger, emit func(reactor.Event)) *dhcpClients {
	return &dhcpClients{ctx: ctx, log: log, emit: emit, clients: map[string]*dhcpClient{}}
}

// set starts, keeps or stops clients to match cfg. linkUp tells a new client
// the current state of its link (nil at start, when netlink's initial dump
// will tell it).
func (m *dhcpClients) set(cfg *config.Config, linkUp func(string) bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[string]config.WAN{}
	for _, w := range cfg.WANs {
		if w.Addressing == config.DHCP {
			want[w.Name] = w
		}
	}
	for name, c := range m.clients {
		if w, ok := want[name]; !ok || !sameDHCP(w, c.cfg) || cfg.StateDir != m.stateDir {
			c.cancel()
			delete(m.clients, name)
		}
	}
	m.stateDir = cfg.StateDir
	for name, w := range want {
		if m.clients[name] != nil {
			continue
		}
		o := dhcp.Options{WAN: w.Name, Interface: w.Interface, Logger: m.log.With("component", "dhcp"), OnHook: m.onHook}
		if cfg.StateDir != "" {
			o.LeaseDir = cfg.StateDir + "/leases"
		}
		if w.DHCPOptions != nil {
			o.Hostname, o.Release = w.DHCPOptions.Hostname, w.DHCPOptions.Release
			if w.DHCPOptions.ClientID != "" {
				o.ClientID = []byte(w.DHCPOptions.ClientID)
			}
		}
		c, err := dhcp.New(o)
		if err != nil {
			m.log.Error("dhcp client not started", "wan", name, "err", err)
			continue
		}
		ctx, cancel := context.WithCancel(m.ctx)
		m.clients[name] = &dhcpClient{c: c, cfg: w, cancel: cancel}
		if linkUp != nil {
			c.LinkChanged(linkUp(w.Interface))
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			if err := c.Run(ctx, m.emit); err != nil && ctx.Err() == nil {
				m.log.Error("dhcp client stopped", "wan", name, "err", err)
			}
		}()
	}
}

func sameDHCP(a, b config.WAN) bool {
	if a.Interface != b.Interface || (a.DHCPOptions == nil) != (b.DHCPOptions == nil) {
		return false
	}
	return a.DHCPOptions == nil || *a.DHCPOptions == *b.DHCPOptions
}

// observe forwards what the DHCP clients must react to: the link of their
// interface (up after down means INIT-REBOOT) and Wi-Fi reassociation.
func (m *dhcpClients) observe(e reactor.Event, s *reactor.State) {
	var iface string
	switch p := e.Data.(type) {
	case reactor.LinkChange:
		iface = p.Name
	case reactor.CarrierChange:
		iface = p.Name
	case reactor.WifiChange:
		if p.Kind == "connected" || p.Kind == "roamed" {
			m.mu.Lock()
			if c := m.clients[e.WAN]; c != nil {
				c.c.Revalidate()
			}
			m.mu.Unlock()
		}
		return
	default:
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.clients {
		if c.cfg.Interface == iface {
			// Operationally up, not just carrier: until then the
			// kernel drops what the client would send.
			c.c.LinkChanged(s.LinkUp(iface))
		}
	}
}

// status returns each client's lease state, by WAN.
func (m *dhcpClients) status() map[string]dhcp.LeaseStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]dhcp.LeaseStatus{}
	for name, c := range m.clients {
		out[name] = c.c.Status()
	}
	return out
}

func (m *dhcpClients) wait() { m.wg.Wait() }

// wifiInterfaces lists the WANs with a wifi: section for the nl80211 source.
func wifiInterfaces(cfg *config.Config) []wifi.Interface {
	var out []wifi.Interface
	for _, w := range cfg.WANs {
		if w.Wifi != nil {
			out = append(out, wifi.Interface{WAN: w.Name, Name: w.Interface, MinSignal: w.Wifi.MinSignal, Hysteresis: w.Wifi.Hysteresis})
		}
	}
	return out
}
