package docs

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// TestKubernetesManifest: the manifest's configuration parses, and the
// Deployment agrees with it: probes on the admin port's /readyz and
// /healthz, preStop's graceful quit through the pid file the
// configuration writes, and a grace period longer than
// worker_shutdown_timeout.
func TestKubernetesManifest(t *testing.T) {
	b, err := os.ReadFile("kubernetes/tlsrelay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	_, block, ok := strings.Cut(text, "  tlsrelay.conf: |\n")
	if !ok {
		t.Fatal("no tlsrelay.conf in the ConfigMap")
	}
	var lines []string
	for _, l := range strings.Split(block, "\n") {
		if !strings.HasPrefix(l, "    ") && strings.TrimSpace(l) != "" {
			break
		}
		lines = append(lines, strings.TrimPrefix(l, "    "))
	}
	// The Secret's files, made here, where the manifest mounts them.
	dir := t.TempDir()
	set, err := pki.NewSet(pki.ECDSAP256, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := set.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	src := strings.ReplaceAll(strings.Join(lines, "\n"), "/etc/tlsrelay/tls/", dir+"/")
	cfg, _, err := conf.Parse("tlsrelay.conf", []byte(src), conf.LoadOptions{Prefix: "/etc/tlsrelay"})
	if err != nil {
		t.Fatalf("the ConfigMap's configuration: %v", err)
	}
	grace := regexp.MustCompile(`terminationGracePeriodSeconds: (\d+)`).FindStringSubmatch(text)
	if grace == nil {
		t.Fatal("no terminationGracePeriodSeconds")
	}
	if n, _ := strconv.Atoi(grace[1]); time.Duration(n)*time.Second <= cfg.Main.WorkerShutdownTimeout {
		t.Errorf("grace period %ss is not longer than worker_shutdown_timeout %v", grace[1], cfg.Main.WorkerShutdownTimeout)
	}
	for _, want := range []string{"path: /readyz", "path: /healthz", `"-s", "quit"`, "mountPath: /run/tlsrelay", "kind: PodDisruptionBudget", "runAsNonRoot: true"} {
		if !strings.Contains(text, want) {
			t.Errorf("the manifest lacks %q", want)
		}
	}
	if cfg.Main.PID != "/run/tlsrelay/tlsrelay.pid" || cfg.Main.MetricsListen == "" || cfg.Main.API == nil {
		t.Errorf("configuration: pid %q, metrics_listen %q, api %v", cfg.Main.PID, cfg.Main.MetricsListen, cfg.Main.API)
	}
}
