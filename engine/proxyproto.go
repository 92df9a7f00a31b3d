package engine

import (
	"encoding/binary"
	"net"
	"strconv"
)

// proxyHeader returns the PROXY protocol header (proxy_protocol on: v1,
// v2: binary) that tells the upstream who the client is. Runs on a dialer
// worker; it reads only fields fixed at the session's start.
func (s *session) proxyHeader(upLocal net.Addr) []byte {
	src, _ := s.remote.(*net.TCPAddr)
	dst, _ := s.local.(*net.TCPAddr)
	if s.srv.proxyProtocol == 2 {
		return proxyV2(src, dst)
	}
	return proxyV1(src, dst)
}

// proxyV1 is the text header: "PROXY TCP4 src dst sport dport\r\n".
func proxyV1(src, dst *net.TCPAddr) []byte {
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

var proxyV2Sig = [12]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

// proxyV2 is the binary header, version 2, command PROXY, over TCP.
func proxyV2(src, dst *net.TCPAddr) []byte {
	b := make([]byte, 0, 16+36)
	b = append(b, proxyV2Sig[:]...)
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
