package tlsbridge

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/tlsrelay/tlsrelay/internal/safefile"
)

// KeyLogFiles is the set of proxy_ssl_key_log files one process has open:
// one file per path, however many policies (server blocks, or the
// configurations before and after a reload) name it, so that their lines
// are appended to one descriptor in whole lines.
//
// The file holds the secrets of every upstream connection, so it is
// handled as OpenSSH handles a private key: a symbolic link is refused
// (O_NOFOLLOW: the secrets would go wherever the link points), and so is
// anything but a regular file, and an existing file that its group or
// others can access (permissions beyond 0600); the error says which. An
// existing file keeps its content and lines are appended. A missing file
// is created with mode 0600 when the first line is written, not when the
// set opens it: `tlsrelay -t` (which builds policies to check them) creates
// and changes no file. Open checks that its directory exists and is
// writable so that a mistake still fails at load.
//
// The engine keeps one set for its lifetime and passes it to every policy
// in PolicyConfig.KeyLogFiles; Reopen is for `-s reopen` (logrotate), Close
// for the end of the process. All methods are safe for concurrent use from
// any goroutine; the writers it returns are called by crypto/tls on the
// handshaking goroutine.
type KeyLogFiles struct {
	mu    sync.Mutex
	files map[string]*keyLogFile // by cleaned path; guarded by mu
}

// NewKeyLogFiles returns an empty set.
func NewKeyLogFiles() *KeyLogFiles {
	return &KeyLogFiles{files: make(map[string]*keyLogFile)}
}

// keyLogFile is the writer of one path. Writes never fail: a write error
// (disk full, the set closed) must not fail the upstream handshake that
// crypto/tls is logging, so it is recorded and the line dropped.
type keyLogFile struct {
	path    string
	mu      sync.Mutex
	f       *os.File // nil until the file exists (created on first write) and once closed; guarded by mu
	closed  bool     // the set closed it: drop lines; guarded by mu
	lastErr error    // guarded by mu
}

// openKeyLog opens path for appending if it exists, and checks it: not a
// symbolic link, a regular file, no access for group or others. A missing
// file is created (mode 0600) only when create is set; otherwise it returns
// a nil file once the directory it would go in is known to be writable.
func openKeyLog(path string, create bool) (*os.File, error) {
	flags := unix.O_WRONLY | unix.O_APPEND | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK | unix.O_NOCTTY
	if create {
		flags |= unix.O_CREAT
	}
	var fd int
	var err error
	for {
		fd, err = unix.Open(path, flags, 0o600)
		if err != unix.EINTR {
			break
		}
	}
	switch {
	case err == unix.ENOENT && !create:
		// Created on the first write; make sure it can be.
		dir := filepath.Dir(path)
		if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
			return nil, &fs.PathError{Op: "open", Path: path, Err: err}
		}
		return nil, nil
	case err == unix.ELOOP:
		if fi, lerr := os.Lstat(path); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
			return nil, errors.New("it is a symbolic link: TLS secrets are not written through one (name the file itself)")
		}
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	case err == unix.ENXIO:
		// O_NONBLOCK|O_WRONLY on a FIFO without a reader, or a socket.
		if fi, lerr := os.Lstat(path); lerr == nil {
			return nil, fmt.Errorf("it is %s, not a regular file", safefile.Kind(fi.Mode()))
		}
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	case err != nil:
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("it is %s, not a regular file", safefile.Kind(fi.Mode()))
	}
	if safefile.TooOpen(fi.Mode()) {
		f.Close()
		return nil, fmt.Errorf("permissions %04o are too open: group or others could read the TLS secrets "+
			"(chmod 600 it, or remove it and tlsrelay creates it with 0600)", fi.Mode().Perm())
	}
	return f, nil
}

// Open returns the writer of path for tls.Config.KeyLogWriter, opening the
// file on first use; later calls with the same path (after filepath.Clean)
// return the same writer.
func (s *KeyLogFiles) Open(path string) (io.Writer, error) {
	path = filepath.Clean(path)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.files == nil {
		s.files = make(map[string]*keyLogFile)
	}
	if kf := s.files[path]; kf != nil {
		return kf, nil
	}
	f, err := openKeyLog(path, false)
	if err != nil {
		return nil, fmt.Errorf("opening proxy_ssl_key_log %q: %w", path, err)
	}
	kf := &keyLogFile{path: path, f: f}
	s.files[path] = kf
	return kf, nil
}

// Reopen opens every file of the set again at its path and closes the old
// descriptors, for log rotation (rename the file, then signal); a file
// renamed away is created again at its path on the next line. A file
// that cannot be opened keeps its old descriptor; the errors are joined.
func (s *KeyLogFiles) Reopen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, kf := range s.files {
		f, err := openKeyLog(kf.path, false)
		if err != nil {
			errs = append(errs, fmt.Errorf("reopening proxy_ssl_key_log %q: %w", kf.path, err))
			continue
		}
		kf.mu.Lock()
		old := kf.f
		kf.f = f
		kf.mu.Unlock()
		if old != nil {
			if err := old.Close(); err != nil {
				errs = append(errs, fmt.Errorf("closing the old proxy_ssl_key_log %q: %w", kf.path, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Close closes every file of the set. Writers handed out before drop their
// lines from then on; Open opens the file again.
func (s *KeyLogFiles) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for path, kf := range s.files {
		kf.mu.Lock()
		if kf.f != nil {
			if err := kf.f.Close(); err != nil {
				errs = append(errs, fmt.Errorf("closing proxy_ssl_key_log %q: %w", path, err))
			}
			kf.f = nil
		}
		kf.closed = true
		kf.mu.Unlock()
		delete(s.files, path)
	}
	return errors.Join(errs...)
}

// LastError returns the most recent error writing any file of the set
// (lines that could not be written are dropped), or nil.
func (s *KeyLogFiles) LastError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, kf := range s.files {
		kf.mu.Lock()
		err := kf.lastErr
		kf.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// Write appends one key log line (crypto/tls writes each line whole in
// one call), creating the file with mode 0600 if it does not exist yet.
// It always reports success; see keyLogFile.
func (kf *keyLogFile) Write(p []byte) (int, error) {
	kf.mu.Lock()
	defer kf.mu.Unlock()
	if kf.closed {
		return len(p), nil
	}
	if kf.f == nil {
		f, err := openKeyLog(kf.path, true)
		if err != nil {
			kf.lastErr = fmt.Errorf("creating proxy_ssl_key_log %q: %w", kf.path, err)
			return len(p), nil
		}
		kf.f = f
	}
	if _, err := kf.f.Write(p); err != nil {
		kf.lastErr = fmt.Errorf("writing proxy_ssl_key_log %q: %w", kf.path, err)
	}
	return len(p), nil
}
