#!/usr/bin/env python3
"""One Markdown table from bench/tune/out/<transport><n>.md reports (oxccl-perf tune --report)."""
import re
import sys
from pathlib import Path

out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "out")
print("| link, ranks | points | built-in within 10% | built-in worst | tuned within 10% "
      "| tuned = best algorithm | tuned geomean ×best |")
print("|---|---:|---:|---|---:|---:|---:|")
for t in ["shm", "tcp"]:
    for n in [2, 4, 8]:
        f = out / f"{t}{n}.md"
        if not f.exists():
            continue
        coll, pts = None, []
        for line in f.read_text().splitlines():
            if line.startswith("## "):
                coll = line[3:].strip()
            elif re.match(r"\| \d", line):
                c = [x.strip() for x in line.strip().strip("|").split("|")]
                pts.append((coll, c))
        if not pts:
            continue
        dr = [float(c[5]) for _, c in pts]
        tr = [float(c[9]) for _, c in pts]
        same = sum(c[6].split("/")[0] == c[1].split("/")[0] for _, c in pts)
        worst = max(range(len(pts)), key=lambda i: dr[i])
        wc, w = pts[worst]
        geo = 1.0
        for r in tr:
            geo *= r ** (1 / len(tr))
        print(f"| {t}, {n} | {len(pts)} | {sum(r <= 1.1 for r in dr)} | {dr[worst]:.2f} "
              f"({wc} {w[0]} B: {w[3]} vs {w[1]}) | {sum(r <= 1.1 for r in tr)} | "
              f"{same} | {geo:.3f} |")
