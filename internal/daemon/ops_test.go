package daemon

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wanreact/wanreact/reactor"
)

// fakeReactor answers status requests while alive is set, like the reactor
// goroutine does between events; when it is cleared the loop is "wedged".
func fakeReactor(ctx context.Context, d *daemon, alive *atomic.Bool) {
	for {
		select {
		case <-ctx.Done():
			return
		case ch := <-d.statusReq:
			for !alive.Load() {
				select {
				case <-ctx.Done():
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
			ch <- []reactor.WANStatus{{Name: "isp1", State: reactor.Up, Active: true}}
		}
	}
}

// TestWatchdogNeedsReactor: WATCHDOG=1 goes out only while the reactor loop
// answers; a wedged loop stops the pings (so systemd restarts the daemon),
// and they resume when it answers again.
func TestWatchdogNeedsReactor(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "200000") // ping every 100ms
	t.Setenv("WATCHDOG_PID", "")

	d := &daemon{log: slog.New(slog.DiscardHandler), statusReq: make(chan chan []reactor.WANStatus)}
	var alive atomic.Bool
	alive.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go fakeReactor(ctx, d, &alive)
	done := make(chan error, 1)
	go func() { done <- d.notifyLoop(ctx) }()

	msgs := make(chan string, 100)
	go func() {
		b := make([]byte, 1024)
		for {
			n, err := nc.Read(b)
			if err != nil {
				return
			}
			msgs <- string(b[:n])
		}
	}()
	count := func(d time.Duration) (pings int, other []string) {
		end := time.After(d)
		for {
			select {
			case m := <-msgs:
				if strings.HasPrefix(m, "WATCHDOG=1") {
					pings++
				} else {
					other = append(other, m)
				}
			case <-end:
				return
			}
		}
	}
	select {
	case m := <-msgs:
		if m != "READY=1\nSTATUS=isp1 up (active)" {
			t.Fatalf("first message %q", m)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no READY")
	}
	if n, _ := count(600 * time.Millisecond); n < 4 || n > 7 {
		t.Errorf("%d pings in 600ms with a 200ms watchdog, want about 6", n)
	}
	alive.Store(false)
	time.Sleep(60 * time.Millisecond) // a ping may be in flight
	for len(msgs) > 0 {
		<-msgs
	}
	if n, _ := count(500 * time.Millisecond); n != 0 {
		t.Errorf("%d pings while the reactor did not answer", n)
	}
	alive.Store(true)
	if n, _ := count(500 * time.Millisecond); n < 2 {
		t.Errorf("pings did not resume: %d", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, other := count(200 * time.Millisecond); len(other) != 1 || other[0] != "STOPPING=1" {
		t.Errorf("at stop: %q", other)
	}
}

// TestApplyControlGroup: the socket and its own "wanreact" directory go to
// the group; a directory of another name is left alone.
func TestApplyControlGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to change a file's group")
	}
	d := &daemon{log: slog.New(slog.DiscardHandler)}
	base := t.TempDir()
	for _, c := range []struct {
		dir        string
		dirChanged bool
	}{{filepath.Join(base, "run", "wanreact"), true}, {filepath.Join(base, "shared"), false}} {
		if err := os.MkdirAll(c.dir, 0o750); err != nil {
			t.Fatal(err)
		}
		sock := filepath.Join(c.dir, "wanreact.sock")
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		d.applyControlGroup(sock, "4243")
		if st, _ := os.Stat(sock); st.Sys().(*syscall.Stat_t).Gid != 4243 {
			t.Errorf("%s: socket gid %d", sock, st.Sys().(*syscall.Stat_t).Gid)
		}
		st, _ := os.Stat(c.dir)
		changed := st.Sys().(*syscall.Stat_t).Gid == 4243 && st.Mode().Perm() == 0o750
		if changed != c.dirChanged {
			t.Errorf("%s: gid %d mode %v; changed=%v, want %v", c.dir, st.Sys().(*syscall.Stat_t).Gid, st.Mode().Perm(), changed, c.dirChanged)
		}
	}
	// An unknown group name changes nothing and does not fail.
	d.applyControlGroup(filepath.Join(base, "shared", "wanreact.sock"), "no-such-group-x")
}
