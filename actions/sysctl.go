package actions

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
)

// wanSysctls are set on every WAN interface. rp_filter=2 (loose) because
// strict reverse-path filtering drops probe replies when WAN subnets overlap
// or when the reply's best route is another WAN; src_valid_mark=1 so that the
// reverse-path lookup uses the packet's fwmark and therefore the WAN's table;
// promote_secondaries=1 so that replacing a managed address by another one
// in the same subnet (add new, then delete old) does not delete the new one
// with the old primary.
var wanSysctls = []struct{ key, value string }{
	{"rp_filter", "2"},
	{"src_valid_mark", "1"},
	{"promote_secondaries", "1"},
}

// sysctlRoot is where per-interface IPv4 settings live. A variable so tests
// could point it elsewhere; /proc/sys/net resolves against the netns of the
// thread that opens the file.
var sysctlRoot = "/proc/sys/net/ipv4/conf"

// validIfName rejects names that would escape the sysctl directory.
func validIfName(name string) bool {
	return name != "" && len(name) < 16 && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00")
}

// writeWANSysctls applies wanSysctls to one interface inside ns. It returns
// the settings it had to change, for the result.
func writeWANSysctls(ns netns.NsHandle, ifname string) ([]string, error) {
	if !validIfName(ifname) {
		return nil, fmt.Errorf("sysctl: invalid interface name %q", ifname)
	}
	var done []string
	err := inNetns(ns, func() error {
		var errs []error
		for _, s := range wanSysctls {
			p := filepath.Join(sysctlRoot, ifname, s.key)
			// Read first so that adopting an already configured
			// interface reports no change.
			if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == s.value {
				continue
			}
			if err := os.WriteFile(p, []byte(s.value+"\n"), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("sysctl %s: %w", p, err))
				continue
			}
			done = append(done, fmt.Sprintf("sysctl %s %s=%s", ifname, s.key, s.value))
		}
		return errors.Join(errs...)
	})
	return done, err
}

// readSysctl reads one per-interface value inside ns (used by tests and for
// diagnostics).
func readSysctl(ns netns.NsHandle, ifname, key string) (string, error) {
	if !validIfName(ifname) {
		return "", fmt.Errorf("sysctl: invalid interface name %q", ifname)
	}
	var v string
	err := inNetns(ns, func() error {
		b, err := os.ReadFile(filepath.Join(sysctlRoot, ifname, key))
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}

// inNetns runs f on an OS thread that has joined ns (or directly when ns is
// not open). The work runs on a fresh goroutine: if switching back fails the
// goroutine exits still locked, and the runtime then discards the thread
// instead of reusing one stuck in the wrong namespace.
func inNetns(ns netns.NsHandle, f func() error) error {
	if !ns.IsOpen() {
		return f()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("get current netns: %w", err)
			return // thread stays locked and is discarded
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("return from netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
