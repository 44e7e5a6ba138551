#!/usr/bin/env python3
"""Benchmark `ovlinspect check` against the reference tools doing the raw part of its work.

As root, in a private mount namespace: N real overlay mounts (each a Docker-like 3-layer stack)
with their upper dirs spread over a few loop ext4 filesystems; then the median of several runs of
  ovlinspect check --format prometheus   (every check)
  reference: findmnt -t overlay -J  +  df --output=... -i on the backing filesystems
side by side, and the ratio. Prints numbers, asserts nothing. Usage: bench_check.py [N] [RUNS]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - t


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    if os.geteuid() != 0:
        sys.exit("bench_check: needs root (mounts)")
    from ovl import enter_private_mount_namespace, mount_legacy

    enter_private_mount_namespace()
    tmp = tempfile.mkdtemp(prefix="ovl-bench-check-")
    fss = []
    try:
        for i in range(4):
            img, mp = os.path.join(tmp, f"fs{i}.img"), os.path.join(tmp, f"fs{i}")
            with open(img, "wb") as fh:
                fh.truncate(64 << 20)
            subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", img], check=True)
            os.mkdir(mp)
            subprocess.run(["mount", "-o", "loop", img, mp], check=True)
            fss.append(mp)
        base = os.path.join(tmp, "layers")
        lowers = [os.path.join(base, f"l{j}") for j in range(3)]
        for d in lowers:
            os.makedirs(d)
        for i in range(n):
            home = os.path.join(fss[i % len(fss)], f"c{i}")
            up, work, merged = (os.path.join(home, x) for x in ("diff", "work", "merged"))
            for d in (up, work, merged):
                os.makedirs(d)
            mount_legacy(merged, lowers, up, work)
        env = dict(os.environ, PYTHONPATH=REPO)
        ovl = [sys.executable, "-m", "ovlinspect", "check", "--format", "prometheus", "--lock", os.path.join(tmp, "lock"),
               "--data-root", os.path.join(tmp, "none")]
        ref_cmds = [["findmnt", "-t", "overlay", "-J"], ["df", "--output=target,size,avail,itotal,iavail", *fss]]
        os.environ.update(env)
        ours, ref = [], []
        for _ in range(runs):
            ours.append(timed(ovl))
            ref.append(sum(timed(c) for c in ref_cmds))
        mo, mr = statistics.median(ours), statistics.median(ref)
        print(f"{n} overlay mounts on {len(fss)} filesystems, median of {runs} runs")
        print(f"  ovlinspect check (all checks, incl. interpreter start-up): {mo * 1000:8.1f} ms")
        print(f"  findmnt -t overlay -J + df (raw data only):                 {mr * 1000:8.1f} ms")
        print(f"  ratio ovlinspect/reference: {mo / mr:.1f}x")
    finally:
        subprocess.run(["umount", "-R", "-l", tmp], capture_output=True)
        for mp in fss:
            subprocess.run(["umount", "-l", mp], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
