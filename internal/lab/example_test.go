package lab_test

import (
	"fmt"
	"strings"
	"time"

	"github.com/wanreact/wanreact/internal/lab"
)

// Measuring a failover: the outage a client sees when ISP 1 goes silent.
func Example_failover() {
	l, err := lab.New(lab.Options{ISPs: 2, RouterNAT: true})
	if err != nil {
		panic(err)
	}
	defer l.Close()
	// ... start the daemon with l.Command("rtr", "wanreact", "run", "-c", cfg) ...
	f, err := l.StartFlow("client", 200)
	if err != nil {
		panic(err)
	}
	time.Sleep(2 * time.Second)
	fault := time.Now()
	_ = l.Blackhole(1)
	time.Sleep(3 * time.Second)
	r := f.Stop()
	gap := r.LongestGap(fault, time.Time{})
	fmt.Printf("outage %v, now via ISP %d\n", gap.Duration(), r.LastISP())
}

// A live display for a demo, redrawn every 100ms.
func Example_live() {
	l, err := lab.New(lab.Options{ISPs: 2, RouterNAT: true})
	if err != nil {
		panic(err)
	}
	defer l.Close()
	f, err := l.StartFlow("client", 200)
	if err != nil {
		panic(err)
	}
	defer f.Stop()
	for range 50 {
		time.Sleep(100 * time.Millisecond)
		b := f.Buckets(100 * time.Millisecond)
		if len(b) < 2 {
			continue
		}
		last := b[len(b)-2] // the newest complete slot
		line := fmt.Sprintf("t=%.1fs", last.Offset.Seconds())
		for i := 1; i < len(last.PerISP); i++ {
			line += fmt.Sprintf("  isp%d %s %d", i, strings.Repeat("█", last.PerISP[i]/5), last.PerISP[i])
		}
		fmt.Println(line)
	}
}
