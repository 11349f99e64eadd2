// Package actions writes wanreact's decisions into the kernel: the
// level-triggered routing of reactor.Desired (Reconciler) and the one-shot
// intents such as reactor.FlushConntrack (ConntrackFlusher). Everything goes
// through netlink sockets opened in a chosen network namespace; nothing here
// runs `ip` or `iptables`.
//
// # Routing model
//
// Every rule and route the daemon installs carries the routing protocol
// number Proto (87, "wanreact"). That tag is what makes the daemon's objects
// recognisable after a restart or a kill -9, so a new process adopts them
// instead of duplicating them, and it is what keeps the user's own rules and
// routes (any other protocol) out of reach: the reconciler never deletes or
// replaces an object without tag 87. Addresses the daemon adds carry the same
// number as IFA_PROTO (Linux >= 6.1).
//
// With P = Desired.RulePriority (default 10000), A = Desired.ActiveTable
// (default 200), M = Desired.MarkMask and, when balancing, S slots starting
// at table B (SlotConfig: routing.slots, routing.slot_table, default 1000),
// for WAN number i (its index in Desired.WANs) with table T_i:
//
//	table T_i (only while the WAN is Ready):
//	  <subnet of Address> dev <if> scope link src <addr>     proto 87
//	  default via <Gateway> dev <if> src <addr> onlink      proto 87
//	    (no Gateway, e.g. PPP: default dev <if> scope link src <addr>)
//	  each ExtraRoute (DHCP option 121): via <gw> onlink, or scope link
//	table B+s (slot s < S, only while Slots[s] is Ready):
//	  the default route of WAN Slots[s], as in its own table
//	rules:
//	  P+i      from <addr>/32 lookup T_i              (only while Ready)
//	  P+100+i  fwmark <Mark>/M lookup T_i             (always)
//	  P+200    lookup main suppress_prefixlength 0
//	  P+201+s  fwmark SlotMark(M, s)/M lookup B+s     (always, s < S)
//	  P+299    lookup A
//	table A:
//	  default via <gw> dev <if> src <addr> onlink   of Active[0], or with
//	  balancing and several usable members one multipath default route
//	  (nexthop via <gw> dev <if> weight <w> onlink per member)
//
// The "from" rule makes packets sourced from a WAN's address (replies the
// router originates, sockets bound to the address, probes) leave through
// that WAN whatever their mark. The fwmark rule is kept while the WAN is not
// Ready so the rule set does not churn on every health change: with an
// empty table the lookup falls through to later rules, and the prober's
// SO_BINDTODEVICE keeps probes on their own interface anyway. The
// suppress_prefixlength 0 rule consults main for everything but its default
// route, so LAN and other connected routes keep winning over the slot tables
// and table A. When Active is empty table A is emptied and the main table's
// own default route, if the user has one, applies.
//
// # Balancing
//
// The firewall (package actions/firewall) gives every new connection from a
// LAN one of S slot marks and pins the connection to the WAN its first
// packet left through with that WAN's mark (CONNMARK), so later packets use
// the P+100+i rules. The slot rules and tables exist for every configured
// slot whatever the WANs' health: a failover only replaces the default
// routes inside slot tables (and table A), never a rule or a firewall rule.
// Slot marks sit in the upper half of the mask's values, WAN marks in the
// lower half (SlotMark, reactor.Mark), so with M = 0xff00 WAN i is
// 0x100*(i+1) and slot s is 0x8000+0x100*s.
//
// Table A becomes a weighted multipath route when balancing is on: that is
// what spreads the router's own unbound connections, because their source
// address is chosen (from the nexthop's interface) before any firewall
// mark exists, and the "from" rule of that address then keeps them on the
// WAN. Weights above 256 are scaled down to the kernel's range.
//
// Rule priorities P+i and P+100+i only stay inside the daemon's block for
// fewer than 100 WANs, and P+201+s for fewer than 98 slots; WANs and slots
// beyond that are rejected with an error.
//
// # Addresses and sysctls
//
// For a WAN with ManageAddress the reconciler brings the link admin-up and
// puts Address on it with IFA_F_NOPREFIXROUTE, so overlapping WAN subnets do
// not create competing connected routes in main (table T_i has its own).
// The kernel cannot change an IPv4 address's flags in place, so an existing
// identical address without that flag is deleted and re-added once. Stale
// addresses are removed only when they carry IFA_PROTO 87 or equal an address
// this process itself desired earlier on that interface; an address the user
// added is never removed.
//
// On every WAN interface, whenever it appears or reappears (new ifindex), the
// reconciler sets rp_filter=2 (loose: strict reverse-path filtering drops
// probe replies when WAN subnets overlap), src_valid_mark=1 (so the
// reverse-path lookup honours fwmarks) and promote_secondaries=1 (so an
// address change within one subnet does not take the new address down with
// the old primary) through /proc/sys inside the target netns. Values already
// right are not rewritten.
//
// # Reconciling
//
// A Reconciler diffs the desired objects against a dump of the kernel's rules
// and routes and applies only the difference: creations and replacements
// first (WAN and slot tables before table A, so the active route never
// points into nothing), then rule additions, then deletions. A changed route with the same
// key (table, destination, tos, metric) is changed with one RTM_NEWROUTE
// NLM_F_REPLACE, so a failover never has a window without a default route.
// Routes of another protocol found in the daemon's tables are left alone and
// reported in Result.Foreign; one that occupies the key of a desired route
// blocks it and is reported as an error. Nothing is deleted on shutdown:
// routing keeps working while the daemon is stopped. Cleanup removes it all
// for `wanreact cleanup`.
package actions
