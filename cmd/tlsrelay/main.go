// Command tlsrelay is a TCP-to-TLS proxy: NGINX's stream { proxy_ssl on; }
// as one Go binary that reads the same configuration.
//
// Usage follows nginx:
//
//	tlsrelay [-?hvVtTq] [-s signal] [-p prefix] [-c filename] [-g directives]
//	tlsrelay demo [args]
//
// The prefix defaults to the current directory and the configuration file
// to conf/tlsrelay.conf under it. tlsrelay always runs in the foreground.
package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/tlsrelay/tlsrelay/engine"
	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/memory"
	"github.com/tlsrelay/tlsrelay/internal/safefile"
	"github.com/tlsrelay/tlsrelay/internal/syserr"
	"github.com/tlsrelay/tlsrelay/tlsbridge"
)

// Version is the version string printed by -v.
const Version = "tlsrelay/0.1.0"

// commit is the revision the binary was built from, stamped by the
// Makefile (-ldflags "-X main.commit=..."), so that -V says it however
// the build was made (-buildvcs=false, a tarball); empty in a plain go
// build, where -V shows the toolchain's vcs.revision when it has one.
var commit string

// fullVersion is Version with the commit, when stamped: what the start's
// notice and the status page show.
func fullVersion() string {
	if commit == "" {
		return Version
	}
	return Version + " (" + commit + ")"
}

// gcFloor is the heap the collector may reach between cycles however little
// is live (memory.NewGCPacer).
const gcFloor = 64 << 20

// defaultConf is the configuration file, relative to the prefix.
const defaultConf = "conf/tlsrelay.conf"

func main() {
	// Every new upstream session allocates ~30 KiB that dies with its
	// handshake (crypto/tls message building), so the collector's pace
	// matters. GOGC=200 cut the proxy's CPU per resumed TLS 1.3
	// connection by ~10% on the 2-core bench machine against 100; the
	// pacer keeps 200 (three times what is live) once sessions are held,
	// and lets the heap reach gcFloor between collections while little
	// is live, when a fixed GOGC would collect every few hundred
	// connections (memory.GCPacer). The environment's GOGC, when set,
	// wins; GOMEMLIMIT applies as usual.
	if os.Getenv("GOGC") == "" {
		memory.NewGCPacer(gcFloor, 200)
	}
	// TLSRELAY_CPUPROFILE=FILE writes a CPU profile of the whole run (%p in
	// FILE is the pid) (for
	// docs/benchmarks.md's breakdowns; `go tool pprof bin/tlsrelay FILE`).
	stop := startProfile(strings.ReplaceAll(os.Getenv("TLSRELAY_CPUPROFILE"), "%p", strconv.Itoa(os.Getpid())), os.Stderr)
	code := run(os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// startProfile starts a CPU profile into path ("" for none) and returns
// what stops it.
func startProfile(path string, stderr io.Writer) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintf(stderr, "tlsrelay: [alert] TLSRELAY_CPUPROFILE: %v\n", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintf(stderr, "tlsrelay: [alert] TLSRELAY_CPUPROFILE: %v\n", err)
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// options are the parsed command line.
type options struct {
	help, version, build bool
	test, dump, quiet    bool
	signal               string
	prefix, conf, global string
}

// run is the whole command; it returns the exit code. stdout receives the
// -T dump, stderr everything else, as with nginx.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "demo" {
		return runDemo(args[1:])
	}
	o, err := parseArgs(args)
	if err != nil {
		fmt.Fprintf(stderr, "tlsrelay: %v\n", err)
		return 1
	}
	if o.version || o.build || o.help {
		fmt.Fprintf(stderr, "tlsrelay version: %s\n", Version)
		if o.build {
			printBuild(stderr)
		}
		if o.help {
			printUsage(stderr)
		}
		return 0
	}
	if o.prefix == "" {
		wd, err := os.Getwd()
		if err != nil {
			fmt.Fprintf(stderr, "tlsrelay: [emerg] getting the current directory: %v\n", err)
			return 1
		}
		o.prefix = wd
	}
	if o.conf == "" {
		o.conf = defaultConf
	}
	if !filepath.IsAbs(o.conf) {
		o.conf = filepath.Join(o.prefix, o.conf)
	}
	switch {
	case o.test || o.dump:
		return test(o, stdout, stderr)
	case o.signal != "":
		return sendSignal(o, stderr)
	}
	return serve(o, stderr)
}

// parseArgs reads nginx-style options: single letters that may be
// combined ("-tq"), with -p, -c, -g and -s taking the rest of the word or
// the next argument.
func parseArgs(args []string) (options, error) {
	var o options
	for i := 0; i < len(args); i++ {
		a := args[i]
		if len(a) < 2 || a[0] != '-' {
			return o, fmt.Errorf("invalid option: %q", a)
		}
		for j := 1; j < len(a); j++ {
			switch a[j] {
			case '?', 'h':
				o.help = true
			case 'v':
				o.version = true
			case 'V':
				o.version, o.build = true, true
			case 't':
				o.test = true
			case 'T':
				o.test, o.dump = true, true
			case 'q':
				o.quiet = true
			case 'p', 'c', 'g', 's':
				flag := a[j]
				val := a[j+1:]
				if val == "" {
					if i+1 >= len(args) {
						what := map[byte]string{'p': "directory name", 'c': "file name", 'g': "parameter",
							's': "parameter"}[flag]
						return o, fmt.Errorf("option \"-%c\" requires %s", flag, what)
					}
					i++
					val = args[i]
				}
				switch flag {
				case 'p':
					o.prefix = val
				case 'c':
					o.conf = val
				case 'g':
					o.global = val
				case 's':
					switch val {
					case "stop", "quit", "reopen", "reload":
						o.signal = val
					default:
						return o, fmt.Errorf("invalid option: \"-s %s\"", val)
					}
				}
				j = len(a)
			default:
				return o, fmt.Errorf("invalid option: \"%s\"", a[j:])
			}
		}
	}
	return o, nil
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: tlsrelay [-?hvVtTq] [-s signal] [-p prefix]
                [-c filename] [-g directives]
       tlsrelay demo [args]

Options:
  -?,-h         : this help
  -v            : show version and exit
  -V            : show version and build information and exit
  -t            : test configuration and exit
  -T            : test configuration, dump the effective configuration and exit
  -q            : suppress non-error messages during configuration testing
  -s signal     : send signal to the running process (read from the pid file):
                  stop, quit, reopen, reload
  -p prefix     : set prefix path (default: the current directory)
  -c filename   : set configuration file (default: conf/tlsrelay.conf)
  -g directives : set global directives out of configuration file
`)
}

func printBuild(w io.Writer) {
	fmt.Fprintf(w, "built with %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(w, "client certificate signatures: %s\n", tlsbridge.KeyBackend())
	if commit != "" {
		fmt.Fprintf(w, "commit: %s\n", commit)
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	vcs := false
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" || s.Key == "vcs.time" || s.Key == "vcs.modified" {
			fmt.Fprintf(w, "%s: %s\n", s.Key, s.Value)
			vcs = true
		}
	}
	if commit == "" && !vcs {
		fmt.Fprintln(w, "commit: unknown (built without version control information; `make build` stamps it)")
	}
	for _, d := range bi.Deps {
		if strings.HasPrefix(d.Path, "github.com/panjf2000/gnet") {
			fmt.Fprintf(w, "gnet: %s %s\n", d.Path, d.Version)
		}
	}
}

// load reads the configuration and prints its warnings.
func load(o options, stderr io.Writer) (*conf.Config, error) {
	cfg, warns, err := conf.Load(o.conf, conf.LoadOptions{Prefix: o.prefix, Directives: o.global})
	for _, w := range warns {
		fmt.Fprintf(stderr, "tlsrelay: %s\n", w)
	}
	return cfg, err
}

// insecure returns the configuration's insecure-setting warnings that the
// engine's own warnings do not already cover.
func insecure(cfg *conf.Config, engineWarns []string) []string {
	var out []string
	for _, w := range cfg.Insecure() {
		if !engineCovers(w, engineWarns) {
			out = append(out, w.String())
		}
	}
	return out
}

// engineCovers reports whether the engine's warnings already say what w
// says: they name the same directive (proxy_ssl_verify) or every protocol
// version w names.
func engineCovers(w conf.Warning, engineWarns []string) bool {
	var terms []string
	if rest, ok := strings.CutPrefix(w.Msg, `"proxy_ssl_protocols" enables `); ok {
		versions, _, _ := strings.Cut(rest, ",")
		terms = strings.Fields(versions)
	} else if _, rest, ok := strings.Cut(w.Msg, `"`); ok {
		name, _, _ := strings.Cut(rest, `"`)
		terms = []string{name}
	}
	if len(terms) == 0 {
		return false
	}
	for _, term := range terms {
		found := false
		for _, e := range engineWarns {
			for _, word := range strings.FieldsFunc(e, func(r rune) bool { return strings.ContainsRune(" \t:,;()\"'", r) }) {
				found = found || word == term
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// printErr prints err in nginx's form, "tlsrelay: [emerg] ...".
func printErr(stderr io.Writer, err error) {
	msg := err.Error()
	if !strings.HasPrefix(msg, "[") {
		msg = "[emerg] " + msg
	}
	fmt.Fprintf(stderr, "tlsrelay: %s\n", msg)
}

// test is -t and -T: load, check with the engine (which builds TLS
// policies without binding), report as nginx -t does.
func test(o options, stdout, stderr io.Writer) int {
	cfg, err := load(o, stderr)
	if err == nil {
		var warns []string
		warns, err = engine.Check(cfg)
		for _, w := range append(insecure(cfg, warns), warns...) {
			if !strings.HasPrefix(w, "[") {
				w = "[warn] " + w
			}
			fmt.Fprintf(stderr, "tlsrelay: %s\n", w)
		}
	}
	if err != nil {
		printErr(stderr, err)
		fmt.Fprintf(stderr, "tlsrelay: configuration file %s test failed\n", o.conf)
		return 1
	}
	if !o.quiet {
		fmt.Fprintf(stderr, "tlsrelay: the configuration file %s syntax is ok\n", o.conf)
		fmt.Fprintf(stderr, "tlsrelay: configuration file %s test is successful\n", o.conf)
	}
	if o.dump {
		fmt.Fprintf(stdout, "# configuration file %s (effective, defaults filled in):\n", o.conf)
		for _, line := range missingSuites(cfg) {
			fmt.Fprintf(stdout, "# %s\n", line)
		}
		io.WriteString(stdout, cfg.Format())
	}
	return 0
}

// missingSuites lists, for -T, the suites each distinct proxy_ssl_ciphers
// string selects that crypto/tls does not implement (-t's warning counts
// them by family).
func missingSuites(cfg *conf.Config) []string {
	if cfg.Stream == nil {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for _, srv := range cfg.Stream.Servers {
		c := srv.Proxy.SSL.Ciphers
		if !srv.Proxy.SSL.Enabled || seen[c] {
			continue
		}
		seen[c] = true
		if cl, err := tlsbridge.ParseCipherString(c); err == nil && len(cl.Missing) > 0 {
			out = append(out, fmt.Sprintf("proxy_ssl_ciphers %q: not implemented by crypto/tls, not offered: %s", c, strings.Join(cl.Missing, ":")))
		}
	}
	return out
}

// signals are the signals of -s, by name.
var signals = map[string]syscall.Signal{"stop": syscall.SIGTERM, "quit": syscall.SIGQUIT,
	"reopen": syscall.SIGUSR1, "reload": syscall.SIGHUP}

// sendSignal is -s: signal the process whose pid the pid file holds, once
// /proc shows it is a tlsrelay (identify).
func sendSignal(o options, stderr io.Writer) int {
	cfg, err := load(o, stderr)
	if err != nil {
		printErr(stderr, err)
		return 1
	}
	if cfg.Main.PID == "" {
		fmt.Fprintf(stderr, "tlsrelay: [error] no \"pid\" directive in %s: cannot find the running process\n", o.conf)
		return 1
	}
	data, err := safefile.Read(cfg.Main.PID, safefile.MaxPID)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) && (errors.Is(err, safefile.ErrNotRegular) || errors.Is(err, safefile.ErrTooLarge)) {
			fmt.Fprintf(stderr, "tlsrelay: [error] the pid file %q cannot be read: %v\n", cfg.Main.PID, pe.Err)
			return 1
		}
		fmt.Fprintf(stderr, "tlsrelay: [error] open() %q failed (%s)\n", cfg.Main.PID, syserr.Paren(err))
		return 1
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		fmt.Fprintf(stderr, "tlsrelay: [error] invalid PID number %q in %q\n", strings.TrimSpace(string(data)), cfg.Main.PID)
		return 1
	}
	sig := signals[o.signal]
	// NGINX signals whatever the pid file names; a stale file (a crash,
	// a reboot) then names some unrelated process that has the pid now.
	if p := identify(pid); !p.relay {
		fmt.Fprintf(stderr, "tlsrelay: [error] the pid file %q holds pid %d, which is not a tlsrelay process (%s): "+
			"not sending it %s; the pid file is stale, remove it\n", cfg.Main.PID, pid, p.what, unix.SignalName(sig))
		return 1
	}
	if err := syscall.Kill(pid, sig); err != nil {
		fmt.Fprintf(stderr, "tlsrelay: [alert] kill(%d, %d) failed (%s)\n", pid, int(sig), syserr.Paren(err))
		return 1
	}
	return 0
}

// process is what identify learned about a pid.
type process struct {
	// relay: the process is a tlsrelay, or cannot be told apart from one
	// (no /proc, or the process is gone and kill will say so).
	relay bool
	// what describes the process for an error: its executable and
	// command line, as far as /proc shows them.
	what string
}

// identify tells whether pid is a tlsrelay before -s signals it. It is one
// when /proc/PID/exe is this very binary (the same file, or the same path
// whose file a binary upgrade replaced: "PATH (deleted)"), or its base
// name is this binary's or starts with "tlsrelay", or argv[0] in
// /proc/PID/cmdline has such a base name (a process of another user,
// whose exe link only root may read). Without a readable /proc for this
// process the check cannot be made and pid counts as a tlsrelay, as NGINX
// assumes.
func identify(pid int) process {
	self, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return process{relay: true}
	}
	dir := "/proc/" + strconv.Itoa(pid)
	if _, err := os.Stat(dir); err != nil {
		// Gone (or hidden by hidepid): kill reports it.
		return process{relay: true}
	}
	selfPath := strings.TrimSuffix(self, " (deleted)")
	nameOK := func(path string) bool {
		base := filepath.Base(strings.TrimSuffix(path, " (deleted)"))
		return base == filepath.Base(selfPath) || strings.HasPrefix(base, "tlsrelay")
	}
	exe, exeErr := os.Readlink(dir + "/exe")
	argv := cmdline(dir)
	what := exe
	if exeErr != nil {
		what = "executable unknown: " + exeErr.Error()
		if comm, err := safefile.Read(dir+"/comm", safefile.MaxPID); err == nil {
			what = "comm " + strconv.Quote(strings.TrimSpace(string(comm))) + ", " + what
		}
	}
	if len(argv) > 0 {
		line := strings.Join(argv, " ")
		if len(line) > 100 {
			line = line[:100] + "..."
		}
		what += ", command line " + strconv.Quote(line)
	}
	switch {
	case exeErr == nil && sameFile(dir+"/exe", "/proc/self/exe"):
		return process{relay: true, what: what}
	case exeErr == nil && (strings.TrimSuffix(exe, " (deleted)") == selfPath || nameOK(exe)):
		return process{relay: true, what: what}
	case len(argv) > 0 && nameOK(argv[0]):
		return process{relay: true, what: what}
	}
	return process{what: what}
}

// cmdline returns the arguments of the process whose /proc directory is
// dir; nil if they cannot be read (or it has none: a kernel thread, a
// zombie).
func cmdline(dir string) []string {
	data, err := safefile.Read(dir+"/cmdline", 64<<10)
	if err != nil || len(data) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
}

// sameFile reports whether two paths name the same file (device and
// inode); false when either cannot be stat'ed.
func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}
