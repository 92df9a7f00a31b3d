// Package syserr writes system-call errors as NGINX's messages carry them:
// the errno's number and C's strerror text, "98: Address already in use".
package syserr

import (
	"errors"
	"strconv"
	"strings"
	"syscall"
)

// text is errno's text as C's strerror gives it ("Address already in
// use"): Go's text with a capital first letter.
func text(errno syscall.Errno) string {
	s := errno.Error()
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// Paren is what NGINX writes between the parentheses after a failed call:
// "N: Text" when err wraps an errno, else err's own text.
func Paren(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return strconv.Itoa(int(errno)) + ": " + text(errno)
	}
	return err.Error()
}
