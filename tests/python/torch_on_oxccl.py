"""PyTorch as a client of oxccl's libnccl.so.2 (GPU check, scripts/device-check.sh).

    python3 tests/python/torch_on_oxccl.py LIBNCCL [NRANKS]

Starts NRANKS processes on GPU 0 with LIBNCCL preloaded in place of NVIDIA's libnccl.so.2,
each running torch.distributed with backend "nccl": all_reduce (sum, avg, max), all_gather,
reduce_scatter, broadcast, reduce, all_to_all and a send/recv ring, on float32 and bfloat16
tensors, each result checked against values computed here. Several ranks share one GPU,
which NVIDIA's NCCL refuses and oxccl allows. Exit status 0 only when every rank passed.
"""
import os
import socket
import subprocess
import sys


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(lib, nranks):
    port = free_port()
    procs = []
    for rank in range(nranks):
        env = dict(os.environ, LD_PRELOAD=os.path.realpath(lib), RANK=str(rank),
                   WORLD_SIZE=str(nranks), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, __file__, "--rank"], env=env))
    failed = [r for r, p in enumerate(procs) if p.wait(timeout=300) != 0]
    if failed:
        print(f"FAIL: ranks {failed} failed", flush=True)
        return 1
    print(f"ok: torch.distributed (nccl backend) on oxccl, {nranks} ranks on one GPU", flush=True)
    return 0


def check(name, got, want):
    import torch
    if not torch.equal(got.float().cpu(), want.float().cpu()):
        bad = (got.float().cpu() != want.float().cpu()).nonzero()[0].tolist()
        raise AssertionError(f"{name}: at {bad} got {got.flatten()[:4].tolist()}..., "
                             f"want {want.flatten()[:4].tolist()}...")
    print(f"rank {os.environ['RANK']}: {name} ok", flush=True)


def rank_main():
    import datetime
    import torch
    import torch.distributed as dist
    rank, n = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.cuda.set_device(0)
    dev = torch.device("cuda", 0)
    dist.init_process_group("nccl", rank=rank, world_size=n, device_id=dev,
                            timeout=datetime.timedelta(seconds=120))
    # The library serving the calls is oxccl's: the process's ncclGetVersion (what torch's
    # calls resolve to) is the one oxccl reports, 2.28.7.
    import ctypes
    v = ctypes.c_int(0)
    assert ctypes.CDLL(None).ncclGetVersion(ctypes.byref(v)) == 0
    assert v.value == 22807, f"ncclGetVersion says {v.value}: not oxccl's library"
    print(f"rank {rank}: torch {torch.__version__}, NCCL version as torch sees it: "
          f"{torch.cuda.nccl.version()}", flush=True)
    count = 1 << 20  # exact in bfloat16 below: every value is a small integer
    for dtype in (torch.float32, torch.bfloat16):
        t = lambda v: torch.full((count,), float(v), dtype=dtype, device=dev)
        tag = str(dtype).replace("torch.", "")
        x = t(rank + 1)
        dist.all_reduce(x)
        check(f"all_reduce sum {tag}", x, t(n * (n + 1) // 2))
        x = t(2 * rank)
        dist.all_reduce(x, op=dist.ReduceOp.AVG)
        check(f"all_reduce avg {tag}", x, t(n - 1))
        x = t(rank)
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
        check(f"all_reduce max {tag}", x, t(n - 1))
        out = torch.empty(n * count, dtype=dtype, device=dev)
        dist.all_gather_into_tensor(out, t(rank + 10))
        check(f"all_gather {tag}", out,
              torch.cat([t(r + 10) for r in range(n)]))
        out = torch.empty(count, dtype=dtype, device=dev)
        dist.reduce_scatter_tensor(out, torch.cat([t(r + rank) for r in range(n)]))
        check(f"reduce_scatter {tag}", out, t(n * rank + n * (n - 1) // 2))
        x = t(rank + 5)
        dist.broadcast(x, src=n - 1)
        check(f"broadcast {tag}", x, t(n - 1 + 5))
        x = t(rank + 1)
        dist.reduce(x, dst=0)
        check(f"reduce {tag}", x, t(n * (n + 1) // 2) if rank == 0 else t(rank + 1))
        src = torch.cat([t(100 * rank + j) for j in range(n)])
        out = torch.empty_like(src)
        dist.all_to_all_single(out, src)
        check(f"all_to_all {tag}", out, torch.cat([t(100 * j + rank) for j in range(n)]))
        if n > 1:
            x, y = t(rank + 7), t(-1)
            ops = [dist.P2POp(dist.isend, x, (rank + 1) % n),
                   dist.P2POp(dist.irecv, y, (rank - 1) % n)]
            for w in dist.batch_isend_irecv(ops):
                w.wait()
            check(f"send/recv ring {tag}", y, t((rank - 1) % n + 7))
    torch.cuda.synchronize()
    dist.destroy_process_group()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rank"]:
        rank_main()
    elif len(sys.argv) in (2, 3):
        sys.exit(launch(sys.argv[1], int(sys.argv[2]) if len(sys.argv) == 3 else 2))
    else:
        sys.exit(__doc__)
