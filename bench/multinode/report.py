#!/usr/bin/env python3
"""report: the markdown tables of bench/multinode/run.sh, from its out/ folder.

    python3 report.py bench/multinode/out [--compare bench/peers/compare.py]

Reads out/meta.txt, out/status.tsv and the nccl-tests JSON files that run.sh wrote (tcp/,
hier/, place/), prints three tables (TCP between hosts against gloo and Open MPI; flat ring
against hierarchical at the shaped rate; contiguous against interleaved placement) with the
ratios the issue asks for next to its targets, and, with --compare, appends compare.py's full
table of part 1 (each library's latency and bandwidth files merged into one). A run that failed
or left no file is shown as such, with the error line from its log. Standard library only.
"""
import argparse
import glob
import json
import os
import subprocess
import sys

MIB = 1 << 20


def read_json(path):
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    return d if isinstance(d, dict) else None


def best_of(folder, name):
    """NAME.json and every round's NAME.rK.json merged: for each size and form, the result
    with the highest busbw (the least disturbed round). None when there is no file."""
    docs = [d for f in [os.path.join(folder, name + ".json")] + sorted(glob.glob(os.path.join(folder, name + ".r*.json")))
            if (d := read_json(f))]
    if not docs:
        return None
    if "results" not in docs[0]:  # the TCP ceiling: the fastest transfer
        return max(docs, key=lambda d: d.get("GB_per_s") or 0)
    best = {}
    for d in docs:
        for row in d.get("results", []):
            if not isinstance(row, dict):
                continue
            cur = best.setdefault(row.get("size"), dict(row))
            for form in ("out_of_place", "in_place"):
                new, old = row.get(form), cur.get(form)
                if isinstance(new, dict) and (not isinstance(old, dict)
                                              or (new.get("bus_bw") or 0) > (old.get("bus_bw") or 0)):
                    cur[form] = new
    m = dict(docs[0])
    m["results"] = [best[s] for s in sorted(best, key=lambda s: s or 0)]
    m["rounds"] = len(docs)
    return m


def read_status(out):
    """{run: (rc, log path)} from status.tsv"""
    st = {}
    try:
        with open(os.path.join(out, "status.tsv")) as f:
            next(f, None)
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) == 3 and parts[1].lstrip("-").isdigit():
                    st[parts[0]] = (int(parts[1]), os.path.join(out, parts[2]))
    except OSError:
        pass
    return st


def read_meta(out):
    meta = {}
    try:
        with open(os.path.join(out, "meta.txt")) as f:
            for line in f:
                k, _, v = line.rstrip("\n").partition("=")
                meta[k] = v
    except OSError:
        pass
    return meta


def why_failed(status, run):
    """'not run', 'failed (exit N): <the log's error line>' or None when the run succeeded"""
    rounds = [k for k in status if k == run or k.startswith(run + ".r")]
    if not rounds:
        return "not run"
    if any(status[k][0] == 0 for k in rounds):
        return None  # a failed round is listed under the tables
    rc, logf = status[rounds[0]]
    lines = []
    try:
        with open(logf, errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        pass
    # the first line that says what went wrong, else the last one
    keys = ("error", "unknown", "invalid", "not supported", "unsupported", "panicked", "failed")
    pick = next((ln for ln in lines if any(k in ln.lower() for k in keys)
                 and "run-job.sh" not in ln), lines[-1] if lines else "")
    pick = pick.replace("|", "\\|")
    if len(pick) > 160:
        pick = pick[:157] + "..."
    what = "timed out" if rc in (124, 137) else f"exit {rc}"
    return f"failed ({what}): `{pick}`" if pick else f"failed ({what})"


def result(doc, size, form):
    """(time µs, busbw GB/s, nwrong) of one form at one size, or None"""
    if not doc:
        return None
    for r in doc.get("results", []):
        if isinstance(r, dict) and r.get("size") == size and isinstance(r.get(form), dict):
            p = r[form]
            if isinstance(p.get("bus_bw"), (int, float)) and isinstance(p.get("time"), (int, float)):
                return p["time"], p["bus_bw"], p.get("nwrong")
    return None


def fbw(r):
    if r is None:
        return "—"
    s = f"{r[1]:.3g}"
    return s + (" ✗" if isinstance(r[2], int) and r[2] > 0 else "")


def ftime(r):
    if r is None:
        return "—"
    t = r[0]
    return f"{t / 1000:.3g} ms" if t >= 1000 else f"{t:.3g} µs"


def ratio(a, b, key=1):
    if a is None or b is None or not b[key] or not a[key]:
        return None
    return a[key] / b[key]


def fratio(x, target=None, higher=True):
    if x is None:
        return "—"
    s = f"{x:.2f}×"
    if target is not None:
        ok = x >= target if higher else x <= target
        s += " ✓" if ok else " ✗"
    return s


def fsize(n):
    return f"{n // MIB} MiB" if n >= MIB and n % MIB == 0 else f"{n} B"


def part1(out, status, lines):
    t = os.path.join(out, "tcp")
    docs = {lib: {k: best_of(t, f"{lib}_{k}") for k in ("lat", "bw")}
            for lib in ("oxccl", "gloo", "mpi")}
    ran = {lib for lib in docs if any(f"{lib}_{k}" in status for k in ("lat", "bw"))}
    if not ran and "tcp_ceiling" not in status:
        return
    lines += ["## 1. TCP between hosts: 2 nodes × 1 rank, unshaped veth links", ""]
    names = {"oxccl": "oxccl", "gloo": "gloo", "mpi": "Open MPI"}
    head = ["size", "oxccl busbw", "oxccl busbw (in place)", "gloo busbw (in place)",
            "Open MPI busbw", "oxccl/gloo (in place)", "oxccl/Open MPI"]
    lines += ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    sizes = [8] + [MIB << (2 * i) for i in range(4)]
    at64 = {}
    for s in sizes:
        k = "lat" if s == 8 else "bw"
        ox = result(docs["oxccl"][k], s, "out_of_place")
        oxi = result(docs["oxccl"][k], s, "in_place")
        gl = result(docs["gloo"][k], s, "in_place")
        mp = result(docs["mpi"][k], s, "out_of_place")
        rg, rm = ratio(oxi, gl), ratio(ox, mp)
        if s == 64 * MIB:
            at64 = {"gloo": rg, "mpi": rm, "ox": ox, "ox_ip": oxi}
        lines.append("| " + " | ".join([fsize(s), fbw(ox), fbw(oxi), fbw(gl), fbw(mp),
                                         fratio(rg), fratio(rm)]) + " |")
    lines.append("")
    lines.append("busbw in GB/s (10⁹ B/s, nccl-tests' bus bandwidth; for 2 ranks busbw = algbw). "
                 "gloo has only the in-place all-reduce, so it is compared with oxccl's in-place "
                 "result; Open MPI with oxccl's out-of-place one. ✗ = wrong elements.")
    lines.append("")
    # 8-byte latency: time per op, both forms (on a shared machine they can differ a lot)
    lat = {(lib, f): result(docs[lib]["lat"], 8, f) for lib in docs for f in ("out_of_place", "in_place")}
    lines += ["| 8 B all_reduce, time per op | oxccl | gloo | Open MPI | Open MPI time / oxccl time |",
              "|---|---:|---:|---:|---:|"]
    for f, label in (("out_of_place", "out of place"), ("in_place", "in place")):
        lines.append(f"| {label} | {ftime(lat['oxccl', f])} | {ftime(lat['gloo', f])} | "
                     f"{ftime(lat['mpi', f])} | {fratio(ratio(lat['mpi', f], lat['oxccl', f], key=0))} |")
    lines.append("")
    ceil = best_of(t, "ceiling")
    if ceil and isinstance(ceil.get("GB_per_s"), (int, float)):
        c = ceil["GB_per_s"]
        frac = f"; oxccl's 64 MiB busbw is {at64['ox'][1] / c:.0%} of it" if at64.get("ox") else ""
        lines.append(f"Plain-TCP ceiling between the two namespaces: **{c:.3g} GB/s**, one Python "
                     f"socket stream, {ceil.get('bytes', 0) / (1 << 30):.3g} GiB{frac}. (A 2-rank "
                     "all-reduce sends and receives its size once per rank at the same time, so "
                     "one stream's rate is the ceiling of its busbw when the link is full duplex.)")
    else:
        lines.append(f"Plain-TCP ceiling: {why_failed(status, 'tcp_ceiling') or 'no result'}")
    two = [best_of(t, "ceiling2_" + d) for d in ("ab", "ba")]
    if all(c and isinstance(c.get("GB_per_s"), (int, float)) for c in two):
        c2 = min(c["GB_per_s"] for c in two)
        frac = ""
        if at64.get("ox_ip"):
            frac = f"; oxccl's in-place 64 MiB busbw is {at64['ox_ip'][1] / c2:.0%} of it"
        lines.append("")
        lines.append(f"Both directions at once (one stream each way, as a 2-rank all-reduce "
                     f"moves its data): **{c2:.3g} GB/s** per direction (the slower one){frac}. "
                     "The nodes share this machine's cores, so the two streams also compete for "
                     "CPU, as the ranks of an all-reduce do.")
    lines.append("")
    for lib in ("oxccl", "gloo", "mpi"):
        for k in ("lat", "bw"):
            w = why_failed(status, f"{lib}_{k}")
            if w and w != "not run":
                lines.append(f"- {names[lib]} {k}: {w}")
    lines.append(f"- **all_reduce busbw at 64 MiB, oxccl/gloo: {fratio(at64.get('gloo'), 2.0)}** "
                 "(target ≥ 2×)")
    lines.append(f"- **all_reduce busbw at 64 MiB, oxccl/Open MPI tcp: {fratio(at64.get('mpi'), 3.0)}** "
                 "(target ≥ 3×)")
    spin = result(best_of(t, "mpi_lat_spin"), 8, "out_of_place")
    lines.append(f"- 8 B all_reduce, time per op (out of place; gloo in place): oxccl "
                 f"{ftime(lat['oxccl', 'out_of_place'])}, Open MPI {ftime(lat['mpi', 'out_of_place'])}, "
                 f"gloo {ftime(lat['gloo', 'in_place'])}")
    if spin or "mpi_lat_spin" in status:
        lines.append(f"- Open MPI above runs with `mpi_yield_when_idle 1` (the nodes share this "
                     f"machine's cores); busy-polling (`0`, its default with one slot per node) "
                     f"takes {ftime(spin) if spin else why_failed(status, 'mpi_lat_spin')} per 8 B op here")
    lines.append("")


def part2(out, status, meta, lines):
    runs = [("ring", "OXCCL_ALGO=ring (flat ring)"), ("hier", "OXCCL_ALGO=hier (hierarchical)"),
            ("default", "default (the tuner's choice)")]
    if not any(f"hier_{k}" in status for k, _ in runs):
        return
    rate = meta.get("rate", "?")
    lines += [f"## 2. 2 nodes × 2 ranks (contiguous), links at {rate}: all_reduce 64 MiB", "",
              "| algorithm | time per op | busbw (GB/s) | in place busbw | vs ring | status |",
              "|---|---:|---:|---:|---:|---|"]
    res = {}
    for k, label in runs:
        d = best_of(os.path.join(out, "hier"), k)
        r = result(d, 64 * MIB, "out_of_place")
        ri = result(d, 64 * MIB, "in_place")
        res[k] = r
        w = why_failed(status, f"hier_{k}") or ("ok" if r else "no result")
        lines.append(f"| {label} | {ftime(r)} | {fbw(r)} | {fbw(ri)} | "
                     f"{fratio(ratio(r, res.get('ring'))) if k != 'ring' else '1.00×'} | {w} |")
    lines += ["", f"- **hier/ring busbw at 64 MiB, {rate} links: "
              f"{fratio(ratio(res.get('hier'), res.get('ring')), 1.3)}** (target ≥ 1.3×)", ""]


def part3(out, status, meta, lines):
    rate = meta.get("rate", "?")
    links = [(rate, f"{rate}"), ("unlimited", "unshaped")]
    if not any(f"place_{k}_contiguous" in status for k, _ in links):
        return
    lines += ["## 3. Placement: 2 nodes × 2 ranks, all_reduce 64 MiB, the tuner's choice", "",
              "| links | contiguous busbw | interleaved busbw | interleaved/contiguous | status |",
              "|---|---:|---:|---:|---|"]
    summary = []
    for k, label in links:
        r = {p: result(best_of(os.path.join(out, "place"), f"{k}_{p}"), 64 * MIB, "out_of_place")
             for p in ("contiguous", "interleaved")}
        notes = [f"{p}: {w}" for p in ("contiguous", "interleaved")
                 if (w := why_failed(status, f"place_{k}_{p}"))]
        x = ratio(r["interleaved"], r["contiguous"])
        lines.append(f"| {label} | {fbw(r['contiguous'])} | {fbw(r['interleaved'])} | "
                     f"{fratio(x, 0.9)} | {'; '.join(notes) or 'ok'} |")
        summary.append(f"- **interleaved/contiguous, {label} links: {fratio(x, 0.9)}** (target ≥ 0.90×, "
                       "i.e. within 10%)")
    lines += [""] + summary + [""]


def merged_compare(out, compare, lines):
    """compare.py's table of part 1, each library's two files merged into one"""
    t = os.path.join(out, "tcp")
    mdir = os.path.join(t, "merged")
    files = []
    for lib in ("oxccl", "gloo", "mpi"):
        docs = [d for k in ("lat", "bw") if (d := best_of(t, f"{lib}_{k}"))]
        if not docs:
            continue
        m = dict(docs[0])
        m["results"] = sorted((r for d in docs for r in d.get("results", [])),
                              key=lambda r: r.get("size", 0))
        m["command"] = " ; ".join(str(d.get("command", "")) for d in docs)
        os.makedirs(mdir, exist_ok=True)
        f = os.path.join(mdir, f"{lib}_all_reduce.json")
        with open(f, "w") as fh:
            json.dump(m, fh, indent=1)
            fh.write("\n")
        files.append(f)
    if len(files) < 2:
        return
    p = subprocess.run([sys.executable, compare] + files, capture_output=True, text=True)
    if p.returncode != 0:
        lines += [f"(compare.py failed: {p.stderr.strip()[:300]})", ""]
        return
    with open(os.path.join(out, "tcp_compare.md"), "w") as fh:
        fh.write(p.stdout)
    lines += ["### Part 1 by bench/peers/compare.py (every size, both files of each library)", "",
              p.stdout.rstrip(), ""]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="run.sh's output folder")
    ap.add_argument("--compare", help="bench/peers/compare.py, for the full table of part 1")
    args = ap.parse_args()
    if not os.path.isdir(args.out):
        print(f"report.py: {args.out} is not a folder (run bench/multinode/run.sh first)", file=sys.stderr)
        return 1
    status, meta = read_status(args.out), read_meta(args.out)
    lines = ["# oxccl on the network-namespace cluster", ""]
    lib = next((d["library"] for sub, f in (("tcp", "oxccl_bw"), ("hier", "ring"), ("place", None))
                if f and (d := read_json(os.path.join(args.out, sub, f + ".json"))) and d.get("library")),
               "oxccl")
    lines.append(f"{meta.get('date', '?')}, {meta.get('cores', '?')} cores, kernel {meta.get('kernel', '?')}, "
                 f"{lib} (commit {meta.get('commit', '?')}); load average "
                 f"{meta.get('load_start', '?')} at the start, {meta.get('load_end', '?')} at the end; "
                 f"{meta.get('seconds', '?')} s. Iterations: {meta.get('lat_iters', '?')} at 8 B, "
                 f"{meta.get('bw_iters', '?')} per size unshaped, {meta.get('slow_iters', '?')} at "
                 f"{meta.get('rate', '?')}; best of {meta.get('repeat', '1')} round(s) per size. Every rank on this one machine: the nodes share its "
                 "cores, and anything else running shows in the numbers.")
    lines.append("")
    part1(args.out, status, lines)
    part2(args.out, status, meta, lines)
    part3(args.out, status, meta, lines)
    failed = [f"{k} ({why_failed(status, k)})" for k in status if status[k][0] != 0]
    if failed:
        lines += ["Failed runs (logs in out/logs/): " + "; ".join(failed), ""]
    if args.compare:
        merged_compare(args.out, args.compare, lines)
    print("\n".join(lines).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
