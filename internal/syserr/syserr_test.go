package syserr

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
)

func TestParen(t *testing.T) {
	_, openErr := os.Open("/nonexistent/syserr")
	for _, tc := range []struct {
		err  error
		want string
	}{
		{syscall.EADDRINUSE, "98: Address already in use"},
		{syscall.EMFILE, "24: Too many open files"},
		{openErr, "2: No such file or directory"},
		{fmt.Errorf("kill: %w", syscall.ESRCH), "3: No such process"},
		{errors.New("no errno here"), "no errno here"},
	} {
		if got := Paren(tc.err); got != tc.want {
			t.Errorf("Paren(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
