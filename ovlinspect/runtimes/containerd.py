"""containerd (overlayfs snapshotter): read a root's bbolt records (I/O, read-only; see bbolt.py).

What is read (containerd 1.6 snapshots/storage/bolt.go, metadata/buckets.go, snapshots/overlay/overlay.go):
  <snaproot>/metadata.db (snapshotter's own bbolt; <snaproot> = <root>/io.containerd.snapshotter.v1.overlayfs
      unless config.toml sets root_path):
      v1/snapshots/<name>/{id uvarint, kind byte (1 view, 2 active, 3 committed), parent <name>}
      where <name> is "<namespace>/<n>/<key>" as the metadata store names it
  <snaproot>/snapshots/<id>/{fs,work}     one dir per snapshot; `new-*` while being created,
      `rm-*` while being removed (overlay.go Remove renames before RemoveAll)
  <root>/io.containerd.metadata.v1.bolt/meta.db:
      v1/<ns>/containers/<id>/{image, snapshotKey, snapshotter}
      v1/<ns>/snapshots/<snapshotter>/<key>/{name (the snapshotter's <name>), parent}
      v1/<ns>/images/<name>/target/{digest, mediatype}
  <root>/io.containerd.content.v1.content/blobs/sha256/<hex>  manifests, indexes, image configs
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from dataclasses import replace as dc_replace
from typing import Any

from ovlinspect.errors import NotFoundError, Problem
from ovlinspect.model import Layer, LayerRole, LayerStack, OverlayMount, Owner
from ovlinspect.runtimes.bbolt import BoltDB, BoltError, uvarint
from ovlinspect.runtimes.docker import _clean_created_by, chain_ids
from ovlinspect.runtimes.registry import IdentityMemo

SNAPSHOTTER = "overlayfs"
SNAP_DIR = "io.containerd.snapshotter.v1.overlayfs"
META_DB = "io.containerd.metadata.v1.bolt/meta.db"
CONTENT = "io.containerd.content.v1.content/blobs"
KINDS = {1: "view", 2: "active", 3: "committed"}  # containerd snapshots.Kind


@dataclass(frozen=True)
class Snapshot:
    name: str  # "<ns>/<n>/<key>" in the snapshotter db
    id: int
    kind: str
    parent: str | None

    @property
    def namespace(self) -> str:
        return self.name.split("/", 2)[0]

    @property
    def key(self) -> str:
        parts = self.name.split("/", 2)
        return parts[2] if len(parts) == 3 else self.name


class ContainerdRuntime(IdentityMemo):
    name = "containerd"

    def __init__(self, found: Any):
        self.found = found
        self.root = found.path
        self.snaproot = os.path.realpath(found.snapshotter_root or os.path.join(found.path, SNAP_DIR))
        self.problems: list[Problem] = []
        self.complete = True
        self.snaps: dict[str, Snapshot] = {}
        self.by_id: dict[int, Snapshot] = {}
        self.containers: dict[tuple[str, str], dict[str, str]] = {}  # (ns, id) -> fields
        self.meta_snaps: dict[tuple[str, str], str] = {}  # (ns, key) -> backend name
        self.images: dict[tuple[str, str], str] = {}  # (ns, name) -> target digest
        self._read_snapshotter()
        self._read_meta()
        self._backend_to_key = {v: k for k, v in self.meta_snaps.items()}

    def _read_snapshotter(self) -> None:
        path = os.path.join(self.snaproot, "metadata.db")
        if not os.path.exists(path):
            return
        try:
            db = BoltDB.open(path)
            for name in db.buckets(b"v1", b"snapshots"):
                vals = db.values(b"v1", b"snapshots", name)
                sid = uvarint(vals[b"id"]) if b"id" in vals else None
                if sid is None:
                    continue
                kind = KINDS.get(vals.get(b"kind", b"\0")[0], "unknown")
                parent = vals.get(b"parent")
                s = Snapshot(name.decode("utf-8", "surrogateescape"), sid, kind, parent.decode("utf-8", "surrogateescape") if parent else None)
                self.snaps[s.name] = s
                self.by_id[sid] = s
        except (OSError, BoltError, KeyError, IndexError) as exc:
            self.problems.append(Problem("malformed", f"cannot read containerd snapshotter metadata: {exc}", path))
            self.complete = False

    def _read_meta(self) -> None:
        path = os.path.join(self.root, META_DB)
        if not os.path.exists(path):
            return
        try:
            db = BoltDB.open(path)
            for ns in db.buckets(b"v1"):
                nss = ns.decode("utf-8", "surrogateescape")
                for cid in db.buckets(b"v1", ns, b"containers"):
                    vals = db.values(b"v1", ns, b"containers", cid)
                    self.containers[(nss, cid.decode())] = {k.decode(): v.decode("utf-8", "replace") for k, v in vals.items()}
                for key in db.buckets(b"v1", ns, b"snapshots", SNAPSHOTTER.encode()):
                    name = db.get(b"v1", ns, b"snapshots", SNAPSHOTTER.encode(), key, b"name")
                    if name:
                        self.meta_snaps[(nss, key.decode("utf-8", "surrogateescape"))] = name.decode("utf-8", "surrogateescape")
                for img in db.buckets(b"v1", ns, b"images"):
                    dg = db.get(b"v1", ns, b"images", img, b"target", b"digest")
                    if dg:
                        self.images[(nss, img.decode("utf-8", "surrogateescape"))] = dg.decode()
        except (OSError, BoltError, UnicodeDecodeError) as exc:
            self.problems.append(Problem("malformed", f"cannot read containerd metadata: {exc}", path))

    # paths and identities ----------------------------------------------------------------------
    def snap_dir(self, sid: int) -> str:
        return os.path.join(self.snaproot, "snapshots", str(sid))

    def id_of(self, path: str) -> int | None:
        p = os.path.normpath(path)
        base = os.path.join(self.snaproot, "snapshots") + "/"
        if not p.startswith(base):
            return None
        rest = p[len(base) :].split("/")
        if len(rest) == 2 and rest[1] == "fs" and rest[0].isdigit():
            return int(rest[0])
        return None

    def identity(self, sid: int) -> dict[str, str]:
        ident = {"runtime": "containerd", "snapshot-id": str(sid)}
        s = self.by_id.get(sid)
        if s is not None:
            ident["snapshot-key"] = s.key
            ident["namespace"] = s.namespace
            ident["kind"] = s.kind
        return ident

    def _container_for_snapshot(self, s: Snapshot) -> tuple[str, str] | None:
        key = self._backend_to_key.get(s.name)
        if key is None:
            return None
        for (ns, cid), c in self.containers.items():
            if ns == key[0] and c.get("snapshotKey") == key[1] and c.get("snapshotter", SNAPSHOTTER) == SNAPSHOTTER:
                return ns, cid
        return None

    def owner_of(self, ns: str, cid: str) -> Owner:
        c = self.containers.get((ns, cid), {})
        img = c.get("image")
        return Owner("containerd", cid, cid, img, self.images.get((ns, img or "")), {"namespace": ns, "root": self.root, "snapshot-key": c.get("snapshotKey", "")})

    def _identify(self, la: Layer) -> Layer:
        sid = self.id_of(la.path)
        return la if sid is None else dc_replace(la, identity={**la.identity, **self.identity(sid)})

    def claim_mount(self, m: OverlayMount) -> OverlayMount | None:
        sid = self.id_of(m.upper.path) if m.upper is not None else None
        if sid is None:
            ids = [self.id_of(la.path) for la in m.layers]
            if not any(i is not None for i in ids):
                return None
        owner = None
        s = self.by_id.get(sid) if sid is not None else None
        if s is not None:
            hit = self._container_for_snapshot(s)
            if hit:
                owner = self.owner_of(*hit)
        if owner is None:
            # the task's rootfs mount point names the container: <state>/io.containerd.runtime.v2.task/<ns>/<id>/rootfs
            parts = os.path.normpath(m.entry.mountpoint).split("/")
            if len(parts) >= 4 and parts[-1] == "rootfs" and parts[-4] == "io.containerd.runtime.v2.task":
                ns, cid = parts[-3], parts[-2]
                owner = self.owner_of(ns, cid) if (ns, cid) in self.containers else Owner("containerd", cid, cid, details={"namespace": ns})
        if owner is None:
            owner = Owner("containerd", details={"root": self.root, "snapshot-id": str(sid) if sid is not None else ""})
        return dc_replace(m, owner=owner, layers=tuple(self._with_identity(la) for la in m.layers))

    # names -----------------------------------------------------------------------------------
    def find(self, container: str | None = None, image: str | None = None) -> Any:
        if container is not None:
            hits = [k for k in self.containers if k[1] == container]
            return ("container", hits[0]) if len(hits) == 1 else None
        assert image is not None
        cands = [image, "docker.io/library/" + image, "docker.io/" + image]
        cands += [c + ":latest" for c in cands if ":" not in c.split("/")[-1]]
        for (ns, name), _dg in sorted(self.images.items()):
            if name in cands:
                return ("image", (ns, name))
        return None

    def _chain(self, backend: str) -> list[Snapshot]:
        out: list[Snapshot] = []
        cur: str | None = backend
        while cur and cur in self.snaps and all(s.name != cur for s in out):
            s = self.snaps[cur]
            out.append(s)
            cur = s.parent
        return out

    def _blob(self, digest: str) -> dict | None:
        algo, _, hexd = digest.partition(":")
        try:
            with open(os.path.join(self.root, CONTENT, algo, hexd), "rb") as fh:
                doc = json.loads(fh.read(16 << 20))
        except (OSError, ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            return None
        return doc if isinstance(doc, dict) else None

    def _config_for(self, digest: str, depth: int = 0) -> dict | None:
        """Image config from a manifest or index digest (indexes: the first manifest with a config we have)."""
        doc = self._blob(digest)
        if doc is None or depth > 3:
            return None
        if isinstance(doc.get("manifests"), list):
            for m in doc["manifests"]:
                if isinstance(m, dict) and isinstance(m.get("digest"), str):
                    cfg = self._config_for(m["digest"], depth + 1)
                    if cfg is not None:
                        return cfg
            return None
        cfgd = doc.get("config", {}).get("digest") if isinstance(doc.get("config"), dict) else None
        return self._blob(cfgd) if isinstance(cfgd, str) else None

    def _notes(self, layers: tuple[Layer, ...], ns: str, image: str | None) -> dict[int, dict[str, str]]:
        dg = self.images.get((ns, image or ""))
        cfg = self._config_for(dg) if dg else None
        if cfg is None:
            return {}
        diff_ids = [d for d in (cfg.get("rootfs") or {}).get("diff_ids") or [] if isinstance(d, str)]
        chains = chain_ids(diff_ids)
        hist = [h for h in cfg.get("history") or [] if isinstance(h, dict) and not h.get("empty_layer")]
        notes: dict[int, dict[str, str]] = {}
        for la in layers:
            key = la.identity.get("snapshot-key")
            if key in chains:
                i = chains.index(key)
                n = {"image_layer": str(i + 1), "image_layers": str(len(chains))}
                if len(hist) == len(chains):
                    cb = hist[i].get("created_by") or hist[i].get("comment")
                    if isinstance(cb, str):
                        n["created_by"] = _clean_created_by(cb)
                notes[la.index] = n
        return notes

    def stack(self, hit: Any, roots: Any) -> LayerStack:
        from ovlinspect import hostfs
        from ovlinspect.analysis.mounts import effective_options

        kind, (ns, name) = hit
        # the overlayfs snapshotter mounts with index=off (overlay.go: "index=off" when supported)
        eff = effective_options({"index": "off"}, hostfs.read_module_params(roots))
        if kind == "container":
            c = self.containers[(ns, name)]
            key = c.get("snapshotKey", "")
            backend = self.meta_snaps.get((ns, key))
            if backend is None:
                raise NotFoundError(f"container {name}: snapshot {key!r} not found in containerd's metadata")
            chain = self._chain(backend)
            layers = self._layers(chain)
            return LayerStack(layers, eff, f"containerd container {ns}/{name}", owner=self.owner_of(ns, name), layer_notes=self._notes(layers, ns, c.get("image")))
        dg = self.images[(ns, name)]
        cfg = self._config_for(dg)
        diff_ids = [d for d in ((cfg or {}).get("rootfs") or {}).get("diff_ids") or [] if isinstance(d, str)]
        if not diff_ids:
            raise NotFoundError(f"image {name}: its config is not in the content store")
        top = chain_ids(diff_ids)[-1]
        backend = self.meta_snaps.get((ns, top))
        if backend is None:
            raise NotFoundError(f"image {name} is not unpacked for the {SNAPSHOTTER} snapshotter")
        layers = self._layers(self._chain(backend))
        owner = Owner("containerd", image_ref=name, image_id=dg, details={"namespace": ns, "root": self.root})
        return LayerStack(layers, eff, f"containerd image {ns}/{name}", owner=owner, layer_notes=self._notes(layers, ns, name))

    def _layers(self, chain: list[Snapshot]) -> tuple[Layer, ...]:
        out = []
        for i, s in enumerate(chain):
            path = os.path.join(self.snap_dir(s.id), "fs")
            role = LayerRole.UPPER if i == 0 and s.kind == "active" else LayerRole.LOWER
            out.append(Layer(i, role, path, path, True, os.path.isdir(path), "from containerd records", self.identity(s.id)))
        return tuple(out)

    # layer dirs and orphans --------------------------------------------------------------------
    def layer_dirs(self) -> list[tuple[str, str]]:
        out = []
        for sid, s in sorted(self.by_id.items()):
            d = os.path.join(self.snap_dir(sid), "fs")
            if os.path.isdir(d):
                hit = self._container_for_snapshot(s)
                out.append((d, f"containerd {s.namespace} " + (f"container {hit[1]} ({s.kind})" if hit else f"snapshot {s.key[:19]} ({s.kind})")))
        return out

    def orphan_facts(self, mounted: set[str], now: float, daemon_running: bool) -> list[Any]:
        from ovlinspect.analysis import orphans as A
        from ovlinspect.runtimes.orphans import age_of, allocated_bytes

        sdir = os.path.join(self.snaproot, "snapshots")
        if not os.path.isdir(sdir):
            return []
        dbp = os.path.join(self.snaproot, "metadata.db")
        complete = self.complete and os.path.exists(dbp)
        base = {"runtime": "containerd", "root": self.root, "daemon_running": daemon_running, "records_complete": complete}
        facts: list[Any] = []
        try:
            names = sorted(os.listdir(sdir))
        except OSError as exc:
            from ovlinspect.errors import problem_from_oserror

            self.problems.append(problem_from_oserror(exc, sdir, "list"))
            return []
        for n in names:
            d = os.path.join(sdir, n)
            is_mounted = any(p == d or p.startswith(d + "/") for p in mounted)
            if n.isdigit():
                if int(n) in self.by_id:
                    continue
                kind = A.KIND_LAYER
            elif n.startswith("new-"):
                kind = A.KIND_TEMP
            elif n.startswith("rm-"):
                kind = A.KIND_REMOVING
            else:
                kind = A.KIND_STRAY
            is_dir = os.path.isdir(d) and not os.path.islink(d)
            facts.append(
                A.DirFacts(path=d, kind=kind, mounted=is_mounted, age_seconds=age_of(d, now), size_bytes=allocated_bytes(d) if is_dir else 0, is_dir=is_dir, **base)
            )
        return facts
