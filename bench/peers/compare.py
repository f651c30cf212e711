#!/usr/bin/env python3
"""Print one markdown table of oxccl's bus bandwidth against each peer's, from results JSON.

    python3 compare.py                 # every *.json in bench/peers/out/
    python3 compare.py a.json b.json   # or the files (and directories) named

Each file is what `oxccl-perf -J`, `mpi_perf -J` or `gloo_perf.py -J` writes (nccl-tests'
columns: size, count, type, redop, root, out_of_place/in_place {time, alg_bw, bus_bw, nwrong}).
A file whose "library" starts with "oxccl" is ours (--ours changes the prefix); every other
library is a peer. Rows are (collective, size); columns are oxccl's busbw, each peer's busbw,
and oxccl/peer per peer. The out-of-place result is compared; where a peer has no out-of-place
form (torch's all_reduce, broadcast and reduce work in place; so does MPI_Bcast), both sides'
in-place results are compared and the ratio is marked with "ⁱ". A result with wrong elements is
marked "✗". Under the table, one line per peer: the geometric mean of the ratios (sizes where
both bandwidths are above zero). Standard library only.
"""
import argparse
import glob
import json
import math
import os
import sys

ORDER = ["all_reduce", "all_gather", "reduce_scatter", "broadcast", "reduce", "alltoall"]


def load(paths):
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(glob.glob(os.path.join(p, "*.json")))
        else:
            files.append(p)
    docs = []
    for f in files:
        try:
            with open(f) as fh:
                d = json.load(fh)
        except (OSError, json.JSONDecodeError) as e:
            print(f"compare.py: skipping {f}: {e}", file=sys.stderr)
            continue
        if not isinstance(d, dict) or not isinstance(d.get("results"), list):
            print(f"compare.py: skipping {f}: not a results file", file=sys.stderr)
            continue
        d["_file"] = f
        docs.append(d)
    return docs


def busbw(placement):
    if not isinstance(placement, dict):
        return None
    v = placement.get("bus_bw")
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def wrong(placement):
    return isinstance(placement, dict) and isinstance(placement.get("nwrong"), int) \
        and placement["nwrong"] > 0


def fmt_bw(v, bad):
    if v is None:
        return "—"
    s = f"{v:.3g}" if v < 100 else f"{v:.0f}"
    return s + (" ✗" if bad else "")


def fmt_ratio(r):
    return f"{r:.0f}" if r >= 100 else f"{r:.1f}" if r >= 10 else f"{r:.2f}"


def fmt_size(n):
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("paths", nargs="*", default=[os.path.join(here, "out")])
    ap.add_argument("--ours", default="oxccl", help="library-name prefix of our results")
    args = ap.parse_args()
    docs = load(args.paths)
    if not docs:
        print("compare.py: no results files found in " + " ".join(args.paths), file=sys.stderr)
        return 1

    # table[(nranks, collective, size)][library] = (out_of_place, in_place)
    table, libraries, ranks, unsupported = {}, [], set(), {}
    ours_name = None
    for d in docs:
        lib = str(d.get("library") or os.path.splitext(os.path.basename(d["_file"]))[0])
        coll = str(d.get("collective") or "?")
        n = d.get("nranks")
        ranks.add(n)
        is_ours = lib.lower().startswith(args.ours.lower())
        if is_ours:
            ours_name = ours_name or lib
            lib = "\0ours"
        elif lib not in libraries:
            libraries.append(lib)
        if d.get("unsupported"):
            unsupported[(lib, coll)] = d["unsupported"]
        for r in d["results"]:
            if not isinstance(r, dict) or not isinstance(r.get("size"), (int, float)):
                continue
            key = (n, coll, int(r["size"]))
            table.setdefault(key, {})[lib] = (r.get("out_of_place"), r.get("in_place"))

    peers = sorted(libraries, key=str.lower)
    short = {p: " ".join(w for w in p.split() if not any(ch.isdigit() for ch in w)) or p for p in peers}
    head = ["collective", "size", "oxccl busbw"] + [f"{short[p]} busbw" for p in peers] \
        + [f"oxccl/{short[p]}" for p in peers]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    ratios = {p: [] for p in peers}
    wins = {p: 0 for p in peers}
    multi_ranks = len(ranks) > 1

    def sort_key(k):
        n, coll, size = k
        return (n if isinstance(n, int) else 0, ORDER.index(coll) if coll in ORDER else 99, coll, size)

    for key in sorted(table, key=sort_key):
        n, coll, size = key
        row = table[key]
        ours = row.get("\0ours")
        label = f"{coll} ({n} ranks)" if multi_ranks else coll
        cells_bw, cells_ratio = [], []
        forms_used = set()
        for p in peers:
            peer = row.get(p)
            if peer is None:
                cells_bw.append("unsupported" if (p, coll) in unsupported else "—")
                cells_ratio.append("—")
                continue
            # out-of-place unless the peer has only the in-place form
            form = 0 if busbw(peer[0]) is not None else 1
            pv = busbw(peer[form])
            if pv is not None:
                forms_used.add(form)
            cells_bw.append(fmt_bw(pv, wrong(peer[form])) + ("ⁱ" if form and pv is not None else ""))
            ov = busbw(ours[form]) if ours else None
            if ov is not None and pv is not None and ov > 0 and pv > 0:
                r = ov / pv
                ratios[p].append(r)
                wins[p] += r > 1
                cells_ratio.append(fmt_ratio(r) + ("ⁱ" if form else ""))
            else:
                cells_ratio.append("—")
        # our cell shows the form(s) the ratios used: out-of-place, and in-place (ⁱ) where a
        # peer had only that
        ours_cell = "—"
        if ours:
            parts = []
            if 0 in forms_used or not forms_used:
                parts.append(fmt_bw(busbw(ours[0]), wrong(ours[0])))
            if 1 in forms_used:
                ip = fmt_bw(busbw(ours[1]), wrong(ours[1])) + "ⁱ"
                parts.append(f"({ip})" if parts else ip)
            ours_cell = " ".join(parts)
        lines.append("| " + " | ".join([label, fmt_size(size), ours_cell] + cells_bw + cells_ratio) + " |")

    print("\n".join(lines))
    print()
    print("busbw in GB/s (nccl-tests' bus bandwidth); ratio = oxccl busbw / peer busbw, above 1 means "
          "oxccl is faster; ⁱ = in-place on both sides (the peer has no out-of-place form); "
          "✗ = wrong elements; — = no result.")
    print()
    print("libraries: " + "; ".join([f"oxccl = {ours_name or 'no results'}"]
                                    + [f"{short[p]} = {p}" for p in peers]))
    print()
    if ours_name is None:
        print("- no oxccl results found (run oxccl-perf with -J into the same folder): no ratios")
    for p in peers:
        rs = ratios[p]
        if rs:
            g = math.exp(sum(math.log(r) for r in rs) / len(rs))
            print(f"- oxccl vs {short[p]}: geometric mean of oxccl/peer busbw = {fmt_ratio(g)} over {len(rs)} sizes "
                  f"(oxccl faster at {wins[p]}, range {fmt_ratio(min(rs))} .. {fmt_ratio(max(rs))})")
        else:
            print(f"- oxccl vs {short[p]}: no comparable sizes")
    for (lib, coll), why in sorted(unsupported.items()):
        print(f"- {lib if lib != chr(0) + 'ours' else ours_name} {coll}: unsupported forms: "
              + "; ".join(f"{k}: {v}" for k, v in why.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
