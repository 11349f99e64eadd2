// Package sdnotify speaks systemd's service notification protocol
// (sd_notify(3)): one datagram of newline-separated KEY=VALUE assignments to
// the unix socket named by $NOTIFY_SOCKET. It is a few lines, so the daemon
// needs no dependency for it, and it is a no-op outside systemd.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// Common states.
const (
	Ready     = "READY=1"
	Stopping  = "STOPPING=1"
	Reloading = "RELOADING=1"
	Watchdog  = "WATCHDOG=1"
)

// Notify sends state (one or more "KEY=VALUE" lines) to the service
// manager. It reports false, and no error, when there is none
// ($NOTIFY_SOCKET unset).
func Notify(state string) (bool, error) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return false, nil
	}
	// A leading @ names a Linux abstract socket; Go's resolver maps it to
	// the leading NUL byte the kernel wants.
	if path[0] != '/' && path[0] != '@' {
		return false, fmt.Errorf("sd_notify: NOTIFY_SOCKET %q is neither a path nor an abstract socket", path)
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("sd_notify: %w", err)
	}
	return true, nil
}

// WatchdogInterval returns the watchdog timeout systemd set for this
// process ($WATCHDOG_USEC, if $WATCHDOG_PID is unset or ours) and whether
// the watchdog is on. The service should ping at half of it.
func WatchdogInterval() (time.Duration, bool, error) {
	us := os.Getenv("WATCHDOG_USEC")
	if us == "" {
		return 0, false, nil
	}
	if p := os.Getenv("WATCHDOG_PID"); p != "" {
		pid, err := strconv.Atoi(p)
		if err != nil {
			return 0, false, fmt.Errorf("sd_notify: bad WATCHDOG_PID %q", p)
		}
		if pid != os.Getpid() {
			return 0, false, nil // meant for another process
		}
	}
	n, err := strconv.ParseUint(us, 10, 63)
	if err != nil || n == 0 {
		return 0, false, errors.New("sd_notify: bad WATCHDOG_USEC " + strconv.Quote(us))
	}
	return time.Duration(n) * time.Microsecond, true, nil
}
