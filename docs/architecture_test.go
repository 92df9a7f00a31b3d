// Package docs holds the project's documentation; its test checks that
// docs/architecture.md describes the code as it is.
package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// TestArchitectureListsEveryFile: every product Go file (not a test, not
// the vendored gnet, not a fixture package under internal/) has a row in
// architecture.md's file table, and every file the table names exists. A
// row names files as `dir/a.go`, `b.go`: a bare name is in the directory
// of the last path before it in the same row.
func TestArchitectureListsEveryFile(t *testing.T) {
	text, err := os.ReadFile("architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(text), "## Files, and where their code runs")
	if !ok {
		t.Fatal(`architecture.md has no "## Files, and where their code runs" section`)
	}
	table, _, _ := strings.Cut(after, "\n## ")
	listed := map[string]bool{}
	name := regexp.MustCompile("`([A-Za-z0-9_./-]+\\.go)`")
	for _, line := range strings.Split(table, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 3 {
			continue
		}
		dir := ""
		for _, m := range name.FindAllStringSubmatch(cells[1], -1) {
			f := m[1]
			if strings.Contains(f, "/") {
				dir = filepath.Dir(f)
			} else {
				f = filepath.Join(dir, f)
			}
			listed[f] = true
		}
	}
	if len(listed) < 20 {
		t.Fatalf("the table names %d files: the parse found no table", len(listed))
	}
	var files []string
	for _, top := range []string{"engine", "pool", "tlsbridge", "bench", "cmd"} {
		filepath.WalkDir(filepath.Join("..", top), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return err
			}
			files = append(files, strings.TrimPrefix(p, "../"))
			return nil
		})
	}
	sort.Strings(files)
	have := map[string]bool{}
	for _, f := range files {
		have[f] = true
		if !listed[f] {
			t.Errorf("%s is not in architecture.md's file table", f)
		}
	}
	for f := range listed {
		if !have[f] {
			t.Errorf("architecture.md's file table names %s, which does not exist", f)
		}
	}
}
