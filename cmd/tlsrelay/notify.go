package main

import (
	"fmt"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// sdNotify sends state to the service manager when NOTIFY_SOCKET names
// one (systemd's Type=notify; sd_notify(3)); without it, it does nothing.
// NOTIFY_SOCKET stays in the environment: a new binary started by an
// upgrade needs it to send MAINPID and READY. Safe from any goroutine.
func sdNotify(state string) error {
	if _, err := daemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("notifying the service manager (%q): %w", state, err)
	}
	return nil
}

// reloadingState is the notification at the start of a reload: RELOADING=1
// with the CLOCK_MONOTONIC time systemd (253 and later, Type=notify-reload)
// uses to match the reload to its request.
func reloadingState() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return "RELOADING=1"
	}
	return fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", ts.Sec*1_000_000+ts.Nsec/1_000)
}
