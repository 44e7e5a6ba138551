#!/usr/bin/env python3
"""Benchmark `ovlinspect orphans` against GNU `du -s -B1` over the same Docker-like data root.

Builds a synthetic overlay2 root (LAYERS layer dirs of FILES small files each in images of 10 layers,
with layerdb chains, imagedb configs, `lower` files and l/ links; LEAKED images lose their record), then times, in the same process tree, the
orphan analysis (records + sizes of the leaked dirs only) and `du -s -B1 <root>/overlay2` (what an
operator would run instead to see where the space went). Prints medians and the ratio; asserts
nothing. Usage: scripts/bench_orphans.py [--layers 400] [--files 200] [--leaked 4] [--runs 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def build(root: str, layers: int, files: int, leaked: int, per_image: int = 10) -> None:
    """Images of `per_image` layers each (imagedb config + layerdb chain + lower files + l/ links);
    the top layer dir of the last `leaked` images loses its layerdb record (a hand-made leak)."""
    from ovlinspect.runtimes.docker import chain_ids

    home = os.path.join(root, "overlay2")
    ldir = os.path.join(home, "l")
    sha = os.path.join(root, "image", "overlay2", "layerdb", "sha256")
    content = os.path.join(root, "image", "overlay2", "imagedb", "content", "sha256")
    for d in (ldir, sha, content):
        os.makedirs(d)
    n_images = max(1, layers // per_image)
    for im in range(n_images):
        diff_ids = [f"sha256:{hashlib.sha256(f'diff{im}-{k}'.encode()).hexdigest()}" for k in range(per_image)]
        chains = chain_ids(diff_ids)
        shorts: list[str] = []
        for k, (diff, chain) in enumerate(zip(diff_ids, chains, strict=True)):
            cid = hashlib.sha256(f"cache{im}-{k}".encode()).hexdigest()
            d = os.path.join(home, cid)
            os.makedirs(os.path.join(d, "diff", "data"))
            for j in range(files):
                with open(os.path.join(d, "diff", "data", f"f{j}"), "wb") as fh:
                    fh.write(b"x" * (j % 5000))
            short = hashlib.sha256(cid.encode()).hexdigest()[:26].upper()
            os.symlink(f"../{cid}/diff", os.path.join(ldir, short))
            with open(os.path.join(d, "link"), "w") as fh:
                fh.write(short)
            if shorts:
                with open(os.path.join(d, "lower"), "w") as fh:
                    fh.write(":".join(f"l/{x}" for x in reversed(shorts)))
            shorts.append(short)
            if im >= n_images - leaked and k == per_image - 1:
                continue  # the leak: no layerdb record for this top layer
            m = os.path.join(sha, chain[7:])
            os.makedirs(m)
            for name, val in (("cache-id", cid), ("diff", diff)) + ((("parent", chains[k - 1]),) if k else ()):
                with open(os.path.join(m, name), "w") as fh:
                    fh.write(val)
        if im < n_images - leaked:
            cfg = json.dumps({"rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": [{"created_by": f"RUN step {k}"} for k in range(per_image)]}).encode()
            with open(os.path.join(content, hashlib.sha256(cfg).hexdigest()), "wb") as fh:
                fh.write(cfg)


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=400)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--leaked", type=int, default=4, help="images whose top layer leaks")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    from ovlinspect.hostfs import HostRoots
    from ovlinspect.runtimes import find_orphans
    from ovlinspect.runtimes.discovery import RootOverrides

    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "docker")
        build(root, a.layers, a.files, a.leaked)
        roots = HostRoots(runtime_overrides=RootOverrides(docker=(root,)))
        rep, _ = find_orphans(roots, min_age_seconds=0)
        assert len(rep.orphans) == a.leaked, len(rep.orphans)
        ours = [timed(lambda: find_orphans(roots, min_age_seconds=0)) for _ in range(a.runs)]
        du = [timed(lambda: subprocess.run(["du", "-s", "-B1", os.path.join(root, "overlay2")], capture_output=True, check=True)) for _ in range(a.runs)]
        mo, md = statistics.median(ours), statistics.median(du)
        print(f"layers={a.layers} files/layer={a.files} leaked={a.leaked} orphan_bytes={rep.orphan_bytes}")
        print(f"ovlinspect orphans: {mo * 1000:.1f} ms (median of {a.runs})")
        print(f"du -s -B1 overlay2: {md * 1000:.1f} ms (median of {a.runs})")
        print(f"ratio orphans/du: {mo / md:.2f}")


if __name__ == "__main__":
    main()
