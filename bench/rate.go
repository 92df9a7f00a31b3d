package bench

// The sustained-rate row: new connections as fast as 16 clients can make
// them, for RateDuration, through each proxy to one upstream address, in a
// network namespace of its own where a port in TIME_WAIT is not reused
// (tcp_tw_reuse 0) and connect() has 1,024 ephemeral ports. Whichever side
// of the upstream connection sends the first FIN keeps its socket in
// TIME_WAIT for 60 s; when that is the proxy, it runs out of ports to that
// one upstream after about 1,024 connections, and connect() fails with
// EADDRNOTAVAIL. The host's loopback hides this (tcp_tw_reuse 2 lets
// loopback reuse such ports). Each (proxy, upstream closing kind) pair runs
// in a child process (RunRateChild) in a fresh namespace, so no TIME_WAIT
// of one pair is left for the next.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/netns"
	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// How the upstream of the sustained-rate row ends each connection after
// its echo (RateSpec.Kind).
const (
	// RateCloseNotify: the upstream reads on; at the proxy's close_notify
	// (or FIN) it closes the TLS connection (close_notify, then FIN).
	RateCloseNotify = "close_notify"
	// RateBareFIN: at the proxy's close_notify (or FIN) the upstream
	// closes the TCP connection without a close_notify: a bare FIN.
	RateBareFIN = "bare FIN"
	// RateUpstreamFirst: right after the echo the upstream closes the TLS
	// connection (close_notify, then FIN) without waiting for the proxy.
	RateUpstreamFirst = "upstream first"
)

// RateKinds are the upstream closing kinds, in the row's order.
func RateKinds() []string { return []string{RateCloseNotify, RateBareFIN, RateUpstreamFirst} }

// The namespace of each pair: its ephemeral ports and how many loopback
// source addresses the clients rotate over.
const (
	RatePortLow     = 40000
	RatePortHigh    = 41023
	RateSourceAddrs = 16 * 254
)

// RateRow is the sustained-rate row's result.
type RateRow struct {
	// Skipped says why the row did not run (no network namespaces); the
	// other fields are then empty.
	Skipped string `json:"skipped,omitempty"`
	// Seconds is the load's length per pair, Workers its clients.
	Seconds float64 `json:"seconds"`
	Workers int     `json:"workers"`
	// PortLow and PortHigh are the namespace's ip_local_port_range,
	// SourceAddrs the number of client source addresses.
	PortLow     int `json:"port_low"`
	PortHigh    int `json:"port_high"`
	SourceAddrs int `json:"source_addrs"`
	// Pairs in the order they ran, every round's (RatePair.Round).
	Pairs []RatePair `json:"pairs"`
}

// RatePair is one (proxy, upstream closing kind) pair: what its child
// process measured (RunRateChild writes it as JSON).
type RatePair struct {
	// Proxy is the proxy's column name, Kind a RateKinds entry, Round
	// the round it ran in, from 1 (0 in results of builds before rounds:
	// the one round).
	Proxy string `json:"proxy"`
	Kind  string `json:"kind"`
	Round int    `json:"round,omitempty"`
	// Err is set when the pair could not be measured (the proxy did not
	// start, no echo through it, the child failed).
	Err string `json:"error,omitempty"`
	// Seconds is the load's wall time.
	Seconds float64 `json:"seconds"`
	// Conns completed (connect, 16 bytes out, the same 16 back, close);
	// Failed did not (a dial error, a short read, other bytes, a
	// timeout).
	Conns  int `json:"conns"`
	Failed int `json:"failed"`
	// ConnsPerSec is Conns over the load's planned length (RateSpec.Seconds).
	ConnsPerSec float64 `json:"conns_per_s"`
	// FirstFailure is when the first failure ended, in seconds from the
	// load's start; nil for none. FirstErr is its error.
	FirstFailure *float64 `json:"first_failure_s,omitempty"`
	FirstErr     string   `json:"first_error,omitempty"`
	// OKPerSec and FailedPerSec count the connections that ended in each
	// second of the load, completed and failed.
	OKPerSec     []int `json:"ok_per_s"`
	FailedPerSec []int `json:"failed_per_s"`
	// TimeWaitProxy and TimeWaitUpstream are the sockets in TIME_WAIT at
	// the end of the load on the proxy's side of its upstream connections
	// and on the upstream's side; TimeWaitClient those of the client leg.
	TimeWaitProxy    int `json:"time_wait_proxy_side"`
	TimeWaitUpstream int `json:"time_wait_upstream_side"`
	TimeWaitClient   int `json:"time_wait_client_leg"`
	// UpstreamAccepted is how many connections the upstream accepted
	// (the first echo check included).
	UpstreamAccepted int64 `json:"upstream_accepted"`
	// UpstreamResumed is how many of the upstream's handshakes resumed a
	// TLS session.
	UpstreamResumed int64 `json:"upstream_resumed"`
	// Group is the key exchange group of the upstream's first handshake
	// ("X25519"); "" when none completed.
	Group string `json:"group,omitempty"`
	// AddrNotAvail counts the proxy's log lines with "Cannot assign
	// requested address" (connect() failing with EADDRNOTAVAIL); nil for
	// a proxy whose log has no line per failed connect (HAProxy without
	// a log in its proxy section).
	AddrNotAvail *int `json:"log_eaddrnotavail,omitempty"`
}

// RateSpec is what one child process of the row measures; the parent
// writes it as JSON into a file whose path is the child's argument.
type RateSpec struct {
	Proxy RateProxy `json:"proxy"`
	Kind  string    `json:"kind"`
	// Workers is the proxy's worker_processes (HAProxy's nbthread).
	Workers int `json:"workers"`
	// LoadWorkers are the concurrent clients.
	LoadWorkers int `json:"load_workers"`
	// Seconds bounds the load in time, MaxConns in connections;
	// ConnTimeout bounds each connection, in seconds.
	Seconds     float64 `json:"seconds"`
	MaxConns    int     `json:"max_conns"`
	ConnTimeout float64 `json:"conn_timeout_s"`
	// PortLow and PortHigh are the namespace's ephemeral port range.
	PortLow  int `json:"port_low"`
	PortHigh int `json:"port_high"`
	// Files are the PKI (server chain for the upstream; client chain
	// and root for the proxy); ClientCombined is HAProxy's "crt" file.
	Files          pki.Files `json:"files"`
	ClientCombined string    `json:"client_combined"`
	// Dir is the pair's private directory (configuration, logs).
	Dir string `json:"dir"`
	// Out is the file the child writes its RatePair into.
	Out string `json:"out"`
}

// RateProxy names a proxy in a way that travels to the child process.
type RateProxy struct {
	// Type is "tlsrelay", "nginx" or "haproxy".
	Type string `json:"type"`
	// Name is the column name.
	Name string `json:"name"`
	Path string `json:"path"`
	// Module is NGINX's stream module ("" when built in).
	Module string `json:"module,omitempty"`
}

// rateProxyOf describes p for the child, if the row knows how to run it.
func rateProxyOf(p Peer) (RateProxy, bool) {
	switch v := p.(type) {
	case Tlsrelay:
		return RateProxy{Type: "tlsrelay", Name: v.Name(), Path: v.Path}, true
	case Nginx:
		return RateProxy{Type: "nginx", Name: v.Name(), Path: v.Path, Module: v.Module}, true
	case HAProxy:
		return RateProxy{Type: "haproxy", Name: v.Name(), Path: v.Path}, true
	}
	return RateProxy{}, false
}

// ratePeers returns the peers the row runs: Options.Peers it knows how to
// run in the child.
func (r *runner) ratePeers() []RateProxy {
	var out []RateProxy
	for _, p := range r.o.Peers {
		if rp, ok := rateProxyOf(p); ok {
			out = append(out, rp)
		}
	}
	return out
}

// rateDuration returns the load's length per pair: Options.RateDuration,
// or 20 s (quick 5 s).
func (o *Options) rateDuration() time.Duration {
	switch {
	case o.RateDuration > 0:
		return o.RateDuration
	case o.Quick:
		return 5 * time.Second
	}
	return 20 * time.Second
}

// rate measures the sustained-rate row, one child process per pair, every
// pair once per round: kinds in order, the proxies' order alternating
// between kinds and rounds. It runs on the bench's goroutine.
func (r *runner) rate() error {
	if r.rateSkip != nil {
		r.res.Rate = &RateRow{Skipped: "skipped: " + r.rateSkip.Error()}
		return nil
	}
	child := r.o.RateChild
	if len(child) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding this executable for the rate row's child: %w", err)
		}
		child = []string{exe, "-rate-child"}
	}
	d := r.o.rateDuration()
	portHigh := RatePortHigh
	if r.o.RatePorts > 0 {
		portHigh = RatePortLow + r.o.RatePorts - 1
	}
	row := &RateRow{Seconds: d.Seconds(), Workers: r.o.LoadWorkers, PortLow: RatePortLow, PortHigh: portHigh, SourceAddrs: RateSourceAddrs}
	r.res.Rate = row
	m := r.material[pki.ECDSAP256]
	// What every pair's child is told but its proxy, kind and directory.
	common := RateSpec{
		Workers: r.o.Workers, LoadWorkers: r.o.LoadWorkers,
		Seconds: d.Seconds(), MaxConns: int(50000 * d.Seconds()), ConnTimeout: 2,
		PortLow: RatePortLow, PortHigh: portHigh, Files: m.Files, ClientCombined: m.ClientCombined,
	}
	for round := range r.o.Rounds {
		if err := r.ratePairs(row, child, common, d+90*time.Second, round); err != nil {
			return err
		}
	}
	return nil
}

// ratePairs runs one round of the row: every (proxy, kind) pair once, in
// a child given common with its proxy, kind and directory and killed
// after limit, appended to row.Pairs. Runs on the bench's goroutine.
func (r *runner) ratePairs(row *RateRow, child []string, common RateSpec, limit time.Duration, round int) error {
	for i, kind := range RateKinds() {
		for _, rp := range order(r.ratePeers(), round+i) {
			if err := r.ctx.Err(); err != nil {
				return err
			}
			label := fmt.Sprintf("sustained rate · %s · upstream %s", rp.Name, kind)
			if r.o.Rounds > 1 {
				label += fmt.Sprintf(" · round %d/%d", round+1, r.o.Rounds)
			}
			r.o.Step(label, false, "")
			dir, err := os.MkdirTemp(r.o.Dir, "rate-")
			if err != nil {
				return fmt.Errorf("making a directory for the rate row: %w", err)
			}
			spec := common
			spec.Proxy, spec.Kind, spec.Dir, spec.Out = rp, kind, dir, filepath.Join(dir, "result.json")
			pair := runRateChild(r.ctx, child, spec, limit)
			pair.Round = round + 1
			row.Pairs = append(row.Pairs, pair)
			if pair.Err != "" {
				r.o.Step(label, true, "error: "+pair.Err)
				continue // its logs stay, for the reader of the error
			}
			os.RemoveAll(dir) // NGINX's log of a walled pair is ~50 MB
			first := "none"
			if pair.FirstFailure != nil {
				first = fmt.Sprintf("at %.1f s", *pair.FirstFailure)
			}
			r.o.Step(label, true, fmt.Sprintf("%.0f conns/s, %d failed, first failure %s", pair.ConnsPerSec, pair.Failed, first))
		}
	}
	return nil
}

// runRateChild runs one pair: argv plus the spec file's path, in a new
// network namespace, in a process group of its own so that a child killed
// at the limit takes its proxy with it. It returns the child's result, or
// a pair with Err set.
func runRateChild(ctx context.Context, argv []string, spec RateSpec, limit time.Duration) RatePair {
	fail := func(err error) RatePair {
		return RatePair{Proxy: spec.Proxy.Name, Kind: spec.Kind, Err: err.Error()}
	}
	specPath := filepath.Join(spec.Dir, "spec.json")
	js, err := json.Marshal(spec)
	if err != nil {
		return fail(fmt.Errorf("encoding the rate spec: %w", err))
	}
	if err := os.WriteFile(specPath, js, 0o600); err != nil {
		return fail(fmt.Errorf("writing %s: %w", specPath, err))
	}
	logPath := filepath.Join(spec.Dir, "child.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return fail(fmt.Errorf("creating %s: %w", logPath, err))
	}
	defer logf.Close()
	cmd := netns.Command(argv[0], append(argv[1:], specPath)...)
	cmd.SysProcAttr.Setpgid = true
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fail(fmt.Errorf("starting the rate row's child: %w", err))
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var waitErr error
	select {
	case waitErr = <-done:
	case <-ctx.Done():
		stopGroup(cmd, done)
		waitErr = ctx.Err()
	case <-time.After(limit):
		stopGroup(cmd, done)
		waitErr = fmt.Errorf("the child ran past %s", limit)
	}
	// A child that stopped its proxy leaves an empty group (ESRCH); one
	// that died without doing so leaves the proxy, which goes now. The
	// group's id cannot be reused while a member lives.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	pair, err := ReadRatePair(spec.Out)
	if err != nil {
		if waitErr == nil {
			waitErr = err
		}
		msg := fmt.Sprintf("rate child: %v", waitErr)
		if t := tailFile(logPath, 3); t != "" {
			msg += ": " + t
		}
		return fail(errors.New(msg))
	}
	return pair
}

// stopGroup ends the child: SIGTERM (the child stops its proxy and
// exits), then SIGKILL to its whole process group after 10 s.
func stopGroup(cmd *exec.Cmd, done <-chan error) {
	pgid := cmd.Process.Pid
	syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
	}
}

// WriteRatePair writes p as JSON into path (the child's result).
func WriteRatePair(path string, p RatePair) error {
	js, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the rate result: %w", err)
	}
	if err := os.WriteFile(path, append(js, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// ReadRatePair reads what WriteRatePair wrote.
func ReadRatePair(path string) (RatePair, error) {
	var p RatePair
	js, err := os.ReadFile(path)
	if err != nil {
		return p, fmt.Errorf("reading the rate result: %w", err)
	}
	if err := json.Unmarshal(js, &p); err != nil {
		return p, fmt.Errorf("decoding the rate result %s: %w", path, err)
	}
	return p, nil
}
