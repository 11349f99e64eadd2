package prober

import (
	"encoding/binary"
	"testing"
)

// BenchmarkParseEchoReply is the decoder alone: every packet a WAN's raw
// socket delivers goes through it, ours or not.
func BenchmarkParseEchoReply(b *testing.B) {
	var n nonce
	for i := range n {
		n[i] = byte(i)
	}
	msg := encodeEcho(make([]byte, echoLen), 0x1234, 7, &n)
	msg[0], msg[2], msg[3] = icmpEchoReply, 0, 0
	binary.BigEndian.PutUint16(msg[2:], checksum(msg))
	pkt := ipv4Packet([4]byte{198, 51, 100, 1}, wanSrc, msg, 0)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := parseEchoReply(pkt); !ok {
			b.Fatal("reply does not parse")
		}
	}
}

// BenchmarkEncodeEcho builds one probe.
func BenchmarkEncodeEcho(b *testing.B) {
	var n nonce
	buf := make([]byte, echoLen)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		encodeEcho(buf, 0x1234, uint16(i), &n)
	}
}
