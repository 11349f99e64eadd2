package daemon

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/wanreact/wanreact/actions"
	"github.com/wanreact/wanreact/config"
)

// Cleanup removes every rule and route wanreact installed for cfg, in the
// current network namespace (`wanreact cleanup`, for uninstalling).
func Cleanup(cfg *config.Config, report func(string)) error {
	h, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	tables := []int{cfg.Routing.ActiveTable}
	for _, w := range cfg.WANs {
		tables = append(tables, w.Table)
	}
	return actions.Cleanup(h, tables, report)
}
