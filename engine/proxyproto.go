package engine

import (
	"encoding/binary"
	"net"
	"strconv"
)

// proxyMode is what PROXY protocol header a server block sends its
// upstreams (proxy_protocol; conf.Proxy.ProxyProtocol's values).
type proxyMode uint8

const (
	proxyOff proxyMode = iota // no header
	proxyV1                   // the text header
	proxyV2                   // the binary header
)

// proxyHeader returns the PROXY protocol header that tells the upstream
// who the client is; the dialer writes it in clear before the handshake.
// Runs on a dialer worker (see dialwork.go); it reads only fields fixed at
// the session's start. Its argument, the upstream socket's own address
// (the dialer's callback passes it), is not part of the header.
func (s *session) proxyHeader(_ net.Addr) []byte {
	src, _ := s.remote.(*net.TCPAddr)
	dst, _ := s.local.(*net.TCPAddr)
	if proxyMode(s.srv.proxyProtocol) == proxyV2 {
		return proxyV2Header(src, dst)
	}
	return proxyV1Header(src, dst)
}

// proxyV1Header is the text header: "PROXY TCP4 src dst sport dport\r\n".
func proxyV1Header(src, dst *net.TCPAddr) []byte {
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

const proxyV2Sig = "\r\n\r\n\x00\r\nQUIT\n"

// proxyV2Header is the binary header, version 2, command PROXY, over TCP.
func proxyV2Header(src, dst *net.TCPAddr) []byte {
	b := make([]byte, 0, 16+36)
	b = append(b, proxyV2Sig...)
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
