package wifi

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wanreact/wanreact/reactor"
)

// hostHasNL80211 asks the running kernel for the nl80211 family.
func hostHasNL80211(t *testing.T) bool {
	t.Helper()
	c, err := genetlink.Dial(nil)
	if err != nil {
		t.Fatalf("generic netlink: %v", err)
	}
	defer c.Close()
	_, err = c.GetFamily(unix.NL80211_GENL_NAME)
	return err == nil
}

// TestRunWithoutCfg80211 runs the real Source against this machine's kernel,
// which (on the build machines) has no cfg80211: Run must return nil at
// once, emit nothing and say so in the log exactly once, however often it
// is restarted.
func TestRunWithoutCfg80211(t *testing.T) {
	if hostHasNL80211(t) {
		t.Skip("this kernel has nl80211; the VM test covers a kernel with Wi-Fi")
	}
	logs := &syncBuffer{}
	s := New(Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	s.SetInterfaces([]Interface{{WAN: "wifi1", Name: "wlan0", MinSignal: -70, Hysteresis: 4}})
	for i := 0; i < 3; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		err := s.Run(ctx, func(e reactor.Event) { t.Errorf("event on a kernel without Wi-Fi: %+v", e) })
		cancel()
		if err != nil {
			t.Fatalf("Run %d = %v, want nil", i, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Run %d took %s, want an immediate return", i, d)
		}
	}
	if n := logs.count(`level=INFO msg="no Wi-Fi support in kernel`); n != 1 {
		t.Errorf("'no Wi-Fi' logged %d times at info, want once:\n%s", n, logs)
	}
	if n := logs.count("level=WARN") + logs.count("level=ERROR"); n != 0 {
		t.Errorf("warnings or errors logged:\n%s", logs)
	}
	if _, ok := s.Status("wifi1"); ok {
		t.Error("status reported for a WAN on a kernel without Wi-Fi")
	}
}

// TestDialInNetNS opens the source's sockets in a fresh network namespace:
// on a kernel without cfg80211 both the genetlink path and the
// thread-switching path of the mdlayher/wifi client must end in "not found",
// not in a namespace error, and leave the calling thread where it was.
func TestDialInNetNS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("creating a network namespace needs root")
	}
	if hostHasNL80211(t) {
		t.Skip("this kernel has nl80211")
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New() // also moves this thread into it
	if serr := netns.Set(orig); serr != nil {
		t.Fatalf("restoring netns: %v", serr) // thread stays locked: discarded
	}
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatalf("creating netns: %v", err)
	}
	t.Cleanup(func() { ns.Close() })

	if _, err := dialKernel(ns); !errors.Is(err, errNoNL80211) {
		t.Errorf("dialKernel in netns = %v, want errNoNL80211", err)
	}
	if _, err := newWifiClient(ns); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("newWifiClient in netns = %v, want not-exist (no nl80211)", err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cur, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	if !cur.Equal(orig) {
		t.Error("the test goroutine's thread was left in another netns")
	}
}
