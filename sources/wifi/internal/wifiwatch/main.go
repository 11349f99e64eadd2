// Command wifiwatch runs the Wi-Fi source on its own and prints every event
// as a JSON line, for the end-to-end test in a VM and for trying the source
// by hand on a real machine.
//
//	wifiwatch -iface WAN:IFNAME[:MIN_SIGNAL[:HYSTERESIS]] [-iface ...] [-poll 2s] [-v]
//
// Each line is {"uptime": S, "event": EVENT} where S is CLOCK_BOOTTIME in
// seconds, the clock of /proc/uptime, so that a shell script's markers
// (cut -d' ' -f1 /proc/uptime) can be compared with event times. On SIGTERM
// or SIGINT it prints {"uptime": S, "status": STATUS} per interface and exits.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wanreact/wanreact/reactor"
	"github.com/wanreact/wanreact/sources/wifi"
)

func main() {
	var ifaces []wifi.Interface
	flag.Func("iface", "WAN:IFNAME[:MIN_SIGNAL[:HYSTERESIS]] to watch (repeatable)", func(v string) error {
		i, err := parseIface(v)
		if err == nil {
			ifaces = append(ifaces, i)
		}
		return err
	})
	poll := flag.Duration("poll", wifi.DefaultPollInterval, "station info poll interval")
	verbose := flag.Bool("v", false, "debug logging")
	flag.Parse()
	if len(ifaces) == 0 {
		fmt.Fprintln(os.Stderr, "wifiwatch: at least one -iface is needed")
		os.Exit(2)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	src := wifi.New(wifi.Options{Logger: log, PollInterval: *poll})
	src.SetInterfaces(ifaces)

	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	out := func(key string, v any) {
		mu.Lock()
		defer mu.Unlock()
		if err := enc.Encode(map[string]any{"uptime": uptime(), key: v}); err != nil {
			log.Error("writing output", "err", err)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err := src.Run(ctx, func(e reactor.Event) { out("event", e) })
	if err != nil {
		log.Error("wifi source failed", "err", err)
		os.Exit(1)
	}
	<-ctx.Done() // Run returns at once on a kernel without Wi-Fi
	for _, i := range ifaces {
		if st, ok := src.Status(i.WAN); ok {
			out("status", st)
		}
	}
}

func parseIface(v string) (wifi.Interface, error) {
	p := strings.Split(v, ":")
	if len(p) < 2 || len(p) > 4 || p[0] == "" || p[1] == "" {
		return wifi.Interface{}, fmt.Errorf("want WAN:IFNAME[:MIN_SIGNAL[:HYSTERESIS]], got %q", v)
	}
	i := wifi.Interface{WAN: p[0], Name: p[1]}
	var err error
	if len(p) > 2 {
		if i.MinSignal, err = strconv.Atoi(p[2]); err != nil {
			return i, fmt.Errorf("min signal in %q: %w", v, err)
		}
	}
	if len(p) > 3 {
		if i.Hysteresis, err = strconv.Atoi(p[3]); err != nil {
			return i, fmt.Errorf("hysteresis in %q: %w", v, err)
		}
	}
	return i, nil
}

// uptime is CLOCK_BOOTTIME in seconds, the clock behind /proc/uptime.
func uptime() float64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Since(start).Seconds()
	}
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}

var start = time.Now()
