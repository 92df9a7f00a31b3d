package conf

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
)

func (p *parser) workerProcesses(d *directive, _ ctx) error {
	if d.args[0] == "auto" {
		p.cfg.Main.WorkerProcesses = 0
		return nil
	}
	n, ok := atoiInt(d.args[0])
	if !ok {
		return Errorf(d.pos, "%q directive invalid value", d.name)
	}
	if n == 0 {
		p.warnf(d.pos, "\"worker_processes 0\" runs one event loop")
		n = 1
	}
	p.cfg.Main.WorkerProcesses = n
	return nil
}

// workerCPUAffinity is `auto [mask]` or one mask of 0/1 characters per
// event loop, CPU 0 rightmost.
func (p *parser) workerCPUAffinity(d *directive, _ ctx) error {
	aff := CPUAffinity{}
	args := d.args
	if args[0] == "auto" {
		if len(args) > 2 {
			return Errorf(d.pos, "invalid number of arguments in %q directive", d.name)
		}
		aff.Auto = true
		args = args[1:]
	}
	for _, a := range args {
		if len(a) > 64 {
			return Errorf(d.pos, "\"worker_cpu_affinity\" supports up to 64 CPUs only")
		}
		var mask uint64
		for i := 0; i < len(a); i++ {
			c := a[len(a)-1-i]
			switch c {
			case '0':
			case '1':
				mask |= 1 << i
			case ' ':
			default:
				return Errorf(d.pos, "invalid character \"%c\" in \"worker_cpu_affinity\"", c)
			}
		}
		aff.Masks = append(aff.Masks, mask)
	}
	p.cfg.Main.CPUAffinity = aff
	return nil
}

// checkCPUAffinity is worker_cpu_affinity's check: NGINX's warning when
// the masks and worker_processes disagree.
func (p *parser) checkCPUAffinity() error {
	m := &p.cfg.Main
	if n := len(m.CPUAffinity.Masks); n > 1 && m.WorkerProcesses != 0 && n != m.WorkerProcesses {
		p.warnf(m.Pos["worker_cpu_affinity"], "the number of \"worker_processes\" is not equal to the number of "+
			"\"worker_cpu_affinity\" masks, using last mask for remaining worker processes")
	}
	return nil
}

func (p *parser) workerRlimitNofile(d *directive, _ ctx) error {
	return numArg(d, &p.cfg.Main.RlimitNofile)
}

func (p *parser) pid(d *directive, _ ctx) error {
	if d.args[0] == "off" {
		p.cfg.Main.PID = ""
		return nil
	}
	p.cfg.Main.PID = p.prefixPath(d.args[0])
	return nil
}

func (p *parser) daemon(d *directive, _ ctx) error {
	if err := flagArg(d, &p.cfg.Main.Daemon); err != nil {
		return err
	}
	p.cfg.Main.DaemonPos = d.pos
	if p.cfg.Main.Daemon {
		p.warnf(d.pos, "\"daemon on\" is ignored: tlsrelay always runs in the foreground")
	}
	return nil
}

// workerShutdownTimeout is `worker_shutdown_timeout time` (NGINX's msec
// slot; 0 is allowed and means no limit, as in NGINX).
func (p *parser) workerShutdownTimeout(d *directive, _ ctx) error {
	return msecArg(d, &p.cfg.Main.WorkerShutdownTimeout)
}

// metricsListen is `metrics_listen address:port`, tlsrelay's own: the
// address of the Prometheus endpoint. The host is required (an IP
// literal, a name, or "*" for all IPv4 addresses) and so is the port.
func (p *parser) metricsListen(d *directive, _ ctx) error {
	a := d.args[0]
	bad := func(why string) error {
		return Errorf(d.pos, "%s in %q of the \"metrics_listen\" directive (ADDRESS:PORT expected, e.g. 127.0.0.1:9100)", why, a)
	}
	if strings.HasPrefix(a, "unix:") {
		return bad("unix domain sockets are not supported")
	}
	if _, ok := atoi(a); ok {
		return bad("no address")
	}
	if strings.Contains(a, "$") {
		return bad("variables are not supported")
	}
	host, port, errText := splitHostPort(a)
	switch {
	case errText != "":
		return bad(errText)
	case port == 0:
		return bad("no port")
	case host == "":
		return bad("no host")
	case host == "*":
		host = "0.0.0.0"
	}
	// The endpoint (metrics, status page, api) has no authentication and
	// tells whoever asks the upstreams, their health and the traffic.
	switch ip, err := netip.ParseAddr(host); {
	case err == nil && ip.IsUnspecified():
		p.warnf(d.pos, "\"metrics_listen\" %s exposes the metrics endpoint, status page and api on every interface; "+
			"listen on 127.0.0.1 or a private address unless it is firewalled", a)
	case err == nil && !ip.IsLoopback(), err != nil && host != "localhost":
		p.warnf(d.pos, "\"metrics_listen\" %s is not a loopback address: the metrics endpoint, status page and api "+
			"have no authentication; keep it on a management network", a)
	}
	p.cfg.Main.MetricsListen = net.JoinHostPort(host, strconv.Itoa(port))
	p.cfg.Main.MetricsListenPos = d.pos
	return nil
}

// checkMetricsListen is metrics_listen's check: its address may not be a
// stream listen's.
func (p *parser) checkMetricsListen() error {
	m := &p.cfg.Main
	if m.MetricsListen != "" && p.listenAddrs[m.MetricsListen] {
		return Errorf(m.MetricsListenPos, "duplicate %q address and port pair: a stream \"listen\" uses it too", m.MetricsListen)
	}
	return nil
}

func (p *parser) events(d *directive, _ ctx) error {
	return p.walk(d.block, ctxEvents)
}

func (p *parser) workerConnections(d *directive, _ ctx) error {
	if err := numArg(d, &p.cfg.Main.WorkerConnections); err != nil {
		return err
	}
	return nil
}

func (p *parser) ignoredEvents(d *directive, _ ctx) error {
	p.warnf(d.pos, "%q directive is ignored", d.name)
	return nil
}

func (p *parser) ignoredEventsFlag(d *directive, _ ctx) error {
	var b bool
	if err := flagArg(d, &b); err != nil {
		return err
	}
	p.warnf(d.pos, "%q directive is ignored", d.name)
	return nil
}
