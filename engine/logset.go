package engine

import (
	"github.com/tlsrelay/tlsrelay/engine/conf"
	"github.com/tlsrelay/tlsrelay/engine/logfile"
)

// logSet is one plan's access logs: the files it holds in the engine's
// logfile.Files, and the formats its directives compiled.
type logSet struct {
	files   *logfile.Files
	held    map[*logfile.File]bool
	formats map[string]*logFormat
	// vars are the plan's split_clients and map variables, for the
	// formats that name them.
	vars *sessionVars
}

func newLogSet(files *logfile.Files) *logSet {
	return &logSet{files: files, held: map[*logfile.File]bool{}, formats: map[string]*logFormat{}}
}

// open returns the server's access logs for the configuration's
// access_log directives.
func (ls *logSet) open(cfg *conf.Config, logs []conf.AccessLog) ([]accessLog, error) {
	var out []accessLog
	for _, l := range logs {
		if l.Off {
			return nil, nil
		}
		lf := ls.formats[l.Format]
		if lf == nil {
			def := cfg.Stream.LogFormats[l.Format]
			if def == nil {
				return nil, conf.Errorf(l.Pos, "unknown log format %q", l.Format)
			}
			lf = compileFormat(def.Template, def.Escape, ls.vars)
			ls.formats[l.Format] = lf
		}
		al := accessLog{format: lf}
		if l.PathTemplate != nil {
			// Opened for each line (logAccess), as NGINX does without
			// open_log_file_cache.
			al.path = compileFormat(l.PathTemplate, "none", ls.vars)
			al.files = ls.files
		} else {
			w, err := ls.files.Acquire(l.Path, l.Buffer, l.Gzip, l.Flush)
			if err != nil {
				return nil, conf.Errorf(l.Pos, "%v", err)
			}
			if ls.held[w] {
				ls.files.Release(w) // one reference per plan
			}
			ls.held[w] = true
			al.w = w
		}
		if l.IfTemplate != nil {
			al.cond = compileFormat(l.IfTemplate, "none", ls.vars)
		}
		out = append(out, al)
	}
	return out, nil
}

// close releases the plan's writers (a file closes with its last plan).
func (ls *logSet) close() {
	if ls == nil || ls.files == nil {
		return
	}
	for w := range ls.held {
		ls.files.Release(w)
	}
	ls.held = map[*logfile.File]bool{}
}
