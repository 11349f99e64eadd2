package prober

import (
	"encoding/binary"
	"log/slog"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/wanreact/wanreact/reactor"
)

// benchSocket keeps the last probe in a fixed buffer, so that the
// benchmark measures the prober's allocations, not the fake's.
type benchSocket struct {
	msg [echoLen]byte
	dst [4]byte
}

func (s *benchSocket) send(msg []byte, dst [4]byte) error {
	copy(s.msg[:], msg)
	s.dst = dst
	return nil
}
func (s *benchSocket) setWait(time.Duration) error { return nil }
func (s *benchSocket) recv([]byte) (int, error)    { return 0, os.ErrDeadlineExceeded }
func (s *benchSocket) interrupt()                  {}
func (s *benchSocket) close() error                { return nil }

// BenchmarkMatchPath measures one probe's user-space work: schedule and
// encode it, then parse and match its reply and emit the result.
func BenchmarkMatchPath(b *testing.B) {
	sock := &benchSocket{}
	var oks int
	emit := func(e reactor.Event) {
		if e.Data.(reactor.ProbeResult).OK {
			oks++
		}
	}
	tg := Target{WAN: "isp1", Interface: "wan0", Mark: 0x100, Addrs: labTargets,
		Interval: 200 * time.Millisecond, Timeout: 600 * time.Millisecond}
	now := t0
	w := newWANProbe(tg, now, deps{
		now:  func() time.Time { return now },
		rand: rand.NewChaCha8([32]byte{2}),
		log:  slog.New(slog.DiscardHandler),
		open: func(*Target) (socket, error) { return sock, nil },
		emit: emit,
	})
	// The reply packet is rebuilt in place from each probe.
	pkt := ipv4Packet([4]byte{}, wanSrc, make([]byte, echoLen), 0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		now = now.Add(50 * time.Millisecond)
		w.tick(now)
		copy(pkt[12:16], sock.dst[:])
		m := pkt[20:]
		copy(m, sock.msg[:])
		m[0], m[2], m[3] = icmpEchoReply, 0, 0
		binary.BigEndian.PutUint16(m[2:], checksum(m))
		r, ok := parseEchoReply(pkt)
		if !ok {
			b.Fatal("reply does not parse")
		}
		r.at = now.Add(time.Millisecond)
		w.handleReply(r)
	}
	b.StopTimer()
	if oks != b.N {
		b.Fatalf("%d OK results for %d probes", oks, b.N)
	}
}

// BenchmarkLabRoundTrip measures one probe through a real raw socket in the
// namespace lab: send, the ISP namespace's kernel answers over veth (its
// work is charged to this process too), read, parse, match, emit. The
// loop never sleeps, so this is the cost without the scheduler's wake-ups.
func BenchmarkLabRoundTrip(b *testing.B) {
	l := newLab(b)
	o, err := newNetnsOpener(l.routerNS)
	if err != nil {
		b.Fatal(err)
	}
	defer o.close()
	var got int
	var last reactor.ProbeResult
	w := newWANProbe(Target{WAN: "isp1", Interface: "wan0", Mark: labMark0, Addrs: labTargets,
		Interval: 200 * time.Millisecond, Timeout: time.Second}, time.Now(), deps{
		now:  time.Now,
		rand: rand.NewChaCha8([32]byte{3}),
		log:  slog.New(slog.DiscardHandler),
		open: o.open,
		emit: func(e reactor.Event) { got++; last = e.Data.(reactor.ProbeResult) },
	})
	defer w.closeSocket()
	buf := make([]byte, readBufLen)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w.nextSend = time.Time{} // due now
		w.tick(time.Now())
		if w.sock == nil {
			b.Fatalf("no socket: %s", w.openErr)
		}
		w.sock.setWait(time.Second)
		for got == i {
			n, err := w.sock.recv(buf)
			if err != nil {
				b.Fatalf("probe %d: %v", i, err)
			}
			if r, ok := parseEchoReply(buf[:n]); ok {
				r.at = time.Now()
				w.handleReply(r)
			}
		}
		if !last.OK {
			b.Fatalf("probe %d: %+v", i, last)
		}
	}
}
