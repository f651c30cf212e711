#!/usr/bin/env python3
"""Make PyPI's Linux torch wheel import without its ~2.7 GB of NVIDIA wheels.

PyPI serves one Linux x86_64 torch wheel, built for CUDA: `pip install torch` pulls about
3.2 GB (torch 0.54 GB + nvidia-cudnn, -cublas, -nccl, triton, ...). The CPU-only wheels live
on PyTorch's own index, which this project's machines cannot reach. gloo needs none of CUDA,
but torch's shared libraries list the CUDA libraries as DT_NEEDED, so `import torch` fails
without them.

This script writes tiny stand-ins for the missing CUDA libraries: for every soname that a
torch library needs and that is not on the machine, a shared library with that soname, the
symbol versions torch's libraries ask of it, and every symbol they import from it (plus the
unversioned symbols nothing else defines). Each stand-in function returns 100
(cudaErrorNoDevice); the ones whose name says they return a string return a fixed message.
They go where torch's RPATH looks ($ORIGIN/../../nvidia/cu13/lib), so nothing has to be set in
the environment. torch then imports, reports `torch.cuda.is_available() == False`, and runs
everything on the CPU, gloo included. Nothing of CUDA is ever called on the CPU paths; a
stray call would get the "no device" error, never a wrong result.

Usage: torch_cuda_stubs.py SITE_PACKAGES   (needs readelf and cc: apt-get install binutils gcc)
"""
import os
import re
import subprocess
import sys
import tempfile

SYM_RE = re.compile(r"^\s*\d+:\s+[0-9a-f]+\s+\d+\s+(\w+)\s+(\w+)\s+\w+\s+(\w+)\s+(\S+)")
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
STRING_FN = re.compile(r"(ErrorString|ErrorName|GetString|GetErrorString|LastErrorString)$")


def readelf(args, path):
    return subprocess.run(["readelf", "--wide", *args, path], check=True,
                          capture_output=True, text=True).stdout


def needed(path):
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", readelf(["-d"], path))


def dynsyms(path):
    """(defined names, [(name, version or None, type)] undefined)"""
    defined, undef = set(), []
    for line in readelf(["--dyn-syms"], path).splitlines():
        m = SYM_RE.match(line)
        if not m:
            continue
        typ, bind, ndx, name = m.groups()
        if bind not in ("GLOBAL", "WEAK"):
            continue
        if "@" in name:
            base, _, ver = name.partition("@")
            ver = ver.lstrip("@").split(" ")[0]
        else:
            base, ver = name, None
        if ndx == "UND":
            if bind == "GLOBAL":
                undef.append((base, ver, typ))
        else:
            defined.add(base)
    return defined, undef


def version_needs(path):
    """{version name: file} from .gnu.version_r"""
    out, cur = {}, None
    for line in readelf(["-V"], path).splitlines():
        m = re.search(r"File: (\S+)", line)
        if m:
            cur = m.group(1)
            continue
        m = re.search(r"Name: (\S+)\s+Flags", line)
        if m and cur:
            out[m.group(1)] = cur
    return out


def system_libs():
    out = {}
    for line in subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout.splitlines():
        m = re.match(r"\s*(\S+) \(([^)]*)\) => (\S+)", line)
        if m and "x86-64" in m.group(2):
            out.setdefault(m.group(1), m.group(3))
    return out


def main():
    site = os.path.abspath(sys.argv[1])
    torch_dir = os.path.join(site, "torch")
    out_dir = os.path.join(site, "nvidia", "cu13", "lib")
    sysl = system_libs()
    # torch's own libraries plus every other extension module inside the package
    libs = []
    for root, _, files in os.walk(torch_dir):
        for f in files:
            if ".so" in f and not f.endswith(".py"):
                libs.append(os.path.join(root, f))
    by_name = {os.path.basename(p): p for p in libs}
    # RPATH directories that ship real libraries (a partial real install is respected)
    nvidia_real = {}
    nvidia_root = os.path.join(site, "nvidia")
    for root, _, files in os.walk(nvidia_root):
        for f in files:
            full = os.path.join(root, f)
            if ".so" in f and not os.path.exists(full + ".oxccl-stub"):
                nvidia_real[f] = full

    def resolve(soname):
        return by_name.get(soname) or nvidia_real.get(soname) or sysl.get(soname)

    missing = {}  # soname -> {"versions": set, "syms": {name: type}}
    defined_everywhere = set()
    seen_defs = set()
    info = {}
    for lib in libs:
        try:
            need = needed(lib)
        except subprocess.CalledProcessError:
            continue
        d, u = dynsyms(lib)
        info[lib] = (need, u, version_needs(lib))
        defined_everywhere |= d
        for n in need:
            path = resolve(n)
            if path is None:
                missing.setdefault(n, {"versions": set(), "syms": {}})
            elif path not in seen_defs and path not in by_name.values():
                seen_defs.add(path)
                defined_everywhere |= dynsyms(path)[0]
    # the interpreter's own symbols (Py_*, from the executable or libpython)
    for exe in {os.path.realpath(sys.executable)} | {p for n, p in sysl.items() if n.startswith("libpython")}:
        try:
            defined_everywhere |= dynsyms(exe)[0]
        except subprocess.CalledProcessError:
            pass
    if not missing:
        print("torch_cuda_stubs: nothing missing, no stubs written")
        return
    unversioned = {}
    for lib, (need, undef, vneeds) in info.items():
        for name, ver, typ in undef:
            if ver is not None:
                f = vneeds.get(ver)
                if f in missing:
                    missing[f]["versions"].add(ver)
                    missing[f]["syms"].setdefault(name, (ver, typ))
            elif name not in defined_everywhere:
                unversioned.setdefault(name, typ)
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for soname, m in sorted(missing.items()):
            syms = dict(m["syms"])
            versions = sorted(m["versions"])
            for name, typ in unversioned.items():
                syms.setdefault(name, (versions[0] if versions else None, typ))
            c = ['/* oxccl bench/peers: stand-in for %s, made by torch_cuda_stubs.py */' % soname,
                 'static const char oxstub_msg[] = "CUDA is not installed (oxccl stub library)";']
            for name, (ver, typ) in sorted(syms.items()):
                if not IDENT.match(name):
                    continue
                if typ == "OBJECT":
                    c.append("char %s[256];" % name)
                elif STRING_FN.search(name):
                    c.append("const char *%s(void) { return oxstub_msg; }" % name)
                else:
                    c.append("long %s(void) { return 100; }" % name)
            src = os.path.join(tmp, soname + ".c")
            with open(src, "w") as fh:
                fh.write("\n".join(c) + "\n")
            cmd = ["cc", "-shared", "-fPIC", "-O0", "-w", "-o", os.path.join(out_dir, soname), src,
                   "-Wl,-soname," + soname]
            if versions:
                vmap = os.path.join(tmp, soname + ".map")
                with open(vmap, "w") as fh:
                    for v in versions:
                        names = [n for n, (vv, _) in syms.items() if vv == v and IDENT.match(n)]
                        fh.write("%s { global: %s };\n" % (v, " ".join(n + ";" for n in names)))
                cmd.append("-Wl,--version-script=" + vmap)
            subprocess.run(cmd, check=True)
            open(os.path.join(out_dir, soname + ".oxccl-stub"), "w").close()
            print("torch_cuda_stubs: %-24s %5d symbols, versions %s"
                  % (soname, len(syms), ",".join(versions) or "-"))


if __name__ == "__main__":
    main()
