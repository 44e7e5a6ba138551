"""Find the runtimes' data roots on this host (I/O: config files, process command lines from /proc).

Sources, in order; every root found is kept with the reason it was found:
- overrides (--docker-root / --podman-root / --containerd-root, or OVLINSPECT_*_ROOT): when any is
  given, exactly those roots are used, for every runtime (nothing else is guessed);
- running daemons' command lines: `dockerd --data-root|-g|--graph X`, `dockerd --config-file F`
  (its `data-root`), `containerd --root X`, `containerd --config|-c F` (its `root` and the
  overlayfs snapshotter's `root_path`), `podman --root X` and conmon's `--exit-command-arg --root
  --exit-command-arg X` (podman has no daemon; conmon carries the root of a running container);
- config files: /etc/docker/daemon.json `data-root`; containers-storage.conf(5) (`$CONTAINERS_STORAGE_CONF`,
  else /etc/containers/storage.conf, else /usr/share/containers/storage.conf) `graphroot`/`runroot`;
  /etc/containerd/config.toml `root`;
- the defaults /var/lib/docker, /var/lib/containers/storage, /var/lib/containerd.
Only roots that exist as directories are returned.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ovlinspect.errors import Problem

DOCKER_DEFAULT = "/var/lib/docker"  # moby daemon/config: defaultDataRoot
PODMAN_DEFAULT = "/var/lib/containers/storage"  # containers/storage storage.conf graphroot
PODMAN_RUN_DEFAULT = "/run/containers/storage"  # containers/storage storage.conf runroot
CONTAINERD_DEFAULT = "/var/lib/containerd"  # containerd defaults.DefaultRootDir


@dataclass(frozen=True)
class FoundRoot:
    path: str
    source: str  # how it was found, for people ("dockerd pid 123 --data-root", "default", ...)
    daemon_pid: int | None = None  # a running daemon that uses this root (None: none seen)
    run_root: str | None = None  # podman: the runroot (mountpoints.json lives there)
    snapshotter_root: str | None = None  # containerd: overlayfs snapshotter root when configured apart


@dataclass
class RuntimeRoots:
    docker: list[FoundRoot] = field(default_factory=list)
    podman: list[FoundRoot] = field(default_factory=list)
    containerd: list[FoundRoot] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class RootOverrides:
    """Roots named on the command line; an empty tuple means "discover"."""

    docker: tuple[str, ...] = ()
    podman: tuple[str, ...] = ()
    containerd: tuple[str, ...] = ()


def _arg_value(argv: list[str], names: tuple[str, ...]) -> str | None:
    """The value of the last `--name X` / `--name=X` in argv."""
    val = None
    for i, a in enumerate(argv):
        for n in names:
            if a == n and i + 1 < len(argv):
                val = argv[i + 1]
            elif a.startswith(n + "="):
                val = a[len(n) + 1 :]
    return val


def _load_json(path: str, problems: list[Problem]) -> dict:
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read(1 << 20))
        return doc if isinstance(doc, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        problems.append(Problem("config", f"cannot read {path}: {exc}", path))
        return {}


def _load_toml(path: str, problems: list[Problem]) -> dict:
    try:
        with open(path, "rb") as fh:
            data = fh.read(1 << 20)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        problems.append(Problem("config", f"cannot read {path}: {exc}", path))
        return {}
    import tomllib  # only when a config exists: tomllib costs ~5 ms to import

    try:
        return tomllib.loads(data.decode("utf-8", "replace"))
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        problems.append(Problem("config", f"cannot read {path}: {exc}", path))
        return {}


def _containerd_from_config(doc: dict) -> tuple[str | None, str | None]:
    """(root, overlayfs snapshotter root_path) from a containerd config.toml (v1 or v2 names)."""
    root = doc.get("root") if isinstance(doc.get("root"), str) else None
    snap = None
    plugins: dict = doc["plugins"] if isinstance(doc.get("plugins"), dict) else {}
    for key in ("io.containerd.snapshotter.v1.overlayfs", "overlayfs"):
        p = plugins.get(key)
        if isinstance(p, dict) and isinstance(p.get("root_path"), str) and p["root_path"]:
            snap = p["root_path"]
    return root, snap


def _storage_conf(problems: list[Problem], etc_root: str) -> tuple[str | None, str | None, str | None]:
    """(graphroot, runroot, file) from containers-storage.conf(5)."""
    env = os.environ.get("CONTAINERS_STORAGE_CONF")
    cands = [env] if env else [os.path.join(etc_root, "containers/storage.conf"), "/usr/share/containers/storage.conf"]
    for path in cands:
        if not path or not os.path.exists(path):
            continue
        st = _load_toml(path, problems).get("storage", {})
        if isinstance(st, dict):
            g = st.get("graphroot") if isinstance(st.get("graphroot"), str) else None
            r = st.get("runroot") if isinstance(st.get("runroot"), str) else None
            return g, r, path
    return None, None, None


_DAEMONS = frozenset(("dockerd", "containerd", "podman", "conmon"))


def _processes(proc_root: str = "/proc") -> list[tuple[int, list[str]]]:
    """(pid, argv) of the processes that tell us runtime roots.

    Reads /proc/<pid>/cmdline directly: one read per process, where psutil.process_iter cost
    ~25 ms with its import on a 64-process host. Vanished and kernel threads (empty cmdline) are
    skipped."""
    out: list[tuple[int, list[str]]] = []
    try:
        names = os.listdir(proc_root)
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(os.path.join(proc_root, name, "cmdline"), "rb") as fh:
                raw = fh.read(1 << 16)
        except OSError:
            continue
        if not raw:
            continue
        argv = [os.fsdecode(a) for a in raw.rstrip(b"\0").split(b"\0")]
        if os.path.basename(argv[0]) in _DAEMONS:
            out.append((int(name), argv))
    out.sort()
    return out


def discover_roots(
    overrides: RootOverrides | None = None, etc_root: str = "/etc", scan_processes: bool = True, proc_root: str = "/proc"
) -> RuntimeRoots:
    """Every runtime data root on this host, each with how it was found."""
    ov = overrides or RootOverrides()
    rr = RuntimeRoots()
    procs = _processes(proc_root) if scan_processes else []
    docker: list[FoundRoot] = []
    podman: list[FoundRoot] = []
    ctd: list[FoundRoot] = []
    for pid, argv in procs:
        base = os.path.basename(argv[0])
        if base == "dockerd":
            root = _arg_value(argv, ("--data-root", "-g", "--graph"))
            src = f"dockerd pid {pid} --data-root"
            if root is None:
                cfg = _arg_value(argv, ("--config-file",))
                if cfg:
                    root = _load_json(cfg, rr.problems).get("data-root")
                    src = f"dockerd pid {pid} --config-file {cfg}"
            if root is None:
                root = _load_json(os.path.join(etc_root, "docker/daemon.json"), rr.problems).get("data-root") or DOCKER_DEFAULT
                src = f"dockerd pid {pid} (default data root)"
            docker.append(FoundRoot(os.path.abspath(root), src, pid))
        elif base == "containerd":
            root = _arg_value(argv, ("--root",))
            snap = None
            src = f"containerd pid {pid} --root"
            cfg = _arg_value(argv, ("--config", "-c"))
            if cfg:
                croot, snap = _containerd_from_config(_load_toml(cfg, rr.problems))
                if root is None and croot:
                    root, src = croot, f"containerd pid {pid} --config {cfg}"
            if root is None:
                croot, snap2 = _containerd_from_config(_load_toml(os.path.join(etc_root, "containerd/config.toml"), rr.problems))
                root = croot or CONTAINERD_DEFAULT
                snap = snap or snap2
                src = f"containerd pid {pid} (config.toml/default root)"
            ctd.append(FoundRoot(os.path.abspath(root), src, pid, snapshotter_root=snap))
        elif base == "podman":
            root = _arg_value(argv, ("--root",))
            if root:
                podman.append(
                    FoundRoot(os.path.abspath(root), f"podman pid {pid} --root", None, _arg_value(argv, ("--runroot",)))
                )
        elif base == "conmon":
            # conmon -> podman container cleanup: `--exit-command-arg --root --exit-command-arg X`
            vals = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--exit-command-arg"]
            root = _arg_value(vals, ("--root",))
            if root:
                podman.append(
                    FoundRoot(os.path.abspath(root), f"conmon pid {pid} (podman --root)", None, _arg_value(vals, ("--runroot",)))
                )
    explicit = bool(ov.docker or ov.podman or ov.containerd)
    if explicit:
        # roots named on the command line: exactly those, for every runtime (nothing else is guessed)
        docker = [_with_pid(FoundRoot(os.path.abspath(p), "--docker-root"), docker) for p in ov.docker]
        podman = [_with_pid(FoundRoot(os.path.abspath(p), "--podman-root"), podman) for p in ov.podman]
        ctd = [_with_pid(FoundRoot(os.path.abspath(p), "--containerd-root"), ctd) for p in ov.containerd]
    else:
        d = _load_json(os.path.join(etc_root, "docker/daemon.json"), rr.problems).get("data-root")
        if isinstance(d, str):
            docker.append(FoundRoot(os.path.abspath(d), f"{etc_root}/docker/daemon.json data-root"))
        docker.append(FoundRoot(DOCKER_DEFAULT, "default"))
        g, r, f = _storage_conf(rr.problems, etc_root)
        if g:
            podman.append(FoundRoot(os.path.abspath(g), f"{f} graphroot", None, r))
        podman.append(FoundRoot(PODMAN_DEFAULT, "default", None, r or PODMAN_RUN_DEFAULT))
        croot, snap = _containerd_from_config(_load_toml(os.path.join(etc_root, "containerd/config.toml"), rr.problems))
        if croot:
            ctd.append(FoundRoot(os.path.abspath(croot), f"{etc_root}/containerd/config.toml root", snapshotter_root=snap))
        ctd.append(FoundRoot(CONTAINERD_DEFAULT, "default", snapshotter_root=snap))
    rr.docker = _dedupe(
        docker, lambda r: os.path.isdir(os.path.join(r.path, "image")) or os.path.isdir(os.path.join(r.path, "overlay2"))
    )
    rr.podman = _dedupe(
        podman, lambda r: os.path.isdir(os.path.join(r.path, "overlay")) or os.path.isdir(os.path.join(r.path, "overlay-layers"))
    )
    rr.containerd = _dedupe(ctd, lambda r: os.path.isdir(r.path))
    return rr


def _with_pid(r: FoundRoot, seen: list[FoundRoot]) -> FoundRoot:
    """An overridden root keeps what the process scan knows about it (its daemon pid, run root)."""
    key = os.path.realpath(r.path)
    for s in seen:
        if os.path.realpath(s.path) == key:
            return FoundRoot(r.path, r.source, s.daemon_pid, s.run_root, s.snapshotter_root)
    return r


def _dedupe(found: list[FoundRoot], usable) -> list[FoundRoot]:  # type: ignore[no-untyped-def]
    """Keep the first FoundRoot per real path, preferring one that names a running daemon."""
    by: dict[str, FoundRoot] = {}
    order: list[str] = []
    for r in found:
        try:
            key = os.path.realpath(r.path)
        except OSError:
            key = r.path
        if not os.path.isdir(key) or not usable(r):
            continue
        if key not in by:
            by[key] = r
            order.append(key)
        else:
            old = by[key]
            if old.daemon_pid is None and r.daemon_pid is not None:
                by[key] = FoundRoot(
                    old.path, r.source, r.daemon_pid, old.run_root or r.run_root, old.snapshotter_root or r.snapshotter_root
                )
            elif old.run_root is None and r.run_root:
                by[key] = FoundRoot(old.path, old.source, old.daemon_pid, r.run_root, old.snapshotter_root)
    return [by[k] for k in order]
