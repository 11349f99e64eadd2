package daemon

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/wanreact/wanreact/actions"
	"github.com/wanreact/wanreact/actions/firewall"
	"github.com/wanreact/wanreact/config"
)

// Cleanup removes every rule, route and firewall chain wanreact installed
// for cfg, in the current network namespace (`wanreact cleanup`, for
// uninstalling). The firewall goes first: without its marks nothing uses
// the slot tables any more. A nil cfg (config lost or broken) still removes
// everything tagged as ours (proto 87 rules and routes, WANREACT_* chains);
// only foreign routes inside our tables are then left alone.
func Cleanup(cfg *config.Config, report func(string)) error {
	fwErr := firewall.Remove(firewall.Options{}, report)
	h, err := netlink.NewHandle()
	if err != nil {
		return errors.Join(fwErr, fmt.Errorf("netlink: %w", err))
	}
	defer h.Close()
	var tables []int
	if cfg != nil {
		tables = append(tables, cfg.Routing.ActiveTable)
		for _, w := range cfg.WANs {
			tables = append(tables, w.Table)
		}
		tables = append(tables, actions.SlotConfigFrom(*cfg).Tables()...)
	}
	return errors.Join(fwErr, actions.Cleanup(h, tables, report))
}
