package proxyproto

// PROXY protocol from clients (listen ... proxy_protocol): the header is
// read on a goroutine of its own between accept and enrolment, byte-exact
// (nothing of what the client sends after it is read), parsed by
// github.com/pires/go-proxyproto, and handed to the session with the
// client. A malformed or slow header closes that client with a log line
// (the engine's); nothing reaches an upstream.

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

	goproxyproto "github.com/pires/go-proxyproto"
)

// Info is what a client's PROXY header said. It is not changed once Read
// returns it; any goroutine may read it.
type Info struct {
	// Src and Dst are the original client's and server's addresses; nil
	// for a LOCAL (health check) header or an UNKNOWN one.
	Src, Dst net.Addr
	tlvs     []goproxyproto.TLV
}

// maxV1 is the longest PROXY v1 header, CRLF included (the spec's 107).
const maxV1 = 107

// Read reads one PROXY header (v1 or v2) off c within timeout (0: no
// bound) and parses it; it reads nothing past the header. A timeout is a
// net.Error whose Timeout is true. Runs on the goroutine that reads the
// client (in the engine, the client's own header goroutine).
func Read(c net.Conn, timeout time.Duration) (*Info, error) {
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
	case string(raw[:6]) == V2Signature[:6]:
		if _, err := io.ReadFull(c, raw[6:16]); err != nil {
			return nil, err
		}
		if string(raw[:12]) != V2Signature {
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
	h, err := goproxyproto.Read(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		return nil, err
	}
	pi := &Info{}
	if h.Command.IsProxy() && h.TransportProtocol != goproxyproto.UNSPEC {
		pi.Src, pi.Dst = h.SourceAddr, h.DestinationAddr
	}
	if tlvs, err := h.TLVs(); err == nil {
		pi.tlvs = tlvs
	}
	return pi, nil
}

// TLV returns the value of the TLV a $proxy_protocol_tlv_NAME names (a
// hexadecimal type, 0xNN, or one of NGINX's names), "" if absent or if pi
// is nil.
func (pi *Info) TLV(name string) string {
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
