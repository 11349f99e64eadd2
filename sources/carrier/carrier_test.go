package carrier

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wanreact/wanreact/reactor"
)

func setCarrier(t *testing.T, dir, name, v string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
		t.Fatal(err)
	}
	// Write in place (as sysfs does), not by rename, so the open file
	// sees the new value.
	f, err := os.OpenFile(filepath.Join(dir, name, "carrier"), os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte(v+"\n"), 0); err != nil {
		t.Fatal(err)
	}
}

func TestPollerReportsChangesOnly(t *testing.T) {
	dir := t.TempDir()
	setCarrier(t, dir, "wan0", "1")
	p := New(Options{Interval: time.Millisecond, SysfsNet: dir})
	p.SetInterfaces([]string{"wan0", "absent0"})
	events := make(chan reactor.Event, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx, func(e reactor.Event) { events <- e }); close(done) }()
	defer func() { cancel(); <-done }()

	expect := func(want bool) {
		t.Helper()
		select {
		case e := <-events:
			c, ok := e.Data.(reactor.CarrierChange)
			if !ok || c.Name != "wan0" || c.Carrier != want {
				t.Fatalf("event %+v, want wan0 carrier=%v", e.Data, want)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("no carrier=%v event", want)
		}
	}
	time.Sleep(20 * time.Millisecond) // initial reading: no event
	select {
	case e := <-events:
		t.Fatalf("initial state emitted: %+v", e.Data)
	default:
	}
	setCarrier(t, dir, "wan0", "0")
	expect(false)
	setCarrier(t, dir, "wan0", "1")
	expect(true)
	time.Sleep(20 * time.Millisecond)
	if len(events) != 0 {
		t.Fatalf("unchanged carrier emitted %d events", len(events))
	}
}
