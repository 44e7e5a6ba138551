#!/usr/bin/env python3
"""Benchmark: `why-missing` reads O(path depth x layers) entries, so its time must not grow with the
size of the layers. Prints medians and ratios (no pass/fail):

  - 2 layers of 10,000 files vs 2 layers of 1,000,000 files (in one directory), same paths asked;
  - 2 layers vs 100 layers (time should grow ~linearly with the layers, never with their size);
  - side by side, the kernel's own lookup (lstat through a real overlay mount of the same stack,
    root only) as the reference.

Usage: scripts/bench_why_missing.py [--big N] [--runs R] [--keep DIR]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from ovlinspect.analysis.lookup import LookupContext, explain_path  # noqa: E402
from ovlinspect.layers import LayerReader  # noqa: E402
from ovlinspect.model import EffectiveOption, Layer, LayerRole, LayerStack  # noqa: E402

PATHS = ["/big/f0000042", "/big/gone", "/sub/a/b/c/deep", "/big/nothere"]


def fill(layer: str, n: int, whiteout: bool) -> None:
    big = os.path.join(layer, "big")
    os.makedirs(big, exist_ok=True)
    fd = os.open(big, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(n):
            os.close(os.open(f"f{i:07d}", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
        if whiteout:
            os.mknod("gone", 0o020600, os.makedev(0, 0), dir_fd=fd)
        else:
            os.close(os.open("gone", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    os.makedirs(os.path.join(layer, "sub", "a", "b", "c"), exist_ok=True)
    with open(os.path.join(layer, "sub", "a", "b", "c", "deep"), "w") as f:
        f.write("x")


def stack_of(dirs: list[str]) -> LayerStack:
    layers = tuple(Layer(i, LayerRole.LOWER, d, d, True, True) for i, d in enumerate(dirs))
    eff = {k: EffectiveOption(v, "bench") for k, v in {"redirect_dir": "follow", "metacopy": "off"}.items()}
    return LayerStack(layers, eff, "bench")


def time_ours(stack: LayerStack, runs: int) -> dict[str, float]:
    out = {}
    for p in PATHS:
        ts = []
        for _ in range(runs):
            with LayerReader([la.path for la in stack.layers]) as rd:  # a fresh reader: no warm fd cache
                t = time.perf_counter()
                explain_path(stack, rd, p, ctx=LookupContext(stack, rd))
                ts.append(time.perf_counter() - t)
        out[p] = statistics.median(ts)
    return out


def time_kernel(dirs: list[str], runs: int) -> dict[str, float] | None:
    if os.geteuid() != 0 or len(dirs) > 500:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x00020000) != 0:
        return None
    libc.mount(b"none", b"/", None, ctypes.c_ulong(0x4000 | (1 << 18)), None)
    mnt = tempfile.mkdtemp(prefix="bench-mnt-")
    opts = ("lowerdir=" + ":".join(dirs)).encode()
    if libc.mount(b"overlay", mnt.encode(), b"overlay", 0, opts) != 0:
        return None
    out = {}
    try:
        for p in PATHS:
            ts = []
            for _ in range(runs):
                t = time.perf_counter()
                try:
                    os.lstat(mnt + p)
                except OSError:
                    pass
                ts.append(time.perf_counter() - t)
            out[p] = statistics.median(ts)
    finally:
        libc.umount2(mnt.encode(), 2)
        os.rmdir(mnt)
    return out


def build(base: str, name: str, nlayers: int, files: int) -> list[str]:
    dirs = []
    for i in range(nlayers):
        d = os.path.join(base, name, f"L{i}")
        os.makedirs(d)
        fill(d, files if i >= nlayers - 2 else 10, whiteout=(i == 0))
        dirs.append(d)
    return dirs


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big", type=int, default=1_000_000, help="files in the big layers' directory")
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--keep", help="build in this dir and keep it")
    a = ap.parse_args()
    base = a.keep or tempfile.mkdtemp(prefix="bench-why-")
    try:
        t = time.time()
        cases = {
            f"2 layers x {a.small:,} files": build(base, "small", 2, a.small),
            f"2 layers x {a.big:,} files": build(base, "big", 2, a.big),
            "100 layers (2 x 10,000 files + 98 tiny)": build(base, "many", 100, a.small),
        }
        print(f"# built the layers in {time.time() - t:.1f}s", flush=True)
        res = {name: time_ours(stack_of(dirs), a.runs) for name, dirs in cases.items()}
        ref_name = next(iter(cases))
        kern = {name: time_kernel(dirs, a.runs) for name, dirs in cases.items()} if os.geteuid() == 0 else {}
        print(f"{'case':<42} {'path':<18} {'why-missing ms':>14} {'vs 10k':>8} {'kernel lstat us':>16}")
        for name in cases:
            for p in PATHS:
                ours = res[name][p]
                k = kern.get(name)
                kr = f"{k[p] * 1e6:.1f}" if k else "-"
                print(f"{name:<42} {p:<18} {ours * 1e3:>14.2f} {ours / res[ref_name][p]:>8.2f} {kr:>16}")
        print("# 'vs 10k': ratio to the 2-layer, 10,000-file case; ~1 means independent of layer size.")
        print("# /big/nothere is not found: it also lists the directory for near-name suggestions, capped at")
        print("# 20,000 entries per layer, so it grows until that cap and not beyond.")
    finally:
        if not a.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
