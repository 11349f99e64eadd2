// Command demo is `make demo`: it builds a two-ISP network-namespace lab,
// runs the real wanreact daemon in its router, sends a 200 packets/s UDP
// stream from the LAN client and shows live which ISP carries it while it
// cuts, blackholes and degrades ISP 1, with the daemon's decisions as they
// happen. It ends with a table of the measured outages and removes the lab.
//
// Usage (as root): go run ./internal/demo -bin bin/wanreact [-fast] [-keep] [-timeline FILE]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	var o options
	flag.StringVar(&o.Bin, "bin", "bin/wanreact", "the wanreact binary to run (`make build` makes it)")
	flag.BoolVar(&o.Fast, "fast", false, "shorter phases (a smoke test, about 30 s)")
	flag.BoolVar(&o.Keep, "keep", false, "after a successful run, leave the lab and the daemon running to poke at")
	flag.StringVar(&o.Timeline, "timeline", "", "write an SVG timeline of the carrier-cut and blackhole failovers to `FILE`")
	flag.DurationVar(&o.Slot, "slot", 200*time.Millisecond, "width of one line of the live display (100ms..250ms)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "demo: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	o.Out = os.Stdout
	o.Color = isTerminal(os.Stdout)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := run(ctx, o)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, "demo: interrupted; lab and daemon removed")
			os.Exit(130)
		}
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	if !res.OK() {
		// The table above says which promise was not kept.
		os.Exit(1)
	}
}
