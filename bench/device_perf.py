"""Collective bandwidth on GPU buffers through a libnccl.so.2, timed with CUDA events.

    python3 bench/device_perf.py LIBNCCL NRANKS [--op all_reduce] [--min 1M] [--max 256M]

Starts NRANKS processes on GPU 0 with LIBNCCL preloaded (oxccl's, so several ranks may share
the GPU), runs torch.distributed's OP on float32 tensors from MIN to MAX bytes (doubling),
and prints an nccl-tests style table from rank 0: size, time, algbw, busbw (the same
bus-bandwidth factors as nccl-tests). Used by scripts/device-check.sh.
"""
import argparse
import os
import socket
import subprocess
import sys

BUS_FACTOR = {  # busbw = algbw * factor(n), as nccl-tests defines it
    "all_reduce": lambda n: 2 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,
}


def size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * mult[s[-1]] if s[-1] in mult else int(s)


def rank_main(a):
    import torch
    import torch.distributed as dist
    rank, n = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.cuda.set_device(0)
    dev = torch.device("cuda", 0)
    dist.init_process_group("nccl", rank=rank, world_size=n, device_id=dev)
    if rank == 0:
        print(f"# {a.op}, {n} ranks on {torch.cuda.get_device_name(0)}, float32, "
              f"{os.path.basename(a.lib)}", flush=True)
        print(f"{'bytes':>12} {'time(us)':>10} {'algbw(GB/s)':>12} {'busbw(GB/s)':>12}",
              flush=True)
    b = a.min
    while b <= a.max:
        count = b // 4
        x = torch.ones(count, device=dev)
        out = torch.empty(count * n if a.op == "all_gather" else count, device=dev)
        big = torch.ones(count * n, device=dev)

        def once():
            if a.op == "all_reduce":
                dist.all_reduce(x)
            elif a.op == "all_gather":
                dist.all_gather_into_tensor(out, x)
            elif a.op == "reduce_scatter":
                dist.reduce_scatter_tensor(out, big)
            else:
                dist.broadcast(x, src=0)

        for _ in range(a.warmup):
            once()
        torch.cuda.synchronize()
        dist.barrier()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(a.iters):
            once()
        end.record()
        end.synchronize()
        us = start.elapsed_time(end) * 1000 / a.iters
        if rank == 0:
            algbw = b / us / 1e3
            busbw = algbw * BUS_FACTOR[a.op](n)
            print(f"{b:>12} {us:>10.1f} {algbw:>12.2f} {busbw:>12.2f}", flush=True)
        b *= 2
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("lib")
    p.add_argument("nranks", type=int)
    p.add_argument("--op", choices=sorted(BUS_FACTOR), default="all_reduce")
    p.add_argument("--min", type=size, default=size("1M"))
    p.add_argument("--max", type=size, default=size("256M"))
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.rank:
        return rank_main(a)
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    env = dict(os.environ, LD_PRELOAD=os.path.abspath(a.lib), WORLD_SIZE=str(a.nranks),
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port.getsockname()[1]))
    port.close()
    procs = [subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--rank"],
                              env=dict(env, RANK=str(r))) for r in range(a.nranks)]
    return max(p.wait(timeout=600) for p in procs)


if __name__ == "__main__":
    sys.exit(main())
