#!/usr/bin/env python3
"""Benchmark `ovlinspect du --per-layer --all` against GNU `du -s` over the same layer dirs.

Builds a synthetic container host itself (as root, inside a private mount namespace, on a
loop-mounted ext4 image so building is fast and `drop_caches` gives a real cold cache):
images of stacked layers plus containers (overlay mounts with upper dirs), with files of mixed
sizes (small, medium, large and partly sparse), deep directories, symlinks, hard links and
whiteouts. Then runs both tools side by side, alternating, several times — warm cache, and cold
cache (`echo 3 > /proc/sys/vm/drop_caches` before every run) — and prints the median ratio, the
peak memory of ovlinspect with its worker processes, and the scaling over 10k / 100k / 1M entries.
Not a test: nothing is asserted.

    sudo .venv/bin/python scripts/bench_du.py [--entries 1000000] [--runs 5] [--cold-runs 3] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OVL = [os.path.join(REPO, ".venv", "bin", "ovlinspect")]
if not os.path.exists(OVL[0]):
    OVL = [sys.executable, "-m", "ovlinspect"]


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


# ------------------------------------------------------------------ synthetic host


def build_layer(root: str, n: int, rng: random.Random, whiteouts: bool) -> int:
    """Fill `root` with about `n` entries; returns how many were made."""
    os.makedirs(root, exist_ok=True)
    made = 0
    dirs = [root]
    files: list[str] = []
    small = b"s" * 4096
    while made < n:
        r = rng.random()
        parent = dirs[rng.randrange(len(dirs))] if rng.random() < 0.7 else dirs[-1]
        name = os.path.join(parent, f"e{made}")
        if r < 0.06 and parent.count("/") - root.count("/") < 24:  # deep directory chains
            os.mkdir(name)
            dirs.append(name)
        elif r < 0.16:
            os.symlink(f"../target/{made}" if rng.random() < 0.5 else "/etc/passwd", name)
        elif r < 0.21 and files:
            try:
                os.link(files[rng.randrange(len(files))], name)
            except OSError:  # EMLINK
                continue
        elif r < 0.24 and whiteouts:
            os.mknod(name, 0o020000, os.makedev(0, 0))  # an overlay whiteout: char 0/0
        else:
            s = rng.random()
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                if s < 0.75:
                    os.write(fd, small[: rng.randrange(0, 2048)])
                elif s < 0.97:
                    os.write(fd, small[: rng.randrange(2048, 4096)] * 3)
                else:  # large, partly sparse: 4 KiB of data, then a hole
                    os.write(fd, small)
                    os.ftruncate(fd, rng.randrange(1 << 20, 64 << 20))
            finally:
                os.close(fd)
            files.append(name)
        made += 1
    return made + 1


def build_host(base: str, entries: int, images: int = 4, layers_per_image: int = 9, containers_per_image: int = 2, seed: int = 1) -> dict:
    """Images of stacked lower layers and containers with upper dirs, mounted as overlays."""
    rng = random.Random(seed)
    lay = os.path.join(base, "layers")
    os.makedirs(lay, exist_ok=True)
    n_layers = images * layers_per_image + images * containers_per_image
    weights = []
    for _i in range(images):
        weights += [6.0] + [1.0] * (layers_per_image - 1)
    weights += [0.3] * (images * containers_per_image)
    scale = entries / sum(weights)
    paths: list[str] = []
    made = 0
    for k in range(n_layers):
        p = os.path.join(lay, f"L{k:03d}")
        made += build_layer(p, max(1, int(weights[k] * scale)), rng, whiteouts=(k % layers_per_image) != 0)
        paths.append(p)
    mounts = []
    for i in range(images):
        lowers = paths[i * layers_per_image : (i + 1) * layers_per_image][::-1]  # top first
        for c in range(containers_per_image):
            k = images * layers_per_image + i * containers_per_image + c
            work = os.path.join(base, "work", f"W{k:03d}")
            merged = os.path.join(base, "merged", f"M{k:03d}")
            os.makedirs(work)
            os.makedirs(merged)
            opts = f"lowerdir={':'.join(lowers)},upperdir={paths[k]},workdir={work}"
            sh("mount", "-t", "overlay", "overlay", "-o", opts, merged)
            mounts.append(merged)
    return {"layers": paths, "mounts": mounts, "entries": made}


# ------------------------------------------------------------------ measuring


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


CPU: dict[str, list[float]] = {"du": [], "ovl": []}  # user+sys seconds of each warm run


def run_du(paths: list[str], cpu: bool = False) -> float:
    t = time.perf_counter()
    p = subprocess.Popen(["du", "-s", *paths], stdout=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    dt = time.perf_counter() - t
    if cpu:
        CPU["du"].append(ru.ru_utime + ru.ru_stime)
    return dt


def run_ovl(sample_memory: bool = False) -> tuple[float, dict]:
    """One `ovlinspect du --per-layer --all --json` run: wall time and peak memory of its tree."""
    import psutil

    t = time.perf_counter()
    p = subprocess.Popen([*OVL, "du", "--per-layer", "--all", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = {"rss_sum": 0, "pss_sum": 0}
    stop = threading.Event()

    def sampler() -> None:
        try:
            proc = psutil.Process(p.pid)
        except psutil.Error:
            return
        while not stop.is_set():
            try:
                tree = [proc, *proc.children(recursive=True)]
                rss = pss = 0
                for q in tree:
                    try:
                        mi = q.memory_full_info()
                        rss += mi.rss
                        pss += getattr(mi, "pss", mi.rss)
                    except psutil.Error:
                        pass
                peak["rss_sum"] = max(peak["rss_sum"], rss)
                peak["pss_sum"] = max(peak["pss_sum"], pss)
            except psutil.Error:
                pass
            stop.wait(0.01)

    th = threading.Thread(target=sampler, daemon=True) if sample_memory else None
    if th:
        th.start()
    assert p.stdout is not None and p.stderr is not None
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)  # rusage of ovlinspect and its (waited-for) workers
    p.returncode = os.waitstatus_to_exitcode(status)
    dt = time.perf_counter() - t
    stop.set()
    if th:
        th.join()
    if p.returncode not in (0, 3):
        raise SystemExit(f"ovlinspect failed ({p.returncode}): {err.decode()[:500]}")
    peak["doc"] = json.loads(out)
    peak["max_rss_single"] = ru.ru_maxrss * 1024
    peak["cpu"] = ru.ru_utime + ru.ru_stime  # ovlinspect and its workers
    return dt, peak


def measure(host: dict, runs: int, cold_runs: int) -> dict:
    # check that ovlinspect sees exactly our layers, and agrees with du to the byte
    _, peak = run_ovl(sample_memory=True)
    doc = peak["doc"]
    seen = sorted(la["path"] for la in doc["layers"])
    ours = sorted(host["layers"])
    extra = sorted(set(seen) - set(ours))
    if extra:
        print(f"  note: ovlinspect also saw {len(extra)} other layer dirs on this host (e.g. {extra[0]})")
    out = subprocess.run(["du", "-s", "-B1", "-c", *ours], capture_output=True, text=True, check=True).stdout
    du_total = int(out.splitlines()[-1].split()[0])
    ovl_total = sum(la["allocated_bytes"] for la in doc["layers"] if la["path"] in set(ours))
    res = {"entries": sum(la["files"] + la["dirs"] + la["symlinks"] + la["whiteouts"] + la["other"] for la in doc["layers"]),
           "exact": du_total == ovl_total, "du_total": du_total, "ovl_total": ovl_total}
    # memory: sampled on separate runs (the sampler's own work must not count in the timings)
    pss, rss, single = [peak["pss_sum"]], [peak["rss_sum"]], [peak["max_rss_single"]]
    for _ in range(2):
        _, pk = run_ovl(sample_memory=True)
        pss.append(pk["pss_sum"])
        rss.append(pk["rss_sum"])
        single.append(pk["max_rss_single"])
    warm_du, warm_ovl = [], []
    CPU["du"].clear()
    CPU["ovl"].clear()
    run_du(ours)
    for _ in range(runs):
        warm_du.append(run_du(ours, cpu=True))
        dt, pk = run_ovl()
        warm_ovl.append(dt)
        CPU["ovl"].append(pk["cpu"])
        single.append(pk["max_rss_single"])
    res.update(du_warm=statistics.median(warm_du), ovl_warm=statistics.median(warm_ovl),
               ratio_warm=statistics.median(o / d for o, d in zip(warm_ovl, warm_du, strict=True)),
               cpu_du=statistics.median(CPU["du"]), cpu_ovl=statistics.median(CPU["ovl"]),
               peak_pss_sum=max(pss), peak_rss_sum=max(rss))
    if cold_runs:
        cold_du, cold_ovl = [], []
        for _ in range(cold_runs):
            drop_caches()
            cold_du.append(run_du(ours))
            drop_caches()
            cold_ovl.append(run_ovl()[0])
        res.update(du_cold=statistics.median(cold_du), ovl_cold=statistics.median(cold_ovl),
                   ratio_cold=statistics.median(o / d for o, d in zip(cold_ovl, cold_du, strict=True)))
    res["max_rss_single"] = max(single)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--scaling", default="10000,100000", help="smaller hosts for the scaling line (warm only)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cold-runs", type=int, default=3)
    ap.add_argument("--dir", default="/var/tmp", help="where the ext4 image file goes")
    ap.add_argument("--image-gib", type=int, default=24)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_du.py needs root (loop mount, overlay mounts, drop_caches)")
    if os.environ.get("BENCH_DU_PRIVATE_NS") != "1":  # (/proc/1/ns/mnt may be unreadable here)
        os.environ["BENCH_DU_PRIVATE_NS"] = "1"
        os.execvp("unshare", ["unshare", "-m", "--propagation", "private", sys.executable, *sys.argv])
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still unmount and clean up
    # only our synthetic host: pin the runtimes' data roots to an empty dir, so container roots
    # of whatever else runs on this machine are not measured by one side only
    none_root = tempfile.mkdtemp(prefix="bench-du-noroot-", dir=args.dir)
    for var in ("OVLINSPECT_DOCKER_ROOT", "OVLINSPECT_PODMAN_ROOT", "OVLINSPECT_CONTAINERD_ROOT"):
        os.environ[var] = none_root
    sizes = [int(x) for x in args.scaling.split(",") if x] + [args.entries]
    print(f"ovlinspect du --per-layer --all vs GNU du -s over the same layer dirs ({os.cpu_count()} CPUs)")
    print(f"{'entries':>9} {'layers':>6} {'du warm':>8} {'ovl warm':>8} {'ratio':>6} {'du cold':>8} {'ovl cold':>8} {'ratio':>6} "
          f"{'PSS peak':>9} {'RSS sum':>8} {'exact':>5}")
    for n in sizes:
        work = tempfile.mkdtemp(prefix="bench-du-", dir=args.dir)
        img, mnt = os.path.join(work, "fs.img"), os.path.join(work, "fs")
        os.mkdir(mnt)
        try:
            with open(img, "wb") as f:
                f.truncate(args.image_gib << 30)
            sh("mkfs.ext4", "-q", "-F", "-N", str(int(n * 1.3) + 100000), "-E", "lazy_itable_init=1,nodiscard", img)
            sh("mount", "-o", "loop", img, mnt)
            try:
                t = time.perf_counter()
                host = build_host(mnt, n)
                built = time.perf_counter() - t
                big = n == args.entries
                r = measure(host, args.runs, args.cold_runs if big else 0)
            finally:
                # lazy unmounts: the overlays, then the loop fs (never rmtree into a mounted fs)
                for m in sorted(glob.glob(os.path.join(mnt, "merged", "*"))):
                    subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)
                subprocess.run(["umount", "-l", mnt], stderr=subprocess.DEVNULL)
        finally:
            if not os.path.ismount(mnt):
                shutil.rmtree(work, ignore_errors=True)
        cold = (f"{r['du_cold']:8.2f} {r['ovl_cold']:8.2f} {r['ratio_cold']:6.2f}" if "ratio_cold" in r else f"{'-':>8} {'-':>8} {'-':>6}")
        print(f"{r['entries']:>9,} {len(host['layers']):>6} {r['du_warm']:8.2f} {r['ovl_warm']:8.2f} {r['ratio_warm']:6.2f} {cold} "
              f"{r['peak_pss_sum'] / 2**20:7.1f}Mi {r['peak_rss_sum'] / 2**20:6.1f}Mi {'yes' if r['exact'] else 'NO':>5}"
              f"   (built in {built:.0f}s; largest single process {r['max_rss_single'] / 2**20:.1f} MiB RSS; warm CPU s du "
              f"{r['cpu_du']:.2f} ovl {r['cpu_ovl']:.2f}; load {os.getloadavg()[0]:.1f})", flush=True)
    os.rmdir(none_root)
    print("CPU s = user+sys of the whole process tree (a busy machine stretches wall time, not this).")
    print("ratio = median of ovlinspect/du per side-by-side pair (< 1: ovlinspect faster); PSS peak = summed")
    print("proportional set size of ovlinspect and its workers (shared pages counted once); RSS sum counts them per process.")


if __name__ == "__main__":
    main()
