#!/usr/bin/env python3
"""Loss against step from oxccl-train's --csv file (step,loss,val_loss,tokens_per_s) as an
SVG line plot, with no plotting library (the CI image has none).

    bench/train/plot_loss.py loss.csv docs/train/loss.svg "small model, dp=2"
"""
import csv
import sys

src, dst = sys.argv[1], sys.argv[2]
title = sys.argv[3] if len(sys.argv) > 3 else "oxccl-train"
train, val = [], []
with open(src) as f:
    for row in csv.DictReader(f):
        step = int(row["step"])
        train.append((step, float(row["loss"])))
        if row.get("val_loss"):
            val.append((step, float(row["val_loss"])))

W, H, L, R, T, B = 640, 360, 60, 20, 40, 50
xmax = max(s for s, _ in train)
ymin = min(0.0, min(v for _, v in train + val))
ymax = max(v for _, v in train + val)
ymax = ymax * 1.05


def x(s):
    return L + (W - L - R) * s / xmax


def y(v):
    return T + (H - T - B) * (1 - (v - ymin) / (ymax - ymin))


def line(points, colour, width):
    pts = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in points)
    return f'<polyline fill="none" stroke="{colour}" stroke-width="{width}" points="{pts}"/>'


out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
       f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
       f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>',
       f'<text x="{W / 2}" y="{H - 12}" text-anchor="middle">step</text>',
       f'<text x="15" y="{H / 2}" transform="rotate(-90 15 {H / 2})" text-anchor="middle">loss (nats/char)</text>']
for i in range(6):
    v = ymin + (ymax - ymin) * i / 5
    out.append(f'<text x="{L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.1f}</text>')
    out.append(f'<line x1="{L}" y1="{y(v):.1f}" x2="{W - R}" y2="{y(v):.1f}" stroke="#ddd"/>')
for i in range(6):
    s = xmax * i / 5
    out.append(f'<text x="{x(s):.1f}" y="{H - B + 16}" text-anchor="middle">{s:.0f}</text>')
out.append(line(train, "#1f77b4", 1))
if val:
    out.append(line(val, "#d62728", 2))
    out += [f'<circle cx="{x(s):.1f}" cy="{y(v):.1f}" r="3" fill="#d62728"/>' for s, v in val]
out.append(f'<text x="{W - R - 150}" y="{T + 15}" fill="#1f77b4">train (per step)</text>')
out.append(f'<text x="{W - R - 150}" y="{T + 32}" fill="#d62728">validation</text>')
out.append("</svg>")
with open(dst, "w") as f:
    f.write("\n".join(out) + "\n")
