package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestBinaryLinksNoTestCode: the shipped binary does not link package
// testing (its flags and its code) nor any test helper of this module:
// what the demo shares with the tests (internal/backend) must not import
// them.
func TestBinaryLinksNoTestCode(t *testing.T) {
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goTool, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if p == "testing" || strings.HasPrefix(p, "testing/") || strings.HasSuffix(p, "/internal/testutil") {
			t.Errorf("the binary links %s", p)
		}
	}
}
