package engine

// PROXY protocol from clients (listen ... proxy_protocol): the header is
// read on a goroutine of its own between accept and enrolment, byte-exact
// (nothing of what the client sends after it is read), parsed by
// github.com/pires/go-proxyproto, and handed to the session with the
// client. A malformed or slow header closes that client with a log line;
// nothing reaches an upstream.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/pires/go-proxyproto"
)

// proxyInfo is what a client's PROXY header said.
type proxyInfo struct {
	// src and dst are the original client's and server's addresses; nil
	// for a LOCAL (health check) header or an UNKNOWN one.
	src, dst net.Addr
	tlvs     []proxyproto.TLV
}

// maxV1 is the longest PROXY v1 header, CRLF included (the spec's 107).
const maxV1 = 107

// readProxyHeader reads one PROXY header (v1 or v2) off c within timeout
// and parses it. Runs on the client's own header goroutine.
func readProxyHeader(c net.Conn, timeout time.Duration) (*proxyInfo, error) {
	if timeout > 0 {
		c.SetReadDeadline(time.Now().Add(timeout))
		defer c.SetReadDeadline(time.Time{})
	}
	raw := make([]byte, 16, 64)
	// The shortest header is "PROXY UNKNOWN\r\n" (15 bytes); v2's fixed
	// part is 16.
	if _, err := io.ReadFull(c, raw[:6]); err != nil {
		return nil, err
	}
	switch {
	case string(raw[:6]) == "PROXY ":
		raw = raw[:6]
		var b [1]byte
		for len(raw) < maxV1 {
			if _, err := io.ReadFull(c, b[:]); err != nil {
				return nil, err
			}
			raw = append(raw, b[0])
			if b[0] == '\n' {
				break
			}
		}
		if raw[len(raw)-1] != '\n' {
			return nil, fmt.Errorf("PROXY v1 header longer than %d bytes", maxV1)
		}
	case string(raw[:6]) == proxyV2Sig[:6]:
		if _, err := io.ReadFull(c, raw[6:16]); err != nil {
			return nil, err
		}
		if string(raw[:12]) != proxyV2Sig {
			return nil, errors.New("not a PROXY v2 signature")
		}
		n := int(binary.BigEndian.Uint16(raw[14:16]))
		raw = append(raw, make([]byte, n)...)
		if _, err := io.ReadFull(c, raw[16:]); err != nil {
			return nil, err
		}
	default:
		return nil, errors.New("no PROXY header")
	}
	h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		return nil, err
	}
	pi := &proxyInfo{}
	if h.Command.IsProxy() && h.TransportProtocol != proxyproto.UNSPEC {
		pi.src, pi.dst = h.SourceAddr, h.DestinationAddr
	}
	if tlvs, err := h.TLVs(); err == nil {
		pi.tlvs = tlvs
	}
	return pi, nil
}

// handProxied reads the PROXY header of an accepted client, then hands
// it to a loop with what the header said. Runs on a goroutine of its own
// per client (a slow header holds nothing but it).
func (e *Engine) handProxied(c net.Conn, ls *listenSock, b *binding) {
	pi, err := readProxyHeader(c, b.srv.conf.Core.ProxyProtocolTimeout)
	if err != nil {
		what := "broken header"
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			what = "client timed out"
		}
		e.log.Logf(LevelError, 0, "%s: %v while reading PROXY protocol, client: %s, server: %s", what, err, hostOf(c.RemoteAddr()), b.srv.name)
		e.m.ProxyHeaderFailed()
		c.Close()
		return
	}
	// This goroutine is the client's own: it can wait for the result.
	if ch := e.enroll(c, ls, b, pi); ch != nil {
		select {
		case res := <-ch:
			if e.enrollError(res.Err) {
				e.pauseAccepting()
			}
		case <-e.stopped:
		}
	}
}

// tlvValue returns the value of the TLV a $proxy_protocol_tlv_NAME names
// (a hexadecimal type, 0xNN, or one of NGINX's names), "" if absent.
func (pi *proxyInfo) tlvValue(name string) string {
	if pi == nil {
		return ""
	}
	var typ int
	switch name {
	case "alpn":
		typ = 0x01
	case "authority":
		typ = 0x02
	case "unique_id":
		typ = 0x05
	case "netns":
		typ = 0x30
	default:
		v, err := strconv.ParseUint(strings.TrimPrefix(name, "0x"), 16, 8)
		if err != nil || !strings.HasPrefix(name, "0x") {
			return ""
		}
		typ = int(v)
	}
	for _, t := range pi.tlvs {
		if int(t.Type) == typ {
			return string(t.Value)
		}
	}
	return ""
}
