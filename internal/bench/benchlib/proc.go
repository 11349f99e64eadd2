package benchlib

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
)

// userHZ is the unit of utime/stime in /proc/PID/stat. It is USER_HZ, which
// the kernel fixes at 100 on every architecture Go's linux ports support
// (unlike CONFIG_HZ, which never shows in /proc), and reading sysconf
// would need cgo.
const userHZ = 100

// cpuTime is the CPU time (user + system, all threads, dead ones included)
// a process has used, from /proc/PID/stat fields 14 and 15.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

func parseStatCPU(b []byte) (time.Duration, error) {
	// The command name (field 2) may hold spaces and parentheses; the
	// fields after its last ')' are plain.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat line")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3, so utime (14) is f[11] and stime (15) f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("short stat line (%d fields)", len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("stat utime/stime %q %q", f[11], f[12])
	}
	return time.Duration(ut+st) * time.Second / userHZ, nil
}

// memory is a process's resident set: VmRSS now, VmHWM its peak, in bytes.
type memory struct {
	RSS, HWM int64
}

func memoryOf(pid int) (memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, err
	}
	return parseStatusMemory(b)
}

func parseStatusMemory(b []byte) (memory, error) {
	var m memory
	var seen int
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return m, fmt.Errorf("%s: unexpected %q", k, v)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("%s: %w", k, err)
		}
		if k == "VmRSS" {
			m.RSS = n << 10
		} else {
			m.HWM = n << 10
		}
		seen++
	}
	if seen != 2 {
		return m, fmt.Errorf("VmRSS/VmHWM missing")
	}
	return m, nil
}

// cpuWindow measures a process's CPU use over a wall-clock window.
type cpuWindow struct {
	pid   int
	start time.Time
	cpu0  time.Duration
}

func startCPUWindow(pid int) (cpuWindow, error) {
	c, err := cpuTime(pid)
	if err != nil {
		return cpuWindow{}, err
	}
	return cpuWindow{pid: pid, start: time.Now(), cpu0: c}, nil
}

// end returns the CPU time used since start and the wall time elapsed.
func (w cpuWindow) end() (cpu, wall time.Duration, err error) {
	c, err := cpuTime(w.pid)
	if err != nil {
		return 0, 0, err
	}
	return c - w.cpu0, time.Since(w.start), nil
}

func nlAddr(p netip.Prefix) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)}}
}
