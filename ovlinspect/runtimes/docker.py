"""Docker (overlay2 graph driver): read the on-disk records of a data root (I/O, read-only).

Layout (moby daemon/graphdriver/overlay2/overlay.go, layer/filestore.go, image/fs.go,
reference/store.go, container/container.go):
  <root>/overlay2/<cache-id>/{diff,link,lower,work,merged,committed}   one dir per layer
  <root>/overlay2/l/<SHORT> -> ../<cache-id>/diff                     short links for `lower`
  <root>/overlay2/<id>/lower   "l/A:l/B" top first, no trailing newline
  <root>/image/overlay2/layerdb/sha256/<chain-id>/{cache-id,diff,parent,size}
  <root>/image/overlay2/layerdb/sha256/<chain-id>-<rand>-removing/     a layer being deleted
      (layerStore.deleteLayer renames the entry first, then removes the driver dir, then the entry)
  <root>/image/overlay2/layerdb/mounts/<container-id>/{mount-id,init-id,parent}
  <root>/image/overlay2/layerdb/tmp/write-set-*/                     a layer being registered
  <root>/image/overlay2/imagedb/content/sha256/<image-id>             the image config (history)
  <root>/image/overlay2/repositories.json                             references -> image ids
  <root>/containers/<id>/config.v2.json                               Name, Image, Config.Image, State
Nothing here follows a symlink inside a layer: the only links read are the driver's own l/ links
(readlink, never followed).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from typing import Any

from ovlinspect.errors import NotFoundError, Problem, problem_from_oserror
from ovlinspect.model import Layer, LayerRole, LayerStack, OverlayMount, Owner
from ovlinspect.runtimes.registry import IdentityMemo

DRIVER = "overlay2"
LINK_DIR = "l"  # overlay2.go linkDir
# overlay2.go: besides layer dirs, home holds the link dir and the project-quota helper device
NON_LAYER_ENTRIES = (LINK_DIR, "backingFsBlockDev")
MAX_META = 16 << 20  # biggest metadata file we read (an image config with long history is ~100 KiB)


@dataclass(frozen=True)
class DockerLayer:
    chain_id: str  # "sha256:…"
    cache_id: str  # the overlay2 dir name
    diff_id: str | None
    parent: str | None  # chain id
    size: int | None
    meta_dir: str
    removing: bool = False  # a `-removing` layerdb entry: deletion started and did not finish


@dataclass(frozen=True)
class DockerMountRef:
    container_id: str
    mount_id: str
    init_id: str | None
    parent: str | None  # chain id of the image's top layer


@dataclass(frozen=True)
class DockerContainer:
    id: str
    name: str | None
    image_id: str | None
    image_ref: str | None
    running: bool | None
    driver: str | None


@dataclass(frozen=True)
class DockerImage:
    id: str  # "sha256:…"
    diff_ids: tuple[str, ...]  # bottom first (OCI rootfs order)
    history: tuple[dict, ...]
    refs: tuple[str, ...]
    parent: str | None = None


@dataclass
class DockerState:
    root: str
    layers: dict[str, DockerLayer] = field(default_factory=dict)  # chain id -> layer
    removing: list[DockerLayer] = field(default_factory=list)
    in_progress_cache_ids: set[str] = field(default_factory=set)  # layerdb/tmp write sets
    # mtimes of write sets that do not name their cache-id yet: layer_store.go registerWithDescriptor
    # creates the driver dir, then extracts the layer (minutes for big ones), and only then writes
    # cache-id into the transaction, so a dir made after such a write set started may be that layer
    open_write_sets: list[float] = field(default_factory=list)
    mounts: dict[str, DockerMountRef] = field(default_factory=dict)  # container id -> mount ref
    containers: dict[str, DockerContainer] = field(default_factory=dict)
    images: dict[str, DockerImage] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    complete: bool = True  # False when some record could not be read (orphans then say "unknown")

    @property
    def home(self) -> str:
        return os.path.join(self.root, DRIVER)

    @property
    def layerdb(self) -> str:
        return os.path.join(self.root, "image", DRIVER, "layerdb")

    def by_cache_id(self) -> dict[str, DockerLayer]:
        return {la.cache_id: la for la in self.layers.values()}

    def mount_by_id(self) -> dict[str, DockerMountRef]:
        return {m.mount_id: m for m in self.mounts.values()}


def chain_ids(diff_ids: list[str] | tuple[str, ...]) -> list[str]:
    """OCI image-spec config.md "Layer ChainID": ChainID(L0)=DiffID(L0); ChainID(Ln)=sha256(ChainID(Ln-1)+" "+DiffID(Ln))."""
    out: list[str] = []
    for d in diff_ids:
        if not out:
            out.append(d)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


def _read_small(path: str, state: DockerState | None = None, missing_ok: bool = True) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(MAX_META).decode("utf-8", "surrogateescape").strip()
    except FileNotFoundError:
        if not missing_ok and state is not None:
            state.problems.append(Problem("vanished", "cannot read: it no longer exists", path))
            state.complete = False
        return None
    except OSError as exc:
        if state is not None:
            state.problems.append(problem_from_oserror(exc, path))
            state.complete = False
        return None
    except ValueError:  # a record named a path with a NUL byte in it (a corrupt `lower` file)
        if state is not None:
            state.problems.append(Problem("malformed", "path holds a NUL byte", path.replace("\0", "\\0")))
            state.complete = False
        return None


def _read_json(path: str, state: DockerState) -> dict | None:
    raw = _read_small(path, state)
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # json recurses per nesting level
        state.problems.append(Problem("malformed", f"not JSON: {exc}", path))
        state.complete = False
        return None
    return doc if isinstance(doc, dict) else None


def _listdir(path: str, state: DockerState, required: bool = False) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        if required:
            state.complete = False
        return []
    except OSError as exc:
        state.problems.append(problem_from_oserror(exc, path, "list"))
        state.complete = False
        return []


def read_docker(root: str) -> DockerState:
    """Everything Docker recorded about layers, containers and images under `root`."""
    st = DockerState(root=root)
    db = st.layerdb
    sha = os.path.join(db, "sha256")
    for name in _listdir(sha, st):
        d = os.path.join(sha, name)
        cache = _read_small(os.path.join(d, "cache-id"), st)
        removing = name.endswith("-removing")
        chain = "sha256:" + name.split("-", 1)[0]
        if cache is None:
            if not removing:
                st.problems.append(Problem("malformed", "layerdb entry without cache-id", d))
                st.complete = False
            continue
        size_s = _read_small(os.path.join(d, "size"))
        la = DockerLayer(
            chain_id=chain,
            cache_id=cache,
            diff_id=_read_small(os.path.join(d, "diff")),
            parent=_read_small(os.path.join(d, "parent")) or None,
            size=int(size_s) if size_s and size_s.isdigit() else None,
            meta_dir=d,
            removing=removing,
        )
        if removing:
            st.removing.append(la)
        else:
            st.layers[chain] = la
    tmp = os.path.join(db, "tmp")
    for name in _listdir(tmp, st):
        c = _read_small(os.path.join(tmp, name, "cache-id"))
        if c:
            st.in_progress_cache_ids.add(c)
        else:
            try:
                st.open_write_sets.append(os.lstat(os.path.join(tmp, name)).st_mtime)
            except OSError:
                pass
    mdir = os.path.join(db, "mounts")
    for cid in _listdir(mdir, st):
        d = os.path.join(mdir, cid)
        mid = _read_small(os.path.join(d, "mount-id"), st, missing_ok=False)
        if mid is None:
            continue
        st.mounts[cid] = DockerMountRef(cid, mid, _read_small(os.path.join(d, "init-id")) or None, _read_small(os.path.join(d, "parent")) or None)
    cdir = os.path.join(root, "containers")
    for cid in _listdir(cdir, st):
        cfg = _read_json(os.path.join(cdir, cid, "config.v2.json"), st)
        if cfg is None:
            st.containers[cid] = DockerContainer(cid, None, None, None, None, None)
            continue
        state: dict = cfg["State"] if isinstance(cfg.get("State"), dict) else {}
        conf: dict = cfg["Config"] if isinstance(cfg.get("Config"), dict) else {}
        cname = cfg.get("Name")
        st.containers[cid] = DockerContainer(
            cid,
            cname.lstrip("/") if isinstance(cname, str) else None,
            cfg.get("Image") if isinstance(cfg.get("Image"), str) else None,
            conf.get("Image") if isinstance(conf.get("Image"), str) else None,
            bool(state.get("Running")) if state else None,
            cfg.get("Driver") if isinstance(cfg.get("Driver"), str) else None,
        )
    imgroot = os.path.join(root, "image", DRIVER)
    refs: dict[str, list[str]] = {}
    repos = _read_json(os.path.join(imgroot, "repositories.json"), st) or {}
    by_repo = repos.get("Repositories")
    for _repo, tags in (by_repo.items() if isinstance(by_repo, dict) else ()):
        if isinstance(tags, dict):
            for ref, iid in tags.items():
                if isinstance(iid, str):  # hand-edited or corrupt records: skip what is not a reference
                    refs.setdefault(iid, []).append(ref)
    content = os.path.join(imgroot, "imagedb", "content", "sha256")
    for name in _listdir(content, st):
        iid = "sha256:" + name
        cfg = _read_json(os.path.join(content, name), st)
        if cfg is None:
            continue
        rootfs: dict = cfg["rootfs"] if isinstance(cfg.get("rootfs"), dict) else {}
        hist: list = cfg["history"] if isinstance(cfg.get("history"), list) else []
        parent = _read_small(os.path.join(imgroot, "imagedb", "metadata", "sha256", name, "parent"))
        st.images[iid] = DockerImage(
            iid,
            tuple(d for d in (rootfs["diff_ids"] if isinstance(rootfs.get("diff_ids"), list) else ()) if isinstance(d, str)),
            tuple(h for h in hist if isinstance(h, dict)),
            tuple(sorted(refs.get(iid, []))),
            parent or None,
        )
    return st


def read_links(home: str, problems: list[Problem] | None = None) -> dict[str, str]:
    """overlay2's l/ directory: short name -> link target as written (readlink, not followed)."""
    out: dict[str, str] = {}
    ldir = os.path.join(home, LINK_DIR)
    try:
        names = os.listdir(ldir)
    except OSError as exc:
        if problems is not None and not isinstance(exc, FileNotFoundError):
            problems.append(problem_from_oserror(exc, ldir, "list"))
        return out
    for n in names:
        try:
            out[n] = os.readlink(os.path.join(ldir, n))
        except OSError:
            continue  # not a link (or vanished): not one of the driver's links
    return out


def link_target_id(target: str) -> str | None:
    """`../<cache-id>/diff` -> cache-id (overlay2.go: os.Symlink(path.Join("..", id, diffDirName), …))."""
    parts = target.split("/")
    if len(parts) == 3 and parts[0] == ".." and parts[2] == "diff" and parts[1]:
        return parts[1]
    return None


def read_lower(home: str, layer_id: str) -> list[str] | None:
    """The `lower` file of a layer dir as a list of `l/XXXX` entries, top first (None: no file)."""
    raw = _read_small(os.path.join(home, layer_id, "lower"))
    if raw is None:
        return None
    return [p for p in raw.split(":") if p]


def resolve_lower_ids(home: str, layer_id: str, links: dict[str, str]) -> tuple[list[str], list[str]]:
    """Cache ids of the layers below `layer_id`, top first, from its `lower` file and l/ links.

    -> (ids, unresolved entries)."""
    ids: list[str] = []
    bad: list[str] = []
    for ent in read_lower(home, layer_id) or []:
        short = ent[len(LINK_DIR) + 1 :] if ent.startswith(LINK_DIR + "/") else None
        tgt = links.get(short) if short else None
        lid = link_target_id(tgt) if tgt else None
        if lid is None and ent.endswith("/diff"):
            lid = ent.split("/")[0]  # `<id>/diff` form
        if lid is None:
            bad.append(ent)
        else:
            ids.append(lid)
    return ids, bad


def image_layer_chain(state: DockerState, image: DockerImage) -> list[DockerLayer | None]:
    """The image's layers bottom first (None where layerdb lacks the chain id)."""
    return [state.layers.get(c) for c in chain_ids(image.diff_ids)]


def history_for_layers(image: DockerImage) -> list[str | None]:
    """created_by of each non-empty history entry, bottom first, aligned with diff_ids."""
    out: list[str | None] = []
    for h in image.history:
        if h.get("empty_layer"):
            continue
        cb = h.get("created_by")
        out.append(_clean_created_by(cb) if isinstance(cb, str) else (h.get("comment") if isinstance(h.get("comment"), str) else None))
    if len(out) != len(image.diff_ids):
        # history does not line up with the layers (hand-made image): say nothing rather than guess
        return [None] * len(image.diff_ids)
    return out


def _clean_created_by(cb: str) -> str:
    """`/bin/sh -c #(nop) COPY …` -> `COPY …`; `/bin/sh -c rm x` -> `RUN rm x` (as Dockerfiles spell it)."""
    s = cb.strip()
    if s.startswith("|"):  # classic builder with build args: `|2 A=1 B=2 /bin/sh -c …`
        parts = s.split(" ")
        try:
            n = int(parts[0][1:])
            s = " ".join(parts[1 + n :])
        except ValueError:
            pass
    if s.startswith("/bin/sh -c #(nop) "):
        return s[len("/bin/sh -c #(nop) ") :].strip()
    if s.startswith("/bin/sh -c "):
        return "RUN " + s[len("/bin/sh -c ") :]
    return s


def find_container(state: DockerState, name_or_id: str) -> DockerContainer | None:
    key = name_or_id.lstrip("/")
    for c in state.containers.values():
        if c.name == key or c.id == key:
            return c
    hits = [c for c in state.containers.values() if len(key) >= 4 and c.id.startswith(key)]
    return hits[0] if len(hits) == 1 else None


def find_image(state: DockerState, ref_or_id: str) -> DockerImage | None:
    key = ref_or_id
    cands = [key]
    if ":" not in key.split("/")[-1] and not key.startswith("sha256:"):
        cands.append(key + ":latest")
    for img in state.images.values():
        if any(c in img.refs or "docker.io/library/" + c in img.refs or "docker.io/" + c in img.refs for c in cands):
            return img
    hexkey = key[7:] if key.startswith("sha256:") else key
    hits = [img for img in state.images.values() if len(hexkey) >= 4 and img.id[7:].startswith(hexkey)]
    return hits[0] if len(hits) == 1 else None


# --- the adapter the registry uses -------------------------------------------------------------


class DockerRuntime(IdentityMemo):
    """One Docker data root: owners of mounts, stacks by name, layer dirs, orphan facts."""

    name = "docker"

    def __init__(self, found: Any):
        self.found = found
        self.root = found.path
        self.state = read_docker(found.path)
        self.home = os.path.realpath(self.state.home)
        self.links = read_links(self.home, self.state.problems)
        self._by_cache = self.state.by_cache_id()
        self._by_mount = self.state.mount_by_id()
        self._init_ids = {m.init_id: m for m in self.state.mounts.values() if m.init_id}
        self._images_by_chain: dict[str, list[DockerImage]] = {}
        for img in self.state.images.values():
            for c in chain_ids(img.diff_ids):
                self._images_by_chain.setdefault(c, []).append(img)

    @property
    def problems(self) -> list[Problem]:
        return self.state.problems

    # identities ---------------------------------------------------------------------------
    def cache_id_of(self, path: str) -> str | None:
        """The overlay2 dir id a layer path names (`<home>/l/X`, `<home>/<id>/diff`)."""
        p = os.path.normpath(path)
        if not p.startswith(self.home + "/"):
            return None
        rest = p[len(self.home) + 1 :].split("/")
        if len(rest) == 2 and rest[0] == LINK_DIR:
            tgt = self.links.get(rest[1])
            return link_target_id(tgt) if tgt else None
        if len(rest) == 2 and rest[1] == "diff":
            return rest[0]
        return None

    def identity(self, cache_id: str) -> dict[str, str]:
        ident: dict[str, str] = {"runtime": "docker", "cache-id": cache_id}
        ref = self._by_mount.get(cache_id)
        if ref is not None:
            ident["mount-id"] = cache_id
            ident["container-id"] = ref.container_id
            return ident
        ref = self._init_ids.get(cache_id)
        if ref is not None:
            ident["init-id"] = cache_id
            ident["container-id"] = ref.container_id
            return ident
        la = self._by_cache.get(cache_id)
        if la is not None:
            ident["chain-id"] = la.chain_id
            if la.diff_id:
                ident["diff-id"] = la.diff_id
        return ident

    def owner_of(self, ref: DockerMountRef) -> Owner:
        c = self.state.containers.get(ref.container_id)
        img = self.state.images.get(c.image_id) if c and c.image_id else None
        image_ref = c.image_ref if c else None
        if img is not None and img.refs and (image_ref is None or image_ref not in img.refs):
            image_ref = img.refs[0] if image_ref is None or image_ref.startswith("sha256:") or img.id[7:].startswith(image_ref) else image_ref
        details = {"data-root": self.root, "mount-id": ref.mount_id}
        if ref.init_id:
            details["init-id"] = ref.init_id
        if c is not None and c.running is not None:
            details["state"] = "running" if c.running else "stopped"
        return Owner("docker", ref.container_id, c.name if c else None, image_ref, c.image_id if c else None, details)

    def claim_mount(self, m: OverlayMount) -> OverlayMount | None:
        mp = os.path.normpath(m.entry.mountpoint)
        mid = None
        if mp.startswith(self.home + "/") and mp.endswith("/merged"):
            mid = mp[len(self.home) + 1 : -len("/merged")]
        elif m.upper is not None:
            up = self.cache_id_of(m.upper.path)
            mid = up
        if mid is None or "/" in mid:
            return None
        ref = self._by_mount.get(mid)
        layers = tuple(self._with_identity(la) for la in m.layers)
        owner = self.owner_of(ref) if ref else Owner("docker", details={"data-root": self.root, "mount-id": mid, "note": "no container records this mount-id"})
        return dc_replace(m, owner=owner, layers=layers)

    def _identify(self, la: Layer) -> Layer:
        cid = self.cache_id_of(la.path) or self.cache_id_of(la.written)
        if cid is None:
            return la
        return dc_replace(la, identity={**la.identity, **self.identity(cid)}, **_through_link(la, self.home, cid))

    # names --------------------------------------------------------------------------------
    def find(self, container: str | None = None, image: str | None = None) -> Any:
        if container is not None:
            c = find_container(self.state, container)
            return ("container", c) if c is not None else None
        assert image is not None
        img = find_image(self.state, image)
        return ("image", img) if img is not None else None

    def _notes(self, layers: tuple[Layer, ...], img: DockerImage | None) -> dict[int, dict[str, str]]:
        if img is None:
            return {}
        chains = chain_ids(img.diff_ids)
        hist = history_for_layers(img)
        notes: dict[int, dict[str, str]] = {}
        for la in layers:
            ch = la.identity.get("chain-id")
            if ch in chains:
                i = chains.index(ch)
                n = {"image_layer": str(i + 1), "image_layers": str(len(chains))}
                cb = hist[i]
                if cb:
                    n["created_by"] = cb
                notes[la.index] = n
        return notes

    def stack(self, hit: Any, roots: Any) -> LayerStack:
        from ovlinspect import hostfs
        from ovlinspect.analysis.mounts import effective_options

        kind, obj = hit
        params = hostfs.read_module_params(roots)
        # overlay2 mounts with index=off when the kernel knows the option (overlay.go indexOff)
        eff = effective_options({"index": "off"}, params)
        if kind == "container":
            c: DockerContainer = obj
            ref = self.state.mounts.get(c.id)
            if ref is None:
                raise NotFoundError(f"container {c.name or c.id}: no layerdb mount record (layerdb/mounts/{c.id})")
            owner = self.owner_of(ref)
            img = self.state.images.get(c.image_id) if c.image_id else None
            live = self._live_stack(roots, ref.mount_id)
            label = f"docker container {c.name or c.id[:12]}"
            if live is not None:
                layers = tuple(self._with_identity(la) for la in live.layers)
                return dc_replace(live, layers=layers, owner=owner, label=label + " (mounted)", layer_notes=self._notes(layers, img))
            ids = [ref.mount_id]
            lowers, bad = resolve_lower_ids(self.home, ref.mount_id, self.links)
            if bad or read_lower(self.home, ref.mount_id) is None:
                lowers = self._lowers_from_layerdb(ref)
            ids += lowers
            layers = self._layers(ids, upper=True)
            return LayerStack(layers, eff, label, owner=owner, layer_notes=self._notes(layers, img))
        img = obj
        chain = chain_ids(img.diff_ids)
        if not chain:
            raise NotFoundError(f"image {img.id[7:19]} has no layers")
        top = self.state.layers.get(chain[-1])
        if top is None:
            raise NotFoundError(f"image {img.id[7:19]}: its top layer {chain[-1]} is missing from layerdb")
        ids = [top.cache_id]
        lowers, bad = resolve_lower_ids(self.home, top.cache_id, self.links)
        if bad or (read_lower(self.home, top.cache_id) is None and len(chain) > 1):
            lowers = [la.cache_id if la else "?" for la in reversed(image_layer_chain(self.state, img)[:-1])]
        ids += lowers
        layers = self._layers(ids, upper=False)
        ref_s = img.refs[0] if img.refs else img.id[7:19]
        owner = Owner("docker", image_ref=img.refs[0] if img.refs else None, image_id=img.id, details={"data-root": self.root})
        return LayerStack(layers, eff, f"docker image {ref_s}", owner=owner, layer_notes=self._notes(layers, img))

    def _lowers_from_layerdb(self, ref: DockerMountRef) -> list[str]:
        out = [ref.init_id] if ref.init_id else []
        ch = ref.parent
        seen = set()
        while ch and ch not in seen:
            seen.add(ch)
            la = self.state.layers.get(ch)
            if la is None:
                break
            out.append(la.cache_id)
            ch = la.parent
        return out

    def _layers(self, ids: list[str], upper: bool) -> tuple[Layer, ...]:
        out = []
        for i, cid in enumerate(ids):
            role = LayerRole.UPPER if upper and i == 0 else LayerRole.LOWER
            path = os.path.join(self.home, cid, "diff")
            out.append(Layer(i, role, path, path, True, os.path.isdir(path), "from docker records", self.identity(cid)))
        return tuple(out)

    def _live_stack(self, roots: Any, mount_id: str) -> LayerStack | None:
        if getattr(roots, "replay", False):
            return None
        from ovlinspect.inventory import collect_mounts
        from ovlinspect.targets import stack_from_mount

        inv = collect_mounts(roots)
        mp = os.path.join(self.home, mount_id, "merged")
        for m in inv.mounts:
            if os.path.normpath(m.entry.mountpoint) == mp and m.spec is not None:
                entries = next(iter(inv.all_entries.values()), [])
                return stack_from_mount(m, "", entries)
        return None

    # layer dirs and orphans --------------------------------------------------------------------
    def _label(self, cid: str) -> str:
        ref = self._by_mount.get(cid) or self._init_ids.get(cid)
        if ref is not None:
            c = self.state.containers.get(ref.container_id)
            who = (c.name if c and c.name else ref.container_id[:12])
            return f"docker container {who} ({'upper' if ref.mount_id == cid else 'init'})"
        la = self._by_cache.get(cid)
        if la is not None:
            imgs = self._images_by_chain.get(la.chain_id, [])
            names = sorted({r for i in imgs for r in i.refs}) or sorted({i.id[7:19] for i in imgs})
            return f"docker layer {la.chain_id[7:19]}" + (f" ({', '.join(names[:3])}{', …' if len(names) > 3 else ''})" if names else " (no image)")
        return "docker (unreferenced)"

    def layer_dirs(self) -> list[tuple[str, str]]:
        out = []
        for name in _listdir(self.home, self.state):
            if name == LINK_DIR:
                continue
            d = os.path.join(self.home, name, "diff")
            if os.path.isdir(d):
                out.append((d, self._label(name)))
        return out

    def referenced(self) -> dict[str, str]:
        """cache id -> why it is in use (layerdb, mount records, write sets, `lower` closure)."""
        refs: dict[str, str] = {}
        for la in self.state.layers.values():
            refs.setdefault(la.cache_id, f"layerdb {la.chain_id}")
        for ref in self.state.mounts.values():
            refs.setdefault(ref.mount_id, f"container {ref.container_id[:12]} mount-id")
            if ref.init_id:
                refs.setdefault(ref.init_id, f"container {ref.container_id[:12]} init-id")
        for c in self.state.in_progress_cache_ids:
            refs.setdefault(c, "layerdb/tmp write set (layer being registered)")
        todo = list(refs)
        while todo:
            cid = todo.pop()
            ids, _bad = resolve_lower_ids(self.home, cid, self.links)
            for lid in ids:
                if lid not in refs:
                    refs[lid] = f"in the `lower` file of {cid[:12]}"
                    todo.append(lid)
        return refs

    def orphan_facts(self, mounted: set[str], now: float, daemon_running: bool) -> list[Any]:
        from ovlinspect.analysis import orphans as A
        from ovlinspect.runtimes.orphans import age_of, allocated_bytes, buildkit_mentions

        st = self.state
        complete = st.complete and os.path.isdir(st.layerdb)
        refs = self.referenced()
        # a layer whose layerdb entry is being removed: referenced only by that `-removing` entry
        removing_of = {la.cache_id: la for la in st.removing}
        facts: list[Any] = []
        link_of = {link_target_id(t): os.path.join(self.home, LINK_DIR, s) for s, t in self.links.items() if link_target_id(t)}
        reachable = self._reachable_chains()
        base = {"runtime": "docker", "root": self.root, "daemon_running": daemon_running, "records_complete": complete}
        for name in _listdir(self.home, st):
            if name in NON_LAYER_ENTRIES:
                continue
            d = os.path.join(self.home, name)
            try:
                is_dir = os.path.isdir(d) and not os.path.islink(d)
            except OSError:
                is_dir = False
            is_mounted = any(p == d or p.startswith(d + "/") for p in mounted)
            if name in refs:
                if is_dir and not is_mounted and name in self._by_mount:
                    m = os.path.join(d, "merged")
                    c = self.state.containers.get(self._by_mount[name].container_id)
                    if os.path.isdir(m) and not (c and c.running) and m not in mounted and _is_empty_dir(m):
                        facts.append(A.DirFacts(path=m, kind=A.KIND_MERGED, age_seconds=age_of(m, now), size_bytes=0, empty_dir_only=True, **base))
                continue
            idpart = name[: -len("-removing")] if name.endswith("-removing") else name
            kind = A.KIND_REMOVING if name.endswith("-removing") else A.KIND_LAYER
            if not _looks_like_id(idpart):
                kind = A.KIND_STRAY
            also = tuple(p for p in [link_of.get(name)] if p)
            note = ""
            r = removing_of.get(name)
            if r is not None:
                also += (r.meta_dir,)
                note = f"its layerdb entry {os.path.basename(r.meta_dir)} shows an interrupted `docker rmi`"
            bk = buildkit_mentions(self.root, idpart)
            why: tuple[str, ...] = (f"named in {bk}",) if bk else ()
            if st.open_write_sets and daemon_running and _created_after(d, min(st.open_write_sets) - 60):
                why += ("may be the layer of an unfinished layerdb/tmp write set (a pull or load in progress)",)
            facts.append(
                A.DirFacts(
                    path=d,
                    kind=kind,
                    references=why,
                    mounted=is_mounted,
                    age_seconds=age_of(d, now),
                    size_bytes=allocated_bytes(d) if is_dir else 0,
                    also=also,
                    note=note,
                    is_dir=is_dir,
                    **base,
                )
            )
        # `-removing` layerdb entries whose layer dir is already gone
        for r in st.removing:
            if r.cache_id in refs or os.path.lexists(os.path.join(self.home, r.cache_id)):
                continue
            facts.append(A.DirFacts(path=r.meta_dir, kind=A.KIND_LAYERDB_REMOVING, age_seconds=age_of(r.meta_dir, now), size_bytes=allocated_bytes(r.meta_dir), **base))
        # dangling l/ links
        for short, tgt in self.links.items():
            lid = link_target_id(tgt)
            if lid is not None and not os.path.lexists(os.path.join(self.home, lid)):
                p = os.path.join(self.home, LINK_DIR, short)
                facts.append(A.DirFacts(path=p, kind=A.KIND_DANGLING_LINK, age_seconds=age_of(p, now), size_bytes=0, is_dir=False, **base))
        # layers layerdb still records though no image or container reaches them
        for la in st.layers.values():
            if la.chain_id not in reachable:
                d = os.path.join(self.home, la.cache_id)
                facts.append(
                    A.DirFacts(path=d, kind=A.KIND_UNUSED_LAYER, age_seconds=age_of(d, now), size_bytes=allocated_bytes(d), note=f"layerdb {la.chain_id}", **base)
                )
        return facts

    def _reachable_chains(self) -> set[str]:
        out: set[str] = set()
        starts: list[str | None] = [c for img in self.state.images.values() for c in chain_ids(img.diff_ids)[-1:]]
        starts += [m.parent for m in self.state.mounts.values() if m.parent]
        for ch in starts:
            while ch and ch not in out:
                out.add(ch)
                la = self.state.layers.get(ch)
                ch = la.parent if la else None
        return out


def _through_link(la: Layer, home: str, layer_id: str) -> dict[str, Any]:
    """A layer named through the driver's `l/XXXX` link: its path becomes the dir the link names
    (`<home>/<id>/diff`, read with readlink from the driver's own l/ dir), so layer readers that
    refuse to follow symlinks can open it; `written` keeps the form mountinfo shows."""
    if not os.path.normpath(la.path).startswith(os.path.join(home, LINK_DIR) + "/"):
        return {}
    target = os.path.join(home, layer_id, "diff")
    return {"path": target, "resolution": f"{la.resolution}; its l/ link names {layer_id}/diff"}


def _created_after(path: str, t: float) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return True
    return max(st.st_mtime, st.st_ctime) >= t


def _looks_like_id(name: str) -> bool:
    """overlay2 dir names: 64 hex digits, optionally `-init` (layer ids from moby stringid)."""
    base = name[: -len("-init")] if name.endswith("-init") else name
    return len(base) == 64 and all(c in "0123456789abcdef" for c in base)


def _is_empty_dir(path: str) -> bool:
    try:
        with os.scandir(path) as it:
            return next(it, None) is None
    except OSError:
        return False
