package logfile

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestBuffered: a buffered file writes when the buffer fills or its
// flush= time passes, and FlushDue says when that is.
func TestBuffered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	fs := NewFiles()
	defer fs.CloseAll()
	w, err := fs.Acquire(path, 16, 0, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	w.Write([]byte("one\n"), t0)
	if got := read(t, path); got != "" {
		t.Fatalf("written before the buffer filled or was due: %q", got)
	}
	if next := fs.FlushDue(t0.Add(500 * time.Millisecond)); !next.Equal(t0.Add(time.Second)) {
		t.Errorf("FlushDue = %v, want %v", next, t0.Add(time.Second))
	}
	if next := fs.FlushDue(t0.Add(time.Second)); !next.IsZero() || read(t, path) != "one\n" {
		t.Errorf("after flush= passed: next %v, file %q", next, read(t, path))
	}
	w.Write([]byte("two two two\n"), t0)
	w.Write([]byte("three three\n"), t0) // does not fit: the buffer is written first
	if got := read(t, path); got != "one\ntwo two two\n" {
		t.Errorf("after the buffer filled: %q", got)
	}
}

// TestShared: the same path and parameters share one file, closed with
// its last user; Reopen moves every file to a fresh one by its path,
// writing what was buffered to the old one first.
func TestShared(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	fs := NewFiles()
	a, err := fs.Acquire(path, 64, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := fs.Acquire(path, 64, 0, 0)
	c, _ := fs.Acquire(path, 0, 0, 0)
	if a != b || a == c || a.Path() != path {
		t.Fatal("one path and parameters did not share one file, or others did")
	}
	a.Write([]byte("buffered\n"), time.Now())
	os.Rename(path, path+".1")
	if err := fs.Reopen(); err != nil {
		t.Fatal(err)
	}
	b.Write([]byte("new\n"), time.Now())
	fs.Release(a)
	if got := read(t, path); got != "" {
		t.Errorf("released while still used: %q", got)
	}
	fs.Release(b) // the last user: flushed and closed
	fs.Release(c)
	if got := read(t, path+".1"); got != "buffered\n" {
		t.Errorf("the renamed file holds %q", got)
	}
	if got := read(t, path); got != "new\n" {
		t.Errorf("the reopened file holds %q", got)
	}
}

// TestGzip: each flushed buffer is a gzip member of its own, so the file
// reads whole as one stream.
func TestGzip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log.gz")
	fs := NewFiles()
	w, err := fs.Acquire(path, 8, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"first line\n", "second line\n"} {
		w.Write([]byte(line), time.Now())
	}
	fs.CloseAll()
	zr, err := gzip.NewReader(bytes.NewReader([]byte(read(t, path))))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(zr)
	if err != nil || string(got) != "first line\nsecond line\n" {
		t.Errorf("gzip file reads %q, %v", got, err)
	}
}
