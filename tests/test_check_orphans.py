"""`check`'s orphan_bytes on a real (minimal) Docker data root on disk: a layer dir that no record
references, older than the grace period, is counted by the runtimes' orphan analysis and
compared with the thresholds. No root needed: plain directories, no mounts."""

from __future__ import annotations

import json
import os
import time

from typer.testing import CliRunner

from ovlinspect.cli import app

runner = CliRunner()


def make_docker_root(root: str, orphan_bytes: int) -> str:
    """The directories Docker 20.10 keeps (see ../shared/samples/docker/tree), with no image, no
    container, and one overlay2 layer dir that nothing references."""
    for d in ("image/overlay2/layerdb/sha256", "image/overlay2/imagedb/content/sha256",
              "image/overlay2/imagedb/metadata/sha256", "containers", "overlay2/l"):
        os.makedirs(os.path.join(root, d))
    with open(os.path.join(root, "image/overlay2/repositories.json"), "w") as fh:
        fh.write('{"Repositories":{}}')
    layer = os.path.join(root, "overlay2", "b" * 64)
    os.makedirs(os.path.join(layer, "diff", "etc"))
    with open(os.path.join(layer, "diff", "etc", "blob"), "wb") as fh:
        fh.write(os.urandom(orphan_bytes))
    old = time.time() - 3 * 86400  # past any in-progress grace period
    os.utime(layer, (old, old))
    return layer


def run(root: str, tmp: str, *extra: str) -> tuple[int, dict]:
    res = runner.invoke(app, ["check", "--only", "orphan_bytes", "--data-root", root, "--lock", os.path.join(tmp, "lock"),
                              "--format", "json", *extra])
    return res.exit_code, json.loads(res.stdout)


def test_orphaned_layer_bytes_against_thresholds(tmp_path) -> None:  # type: ignore[no-untyped-def]
    tmp = str(tmp_path)
    root = os.path.join(tmp, "docker")
    layer = make_docker_root(root, 3_000_000)
    import dataclasses

    from ovlinspect.hostfs import HostRoots
    from ovlinspect.runtimes import find_orphans  # the analysis `check` runs: same numbers
    from ovlinspect.runtimes.discovery import RootOverrides

    rep, _ = find_orphans(dataclasses.replace(HostRoots(), runtime_overrides=RootOverrides(docker=(root,))))
    mine = [f for f in rep.orphans if f.root == root]
    assert [f.path for f in mine] == [layer]
    expect_bytes = mine[0].size_bytes
    assert expect_bytes is not None and expect_bytes >= 3_000_000

    code, doc = run(root, tmp, "--set", "orphan_bytes.warning_bytes=1000000")
    res = next(c for c in doc["checks"] if c["id"] == "orphan_bytes")
    docker = [f for f in res["findings"] if f["labels"].get("runtime") == "docker"]
    assert len(docker) == 1 and docker[0]["status_text"] == "WARNING" and "1 orphaned layer(s)" in docker[0]["what"]
    metrics = {(m["name"], m["labels"].get("runtime")): m["value"] for m in res["metrics"]}
    assert metrics[("ovlinspect_orphan_bytes", "docker")] == expect_bytes
    assert metrics[("ovlinspect_orphan_layers", "docker")] == 1
    # other runtimes discovered on this machine (running daemons) may add findings of their own
    assert code == doc["status"] == max(f["status"] for f in res["findings"]) >= 1

    code, doc = run(root, tmp, "--set", "orphan_bytes.warning_bytes=1000", "--set", f"orphan_bytes.critical_bytes={expect_bytes}")
    res = next(c for c in doc["checks"] if c["id"] == "orphan_bytes")
    assert [f["status_text"] for f in res["findings"] if f["labels"].get("runtime") == "docker"] == ["CRITICAL"]
    assert code == 2

    code, doc = run(root, tmp, "--set", f"orphan_bytes.warning_bytes={expect_bytes + 1}")
    res = next(c for c in doc["checks"] if c["id"] == "orphan_bytes")
    assert not [f for f in res["findings"] if f["labels"].get("runtime") == "docker"]

    # text: quiet unless something is wrong
    text = runner.invoke(app, ["check", "--only", "orphan_bytes", "--data-root", root, "--lock", os.path.join(tmp, "lock"),
                               "--set", "orphan_bytes.warning_bytes=1000000"])
    line = next(ln for ln in text.stdout.splitlines() if "orphan_bytes: docker" in ln)
    assert line.startswith("WARNING") and "-> review them with `ovlinspect orphans`" in line
