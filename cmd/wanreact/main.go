// Command wanreact keeps a Linux router online over several uplinks.
// This file only parses flags and wires packages; see internal/daemon.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/wanreact/wanreact/config"
	"github.com/wanreact/wanreact/internal/control"
	"github.com/wanreact/wanreact/internal/daemon"
	"github.com/wanreact/wanreact/internal/eventlog"
	"github.com/wanreact/wanreact/reactor"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: wanreact COMMAND [flags]

commands:
  run -c FILE            run the daemon (SIGHUP reloads FILE)
  check -c FILE          validate FILE; problems as FILE:LINE:COL: message
  status [--json]        state of every WAN, from the running daemon
  events [-f] [--json]   the event log; -f follows it live
  replay FILE            re-run a recorded event log through the reducer
  cleanup -c FILE        remove every rule, route and chain wanreact installed
  version                print the version

exit codes: 0 success, 1 bad input or failed check, 2 daemon unreachable
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 1
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(args, stderr)
	case "check":
		return cmdCheck(args, stdout, stderr)
	case "status":
		return cmdStatus(args, stdout, stderr)
	case "events":
		return cmdEvents(args, stdout, stderr)
	case "replay":
		return cmdReplay(args, stdout, stderr)
	case "cleanup":
		return cmdCleanup(args, stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "wanreact", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "wanreact: unknown command %q\n%s", cmd, usage)
	return 1
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("wanreact "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func cmdRun(args []string, stderr io.Writer) int {
	fs := newFlags("run", stderr)
	cfg := fs.String("c", "/etc/wanreact/wanreact.yaml", "config file")
	socket := fs.String("socket", "", "control socket (default: the config's control_socket)")
	logJSON := fs.Bool("log-json", false, "log as JSON instead of text")
	debug := fs.Bool("debug", false, "debug logging")
	if fs.Parse(args) != nil {
		return 1
	}
	if os.Getenv("GOMAXPROCS") == "" {
		// One P is plenty for an event-driven daemon that is idle nearly
		// all the time, and it spares the scheduler waking a second
		// thread to look for work on every timer (measurably cheaper at
		// idle; appliances are often single-core anyway).
		runtime.GOMAXPROCS(1)
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	var h slog.Handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})
	if *logJSON {
		h = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})
	}
	log := slog.New(h)
	err := daemon.Run(context.Background(), daemon.Options{ConfigPath: *cfg, SocketPath: *socket, Logger: log, Version: version})
	if err != nil {
		var ps config.Problems
		if errors.As(err, &ps) {
			fmt.Fprintln(stderr, ps.Error())
			return 1
		}
		log.Error("wanreact failed", "err", err)
		return 1
	}
	return 0
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", stderr)
	cfg := fs.String("c", "/etc/wanreact/wanreact.yaml", "config file")
	if fs.Parse(args) != nil {
		return 1
	}
	c, err := config.Load(*cfg)
	if err != nil {
		var ps config.Problems
		if errors.As(err, &ps) {
			fmt.Fprintln(stderr, ps.Error())
		} else {
			fmt.Fprintf(stderr, "%s:1:1: %v\n", *cfg, err)
		}
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok (%d WANs)\n", *cfg, len(c.WANs))
	return 0
}

// socketPath resolves --socket, else -c's control_socket, else the default.
func socketFlags(fs *flag.FlagSet) func() string {
	socket := fs.String("socket", "", "control socket (default: from -c, else "+config.DefaultControlSocket+")")
	cfg := fs.String("c", "", "config file to take control_socket from")
	return func() string {
		if *socket != "" {
			return *socket
		}
		if *cfg != "" {
			if c, err := config.Load(*cfg); err == nil {
				return c.ControlSocket
			}
		}
		return config.DefaultControlSocket
	}
}

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("status", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	socket := socketFlags(fs)
	if fs.Parse(args) != nil {
		return 1
	}
	conn, dec, err := control.Dial(socket(), control.Request{Cmd: "status"})
	if err != nil {
		fmt.Fprintln(stderr, "wanreact:", err)
		return 2
	}
	defer conn.Close()
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		fmt.Fprintln(stderr, "wanreact: no answer from daemon:", err)
		return 2
	}
	var st daemon.Status
	if err := json.Unmarshal(raw, &st); err != nil || st.WANs == nil {
		fmt.Fprintln(stderr, "wanreact: daemon said:", string(raw))
		return 2
	}
	if *asJSON {
		fmt.Fprintln(stdout, string(raw))
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WAN\tINTERFACE\tSTATE\tACTIVE\tADDRESS\tGATEWAY\tLOSS\tRTT\tSINCE\tREASON")
	for _, w := range st.WANs {
		active := ""
		if w.Active {
			active = "*"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.0f%%\t%.1fms\t%s\t%s\n", w.Name, w.Interface, w.State, active,
			dash(w.Address), dash(w.Gateway), w.Loss*100, w.RTTms, w.Since.Local().Format("15:04:05"), w.Reason)
	}
	tw.Flush()
	for _, w := range st.WANs {
		if f := w.Wifi; f != nil && f.Wireless {
			fmt.Fprintf(stdout, "%s: wifi connected=%v ssid=%q bssid=%s freq=%dMHz signal=%ddBm bitrate=%.1fMbit/s cqm=%v\n",
				w.Name, f.Connected, f.SSID, dash(f.BSSID), f.Frequency, f.Signal, float64(f.Bitrate)/1000, f.CQM)
		}
		if l := w.DHCP; l != nil {
			fmt.Fprintf(stdout, "%s: dhcp state=%s address=%s server=%s expires=%s\n",
				w.Name, l.State, dash(l.Address.String()), dash(l.Server.String()), l.Expiry.Local().Format(time.DateTime))
		}
	}
	return 0
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func cmdEvents(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("events", stderr)
	follow := fs.Bool("f", false, "follow: stream new events live")
	asJSON := fs.Bool("json", false, "print JSON lines as logged")
	wan := fs.String("wan", "", "only events of this WAN")
	source := fs.String("source", "", "only events of this source (link, addr, route, rule, wifi, dhcp, probe, reactor, action)")
	socket := socketFlags(fs)
	if fs.Parse(args) != nil {
		return 1
	}
	conn, dec, err := control.Dial(socket(), control.Request{Cmd: "events", Follow: *follow, WAN: *wan, Source: *source})
	if err != nil {
		fmt.Fprintln(stderr, "wanreact:", err)
		return 2
	}
	defer conn.Close()
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return 0
			}
			fmt.Fprintln(stderr, "wanreact:", err)
			return 2
		}
		if *asJSON {
			fmt.Fprintln(stdout, string(raw))
			continue
		}
		fmt.Fprintln(stdout, humanLine(raw))
	}
}

// humanLine renders one log line as "time wan source/type what changed
// (why)"; see eventlog.Format.
func humanLine(raw []byte) string { return eventlog.Format(raw) }

func cmdReplay(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("replay", stderr)
	quiet := fs.Bool("q", false, "print only mismatches and the summary")
	if fs.Parse(args) != nil {
		return 1
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: wanreact replay [-q] FILE")
		return 1
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, "wanreact:", err)
		return 1
	}
	defer f.Close()
	res, err := reactor.Replay(f, func(line int, e reactor.Event, d reactor.DecisionRecord) {
		if *quiet {
			return
		}
		b, _ := json.Marshal(d)
		fmt.Fprintf(stdout, "%s:%d: %s/%s → %s\n", fs.Arg(0), line, e.Data.Source(), e.Data.Type(), b)
	})
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Arg(0), err)
		return 1
	}
	for _, m := range res.Mismatches {
		rec, rep := "none", "none"
		if m.Recorded != nil {
			b, _ := json.Marshal(m.Recorded)
			rec = string(b)
		}
		if m.Replayed != nil {
			b, _ := json.Marshal(m.Replayed)
			rep = string(b)
		}
		fmt.Fprintf(stdout, "%s:%d: MISMATCH after %s\n  recorded: %s\n  replayed: %s\n", fs.Arg(0), m.Line, m.Event, rec, rep)
	}
	fmt.Fprintf(stdout, "%d events, %d recorded decisions, %d mismatches\n", res.Events, res.Decisions, len(res.Mismatches))
	if len(res.Mismatches) > 0 {
		return 1
	}
	return 0
}

func cmdCleanup(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("cleanup", stderr)
	cfgPath := fs.String("c", "/etc/wanreact/wanreact.yaml", "config file (for the tables to clean)")
	if fs.Parse(args) != nil {
		return 1
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		// Uninstalling must work without a usable config: everything of
		// ours is tagged (proto 87, WANREACT_* chains).
		fmt.Fprintf(stderr, "wanreact cleanup: %v\nwanreact cleanup: removing everything tagged as wanreact's instead\n", err)
		cfg = nil
	}
	if err := daemon.Cleanup(cfg, func(s string) { fmt.Fprintln(stdout, s) }); err != nil {
		fmt.Fprintln(stderr, "wanreact cleanup:", err)
		return 1
	}
	return 0
}
