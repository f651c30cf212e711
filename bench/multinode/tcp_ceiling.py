#!/usr/bin/env python3
"""tcp_ceiling: one TCP stream's throughput between two hosts (the plain-TCP ceiling).

    tcp_ceiling.py recv PORT [--timeout S]                       # on the receiving node
    tcp_ceiling.py send HOST PORT [--bytes 2G] [--chunk 4M] [-J out.json]   # on the sender

The receiver accepts one connection, reads until the sender closes its side, then answers
with the byte count it got (8 bytes), so the sender's clock covers the whole transfer up to
the last byte being received. The sender retries the connection until the receiver listens
(within --timeout), sends --bytes in --chunk writes from one buffer (no copying in Python),
and prints, and with -J writes, {bytes, seconds, GB_per_s} (GB = 1e9 B). Standard library only.
"""
import argparse
import json
import socket
import sys
import time


def parse_size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    s = s.strip()
    if s and s[-1].upper() in mult:
        return int(float(s[:-1]) * mult[s[-1].upper()])
    return int(s)


def recv(args):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as ls:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("0.0.0.0", args.port))
        ls.listen(1)
        ls.settimeout(args.timeout)
        try:
            conn, peer = ls.accept()
        except socket.timeout:
            print(f"tcp_ceiling recv: no sender connected within {args.timeout} s", file=sys.stderr)
            return 1
    with conn:
        conn.settimeout(args.timeout)
        buf = bytearray(4 << 20)
        view = memoryview(buf)
        got = 0
        while True:
            n = conn.recv_into(view)
            if n == 0:
                break
            got += n
        conn.sendall(got.to_bytes(8, "little"))
    print(f"tcp_ceiling recv: {got} B from {peer[0]}", file=sys.stderr)
    return 0


def send(args):
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            s = socket.create_connection((args.host, args.port), timeout=args.timeout)
            break
        except OSError as e:
            if time.monotonic() > deadline:
                print(f"tcp_ceiling send: cannot connect to {args.host}:{args.port}: {e}", file=sys.stderr)
                return 1
            time.sleep(0.05)
    chunk = memoryview(bytearray(args.chunk))
    with s:
        left = args.bytes
        t0 = time.perf_counter()
        while left > 0:
            n = min(left, len(chunk))
            s.sendall(chunk[:n])
            left -= n
        s.shutdown(socket.SHUT_WR)
        ack = b""
        while len(ack) < 8:
            part = s.recv(8 - len(ack))
            if not part:
                break
            ack += part
        dt = time.perf_counter() - t0
    got = int.from_bytes(ack, "little") if len(ack) == 8 else -1
    if got != args.bytes:
        print(f"tcp_ceiling send: the receiver got {got} B of {args.bytes}", file=sys.stderr)
        return 1
    doc = {"library": "plain TCP (one Python socket stream)", "bytes": args.bytes,
           "seconds": round(dt, 6), "GB_per_s": round(args.bytes / dt / 1e9, 4)}
    print(f"tcp_ceiling: {args.bytes} B in {dt:.3f} s = {doc['GB_per_s']} GB/s, one stream")
    if args.J:
        with open(args.J, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("recv")
    r.add_argument("port", type=int)
    r.add_argument("--timeout", type=float, default=60)
    s = sub.add_parser("send")
    s.add_argument("host")
    s.add_argument("port", type=int)
    s.add_argument("--bytes", type=parse_size, default=2 << 30)
    s.add_argument("--chunk", type=parse_size, default=4 << 20)
    s.add_argument("--timeout", type=float, default=60)
    s.add_argument("-J", help="write the result as JSON")
    args = p.parse_args()
    if getattr(args, "bytes", 1) <= 0 or getattr(args, "chunk", 1) <= 0:
        p.error("--bytes and --chunk must be positive")
    return recv(args) if args.mode == "recv" else send(args)


if __name__ == "__main__":
    sys.exit(main())
