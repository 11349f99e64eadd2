package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func read(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, 4096)
	n, err := c.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[:n])
}

func TestNotify(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if ok, err := Notify(Ready); ok || err != nil {
		t.Fatalf("without NOTIFY_SOCKET: %v %v", ok, err)
	}
	path := filepath.Join(t.TempDir(), "notify")
	c := listen(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	if ok, err := Notify(Ready + "\nSTATUS=2 WANs"); !ok || err != nil {
		t.Fatalf("Notify: %v %v", ok, err)
	}
	if got := read(t, c); got != "READY=1\nSTATUS=2 WANs" {
		t.Errorf("got %q", got)
	}
	// Abstract sockets, as systemd uses in containers.
	abs := "@wanreact-test-" + strconv.Itoa(os.Getpid())
	ac := listen(t, abs)
	t.Setenv("NOTIFY_SOCKET", abs)
	if ok, err := Notify(Watchdog); !ok || err != nil {
		t.Fatalf("abstract: %v %v", ok, err)
	}
	if got := read(t, ac); got != "WATCHDOG=1" {
		t.Errorf("got %q", got)
	}
	t.Setenv("NOTIFY_SOCKET", "relative")
	if _, err := Notify(Ready); err == nil {
		t.Error("relative NOTIFY_SOCKET accepted")
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody"))
	if _, err := Notify(Ready); err == nil {
		t.Error("no listener, no error")
	}
}

func TestWatchdogInterval(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "")
	if _, on, err := WatchdogInterval(); on || err != nil {
		t.Fatal("watchdog on without WATCHDOG_USEC")
	}
	t.Setenv("WATCHDOG_USEC", "10000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	if d, on, err := WatchdogInterval(); !on || err != nil || d != 10*time.Second {
		t.Fatalf("got %v %v %v", d, on, err)
	}
	t.Setenv("WATCHDOG_PID", "1")
	if _, on, _ := WatchdogInterval(); on {
		t.Error("watchdog meant for pid 1 taken")
	}
	t.Setenv("WATCHDOG_PID", "")
	t.Setenv("WATCHDOG_USEC", "soon")
	if _, _, err := WatchdogInterval(); err == nil {
		t.Error("bad WATCHDOG_USEC accepted")
	}
}
