package dhcp

import "time"

// Clock is the driver's time source. Tests inject a fake one so that T1, T2
// and expiry arrive in milliseconds; the Machine itself never reads a clock.
type Clock interface {
	Now() time.Time
	// NewTimer fires once, d from now (immediately if d <= 0).
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer the driver uses.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

// SystemClock is the real clock.
type SystemClock struct{}

func (SystemClock) Now() time.Time { return time.Now() }

func (SystemClock) NewTimer(d time.Duration) Timer { return systemTimer{time.NewTimer(d)} }

type systemTimer struct{ t *time.Timer }

func (t systemTimer) C() <-chan time.Time { return t.t.C }
func (t systemTimer) Stop() bool          { return t.t.Stop() }
