// Command tlsrelay-bench is the driver behind `make bench`: it runs tlsrelay
// beside NGINX (and HAProxy) when they are installed, measures handshake
// cost, resumption, throughput, memory per connection, new connections at
// a sustained rate (as root) and the CPU's crypto speed, and writes
// BENCHMARKS.md, bench/results.json and SVG charts.
//
//	tlsrelay-bench -tlsrelay bin/tlsrelay -out . [-quick] [-rounds N] [-workers N] [-only rows]
//	tlsrelay-bench backend -spec JSON   (the upstream servers' child process)
//	tlsrelay-bench -rate-child FILE     (one pair of the sustained-rate row, in its network namespace)
//
// BENCH_QUICK=1 in the environment is the same as -quick.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/bench"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "backend" {
		if err := backendMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "tlsrelay-bench backend:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "-rate-child" {
		if err := rateChildMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "tlsrelay-bench -rate-child:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "tlsrelay-bench:", err)
		os.Exit(1)
	}
}

// backendMain is the child process that serves the upstreams, so that
// neither it nor the driver holds more than the descriptor limit.
func backendMain(args []string) error {
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	specJSON := fs.String("spec", "", "backend spec (JSON)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var spec bench.BackendSpec
	if err := json.Unmarshal([]byte(*specJSON), &spec); err != nil {
		return fmt.Errorf("parsing -spec: %w", err)
	}
	raiseFileLimit()
	return bench.ServeBackends(spec, os.Stdin, os.Stdout)
}

// rateChildMain is the child process of the sustained-rate row: one
// (proxy, upstream closing kind) pair, started by the driver in a new
// network namespace with the path of its spec file. SIGTERM stops it
// early; it still writes what it measured.
func rateChildMain(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("want one argument, the spec file; have %d", len(args))
	}
	raiseFileLimit()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return bench.RunRateChild(ctx, args[0])
}

const usage = `usage: tlsrelay-bench [flags]

Runs tlsrelay beside NGINX and HAProxy (when installed) and writes
BENCHMARKS.md, bench/results.json and bench/*.svg under -out.
BENCH_QUICK=1 in the environment is the same as -quick.

`

func run(args []string) error {
	fs := flag.NewFlagSet("tlsrelay-bench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	var (
		tlsrelayPath = fs.String("tlsrelay", "bin/tlsrelay", "tlsrelay binary to measure")
		boringPath   = fs.String("tlsrelay-boring", "", `a second tlsrelay binary, built with "make build-boring", measured in the handshake rows in a column of its own ("" for none)`)
		osslKeysPath = fs.String("tlsrelay-openssl", "", `a tlsrelay binary built with "make build-openssl" (RSA client-key signatures by OpenSSL's libcrypto), measured in the handshake rows in a column of its own ("" for none)`)
		baselinePath = fs.String("baseline", "", `a tlsrelay binary built from an earlier revision ("make bench BASELINE=ref" builds one), measured in the handshake, throughput and memory rows in a column of its own, in the same alternating rounds, with a tlsrelay/baseline ratio column ("" for none)`)
		baselineRef  = fs.String("baseline-ref", "", "the revision -baseline was built from, for its column's description")
		nginxPath    = fs.String("nginx", "", `nginx binary (default: from PATH; "none" to skip)`)
		nginxModule  = fs.String("nginx-module", "/usr/lib/nginx/modules/ngx_stream_module.so", "NGINX stream module to load (skipped when the file does not exist)")
		haproxyPath  = fs.String("haproxy", "", `haproxy binary (default: from PATH; "none" to skip)`)
		opensslPath  = fs.String("openssl", "openssl", `openssl binary for "openssl speed" ("none" to skip)`)
		out          = fs.String("out", ".", "directory to write BENCHMARKS.md and bench/ files into")
		quick        = fs.Bool("quick", os.Getenv("BENCH_QUICK") == "1", "quick run (about 2.5 minutes as root, under 2 without the sustained-rate row): 1 round, shorter rounds")
		rounds       = fs.Int("rounds", 0, "rounds per proxy and configuration (default 3, quick 1)")
		workers      = fs.Int("workers", 2, "worker_processes of tlsrelay and NGINX, nbthread of HAProxy")
		loadWorkers  = fs.Int("load-workers", 16, "concurrent clients in handshake rounds")
		only         = fs.String("only", "", "comma-separated row groups to run: "+strings.Join(bench.AllRows, ","))
		benchtime    = fs.Duration("benchtime", 0, "time per Go crypto and handshake micro-benchmark (default 1s, quick 200ms)")
		keep         = fs.Bool("keep", false, "keep the scratch directory (configurations, logs)")
		kindsFlag    = fs.String("kinds", "", `comma-separated handshake rows to run, e.g. "TLS1.3 ecdsa-p256 resumed" (default all)`)
		rateDuration = fs.Duration("rate-duration", 0, "load per (proxy, upstream closing kind) pair of the sustained-rate row (default 20s, quick 5s)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	raiseFileLimit()

	bt := *benchtime
	if bt == 0 {
		bt = time.Second
		if *quick {
			bt = 200 * time.Millisecond
		}
	}
	// testing.Benchmark reads -test.benchtime from the default flag set.
	testing.Init()
	if err := flag.CommandLine.Set("test.benchtime", bt.String()); err != nil {
		return fmt.Errorf("setting the benchmark time: %w", err)
	}

	onlyRows := map[string]bool{}
	for _, r := range strings.Split(*only, ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		if !contains(bench.AllRows, r) {
			return fmt.Errorf("-only: unknown row group %q (have %s)", r, strings.Join(bench.AllRows, ","))
		}
		onlyRows[r] = true
	}

	kinds, err := chooseKinds(*kindsFlag)
	if err != nil {
		return err
	}

	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding this executable for the backend child: %w", err)
	}
	scratch, err := os.MkdirTemp("", "tlsrelay-bench-")
	if err != nil {
		return fmt.Errorf("making a scratch directory: %w", err)
	}
	if *keep {
		fmt.Fprintln(os.Stderr, "scratch directory:", scratch)
	} else {
		defer os.RemoveAll(scratch)
	}

	peers, infos, notes := choosePeers(*tlsrelayPath, *nginxPath, *nginxModule, *haproxyPath)
	var handshakePeers []bench.Peer
	for _, o := range []struct{ path, build, label string }{
		{*boringPath, gitDescribe() + ", GOEXPERIMENT=boringcrypto", BoringColumn},
		{*osslKeysPath, gitDescribe() + ", -tags openssl", OpenSSLColumn},
	} {
		if o.path == "" {
			continue
		}
		b := bench.Tlsrelay{Path: o.path, Build: o.build, Label: o.label}
		handshakePeers = append(handshakePeers, b)
		infos = append(infos, bench.PeerInfo{Name: b.Name(), Version: b.Version(), Available: true, HandshakeOnly: true})
	}
	var baseline bench.Peer
	if *baselinePath != "" {
		b := bench.Tlsrelay{Path: *baselinePath, Build: "baseline " + *baselineRef, Label: BaselineColumn}
		baseline = b
		infos = append(infos, bench.PeerInfo{Name: b.Name(), Version: b.Version(), Available: true, Baseline: true})
	}
	for _, n := range notes {
		fmt.Fprintln(os.Stderr, "note:", n)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	sslPath := ""
	if *opensslPath != "none" {
		if p, err := exec.LookPath(*opensslPath); err == nil {
			sslPath = p
		}
	}

	prog := bench.NewProgress(os.Stderr, bench.IsTerminal(os.Stderr))
	res, runErr := bench.Run(ctx, bench.Options{
		Peers: peers, HandshakePeers: handshakePeers, Baseline: baseline, Dir: scratch, Workers: *workers, Rounds: *rounds, Quick: *quick,
		LoadWorkers: *loadWorkers, Only: onlyRows, OpenSSL: sslPath, Kinds: kinds, RateDuration: *rateDuration,
		StartBackends: func(s bench.BackendSpec) (bench.Backends, error) { return bench.StartChildBackends(exe, s) },
		Step:          prog.Step,
		TotalSteps:    prog.SetTotal,
	})
	prog.Finish()
	if res == nil {
		return runErr
	}
	res.Peers = infos
	res.Notes = append(notes, res.Notes...)
	res.Command = commandLine()
	if runErr != nil {
		res.Notes = append(res.Notes, "The run stopped early: "+runErr.Error())
		res.Seconds = time.Since(res.Started).Seconds()
	}
	if err := bench.WriteReport(*out, res); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s/%s, %s/%s and charts in %s\n", *out, bench.ReportFile, *out, bench.JSONFile, fmtDur(res.Seconds))
	return runErr
}

// BoringColumn is the column of the -tlsrelay-boring build.
const BoringColumn = "tlsrelay boringcrypto"

// BaselineColumn is the column of the -baseline build (an earlier
// revision, for same-run comparisons).
const BaselineColumn = "tlsrelay baseline"

// OpenSSLColumn is the column of the -tlsrelay-openssl build.
const OpenSSLColumn = "tlsrelay openssl-keys"

// choosePeers returns the proxies to run, a description of every proxy
// (measured or not) and notes on the missing ones.
func choosePeers(tlsrelayPath, nginxPath, nginxModule, haproxyPath string) ([]bench.Peer, []bench.PeerInfo, []string) {
	var (
		peers []bench.Peer
		infos []bench.PeerInfo
		notes []string
	)
	// tlsrelay always has a column: if it cannot run, its cells say why.
	t := bench.Tlsrelay{Path: tlsrelayPath, Build: gitDescribe()}
	peers = append(peers, t)
	infos = append(infos, bench.PeerInfo{Name: t.Name(), Version: t.Version(), Available: true})

	find := func(flagValue, name string) (string, string) {
		if flagValue == "none" {
			return "", "skipped (-" + name + " none)"
		}
		if flagValue == "" {
			flagValue = name
		}
		p, err := exec.LookPath(flagValue)
		if err != nil {
			return "", "not installed; `make bench-deps` (Debian: apt-get install nginx libnginx-mod-stream haproxy) adds it to the comparison"
		}
		return p, ""
	}
	if p, why := find(nginxPath, "nginx"); p != "" {
		mod := nginxModule
		if _, err := os.Stat(mod); err != nil {
			mod = ""
		}
		n := bench.Nginx{Path: p, Module: mod}
		infos = append(infos, bench.PeerInfo{Name: n.Name(), Version: n.Version(), Available: true})
		peers = append(peers, n)
	} else {
		infos = append(infos, bench.PeerInfo{Name: "NGINX", Note: why})
		notes = append(notes, "NGINX "+why+"; without it there are no tlsrelay/NGINX ratios.")
	}
	if p, why := find(haproxyPath, "haproxy"); p != "" {
		h := bench.HAProxy{Path: p}
		infos = append(infos, bench.PeerInfo{Name: h.Name(), Version: h.Version(), Available: true})
		peers = append(peers, h)
	} else {
		infos = append(infos, bench.PeerInfo{Name: "HAProxy", Note: why})
		notes = append(notes, "HAProxy "+why+".")
	}
	return peers, infos, notes
}

// chooseKinds parses -kinds: names of handshake rows, any case.
func chooseKinds(list string) ([]bench.HandshakeKind, error) {
	var out []bench.HandshakeKind
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		var found bool
		var names []string
		for _, k := range bench.AllKinds() {
			names = append(names, k.String())
			if strings.EqualFold(k.String(), name) {
				out = append(out, k)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("-kinds: unknown handshake %q (have %s)", name, strings.Join(names, ", "))
		}
	}
	return out, nil
}

// gitDescribe names the checked-out commit, for the tlsrelay version line.
func gitDescribe() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return ""
	}
	return "commit " + strings.TrimSpace(string(out))
}

// commandLine is the command that reproduces this run.
func commandLine() string {
	cmd := strings.Join(os.Args, " ")
	if os.Getenv("BENCH_QUICK") == "1" {
		cmd = "BENCH_QUICK=1 " + cmd
	}
	if os.Getenv("MAKELEVEL") != "" {
		mk := "make bench"
		if os.Getenv("BENCH_QUICK") == "1" {
			mk = "BENCH_QUICK=1 make bench"
		}
		cmd = mk + "    # ran: " + cmd
	}
	return cmd
}

// raiseFileLimit lifts the soft descriptor limit to the hard one; the
// memory rounds hold thousands of connections. Children inherit it.
func raiseFileLimit() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			fmt.Fprintln(os.Stderr, "tlsrelay-bench: raising the file limit:", err)
		}
	}
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func fmtDur(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(time.Second).String()
}
