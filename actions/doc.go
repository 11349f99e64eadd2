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
// With P = Desired.RulePriority (default 10000) and A = Desired.ActiveTable
// (default 200), for WAN number i (its index in Desired.WANs) with table T_i:
//
//	table T_i (only while the WAN is Ready):
//	  <subnet of Address> dev <if> scope link src <addr>     proto 87
//	  default via <Gateway> dev <if> src <addr> onlink      proto 87
//	    (no Gateway, e.g. PPP: default dev <if> scope link src <addr>)
//	  each ExtraRoute (DHCP option 121): via <gw> onlink, or scope link
//	rules:
//	  P+i      from <addr>/32 lookup T_i              (only while Ready)
//	  P+100+i  fwmark <Mark>/<MarkMask> lookup T_i    (always)
//	  P+200    lookup main suppress_prefixlength 0
//	  P+201    lookup A
//	table A:
//	  default via <gw> dev <if> src <addr> onlink   of Active[0]
//
// The "from" rule makes packets sourced from a WAN's address (replies the
// router originates, probes bound to the address) leave through that WAN.
// The fwmark rule is kept while the WAN is not Ready so the rule set does not
// churn on every health change: with an empty table the lookup falls through
// to later rules, and the prober's SO_BINDTODEVICE keeps probes on their own
// interface anyway. The suppress_prefixlength 0 rule consults main for
// everything but its default route, so LAN and other connected routes keep
// winning over table A. When Active is empty table A is emptied and the main
// table's own default route, if the user has one, applies.
//
// Only Active[0] is used for now; activeRoutes is the single place where a
// weighted multi-member variant (multipath route or per-mark tables) would
// be produced.
//
// Rule priorities P+i and P+100+i only stay inside the daemon's block for
// fewer than 100 WANs; WANs beyond that are rejected with an error.
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
// first (WAN tables before table A, so the active route never points into
// nothing), then rule additions, then deletions. A changed route with the same
// key (table, destination, tos, metric) is changed with one RTM_NEWROUTE
// NLM_F_REPLACE, so a failover never has a window without a default route.
// Routes of another protocol found in the daemon's tables are left alone and
// reported in Result.Foreign; one that occupies the key of a desired route
// blocks it and is reported as an error. Nothing is deleted on shutdown:
// routing keeps working while the daemon is stopped. Cleanup removes it all
// for `wanreact cleanup`.
package actions
