package actions

import (
	"errors"
	"fmt"
	"sync"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wanreact/wanreact/reactor"
)

// ConntrackFlusher deletes the connection-tracking entries of one WAN, so
// that long-lived flows pinned to a dead uplink (NATed to its address or
// marked for it) are re-routed on their next packet.
type ConntrackFlusher struct {
	mu   sync.Mutex
	conn *conntrack.Conn
}

// NewConntrackFlusher dials ctnetlink inside ns (0 or -1: the current netns).
func NewConntrackFlusher(ns netns.NsHandle) (*ConntrackFlusher, error) {
	cfg := &netlink.Config{}
	if ns > 0 {
		cfg.NetNS = int(ns)
	}
	c, err := conntrack.Dial(cfg)
	if err != nil {
		return nil, fmt.Errorf("dial ctnetlink: %w", err)
	}
	return &ConntrackFlusher{conn: c}, nil
}

// Close closes the ctnetlink socket.
func (c *ConntrackFlusher) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn.Close()
}

// Flush deletes the IPv4 flows of the WAN described by i: those whose reply
// direction is addressed to the WAN address (forwarded traffic NATed to it),
// those originally sourced from it (router-originated), and, when Mark has
// bits inside Mask, those whose connmark&Mask == Mark. Never a global flush:
// with no valid IPv4 address and no usable mark it deletes nothing. Entries
// that vanish on their own meanwhile are not errors. It returns how many
// entries it deleted.
func (c *ConntrackFlusher) Flush(i reactor.FlushConntrack) (int, error) {
	byAddr := i.Address.IsValid() && i.Address.Addr().Is4()
	byMark := i.Mask != 0 && i.Mark&i.Mask != 0
	if !byAddr && !byMark {
		return 0, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()

	var victims []conntrack.Flow
	seen := map[conntrack.Tuple]bool{}
	collect := func(f conntrack.Flow) {
		if !seen[f.TupleOrig] {
			seen[f.TupleOrig] = true
			victims = append(victims, f)
		}
	}
	if byAddr {
		addr := i.Address.Addr()
		flows, err := c.conn.DumpFilter(conntrack.NewFilter().Family(netfilter.ProtoIPv4), nil)
		if err != nil {
			return 0, fmt.Errorf("dump conntrack for %s: %w", i.WAN, err)
		}
		for _, f := range flows {
			if f.TupleReply.IP.DestinationAddress == addr || f.TupleOrig.IP.SourceAddress == addr {
				collect(f)
			}
		}
	}
	if byMark {
		// The kernel filters by mark, so only matching entries cross the
		// socket.
		flows, err := c.conn.DumpFilter(conntrack.NewFilter().Family(netfilter.ProtoIPv4).Mark(i.Mark&i.Mask).MarkMask(i.Mask), nil)
		if err != nil {
			return 0, fmt.Errorf("dump conntrack by mark for %s: %w", i.WAN, err)
		}
		for _, f := range flows {
			// Double-check: a kernel ignoring the filter must not turn
			// this into a global flush.
			if f.Mark&i.Mask == i.Mark&i.Mask {
				collect(f)
			}
		}
	}

	deleted := 0
	var errs []error
	for _, f := range victims {
		// Only the original tuple (and zone) identify the entry; sending
		// the dumped status, timeout or mark back is pointless.
		err := c.conn.Delete(conntrack.Flow{TupleOrig: f.TupleOrig, Zone: f.Zone})
		switch {
		case err == nil:
			deleted++
		case errors.Is(err, unix.ENOENT):
			// Expired or deleted by someone else since the dump.
		default:
			errs = append(errs, fmt.Errorf("delete conntrack %s: %w", f.TupleOrig, err))
		}
	}
	return deleted, errors.Join(errs...)
}
