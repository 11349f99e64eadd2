package prober

import (
	"encoding/binary"
	"time"
)

// Wire format of a probe. The payload is nothing but the nonce: a reply only
// counts when it echoes the exact 16 random bytes of the request, which an
// off-path sender cannot guess, and a short packet keeps the probe cheap on
// slow uplinks.
const (
	nonceLen = 16
	icmpHdr  = 8
	echoLen  = icmpHdr + nonceLen

	icmpEchoReply   = 0
	icmpEchoRequest = 8
	protoICMP       = 1

	// readBufLen holds the largest IPv4 header (60 bytes) plus one of our
	// replies. Longer packets (someone else's ping) are truncated on read
	// and then rejected by the length check, which is all they deserve.
	readBufLen = 60 + echoLen + 44
)

type nonce = [nonceLen]byte

// reply is an echo reply as read from a WAN's socket. It is a plain value
// (no slices) so that parsing and matching allocate nothing.
type reply struct {
	src   [4]byte
	id    uint16
	seq   uint16
	nonce nonce
	// at is when the WAN's loop read the packet (Options.Now).
	at time.Time
}

// encodeEcho writes an ICMP echo request into b (which must hold echoLen
// bytes) and returns the encoded slice.
func encodeEcho(b []byte, id, seq uint16, n *nonce) []byte {
	b = b[:echoLen]
	b[0], b[1], b[2], b[3] = icmpEchoRequest, 0, 0, 0
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[icmpHdr:], n[:])
	binary.BigEndian.PutUint16(b[2:], checksum(b))
	return b
}

// parseEchoReply extracts one of our echo replies from a packet read from a
// raw IPv4 socket (Linux hands those over with the IP header, in network
// byte order). Anything that is not a well-formed, unfragmented echo reply
// of exactly our size with a valid checksum is rejected: the kernel does
// not verify ICMP checksums before raw delivery.
func parseEchoReply(pkt []byte) (r reply, ok bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 || pkt[9] != protoICMP {
		return r, false
	}
	ihl := int(pkt[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:4]))
	if ihl < 20 || total < ihl || total > len(pkt) {
		return r, false
	}
	// More-fragments flag or a fragment offset: not a complete datagram.
	if binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0 {
		return r, false
	}
	m := pkt[ihl:total]
	if len(m) != echoLen || m[0] != icmpEchoReply || m[1] != 0 || checksum(m) != 0 {
		return r, false
	}
	copy(r.src[:], pkt[12:16])
	r.id = binary.BigEndian.Uint16(m[4:])
	r.seq = binary.BigEndian.Uint16(m[6:])
	copy(r.nonce[:], m[icmpHdr:])
	return r, true
}

// checksum is the Internet checksum (RFC 1071). Over a message that already
// carries its checksum it yields 0.
func checksum(b []byte) uint16 {
	var s uint32
	for ; len(b) >= 2; b = b[2:] {
		s += uint32(b[0])<<8 | uint32(b[1])
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
