// Command nowns prints the wall clock in nanoseconds: the Wi-Fi VM's busybox
// date has no sub-second format, and the daemon's event log is wall-clock.
package main

import (
	"fmt"
	"time"
)

func main() { fmt.Println(time.Now().UnixNano()) }
