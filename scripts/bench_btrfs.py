#!/usr/bin/env python3
"""Benchmark `ovlinspect btrfs` against `btrfs filesystem usage -b` on a real loop-device btrfs.

Run as root (it makes a 1 GiB loop btrfs in a private mount namespace, with Docker-like layer
subvolumes). Prints medians of several runs and the ratio, side by side; asserts nothing.
Usage: scripts/bench_btrfs.py [RUNS]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))


def median_runtime(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    if os.environ.get("_BENCH_IN_NS") != "1":
        # a private mount namespace so the loop mount never shows on the host
        env = {**os.environ, "_BENCH_IN_NS": "1"}
        os.execvpe("unshare", ["unshare", "-m", "--propagation", "private", sys.executable, *sys.argv], env)
    from btrfsfs import LoopBtrfs, have_btrfs, make_layers

    reason = have_btrfs()
    if reason:
        sys.exit(f"cannot benchmark: {reason}")
    fs = LoopBtrfs.create([1024])
    try:
        root = os.path.join(fs.mnt, "docker")
        make_layers(root, 30, files_per_layer=50)
        fs.sync()
        ours = median_runtime([sys.executable, "-m", "ovlinspect", "btrfs", "--json", root], runs)
        theirs = median_runtime(["btrfs", "filesystem", "usage", "-b", fs.mnt], runs)
        from ovlinspect.btrfs_sysfs import inspect_btrfs
        from ovlinspect.hostfs import HostRoots

        lib = []
        for _ in range(runs):
            t0 = time.perf_counter()
            inspect_btrfs(HostRoots(), [root])
            lib.append(time.perf_counter() - t0)
        print(f"runs={runs} (medians), 1 GiB btrfs, 30 layer subvolumes")
        print(f"ovlinspect btrfs --json (process)   {ours * 1000:8.1f} ms")
        print(f"btrfs filesystem usage -b (process) {theirs * 1000:8.1f} ms   ratio {ours / theirs:5.2f}x")
        print(f"inspect_btrfs() (library call)      {statistics.median(lib) * 1000:8.1f} ms   ratio {statistics.median(lib) / theirs:5.2f}x")
    finally:
        fs.close()


if __name__ == "__main__":
    main()
