package prober

import (
	"encoding/binary"
	"testing"
)

// ipv4Packet wraps an ICMP message in an IPv4 header as Linux hands it to a
// raw socket. opts adds that many bytes of (NOP) IP options.
func ipv4Packet(src, dst [4]byte, icmp []byte, opts int) []byte {
	ihl := 20 + opts
	b := make([]byte, ihl+len(icmp))
	b[0] = 0x40 | byte(ihl/4)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8] = 64
	b[9] = protoICMP
	copy(b[12:], src[:])
	copy(b[16:], dst[:])
	for i := 20; i < ihl; i++ {
		b[i] = 1 // NOP
	}
	binary.BigEndian.PutUint16(b[10:], checksum(b[:ihl]))
	copy(b[ihl:], icmp)
	return b
}

// echoToReply turns an encoded echo request into the matching reply, as the
// target's kernel would.
func echoToReply(req []byte) []byte {
	r := append([]byte(nil), req...)
	r[0] = icmpEchoReply
	r[2], r[3] = 0, 0
	binary.BigEndian.PutUint16(r[2:], checksum(r))
	return r
}

func TestEncodeEcho(t *testing.T) {
	n := nonce{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
	var buf [64]byte
	b := encodeEcho(buf[:], 0xbeef, 0x1234, &n)
	want := []byte{8, 0, 0, 0, 0xbe, 0xef, 0x12, 0x34, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
	if len(b) != echoLen {
		t.Fatalf("len = %d, want %d", len(b), echoLen)
	}
	// Checksum computed by hand for this message: the one's complement sum
	// of its 16-bit words with the checksum field zero.
	var sum uint32
	for i := 0; i < len(want); i += 2 {
		sum += uint32(want[i])<<8 | uint32(want[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(want[2:], ^uint16(sum))
	if string(b) != string(want) {
		t.Fatalf("encoded\n%x\nwant\n%x", b, want)
	}
	if checksum(b) != 0 {
		t.Fatalf("checksum over encoded message = %#x, want 0", checksum(b))
	}
}

func TestChecksumOddLength(t *testing.T) {
	// RFC 1071 pads an odd trailing byte with a zero byte.
	if got, want := checksum([]byte{0x01, 0x02, 0x03}), checksum([]byte{0x01, 0x02, 0x03, 0x00}); got != want {
		t.Fatalf("odd length checksum %#x, want %#x", got, want)
	}
}

func TestParseEchoReply(t *testing.T) {
	n := nonce{9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6}
	var buf [echoLen]byte
	rep := echoToReply(encodeEcho(buf[:], 0x0102, 0x0304, &n))
	src, dst := [4]byte{198, 51, 100, 1}, [4]byte{203, 0, 113, 2}

	for _, opts := range []int{0, 4, 40} {
		r, ok := parseEchoReply(ipv4Packet(src, dst, rep, opts))
		if !ok {
			t.Fatalf("options %d: valid reply rejected", opts)
		}
		if r.src != src || r.id != 0x0102 || r.seq != 0x0304 || r.nonce != n {
			t.Fatalf("options %d: parsed %+v", opts, r)
		}
	}

	good := ipv4Packet(src, dst, rep, 0)
	mutate := func(f func(b []byte) []byte) []byte {
		return f(append([]byte(nil), good...))
	}
	bad := map[string][]byte{
		"empty":        nil,
		"short header": good[:19],
		"truncated":    good[:len(good)-1],
		"ipv6":         mutate(func(b []byte) []byte { b[0] = 0x60; return b }),
		"udp":          mutate(func(b []byte) []byte { b[9] = 17; return b }),
		"ihl too small": mutate(func(b []byte) []byte {
			b[0] = 0x44
			return b
		}),
		"total below ihl": mutate(func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[2:], 10)
			return b
		}),
		"more fragments": mutate(func(b []byte) []byte { b[6] = 0x20; return b }),
		"fragment offset": mutate(func(b []byte) []byte {
			b[7] = 1
			return b
		}),
		"echo request": mutate(func(b []byte) []byte {
			b[20] = icmpEchoRequest
			b[22], b[23] = 0, 0
			binary.BigEndian.PutUint16(b[22:], checksum(b[20:]))
			return b
		}),
		"bad checksum": mutate(func(b []byte) []byte { b[len(b)-1] ^= 0xff; return b }),
		"nonzero code": mutate(func(b []byte) []byte {
			b[21] = 1
			b[22], b[23] = 0, 0
			binary.BigEndian.PutUint16(b[22:], checksum(b[20:]))
			return b
		}),
		// Someone else's ping: the standard 56-byte payload.
		"other size": ipv4Packet(src, dst, func() []byte {
			m := make([]byte, 64)
			binary.BigEndian.PutUint16(m[2:], checksum(m))
			return m
		}(), 0),
	}
	for name, pkt := range bad {
		if r, ok := parseEchoReply(pkt); ok {
			t.Errorf("%s: accepted as %+v", name, r)
		}
	}
	// Trailing bytes beyond the IP total length (link padding) are ignored.
	if _, ok := parseEchoReply(append(append([]byte(nil), good...), 0, 0, 0, 0)); !ok {
		t.Errorf("reply with trailing padding rejected")
	}
}

func FuzzParseEchoReply(f *testing.F) {
	var buf [echoLen]byte
	f.Add(ipv4Packet([4]byte{1, 2, 3, 4}, [4]byte{5, 6, 7, 8}, echoToReply(encodeEcho(buf[:], 1, 2, &nonce{})), 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, ok := parseEchoReply(b) // must not panic
		if ok && (len(b) < 20+echoLen || r.src != [4]byte(b[12:16])) {
			t.Fatalf("accepted %x as %+v", b, r)
		}
	})
}
