"""Container runtimes: who owns a mount, the stacks of containers and images, layer dirs, orphans (I/O on disk).

Public API (used by `ls`, targets, `du --all`, `check`, `orphans`):
- attach_owners(mounts, roots): fill `OverlayMount.owner` and each layer's `identity`;
- stack_for_named(roots, container=, image=): the LayerStack of a container or image, running or
  stopped, rebuilt from the runtime's own records (with `layer_notes` from the image history);
- all_layer_dirs(roots) -> [(path, owner label)]: every layer dir the runtimes keep;
- find_orphans(roots) -> (OrphanReport, problems): layer dirs nothing references, with sizes.
Everything is read from disk (no daemon API), so it works with the daemons stopped. Runtime roots
come from ovlinspect.runtimes.discovery; `roots.runtime_overrides` (when present) pins them, else
the OVLINSPECT_{DOCKER,PODMAN,CONTAINERD}_ROOT environment variables do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ovlinspect.analysis.orphans import OrphanReport
    from ovlinspect.errors import Problem
    from ovlinspect.hostfs import HostRoots
    from ovlinspect.model import LayerStack, OverlayMount
    from ovlinspect.runtimes.discovery import RootOverrides, RuntimeRoots


def runtime_roots(roots: HostRoots) -> RuntimeRoots:
    """Discover the data roots (honouring overrides carried by `roots`)."""
    from ovlinspect.runtimes.discovery import RootOverrides, discover_roots

    ov = getattr(roots, "runtime_overrides", None)
    if not isinstance(ov, RootOverrides):
        ov = overrides_from_env()
    return discover_roots(ov, proc_root=getattr(roots, "proc_root", "/proc"))


def overrides_from_env(env: dict[str, str] | None = None) -> RootOverrides | None:
    """OVLINSPECT_DOCKER_ROOT / OVLINSPECT_PODMAN_ROOT / OVLINSPECT_CONTAINERD_ROOT (colon-separated
    lists) pin the data roots for every command, like `orphans --docker-root` does for one."""
    import os

    from ovlinspect.runtimes.discovery import RootOverrides

    e = os.environ if env is None else env

    def split(name: str) -> tuple[str, ...]:
        return tuple(p for p in e.get(name, "").split(":") if p)

    ov = RootOverrides(split("OVLINSPECT_DOCKER_ROOT"), split("OVLINSPECT_PODMAN_ROOT"), split("OVLINSPECT_CONTAINERD_ROOT"))
    return ov if (ov.docker or ov.podman or ov.containerd) else None


def attach_owners(mounts: list[OverlayMount], roots: HostRoots) -> list[OverlayMount]:
    """Return the mounts with `owner` and layer identities filled in where a runtime claims them."""
    if not mounts or roots.replay:
        return mounts
    from ovlinspect.runtimes.registry import load_all

    try:
        loaded = load_all(runtime_roots(roots))
    except Exception:  # owners are decoration: never let a runtime's odd records break `ls`
        import os

        if os.environ.get("OVLINSPECT_DEBUG"):
            raise
        return mounts
    out = []
    for m in mounts:
        for rt in loaded.runtimes:
            claimed = rt.claim_mount(m)
            if claimed is not None:
                m = claimed
                break
        out.append(m)
    return out


def stack_for_named(roots: HostRoots, container: str | None = None, image: str | None = None) -> LayerStack:
    """The LayerStack of a container or image, rebuilt from the runtime's on-disk records.

    A running container's live mount is used when this namespace sees it (the kernel's own view),
    with the owner and history notes added. Raises NotFoundError / UsageError.
    """
    from ovlinspect.errors import NotFoundError, UsageError
    from ovlinspect.runtimes.registry import load_all

    if (container is None) == (image is None):
        raise UsageError("name one of --container or --image")
    loaded = load_all(runtime_roots(roots))
    if not loaded.runtimes:
        raise NotFoundError(
            "no container runtime data root found (Docker, podman, containerd)",
            hint="name it with --docker-root / --podman-root / --containerd-root",
        )
    hits: list[Any] = []
    for rt in loaded.runtimes:
        hit = rt.find(container=container, image=image)
        if hit is not None:
            hits.append((rt, hit))
    what = f"container {container}" if container is not None else f"image {image}"
    if not hits:
        where = ", ".join(f"{rt.name} {rt.root}" for rt in loaded.runtimes)
        raise NotFoundError(f"{what}: not found", hint=f"looked in {where}")
    if len(hits) > 1:
        where = ", ".join(f"{rt.name} {rt.root}" for rt, _ in hits)
        raise UsageError(f"{what} is ambiguous: found in {where}", hint="pin the runtime root with --docker-root etc.")
    rt, hit = hits[0]
    return rt.stack(hit, roots)


def all_layer_dirs(roots: HostRoots) -> list[tuple[str, str]]:
    """Every layer dir the runtimes keep on disk: (path of the layer's contents, owner label)."""
    from ovlinspect.runtimes.registry import load_all

    loaded = load_all(runtime_roots(roots))
    out: list[tuple[str, str]] = []
    for rt in loaded.runtimes:
        out.extend(rt.layer_dirs())
    return out


def find_orphans(roots: HostRoots, min_age_seconds: float | None = None) -> tuple[OrphanReport, list[Problem]]:
    """Layer dirs on disk that nothing references, classified orphan/unknown, with sizes and ages.

    `report.orphan_bytes` is the total allocated size of the "orphan" findings. Never deletes.
    """
    from ovlinspect.runtimes.orphans import collect_orphans

    return collect_orphans(roots, runtime_roots(roots), min_age_seconds)
