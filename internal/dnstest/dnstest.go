// Package dnstest runs a real DNS server on loopback for tests of DNS
// re-resolution: UDP and TCP on one 127.0.0.1 port the kernel picks,
// answering A, AAAA and SRV questions from records the test changes while
// it runs, and able to fail on demand (no answer, SERVFAIL) and to
// truncate its UDP answers so that clients retry over TCP.
package dnstest

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"
)

// Mode is how the server answers.
type Mode int

// Modes.
const (
	// Answer answers from the records.
	Answer Mode = iota
	// Drop reads questions and never answers: a resolver that times out.
	Drop
	// ServFail answers every question with SERVFAIL.
	ServFail
)

// SRV is one SRV record.
type SRV struct {
	Priority, Weight, Port uint16
	Target                 string
}

// Server is a running DNS server. Its methods are safe from any goroutine.
type Server struct {
	udp, tcp *dns.Server
	addr     string

	mu       sync.Mutex
	addrs    map[string][]netip.Addr // fqdn (lower case) → addresses
	srvs     map[string][]SRV
	cnames   map[string]string // fqdn (lower case) → target, answered alone
	ttl      uint32
	mode     Mode
	truncate bool

	// Queries counts the questions asked over UDP and TCP.
	udpQueries, tcpQueries atomic.Int64
}

// Start starts a server with no records and a TTL of 1s; Close stops it.
func Start() (*Server, error) {
	s := &Server{addrs: map[string][]netip.Addr{}, srvs: map[string][]SRV{}, cnames: map[string]string{}, ttl: 1}
	var pc net.PacketConn
	var ln net.Listener
	// The TCP port must be the UDP one: try a few kernel-picked ports.
	for range 20 {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("listening on UDP: %w", err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		pc = nil
	}
	if pc == nil {
		return nil, fmt.Errorf("listening on TCP: no port free for both UDP and TCP")
	}
	s.addr = pc.LocalAddr().String()
	started := make(chan struct{}, 2)
	s.udp = &dns.Server{PacketConn: pc, Handler: s, NotifyStartedFunc: func() { started <- struct{}{} }}
	s.tcp = &dns.Server{Listener: ln, Handler: s, NotifyStartedFunc: func() { started <- struct{}{} }}
	go s.udp.ActivateAndServe()
	go s.tcp.ActivateAndServe()
	<-started
	<-started
	return s, nil
}

// Addr returns the server's "127.0.0.1:port".
func (s *Server) Addr() string { return s.addr }

// Close stops the server.
func (s *Server) Close() {
	s.udp.Shutdown()
	s.tcp.Shutdown()
}

// SetAddrs sets name's A and AAAA records (none: the name does not exist,
// NXDOMAIN).
func (s *Server) SetAddrs(name string, addrs ...string) {
	var as []netip.Addr
	for _, a := range addrs {
		as = append(as, netip.MustParseAddr(a))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(as) == 0 {
		delete(s.addrs, dns.Fqdn(strings.ToLower(name)))
		return
	}
	s.addrs[dns.Fqdn(strings.ToLower(name))] = as
}

// SetCNAME makes name an alias of target: its A and AAAA answers hold the
// CNAME record only (the resolver must ask again for target), as a
// server that does not chase aliases answers.
func (s *Server) SetCNAME(name, target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cnames[strings.ToLower(dns.Fqdn(name))] = dns.Fqdn(target)
}

// SetSRV sets name's SRV records (none: NXDOMAIN).
func (s *Server) SetSRV(name string, srvs ...SRV) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(srvs) == 0 {
		delete(s.srvs, dns.Fqdn(strings.ToLower(name)))
		return
	}
	s.srvs[dns.Fqdn(strings.ToLower(name))] = srvs
}

// SetTTL sets the TTL of every answer, in seconds.
func (s *Server) SetTTL(ttl uint32) {
	s.mu.Lock()
	s.ttl = ttl
	s.mu.Unlock()
}

// SetMode sets how the server answers.
func (s *Server) SetMode(m Mode) {
	s.mu.Lock()
	s.mode = m
	s.mu.Unlock()
}

// SetTruncate makes UDP answers with records come back truncated and
// empty, so that the client must ask again over TCP.
func (s *Server) SetTruncate(on bool) {
	s.mu.Lock()
	s.truncate = on
	s.mu.Unlock()
}

// Queries returns the questions received over UDP and over TCP.
func (s *Server) Queries() (udp, tcp int64) { return s.udpQueries.Load(), s.tcpQueries.Load() }

// ServeDNS answers one question; it runs on the server's goroutines.
func (s *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	isUDP := w.LocalAddr().Network() == "udp"
	if isUDP {
		s.udpQueries.Add(1)
	} else {
		s.tcpQueries.Add(1)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mode == Drop || len(r.Question) != 1 {
		return
	}
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	if s.mode == ServFail {
		m.Rcode = dns.RcodeServerFailure
		w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: s.ttl}
	addrs, hasAddrs := s.addrs[name]
	srvs, hasSRV := s.srvs[name]
	if target, ok := s.cnames[name]; ok && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA) {
		h := hdr
		h.Rrtype = dns.TypeCNAME
		m.Answer = append(m.Answer, &dns.CNAME{Hdr: h, Target: target})
		w.WriteMsg(m)
		return
	}
	switch q.Qtype {
	case dns.TypeA, dns.TypeAAAA:
		for _, a := range addrs {
			h := hdr
			if a.Is4() && q.Qtype == dns.TypeA {
				h.Rrtype = dns.TypeA
				m.Answer = append(m.Answer, &dns.A{Hdr: h, A: a.AsSlice()})
			} else if a.Is6() && q.Qtype == dns.TypeAAAA {
				h.Rrtype = dns.TypeAAAA
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: h, AAAA: a.AsSlice()})
			}
		}
	case dns.TypeSRV:
		for _, v := range srvs {
			h := hdr
			h.Rrtype = dns.TypeSRV
			m.Answer = append(m.Answer, &dns.SRV{Hdr: h, Priority: v.Priority, Weight: v.Weight, Port: v.Port, Target: dns.Fqdn(v.Target)})
		}
	}
	if !hasAddrs && !hasSRV {
		m.Rcode = dns.RcodeNameError
	}
	if s.truncate && isUDP && len(m.Answer) > 0 {
		m.Answer = nil
		m.Truncated = true
	}
	w.WriteMsg(m)
}
