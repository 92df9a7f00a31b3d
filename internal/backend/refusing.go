package backend

import (
	"fmt"
	"syscall"
)

// TB is the part of testing.TB that RefusingAddr uses. It is declared here
// so that this package, which the shipped binary links for its demo, does
// not link package testing (and its flags) into it.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// RefusingAddr returns a loopback address that refuses connections for
// the rest of the test: a TCP socket bound to 127.0.0.1:0 that never
// listens, closed at t's cleanup. Holding the port, unlike listening and
// closing, keeps any other process (another test package running at the
// same time) from listening there meanwhile.
func RefusingAddr(t TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("a refusing address: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("a refusing address: binding: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("a refusing address: %v", err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}
