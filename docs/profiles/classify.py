"""Classify the stacks of CPU profiles by rules and print each class's share.
Used by phases.py and gib.py; reads `go tool pprof -traces BINARY PROFILE...`."""
import collections, re, subprocess, sys


def report(rules, total_label="ms"):
    """rules: ordered (name, pattern) pairs; the first rule whose pattern
    matches any frame of a stack wins. A pattern may be a tuple of
    patterns, all of which must match."""
    binary, profs = sys.argv[1], sys.argv[2:]
    out = subprocess.run(["go", "tool", "pprof", "-traces", binary] + profs,
                         capture_output=True, text=True).stdout
    tot = collections.Counter()
    total = 0.0
    for b in out.split("-----------+-------------------------------------------------------"):
        m = re.search(r"^\s*(\d+(?:\.\d+)?)(ms|s)\s", b, re.M)
        if not m:
            continue
        v = float(m.group(1)) * (1000 if m.group(2) == "s" else 1)
        cat = "other"
        for name, pat in rules:
            pats = pat if isinstance(pat, tuple) else (pat,)
            if all(re.search(p, b) for p in pats):
                cat = name
                break
        tot[cat] += v
        total += v
    for k, v in sorted(tot.items(), key=lambda x: -x[1]):
        print(f"{v/total*100:5.1f}%  {k}")
    print(f"total {total:.0f} {total_label}")
