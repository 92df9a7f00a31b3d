package engine

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/errlog"
)

// The door is the unix socket gnet listens on (it needs one listener; the
// client and upstream connections are enrolled into its loops). It lives
// in a directory of its own, TMPDIR/tlsrelay-PID-RANDOM, made 0700 by
// os.MkdirTemp and removed when Run returns. A process that is SIGKILLed
// or crashes leaves the directory behind; makeDoorDir removes what such
// dead predecessors left before it makes its own.

// doorPrefix starts the names of door directories.
const doorPrefix = "tlsrelay-"

// doorEmptyAge is how old an empty door directory of a dead process must
// be before it is removed: a live process in another pid namespace
// sharing TMPDIR (whose pid this one cannot see) is between making its
// directory and binding its door for microseconds, never a minute.
const doorEmptyAge = time.Minute

// makeDoorDir removes the door directories dead predecessors left in
// os.TempDir (logging each at notice), then makes this process's one.
// Runs on Run's goroutine.
func (e *Engine) makeDoorDir() (string, error) {
	tmp := os.TempDir()
	for _, dir := range removeStaleDoors(tmp, os.Getpid(), time.Now()) {
		e.log.Logf(errlog.LevelNotice, 0, "removed %s, the event loops' door left by a tlsrelay process that is no longer running", dir)
	}
	return os.MkdirTemp(tmp, doorPrefix+strconv.Itoa(os.Getpid())+"-*")
}

// removeStaleDoors removes, from tmp, the door directories whose process
// is gone, and returns their paths. A directory is removed only when all
// of these hold, so that nothing another user, another program or a live
// tlsrelay uses is touched:
//
//   - its name is tlsrelay-PID-RANDOM (or tlsrelay-RANDOM, the name before
//     the pid was part of it), and it is a directory (not a link) owned by
//     this user with mode 0700, as os.MkdirTemp makes it;
//   - PID is not self and no process has it (kill(PID, 0) fails with
//     ESRCH); for the older name, whose pid is unknown, the socket test
//     below decides alone;
//   - it holds nothing but "door", a unix socket on which a connect is
//     refused (no process listens on it, in this pid namespace or
//     another); or, with the new name only, nothing at all and it is
//     older than doorEmptyAge.
//
// Errors are not reported: a directory that cannot be checked or removed
// is left for the next start.
func removeStaleDoors(tmp string, self int, now time.Time) []string {
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return nil
	}
	var removed []string
	for _, ent := range ents {
		name := ent.Name()
		rest, ok := strings.CutPrefix(name, doorPrefix)
		if !ok {
			continue
		}
		pidText, random, withPID := strings.Cut(rest, "-")
		if !withPID {
			random = pidText
		}
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid <= 0 || !allDigits(random) {
			continue
		}
		dir := filepath.Join(tmp, name)
		if !ownDoorDir(dir) {
			continue
		}
		if withPID && (pid == self || processExists(pid)) {
			continue
		}
		if staleDoor(dir, withPID, now) && removeDoorDir(dir) {
			removed = append(removed, dir)
		}
	}
	return removed
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// ownDoorDir reports whether dir is a directory (not a link) of this user
// with mode 0700.
func ownDoorDir(dir string) bool {
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid()
}

// processExists reports whether pid names a process (one of another user
// included: kill answers EPERM).
func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// staleDoor reports whether dir holds only a door nobody listens on, or
// (emptyOK) nothing, for longer than doorEmptyAge.
func staleDoor(dir string, emptyOK bool, now time.Time) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	if len(ents) == 0 {
		fi, err := os.Lstat(dir)
		return emptyOK && err == nil && now.Sub(fi.ModTime()) > doorEmptyAge
	}
	if len(ents) != 1 || ents[0].Name() != "door" || ents[0].Type() != os.ModeSocket {
		return false
	}
	c, err := net.DialTimeout("unix", filepath.Join(dir, "door"), time.Second)
	if err == nil {
		c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// removeDoorDir removes dir's door, if any, and dir: one entry and one
// directory, never a tree.
func removeDoorDir(dir string) bool {
	if err := os.Remove(filepath.Join(dir, "door")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false
	}
	return os.Remove(dir) == nil
}
