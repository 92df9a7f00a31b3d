package main

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/internal/backend"
	"github.com/tlsrelay/tlsrelay/internal/pki"
	"github.com/tlsrelay/tlsrelay/internal/testutil"
)

// podmanOrSkip returns podman's path, or skips the test saying why podman
// cannot run here.
func podmanOrSkip(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("podman")
	if err != nil {
		t.Skip("skipped: podman is not installed (Debian's podman; .ci/run installs it)")
	}
	if out, err := exec.Command(path, "info").CombinedOutput(); err != nil {
		t.Skipf("skipped: podman cannot run here (podman info: %v): %s", err, strings.TrimSpace(string(out)))
	}
	return path
}

// TestContainerImage builds the image of the Containerfile with podman
// (as `make image` does: a static binary, from scratch), checks it runs as
// a non-root user with nothing but the binary and its license, and proxies
// a connection through a running container to an mTLS upstream.
func TestContainerImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a container image")
	}
	podman := podmanOrSkip(t)
	ctx := t.TempDir()
	// The build context make image makes: the binary and the license.
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.commit=container-test -s -w", "-o", filepath.Join(ctx, "tlsrelay"), ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	license, err := os.ReadFile(filepath.Join("..", "..", "LICENSE"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(ctx, "LICENSE"), license, 0o644)
	image := fmt.Sprintf("localhost/tlsrelay-test:%d", rand.Uint32())
	if out, err := exec.Command(podman, "build", "-q", "-f", "Containerfile", "-t", image, ctx).CombinedOutput(); err != nil {
		t.Fatalf("podman build: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command(podman, "rmi", "-f", image).Run() })
	out, err := exec.Command(podman, "image", "inspect", "--format", "{{.Config.User}} {{len .RootFS.Layers}}", image).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "65532:65532 2" {
		t.Errorf("image user and layers: %q %v, want a non-root user and two layers (the binary, the license)", out, err)
	}

	if out, err := exec.Command(podman, "run", "--rm", "--network", "host", image, "-V").CombinedOutput(); err != nil {
		// The image is built and checked; a sandbox may still refuse to
		// start containers (crun's setrlimit, cgroups).
		t.Skipf("skipped the run: podman built the image but cannot start a container here (%v): %s", err, strings.TrimSpace(string(out)))
	} else if !strings.Contains(string(out), "commit: container-test") {
		t.Errorf("tlsrelay -V in the container: %s", out)
	}

	// The configuration and PKI, readable by the container's user.
	conf := t.TempDir()
	os.Chmod(conf, 0o755)
	set, err := pki.NewSet(pki.ECDSAP256, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := set.WriteFiles(conf); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(conf)
	for _, e := range entries {
		os.Chmod(filepath.Join(conf, e.Name()), 0o644)
	}
	up, err := backend.Start(backend.Config{TLS: set.ServerConfig(), Mode: backend.Echo})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	listen := testutil.FreeAddr(t)
	cfg := "error_log stderr info;\nstream {\n    server {\n        listen " + listen + ";\n        proxy_pass " + up.Addr() + ";\n" +
		"        proxy_ssl on;\n        proxy_ssl_certificate client.pem;\n        proxy_ssl_certificate_key client.key;\n" +
		"        proxy_ssl_trusted_certificate ca.pem;\n        proxy_ssl_verify on;\n        proxy_ssl_verify_depth 2;\n        proxy_ssl_name localhost;\n    }\n}\n"
	if err := os.WriteFile(filepath.Join(conf, "tlsrelay.conf"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("tlsrelay-test-%d", rand.Uint32())
	run := exec.Command(podman, "run", "--rm", "--name", name, "--network", "host", "-v", conf+":/etc/tlsrelay:ro", image)
	logs := &testutil.Buffer{}
	run.Stdout, run.Stderr = logs, logs
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command(podman, "stop", "-t", "2", name).Run()
		run.Wait()
		if t.Failed() {
			t.Logf("container output:\n%s", logs.String())
		}
	})
	testutil.WaitFor(t, "the container's listener", 30*time.Second, func() bool {
		c, err := net.Dial("tcp", listen)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	c, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("through the container"))
	got := make([]byte, len("through the container"))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "through the container" {
		t.Fatalf("echo through the container: %q %v", got, err)
	}
}
