#!/usr/bin/env python3
"""gloo_perf: times torch.distributed's gloo backend the way nccl-tests times NCCL.

    .venv/bin/python gloo_perf.py all_reduce -np 4 -b 8 -e 64M -f 4 -J out/gloo_all_reduce.json

Starts -np processes on this host (or, under torchrun, uses RANK/WORLD_SIZE/MASTER_ADDR),
joins them in a gloo process group over loopback TCP, and writes the JSON that oxccl-perf -J
writes. float32, sum. Collectives and the torch call that runs each:

  all_reduce      dist.all_reduce(t)                         in place only (torch has no other form)
  all_gather      dist.all_gather_into_tensor(out, inp)      in place: inp = out[rank*c:(rank+1)*c]
  reduce_scatter  dist.reduce_scatter_tensor(out, inp)       in place: out = inp[rank*c:(rank+1)*c]
  broadcast       dist.broadcast(t, root)                    in place only
  reduce          dist.reduce(t, root)                       in place only
  alltoall        dist.all_to_all_single(out, inp)           out of place only

A form that gloo rejects (NotImplementedError / "not supported" from the backend) is recorded
as null with the reason in "unsupported", and the run goes on with the rest. Timing, sizes,
bandwidth factors and the check follow nccl-tests (src/common.cu): warm-up of every size by
factor 2, then per size and form one untimed call, a barrier, -n timed calls, time = elapsed/n
averaged over ranks; algbw = size/time, busbw = algbw * factor; then the buffers are filled
with integer-valued floats, the collective runs once more and every element is compared with
the exact expected value (#wrong summed over ranks).

Each rank uses one intra-op thread (torch.set_num_threads(1)), as each rank of oxccl and Open
MPI runs on one thread; --threads changes it.
"""
import argparse
import datetime
import json
import os
import socket
import sys
import time
import warnings

# torch warns at import when numpy is missing; gloo_perf does not use numpy
warnings.filterwarnings("ignore", message=".*NumPy.*")
COLLECTIVES = ["all_reduce", "all_gather", "reduce_scatter", "broadcast", "reduce", "alltoall"]
FACTOR = {
    "all_reduce": lambda n: 2.0 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "alltoall": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,
    "reduce": lambda n: 1.0,
}
NO_REDOP = {"all_gather", "broadcast", "alltoall"}
ROOTED = {"broadcast", "reduce"}


def sig(x, digits=6):
    """x rounded to `digits` significant digits (tiny bandwidths keep their precision)"""
    return float(f"{x:.{digits}g}")


def parse_size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    s = s.strip()
    if s and s[-1].upper() in mult:
        return int(float(s[:-1]) * mult[s[-1].upper()])
    return int(float(s))


def shape(coll, nbytes, n):
    """(count, sendcount, recvcount) in elements: nccl-tests' getCollByteCount for float."""
    cnt = nbytes // 4
    if coll in ("all_gather", "reduce_scatter", "alltoall"):
        base = (cnt // n) & ~3
        if coll == "all_gather":
            return base, base, base * n
        if coll == "reduce_scatter":
            return base, base * n, base
        return base, base * n, base * n
    return cnt, cnt, cnt


def sizes(lo, hi, factor):
    out, s = [], lo
    while s <= hi:
        out.append(s)
        if s == 0:
            break
        s = int(s * factor)
    return out


def unsupported_error(e):
    msg = str(e).lower()
    return isinstance(e, NotImplementedError) or "not support" in msg or "unsupported" in msg \
        or "not implemented" in msg


class Bench:
    def __init__(self, torch, dist, coll, rank, n, root):
        self.torch, self.dist, self.coll = torch, dist, coll
        self.rank, self.n, self.root = rank, n, root

    def pat(self, r, start, count):
        t = self.torch
        i = t.arange(start, start + count, dtype=t.int64)
        return ((i * 7 + r * 13) % 31 - 15).to(t.float32)

    def buffers(self, count, sendcount, recvcount):
        t = self.torch
        self.c = count
        self.send = t.zeros(sendcount, dtype=t.float32)
        self.recv = t.zeros(recvcount, dtype=t.float32)
        # the in-place buffer holds the larger of the two, laid out as NCCL's in-place form
        self.buf = t.zeros(max(sendcount, recvcount), dtype=t.float32)

    def has_form(self, in_place):
        if in_place:
            return self.coll != "alltoall"
        return self.coll in ("all_gather", "reduce_scatter", "alltoall")

    def call(self, in_place):
        d, c, r = self.dist, self.c, self.rank
        coll = self.coll
        if coll == "all_reduce":
            d.all_reduce(self.buf, op=d.ReduceOp.SUM)
        elif coll == "broadcast":
            d.broadcast(self.buf, src=self.root)
        elif coll == "reduce":
            d.reduce(self.buf, dst=self.root, op=d.ReduceOp.SUM)
        elif coll == "all_gather":
            if in_place:
                d.all_gather_into_tensor(self.buf, self.buf[r * c:(r + 1) * c])
            else:
                d.all_gather_into_tensor(self.recv, self.send)
        elif coll == "reduce_scatter":
            if in_place:
                d.reduce_scatter_tensor(self.buf[r * c:(r + 1) * c], self.buf, op=d.ReduceOp.SUM)
            else:
                d.reduce_scatter_tensor(self.recv, self.send, op=d.ReduceOp.SUM)
        elif coll == "alltoall":
            d.all_to_all_single(self.recv, self.send)

    def init_data(self, in_place):
        c, r, n = self.c, self.rank, self.n
        self.recv.fill_(-1e9)
        self.buf.fill_(-1e9)
        coll = self.coll
        if coll in ("all_reduce", "reduce"):
            self.buf[:c] = self.pat(r, 0, c)
        elif coll == "broadcast":
            if r == self.root:
                self.buf[:c] = self.pat(r, 0, c)
        elif coll == "all_gather":
            if in_place:
                self.buf[r * c:(r + 1) * c] = self.pat(r, 0, c)
            else:
                self.send[:] = self.pat(r, 0, c)
        elif coll in ("reduce_scatter", "alltoall"):
            (self.buf if in_place else self.send)[:n * c] = self.pat(r, 0, n * c)

    def check(self, in_place):
        t, c, r, n = self.torch, self.c, self.rank, self.n
        coll = self.coll
        if coll in ("all_reduce", "reduce"):
            if coll == "reduce" and r != self.root:
                return 0
            want = sum(self.pat(q, 0, c) for q in range(n))
            got = self.buf[:c]
        elif coll == "broadcast":
            want, got = self.pat(self.root, 0, c), self.buf[:c]
        elif coll == "all_gather":
            want = t.cat([self.pat(q, 0, c) for q in range(n)]) if c else t.zeros(0)
            got = self.buf if in_place else self.recv
        elif coll == "reduce_scatter":
            want = sum(self.pat(q, r * c, c) for q in range(n))
            got = self.buf[r * c:(r + 1) * c] if in_place else self.recv
        else:  # alltoall: block q came from rank q, which sent its block r
            want = t.cat([self.pat(q, r * c, c) for q in range(n)]) if c else t.zeros(0)
            got = self.recv
        return int((got[:want.numel()] != want).sum().item()) if want.numel() else 0


def worker(rank, n, args, init_method):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=n,
                            timeout=datetime.timedelta(seconds=args.timeout))
    coll = args.collective
    root = args.root if coll in ROOTED else -1
    b = Bench(torch, dist, coll, rank, n, max(root, 0))
    size_list = sizes(args.b, args.e, args.f)
    maxc = shape(coll, args.e, n)
    b.buffers(*maxc)

    def allsum(x, dtype):
        t = torch.tensor([x], dtype=dtype)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.item()

    # Which forms does this torch's gloo accept? Probe once at a small size.
    unsupported = {}
    probe = shape(coll, max(args.b, 64 * n), n)
    for in_place in (False, True):
        if not b.has_form(in_place):
            continue
        b.buffers(*probe)
        try:
            b.init_data(in_place)
            b.call(in_place)
            ok = 1
        except Exception as e:  # noqa: BLE001 (the backend's own error type varies)
            if not unsupported_error(e):
                raise
            unsupported["in_place" if in_place else "out_of_place"] = str(e).splitlines()[0][:200]
            ok = 0
        # every rank must agree before the next collective
        if allsum(ok, torch.int64) != n and ok:
            unsupported["in_place" if in_place else "out_of_place"] = "rejected on another rank"
    forms = [ip for ip in (False, True)
             if b.has_form(ip) and ("in_place" if ip else "out_of_place") not in unsupported]

    # nccl-tests' warm-up: every size from -b to -e by a factor 2
    s = args.b
    while forms and s <= args.e:
        b.buffers(*shape(coll, s, n))
        for _ in range(args.w):
            b.call(forms[0])
        if s == 0:
            break
        s *= 2

    results, bw = [], []
    if rank == 0:
        print(f"# gloo_perf {coll}: torch {torch.__version__} gloo, {n} ranks, {args.n} iters, "
              f"{args.w} warmup, check {args.c}")
        for form, why in unsupported.items():
            print(f"# {form}: unsupported by gloo here: {why}")
        print(f"# {'size':>10}  {'count':>12}  {'type':>8}  {'redop':>6}  {'root':>6}"
              + f"  {'time':>8} {'algbw':>7} {'busbw':>7} {'#wrong':>6}" * 2)
        print(f"# {'(B)':>10}  {'(elements)':>12}  {'':>8}  {'':>6}  {'':>6}"
              + f"  {'(us)':>8} {'(GB/s)':>7} {'(GB/s)':>7} {'':>6}" * 2, flush=True)
    total_wrong = 0
    for size in size_list:
        count, sendcount, recvcount = shape(coll, size, n)
        b.buffers(count, sendcount, recvcount)
        nbytes = max(sendcount, recvcount) * 4
        row = {"size": nbytes, "count": count, "type": "float",
               "redop": "none" if coll in NO_REDOP else "sum", "root": root,
               "out_of_place": None, "in_place": None}
        for in_place in (False, True):
            if in_place not in forms:
                continue
            if args.c:
                b.init_data(in_place)
            b.call(in_place)  # untimed "Sync" call
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(args.n):
                b.call(in_place)
            dt = (time.perf_counter() - t0) / args.n
            dt = allsum(dt, torch.float64) / n
            algbw = (count * 4 * (n if coll in ("all_gather", "reduce_scatter", "alltoall") else 1)) / 1e9 / dt
            busbw = algbw * FACTOR[coll](n)
            wrong = None
            if args.c:
                b.init_data(in_place)
                b.call(in_place)
                wrong = int(allsum(b.check(in_place), torch.int64))
                total_wrong += wrong
            row["in_place" if in_place else "out_of_place"] = {
                "time": sig(dt * 1e6), "alg_bw": sig(algbw), "bus_bw": sig(busbw),
                "nwrong": wrong}
            bw.append(busbw)
        results.append(row)
        if rank == 0:
            line = f"  {nbytes:>10}  {count:>12}  {'float':>8}  {row['redop']:>6}  {root:>6}"
            for form in ("out_of_place", "in_place"):
                r = row[form]
                if r is None:
                    line += f"  {'n/a':>8} {'n/a':>7} {'n/a':>7} {'n/a':>6}"
                else:
                    w = "N/A" if r["nwrong"] is None else r["nwrong"]
                    line += f"  {r['time']:>8.2f} {r['alg_bw']:>7.2f} {r['bus_bw']:>7.2f} {w:>6}"
            print(line, flush=True)
    avg = sum(bw) / len(bw) if bw else 0.0
    if rank == 0:
        print(f"# Out of bounds values : {total_wrong} {'ERROR' if total_wrong else 'OK'}")
        print(f"# Avg bus bandwidth    : {avg:g}\n#", flush=True)
        if args.J:
            doc = {
                "library": f"torch {torch.__version__} gloo", "collective": coll, "nranks": n,
                "hostname": socket.gethostname(),
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "command": args.command, "results": results,
                "average_bus_bandwidth": sig(avg),
            }
            if unsupported:
                doc["unsupported"] = unsupported
            with open(args.J, "w") as f:
                json.dump(doc, f, indent=1)
                f.write("\n")
    dist.barrier()
    dist.destroy_process_group()
    return 1 if total_wrong else 0


def _spawned(rank, n, args, init_method, codes):
    codes[rank] = worker(rank, n, args, init_method)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("collective", choices=COLLECTIVES + [c + "_perf" for c in COLLECTIVES])
    p.add_argument("-np", "--nranks", type=int, default=4)
    p.add_argument("-b", type=parse_size, default=8, help="min bytes")
    p.add_argument("-e", type=parse_size, default=32 << 20, help="max bytes")
    p.add_argument("-f", type=float, default=2, help="step factor")
    p.add_argument("-n", type=int, default=20, help="timed iterations")
    p.add_argument("-w", type=int, default=1, help="warm-up iterations")
    p.add_argument("-c", type=int, default=1, help="check results (1) or not (0)")
    p.add_argument("-r", "--root", type=int, default=0)
    p.add_argument("-J", help="write results as JSON")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads per rank")
    p.add_argument("--timeout", type=int, default=300, help="seconds before a stuck collective fails")
    args = p.parse_args()
    args.collective = args.collective.removesuffix("_perf")
    args.command = " ".join([os.path.basename(sys.executable)] + sys.argv)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    try:
        import torch  # noqa: F401
        import torch.distributed as dist
    except Exception as e:  # noqa: BLE001
        print(f"gloo_perf: SKIP: torch cannot be imported here ({e}); run.sh installs it "
              f"into bench/peers/.venv", file=sys.stderr)
        return 3
    if not dist.is_available() or not dist.is_gloo_available():
        print("gloo_perf: SKIP: this torch has no gloo backend", file=sys.stderr)
        return 3

    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # torchrun
        rank, n = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        return worker(rank, n, args, "env://")

    import multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    init = f"tcp://127.0.0.1:{port}"
    ctx = mp.get_context("spawn")
    codes = ctx.Array("i", [-1] * args.nranks)
    procs = [ctx.Process(target=_spawned, args=(r, args.nranks, args, init, codes))
             for r in range(args.nranks)]
    for pr in procs:
        pr.start()
    rc, alive = 0, list(procs)
    from multiprocessing.connection import wait
    while alive:
        wait([pr.sentinel for pr in alive])
        for pr in [pr for pr in alive if pr.exitcode is not None]:
            alive.remove(pr)
            if pr.exitcode != 0 and not rc:
                rc = pr.exitcode if pr.exitcode > 0 else 1
                for other in alive:  # one rank died: the others would wait for their timeout
                    other.terminate()
    return rc or max(codes[:], default=0)


if __name__ == "__main__":
    sys.exit(main())
