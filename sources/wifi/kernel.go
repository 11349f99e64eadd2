package wifi

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/wifi"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// errNoNL80211 means the kernel has no nl80211 family (no cfg80211): not an
// error for the daemon, just a machine without Wi-Fi.
var errNoNL80211 = errors.New("nl80211 generic netlink family not found")

// eventConn is the receiving side of the multicast socket; *genetlink.Conn
// implements it, tests substitute a genltest connection.
type eventConn interface {
	Receive() ([]genetlink.Message, []netlink.Message, error)
	Close() error
}

// querier reads interface, BSS and station info; *wifi.Client implements it.
type querier interface {
	Interfaces() ([]*wifi.Interface, error)
	BSS(*wifi.Interface) (*wifi.BSS, error)
	StationInfo(*wifi.Interface) ([]*wifi.StationInfo, error)
	Close() error
}

// kernel bundles the three nl80211 sockets the source uses. They are
// separate because a socket joined to multicast groups cannot also carry
// request/response exchanges (multicast messages would interleave with the
// replies), and mdlayher/wifi does not expose its socket for SET_CQM.
type kernel struct {
	events eventConn
	cmds   *genetlink.Conn
	family genetlink.Family
	query  querier
}

func (k *kernel) close() {
	// Closing events first unblocks the receiving goroutine.
	_ = k.events.Close()
	_ = k.cmds.Close()
	_ = k.query.Close()
}

// eventReadBuffer is the multicast socket's receive buffer: nl80211 "mlme"
// traffic is a handful of messages per association change, so this only
// guards against a burst (scan results do not go to these groups).
const eventReadBuffer = 256 << 10

// dialKernel opens the sockets in network namespace ns (<= 0: the current
// one) and joins the nl80211 "mlme" group (connect, disconnect, deauth,
// disassoc, roam, CQM) and "config" group (interfaces created, deleted or
// changed, to follow a Wi-Fi dongle plugged in after start). The "scan"
// group is not joined: scan results carry nothing the reducer needs and
// would only add traffic.
func dialKernel(ns netns.NsHandle) (k *kernel, err error) {
	cfg := &netlink.Config{}
	if ns > 0 {
		cfg.NetNS = int(ns)
	}
	var closers []func() error
	defer func() {
		if err != nil {
			for _, c := range closers {
				_ = c()
			}
		}
	}()

	ev, err := genetlink.Dial(cfg)
	if err != nil {
		return nil, fmt.Errorf("dialing generic netlink: %w", err)
	}
	closers = append(closers, ev.Close)
	// Asking for the family by name makes the kernel try to load cfg80211
	// (MODULE_ALIAS_GENL_FAMILY), so not found really means no Wi-Fi.
	fam, err := ev.GetFamily(unix.NL80211_GENL_NAME)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %v", errNoNL80211, err)
		}
		return nil, fmt.Errorf("looking up nl80211 family: %w", err)
	}
	mlme := false
	for _, g := range fam.Groups {
		if g.Name != unix.NL80211_MULTICAST_GROUP_MLME && g.Name != unix.NL80211_MULTICAST_GROUP_CONFIG {
			continue
		}
		if err := ev.JoinGroup(g.ID); err != nil {
			return nil, fmt.Errorf("joining nl80211 multicast group %q: %w", g.Name, err)
		}
		mlme = mlme || g.Name == unix.NL80211_MULTICAST_GROUP_MLME
	}
	if !mlme {
		return nil, fmt.Errorf("nl80211 family has no %q multicast group", unix.NL80211_MULTICAST_GROUP_MLME)
	}
	_ = ev.SetReadBuffer(eventReadBuffer) // best effort: the default works too

	cmds, err := genetlink.Dial(cfg)
	if err != nil {
		return nil, fmt.Errorf("dialing generic netlink for commands: %w", err)
	}
	closers = append(closers, cmds.Close)
	// Extended acks make a refused SET_CQM come back with the kernel's
	// reason text; older kernels lack the option, which is harmless.
	_ = cmds.SetOption(netlink.ExtendedAcknowledge, true)

	q, err := newWifiClient(ns)
	if err != nil {
		return nil, fmt.Errorf("opening nl80211 query client: %w", err)
	}
	return &kernel{events: ev, cmds: cmds, family: fam, query: q}, nil
}

// newWifiClient creates a mdlayher/wifi client whose socket lives in ns.
// wifi.New has no namespace option, but a socket belongs to the namespace of
// the thread that created it, so the client is created on a locked thread
// switched into ns and the thread is switched back afterwards.
func newWifiClient(ns netns.NsHandle) (*wifi.Client, error) {
	if ns <= 0 {
		return wifi.New()
	}
	type result struct {
		c   *wifi.Client
		err error
	}
	done := make(chan result, 1)
	// A fresh goroutine, so that if restoring the namespace fails we can
	// return without unlocking: the runtime then discards the thread
	// instead of reusing it in the wrong namespace.
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("reading current netns: %w", err)}
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("entering netns: %w", err)}
			return
		}
		c, err := wifi.New()
		if rerr := netns.Set(orig); rerr != nil {
			if c != nil {
				_ = c.Close()
			}
			done <- result{err: fmt.Errorf("restoring netns: %w", rerr)}
			return // thread stays locked and dies with the goroutine
		}
		runtime.UnlockOSThread()
		done <- result{c: c, err: err}
	}()
	r := <-done
	return r.c, r.err
}
