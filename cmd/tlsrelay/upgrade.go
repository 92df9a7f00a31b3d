package main

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"

	"github.com/cloudflare/tableflip"
	"golang.org/x/sys/unix"

	"github.com/tlsrelay/tlsrelay/engine/conf"
)

// handover is the binary upgrade (SIGUSR2): github.com/cloudflare/tableflip
// re-executes the binary at the same path, passes it the listening sockets
// and tells this process when the new one is ready.
//
// tableflip keeps a duplicate of every listening socket it has handed the
// engine, to pass on at the next upgrade. While that duplicate lives, a
// socket the engine closes (a listener a reload removed, or a reload that
// failed after binding a new one) would stay in LISTEN: the kernel would
// complete handshakes nobody accepts. So handover keeps a descriptor of its
// own per socket and, after each reload, shuts down (shutdown(SHUT_RD),
// which on Linux ends listening for every descriptor of the socket) those
// the configuration no longer lists: connecting to them is refused, as
// NGINX does.
//
// listen runs on the goroutine that starts or reloads the engine; the
// other methods on the control goroutine (runner.run). A mutex keeps the
// two apart anyway.
type handover struct {
	upg *tableflip.Upgrader

	mu sync.Mutex
	// socks maps "network addr" (addr as the engine names a reuseport
	// copy: "127.0.0.1:80#1"; a unix domain socket's bare path: "unix
	// /run/x.sock") to our descriptor of that socket.
	socks map[string]int
}

// newHandover prepares binary upgrades. In a process that an upgrade
// started, it takes over the sockets the old process passed.
func newHandover() (*handover, error) {
	upg, err := tableflip.New(tableflip.Options{})
	if err != nil {
		return nil, fmt.Errorf("preparing binary upgrades: %w", err)
	}
	return &handover{upg: upg, socks: map[string]int{}}, nil
}

// child reports whether an upgrade started this process.
func (h *handover) child() bool { return h != nil && h.upg.HasParent() }

// listen is the engine's ListenFunc: the socket the old process passed for
// (network, addr), else a new one from create, registered so that the
// next upgrade passes it on.
func (h *handover) listen(network, addr string, create func(network, addr string) (net.Listener, error)) (net.Listener, error) {
	// The engine's own error (NGINX's "bind() to ADDR failed (98: ...)
	// in FILE:LINE") is returned as it is, not inside tableflip's words.
	var createErr error
	ln, err := h.upg.Fds.ListenWithCallback(network, addr, func(network, addr string) (net.Listener, error) {
		ln, err := create(network, addr)
		createErr = err
		return ln, err
	})
	if err != nil {
		if createErr != nil {
			return nil, createErr
		}
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	if !listening(ln) {
		// The old process had shut this socket down (a reload removed
		// its listener) and the configuration names it again.
		ln.Close()
		if ln, err = create(network, addr); err != nil {
			return nil, err
		}
		tl, ok := ln.(tableflip.Listener)
		if !ok {
			ln.Close()
			return nil, fmt.Errorf("listening on %s: %T cannot be passed to a new binary", addr, ln)
		}
		if err := h.upg.Fds.AddListener(network, addr, tl); err != nil {
			ln.Close()
			return nil, fmt.Errorf("listening on %s: %w", addr, err)
		}
	}
	fd, err := dupSocket(ln)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	h.mu.Lock()
	key := network + " " + addr
	if old, ok := h.socks[key]; ok {
		unix.Close(old)
	}
	h.socks[key] = fd
	h.mu.Unlock()
	return ln, nil
}

// prune shuts down the sockets that cfg does not list, after a reload (cfg
// is then the configuration in force: the new one, or the old one when the
// reload failed).
func (h *handover) prune(cfg *conf.Config) {
	if h == nil {
		return
	}
	live := listenKeys(cfg)
	h.mu.Lock()
	defer h.mu.Unlock()
	for key, fd := range h.socks {
		if !live(key) {
			// A unix domain socket's file is deleted by the engine
			// when it drops the socket.
			unix.Shutdown(fd, unix.SHUT_RD)
			unix.Close(fd)
			delete(h.socks, key)
		}
	}
}

// stop ends upgrades (one starting is killed) and closes our descriptors,
// leaving each socket to whoever else holds it: the engine until it
// stops, a new binary that took over.
func (h *handover) stop() {
	if h == nil {
		return
	}
	h.upg.Stop()
	h.mu.Lock()
	defer h.mu.Unlock()
	for key, fd := range h.socks {
		unix.Close(fd)
		delete(h.socks, key)
	}
}

// listenKeys returns whether a socket key ("network addr" or "network
// addr#i") belongs to a listen directive of cfg; the copies #1... exist
// only with reuseport (their number follows worker_processes, which the
// engine decides).
func listenKeys(cfg *conf.Config) func(key string) bool {
	type entry struct{ reuse bool }
	m := map[string]entry{}
	if cfg.Main.MetricsListen != "" {
		// The engine binds metrics_listen through the same hand-over.
		m["tcp "+cfg.Main.MetricsListen] = entry{}
	}
	if cfg.Stream != nil {
		for _, s := range cfg.Stream.Servers {
			for _, l := range s.Listen {
				// The engine names a unix domain socket by its bare
				// path, as Go and tableflip do.
				k := l.Network + " " + strings.TrimPrefix(l.Addr, "unix:")
				m[k] = entry{reuse: m[k].reuse || l.ReusePort}
			}
		}
	}
	return func(key string) bool {
		base, copyIdx := key, false
		if i := strings.LastIndexByte(key, '#'); i >= 0 {
			base, copyIdx = key[:i], true
		}
		e, ok := m[base]
		return ok && (!copyIdx || e.reuse)
	}
}

// listening reports whether ln's socket is in LISTEN (SO_ACCEPTCONN).
func listening(ln net.Listener) bool {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	v := 0
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN) }); err != nil {
		return false
	}
	return gerr == nil && v == 1
}

// dupSocket returns a new close-on-exec descriptor of ln's socket.
func dupSocket(ln net.Listener) (int, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("%T has no descriptor", ln)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("getting the socket's descriptor: %w", err)
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, fmt.Errorf("getting the socket's descriptor: %w", err)
	}
	if derr != nil {
		return -1, fmt.Errorf("dup of the socket: %w", derr)
	}
	return fd, nil
}

// upgradeUnavailable is the reason a SIGUSR2 cannot upgrade, for the log.
func upgradeUnavailable(err error) string {
	if errors.Is(err, tableflip.ErrNotSupported) {
		return "binary upgrade is not supported on this system"
	}
	return fmt.Sprintf("binary upgrade is not available: %v", err)
}
