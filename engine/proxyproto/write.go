package proxyproto

import (
	"encoding/binary"
	"net"
	"strconv"
)

// Mode is what PROXY protocol header a server block sends its upstreams
// (proxy_protocol; conf.Proxy.ProxyProtocol's values).
type Mode uint8

// The modes of proxy_protocol.
const (
	Off Mode = iota // no header
	V1              // the text header
	V2              // the binary header
)

// V1Header is the text header: "PROXY TCP4 src dst sport dport\r\n";
// "PROXY UNKNOWN\r\n" when either address is not TCP's.
func V1Header(src, dst *net.TCPAddr) []byte {
	if src == nil || dst == nil {
		return []byte("PROXY UNKNOWN\r\n")
	}
	fam := "TCP4"
	if src.IP.To4() == nil {
		fam = "TCP6"
	}
	b := make([]byte, 0, 108)
	b = append(b, "PROXY "...)
	b = append(b, fam...)
	b = append(b, ' ')
	b = append(b, src.IP.String()...)
	b = append(b, ' ')
	b = append(b, dst.IP.String()...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(src.Port), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(dst.Port), 10)
	return append(b, "\r\n"...)
}

// V2Signature is the 12 bytes a binary (v2) header starts with.
const V2Signature = "\r\n\r\n\x00\r\nQUIT\n"

// V2Header is the binary header, version 2, command PROXY, over TCP;
// command LOCAL when either address is not TCP's.
func V2Header(src, dst *net.TCPAddr) []byte {
	b := make([]byte, 0, 16+36)
	b = append(b, V2Signature...)
	if src == nil || dst == nil {
		b = append(b, 0x20, 0x00, 0, 0) // LOCAL, UNSPEC
		return b
	}
	if s4, d4 := src.IP.To4(), dst.IP.To4(); s4 != nil && d4 != nil {
		b = append(b, 0x21, 0x11, 0, 12)
		b = append(b, s4...)
		b = append(b, d4...)
	} else {
		b = append(b, 0x21, 0x21, 0, 36)
		b = append(b, src.IP.To16()...)
		b = append(b, dst.IP.To16()...)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(src.Port))
	return binary.BigEndian.AppendUint16(b, uint16(dst.Port))
}
