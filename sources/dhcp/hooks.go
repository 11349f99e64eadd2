package dhcp

import (
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// HookEnv builds the environment of a user hook for a lease change, with
// the variable names of ISC dhclient-script, so that scripts written for
// /etc/dhcp/dhclient-exit-hooks.d keep working:
//
//	reason          BOUND, RENEW, REBIND, REBOOT, EXPIRE, FAIL or RELEASE
//	interface       the WAN's interface
//	new_* / old_*   the lease after / before the change (absent if none):
//	  ip_address, subnet_mask, network_number, broadcast_address, routers,
//	  domain_name_servers, domain_name, host_name, interface_mtu,
//	  rfc3442_classless_static_routes (dhclient's "width octets... router"
//	  decimal byte list), dhcp_lease_time, dhcp_renewal_time,
//	  dhcp_rebinding_time (seconds), dhcp_server_identifier, expiry (Unix
//	  seconds)
//	wanreact_wan    the WAN's name
//
// List values are space separated. Every value was sanitised when the
// lease was decoded (names are restricted to letters, digits, ".-_ "), so a
// script may use them unquoted as dhclient-script does. The strings are
// sorted, so equal inputs give equal environments.
func HookEnv(old, new *Lease, reason string) []string {
	env := []string{"reason=" + reason}
	for _, l := range []*Lease{new, old} {
		if l != nil {
			env = append(env, "interface="+l.Interface, "wanreact_wan="+l.WAN)
			break
		}
	}
	env = appendLeaseEnv(env, "new_", new)
	env = appendLeaseEnv(env, "old_", old)
	sort.Strings(env)
	return env
}

func appendLeaseEnv(env []string, p string, l *Lease) []string {
	if l == nil {
		return env
	}
	add := func(k, v string) {
		if v != "" {
			env = append(env, p+k+"="+v)
		}
	}
	pfx := l.Address
	add("ip_address", pfx.Addr().String())
	add("subnet_mask", net.IP(net.CIDRMask(pfx.Bits(), 32)).String())
	add("network_number", pfx.Masked().Addr().String())
	if pfx.Bits() < 31 {
		add("broadcast_address", lastAddr(pfx).String())
	}
	add("routers", joinAddrs(l.Routers))
	add("domain_name_servers", joinAddrs(l.DNS))
	add("domain_name", l.DomainName)
	add("host_name", l.HostName)
	if l.MTU > 0 {
		add("interface_mtu", strconv.Itoa(l.MTU))
	}
	if len(l.ClasslessRoutes) > 0 {
		b := EncodeClasslessRoutes(l.ClasslessRoutes)
		s := make([]string, len(b))
		for i, v := range b {
			s[i] = strconv.Itoa(int(v))
		}
		add("rfc3442_classless_static_routes", strings.Join(s, " "))
	}
	add("dhcp_lease_time", strconv.FormatInt(int64(l.Duration.Seconds()), 10))
	add("dhcp_renewal_time", strconv.FormatInt(int64(l.T1.Seconds()), 10))
	add("dhcp_rebinding_time", strconv.FormatInt(int64(l.T2.Seconds()), 10))
	if l.Server.IsValid() {
		add("dhcp_server_identifier", l.Server.String())
	}
	if !l.Acquired.IsZero() {
		add("expiry", strconv.FormatInt(l.Expiry().Unix(), 10))
	}
	return env
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, " ")
}
