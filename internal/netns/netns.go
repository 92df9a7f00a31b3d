// Package netns runs a child process in a network namespace of its own,
// with its loopback up and its TCP settings chosen (tcp_tw_reuse, the
// ephemeral port range), so that tests and benchmarks can show what a
// real network does that the host's loopback hides: the host's loopback
// lets a connect() reuse a port in TIME_WAIT (tcp_tw_reuse = 2), a real
// network does not. Creating one needs root (CAP_SYS_ADMIN); Available says
// whether this process can.
//
// The parent starts the child with [Command]; the child, first thing,
// calls [Setup]. Everything the child then binds, connects or starts (its
// own child processes included) lives in that namespace: only its
// loopback, no route anywhere else.
package netns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Settings are the namespace's TCP settings, applied by Setup.
type Settings struct {
	// TWReuse is net.ipv4.tcp_tw_reuse: 0 as on a real network (a port
	// in TIME_WAIT is not reused by connect()), 2 is Linux's default
	// (loopback only).
	TWReuse int
	// PortLow and PortHigh bound net.ipv4.ip_local_port_range; zero keeps
	// the kernel's default (32768 60999).
	PortLow, PortHigh int
	// MaxTWBuckets is net.ipv4.tcp_max_tw_buckets, the most sockets the
	// namespace keeps in TIME_WAIT; zero keeps the default, which scales
	// with memory (131,072 on a 24 GiB host). Past it the kernel ends new
	// TIME_WAIT sockets at once ("TCP: time wait bucket table overflow"),
	// which frees their ports early.
	MaxTWBuckets int
}

// Available reports why this process cannot make a network namespace
// (nil when it can): it is not root, or the kernel refuses (a container
// without CAP_SYS_ADMIN). It starts and waits for /bin/true in a new
// namespace, once per call.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root (CAP_SYS_ADMIN); running as uid " + strconv.Itoa(os.Geteuid()))
	}
	if err := Command("/bin/true").Run(); err != nil {
		return fmt.Errorf("starting a process in a new network namespace: %w", err)
	}
	return nil
}

// Command is exec.Command for a child started in a new network namespace.
// The child calls Setup before anything else.
func Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Setup brings the namespace's loopback up and applies s. Call it in the
// child, in the namespace Command made: in the host's namespace it would
// change the host's settings, so it refuses unless the loopback is down
// (as it is only in a new namespace).
func Setup(s Settings) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening a socket for the loopback's flags: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("naming the loopback: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("reading the loopback's flags: %w", err)
	}
	flags := ifr.Uint16()
	if flags&unix.IFF_UP != 0 {
		return errors.New("the loopback is up already: not in a new network namespace (refusing to change the host's settings)")
	}
	ifr.SetUint16(flags | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing the loopback up: %w", err)
	}
	if err := sysctl("net/ipv4/tcp_tw_reuse", strconv.Itoa(s.TWReuse)); err != nil {
		return err
	}
	if s.MaxTWBuckets > 0 {
		if err := sysctl("net/ipv4/tcp_max_tw_buckets", strconv.Itoa(s.MaxTWBuckets)); err != nil {
			return err
		}
	}
	if s.PortLow > 0 {
		if err := sysctl("net/ipv4/ip_local_port_range", fmt.Sprintf("%d %d", s.PortLow, s.PortHigh)); err != nil {
			return err
		}
	}
	return nil
}

// sysctl writes value to /proc/sys/<name>: the net ones are the calling
// process's namespace's.
func sysctl(name, value string) error {
	if err := os.WriteFile("/proc/sys/"+name, []byte(value), 0); err != nil {
		return fmt.Errorf("setting %s to %q: %w", name, value, err)
	}
	return nil
}
