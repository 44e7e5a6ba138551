#!/usr/bin/env python3
"""Benchmark `ovlinspect ls --json` against `findmnt -J -t overlay` on N real overlay mounts.

Run as root: re-executes itself in a private mount namespace, makes N overlay mounts of L lowers
each under a temp dir, then times both tools side by side (median of R runs) and prints the ratio
and the fixed start-up cost (`ovlinspect --version`). Two scenarios: every mount shares one chain
of lowers (N containers of one image: the common case, where ovlinspect shares the work between
mounts) and every mount has its own lowers (N*L distinct dirs: the worst case).
Usage: bench_ls.py [N=1000] [L=20] [R=7]
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _median_time(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    layers = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 7
    if os.geteuid() != 0:
        sys.exit("bench_ls: needs root (real overlay mounts)")
    if not os.environ.get("BENCH_LS_IN_NS"):
        os.environ["BENCH_LS_IN_NS"] = "1"
        os.execvp("unshare", ["unshare", "-m", "--propagation", "private", sys.executable, *sys.argv])
    exe = shutil.which("ovlinspect") or os.path.join(os.path.dirname(sys.executable), "ovlinspect")
    libc = ctypes.CDLL(None, use_errno=True)
    startup = _median_time([exe, "--version"], runs)
    print(f"ovlinspect --version  : {startup * 1000:8.1f} ms   (fixed start-up cost; python -c pass: "
          f"{_median_time([sys.executable, '-c', 'pass'], runs) * 1000:.1f} ms)")
    for scenario in ("shared", "distinct"):
        base = tempfile.mkdtemp(prefix=f"bench-ls-{scenario}-")
        os.chdir(base)
        t0 = time.perf_counter()
        for i in range(n):
            for d in ("u", "w", "m"):
                os.mkdir(f"{d}{i}")
            if scenario == "shared" and i == 0 or scenario == "distinct":
                tag = "" if scenario == "shared" else f"-{i}"
                for j in range(layers):
                    os.mkdir(f"L{j:02d}{tag}")
                lower = ":".join(f"{base}/L{j:02d}{tag}" for j in range(layers)).encode()
            opts = b"lowerdir=" + lower + f",upperdir={base}/u{i},workdir={base}/w{i}".encode()
            if libc.mount(b"overlay", f"{base}/m{i}".encode(), b"overlay", 0, opts) != 0:
                sys.exit(f"mount {i} failed: {os.strerror(ctypes.get_errno())}")
        made = time.perf_counter() - t0
        out = subprocess.run([exe, "ls", "--json"], capture_output=True, check=True).stdout
        count = sum(1 for m in json.loads(out)["mounts"] if m["mountpoint"].startswith(base))
        assert count >= n, (count, n)
        findmnt = _median_time(["findmnt", "-J", "-t", "overlay"], runs)
        ours = _median_time([exe, "ls", "--json"], runs)
        ours_long = _median_time([exe, "ls", "-l", "--json"], runs)
        ours_text = _median_time([exe, "ls"], runs)
        what = "all share one 20-lower chain (containers of one image)" if scenario == "shared" else "each has its own lowers"
        print(f"\n{scenario}: {count} overlays x {layers} lowers, {what} (made in {made:.1f}s); median of {runs} runs")
        print(f"findmnt -J -t overlay : {findmnt * 1000:8.1f} ms")
        print(f"ovlinspect ls --json  : {ours * 1000:8.1f} ms   ratio {ours / findmnt:5.2f}x findmnt"
              f"   (minus start-up: {(ours - startup) / findmnt:5.2f}x)")
        print(f"ovlinspect ls -l --json: {ours_long * 1000:7.1f} ms   ratio {ours_long / findmnt:5.2f}x findmnt")
        print(f"ovlinspect ls (table) : {ours_text * 1000:8.1f} ms   ratio {ours_text / findmnt:5.2f}x findmnt")
        for i in range(n):
            libc.umount2(f"{base}/m{i}".encode(), 2)


if __name__ == "__main__":
    main()
