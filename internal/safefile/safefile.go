// Package safefile reads the files a configuration names (includes,
// certificates, keys, trust bundles, CRLs, password files, the pid file):
// regular files only, and never more than a size cap. A configuration that
// names /dev/zero, /dev/urandom, a FIFO or a directory then fails at once
// with an error that says why, instead of hanging or filling memory.
//
// The checks are made on the open descriptor (fstat after open), so a file
// swapped for something else between a check and the read cannot slip
// through. Symbolic links are followed: certificate directories (Let's
// Encrypt's live/, /etc/ssl/certs) are made of them; what the link points
// at must still be a regular file.
package safefile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// Size caps for Read, by kind of file.
const (
	// MaxConfig bounds a configuration file or one include (NGINX
	// configurations are kilobytes; 4 MiB leaves room for generated ones).
	MaxConfig = 4 << 20
	// MaxPEM bounds a PEM or DER file: certificates, private keys, trust
	// bundles, CRLs, password files (a full public CA bundle is ~250 KiB).
	MaxPEM = 16 << 20
	// MaxPID bounds a pid file (it holds one number).
	MaxPID = 4 << 10
)

// ErrNotRegular is what Read's error wraps when the path is not a regular
// file (a device, FIFO, directory or socket).
var ErrNotRegular = errors.New("not a regular file")

// ErrTooLarge is what Read's error wraps when the file holds more than the
// cap.
var ErrTooLarge = errors.New("file too large")

// Read returns the contents of the regular file at path, which must hold
// at most limit bytes. Errors are *fs.PathError values: the open error
// (with its errno, as os.ReadFile's), or one wrapping ErrNotRegular
// ("not a regular file (a character device)") or ErrTooLarge ("file too
// large: more than the 16 MiB limit").
func Read(path string, limit int64) ([]byte, error) {
	data, _, err := ReadStat(path, limit)
	return data, err
}

// ReadStat is Read that also returns the file's information, taken from
// the descriptor it read (for permission checks on what was read, not on
// whatever the path names a moment later).
func ReadStat(path string, limit int64) ([]byte, fs.FileInfo, error) {
	// O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
	// writer before fstat could refuse it. It changes nothing for a
	// regular file.
	var fd int
	var err error
	for {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return nil, nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, &fs.PathError{Op: "fstat", Path: path, Err: err}
	}
	if !fi.Mode().IsRegular() {
		return nil, fi, &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("%w (%s)", ErrNotRegular, Kind(fi.Mode()))}
	}
	if fi.Size() > limit {
		return nil, fi, tooLarge(path, limit)
	}
	var buf bytes.Buffer
	buf.Grow(int(fi.Size()) + 1)
	// One byte more than the cap tells a file that grew past it since
	// fstat from one that is exactly the cap.
	if _, err := buf.ReadFrom(io.LimitReader(f, limit+1)); err != nil {
		return nil, fi, &fs.PathError{Op: "read", Path: path, Err: err}
	}
	if int64(buf.Len()) > limit {
		return nil, fi, tooLarge(path, limit)
	}
	return buf.Bytes(), fi, nil
}

func tooLarge(path string, limit int64) error {
	return &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("%w: more than the %s limit", ErrTooLarge, Size(limit))}
}

// Kind names what a file mode says a file is, with its article: "a
// directory", "a character device", "a named pipe (FIFO)".
func Kind(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	}
	return "not a regular file"
}

// Size writes a byte count as the caps are written: "16 MiB", "4 KiB",
// "100 bytes".
func Size(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// TooOpen reports whether a secret file's permissions let its group or
// others in (any of the 077 bits), as OpenSSH's check on private keys.
func TooOpen(m fs.FileMode) bool { return m.Perm()&0o077 != 0 }
