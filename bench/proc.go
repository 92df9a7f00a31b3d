package bench

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of utime and stime in /proc/PID/stat: USER_HZ, which
// Linux fixes at 100 for every architecture it exports /proc on.
const userHZ = 100

// ProcStat is what the harness reads from /proc/PID/stat.
type ProcStat struct {
	PID, PPID int
	// CPU is utime+stime: the process's own CPU time, all threads, not
	// counting children.
	CPU time.Duration
}

// ReadProcStat reads /proc/PID/stat.
func ReadProcStat(pid int) (ProcStat, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return ProcStat{}, fmt.Errorf("reading stat of pid %d: %w", pid, err)
	}
	return parseProcStat(data)
}

// parseProcStat parses one /proc/PID/stat line. The command name (field 2)
// is in parentheses and may itself hold spaces and parentheses, so the
// fields after it are found from the last ')'.
func parseProcStat(data []byte) (ProcStat, error) {
	open := bytes.IndexByte(data, '(')
	end := bytes.LastIndexByte(data, ')')
	if open < 0 || end < open {
		return ProcStat{}, fmt.Errorf("parsing /proc stat %.40q: no command name", data)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data[:open])))
	if err != nil {
		return ProcStat{}, fmt.Errorf("parsing /proc stat pid: %w", err)
	}
	// After ")": state(3) ppid(4) pgrp(5) session(6) tty_nr(7) tpgid(8)
	// flags(9) minflt(10) cminflt(11) majflt(12) cmajflt(13) utime(14)
	// stime(15).
	f := strings.Fields(string(data[end+1:]))
	if len(f) < 13 {
		return ProcStat{}, fmt.Errorf("parsing /proc stat of pid %d: %d fields after the name", pid, len(f))
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return ProcStat{}, fmt.Errorf("parsing ppid of pid %d: %w", pid, err)
	}
	ut, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return ProcStat{}, fmt.Errorf("parsing utime of pid %d: %w", pid, err)
	}
	st, err := strconv.ParseUint(f[12], 10, 64)
	if err != nil {
		return ProcStat{}, fmt.Errorf("parsing stime of pid %d: %w", pid, err)
	}
	return ProcStat{PID: pid, PPID: ppid, CPU: time.Duration(ut+st) * time.Second / userHZ}, nil
}

// ReadRSS returns VmRSS of a process in bytes, from /proc/PID/status.
func ReadRSS(pid int) (int64, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, fmt.Errorf("reading status of pid %d: %w", pid, err)
	}
	return parseVmRSS(data)
}

// parseVmRSS finds the "VmRSS:  1234 kB" line of /proc/PID/status.
func parseVmRSS(data []byte) (int64, error) {
	for _, line := range strings.Split(string(data), "\n") {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("parsing VmRSS line %q", line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing VmRSS line %q: %w", line, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("parsing /proc status: no VmRSS line")
}

// Children returns the pids whose parent is pid, found by scanning /proc
// (CONFIG_PROC_CHILDREN is not everywhere).
func Children(pid int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing /proc: %w", err)
	}
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := ReadProcStat(p)
		if err != nil {
			continue // exited meanwhile
		}
		if st.PPID == pid {
			out = append(out, p)
		}
	}
	return out, nil
}

// SumCPU returns the summed utime+stime of the given processes.
func SumCPU(pids []int) (time.Duration, error) {
	var sum time.Duration
	for _, p := range pids {
		st, err := ReadProcStat(p)
		if err != nil {
			return 0, err
		}
		sum += st.CPU
	}
	return sum, nil
}

// SumRSS returns the summed VmRSS of the given processes, in bytes.
func SumRSS(pids []int) (int64, error) {
	var sum int64
	for _, p := range pids {
		r, err := ReadRSS(p)
		if err != nil {
			return 0, err
		}
		sum += r
	}
	return sum, nil
}

// RunTimes returns the time each thread of the given processes has spent
// on a CPU, by thread id, in nanoseconds: the first field of
// /proc/PID/task/TID/schedstat. Unlike utime+stime (clock ticks of 10 ms)
// it resolves the fraction of a per cent of one core that an idle proxy
// uses over a couple of seconds. A thread that ends between two readings
// takes its time with it; IdleCPU counts the threads of both readings.
func RunTimes(pids []int) (map[int]int64, error) {
	out := map[int]int64{}
	for _, p := range pids {
		dir := fmt.Sprintf("/proc/%d/task", p)
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("listing the threads of %d: %w", p, err)
		}
		for _, e := range ents {
			data, err := os.ReadFile(dir + "/" + e.Name() + "/schedstat")
			if err != nil {
				continue // the thread ended meanwhile
			}
			ns, err := parseSchedstat(data)
			if err != nil {
				return nil, fmt.Errorf("reading %s/%s/schedstat: %w", dir, e.Name(), err)
			}
			tid, _ := strconv.Atoi(e.Name())
			out[tid] = ns
		}
	}
	return out, nil
}

// parseSchedstat returns the first field of a schedstat line: the time on
// a CPU in nanoseconds.
func parseSchedstat(data []byte) (int64, error) {
	f := strings.Fields(string(data))
	if len(f) < 1 {
		return 0, fmt.Errorf("empty schedstat")
	}
	ns, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing schedstat %q: %w", f[0], err)
	}
	return ns, nil
}

// RunTimeSince sums, over the threads of now, the time on a CPU since
// before (a thread new since then counts whole).
func RunTimeSince(before, now map[int]int64) time.Duration {
	var sum int64
	for tid, ns := range now {
		sum += ns - before[tid]
	}
	return time.Duration(sum)
}
