"""podman / CRI-O (containers/storage, overlay driver): read a graph root's records (I/O, read-only).

Layout (containers/storage layers.go, images.go, containers.go, drivers/overlay/overlay.go):
  <graphroot>/overlay/<layer-id>/{diff,link,lower,work,merged}   one dir per layer
  <graphroot>/overlay/l/<SHORT> -> ../<layer-id>/diff            same short links as Docker's overlay2
  <graphroot>/overlay-layers/layers.json (+ volatile-layers.json) [{id, parent, names, diff-digest, flags…}]
      a layer with "incomplete" in its flags is still being created or deleted
  <runroot>/overlay-layers/mountpoints.json                       [{id, path, count}] mounted layers
  <graphroot>/overlay-images/images.json                          [{id, names, layer (top), …}]
  <graphroot>/overlay-images/<id>/=<base64(key)>                  big data; key "sha256:<id>" = the config
  <graphroot>/overlay-containers/containers.json                  [{id, names, image, layer, metadata}]
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from typing import Any

from ovlinspect.errors import NotFoundError, Problem, problem_from_oserror
from ovlinspect.model import Layer, LayerRole, LayerStack, OverlayMount, Owner
from ovlinspect.runtimes.docker import _clean_created_by, _through_link, link_target_id, read_links, resolve_lower_ids
from ovlinspect.runtimes.registry import IdentityMemo

DRIVER = "overlay"
# overlay.go: linkDir "l", the ".has-mount-program" marker, "staging"/"tempdirs" scratch, and the
# quota helper device; anything else that is not a layer id is "stray" (reported as unknown)
NON_LAYER_DIRS = ("l", ".has-mount-program", "staging", "tempdirs", "backingFsBlockDev")


@dataclass
class PodmanState:
    root: str
    run_root: str | None
    layers: dict[str, dict] = field(default_factory=dict)
    images: dict[str, dict] = field(default_factory=dict)
    containers: dict[str, dict] = field(default_factory=dict)
    mountpoints: dict[str, dict] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    complete: bool = True


def _read_list(path: str, st: PodmanState, required: bool) -> list[dict]:
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read(256 << 20) or b"[]")
    except FileNotFoundError:
        if required:
            st.complete = False
        return []
    except OSError as exc:
        st.problems.append(problem_from_oserror(exc, path))
        st.complete = False
        return []
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        st.problems.append(Problem("malformed", f"not JSON: {exc}", path))
        st.complete = False
        return []
    return [_typed(d) for d in doc if isinstance(d, dict) and isinstance(d.get("id"), str)] if isinstance(doc, list) else []


# Fields whose type the code relies on (layers.go / images.go / containers.go declare them as
# strings, []string and a map): a record holding anything else there is corrupt or hand-edited,
# and the field is dropped rather than trusted.
_STR_FIELDS = ("parent", "layer", "image", "metadata", "diff-digest", "path")


def _typed(d: dict) -> dict:
    out = {k: v for k, v in d.items() if k not in _STR_FIELDS or isinstance(v, str)}
    if "names" in out:
        out["names"] = [n for n in out["names"] if isinstance(n, str)] if isinstance(out["names"], list) else []
    if "flags" in out and not isinstance(out["flags"], dict):
        del out["flags"]
    return out


def read_podman(root: str, run_root: str | None) -> PodmanState:
    st = PodmanState(root, run_root)
    for name in ("layers.json", "volatile-layers.json"):
        for la in _read_list(os.path.join(root, "overlay-layers", name), st, name == "layers.json"):
            st.layers[la["id"]] = la
    for img in _read_list(os.path.join(root, "overlay-images", "images.json"), st, False):
        st.images[img["id"]] = img
    for c in _read_list(os.path.join(root, "overlay-containers", "containers.json"), st, False):
        st.containers[c["id"]] = c
    if run_root:
        for mp in _read_list(os.path.join(run_root, "overlay-layers", "mountpoints.json"), st, False):
            st.mountpoints[mp["id"]] = mp
    return st


def _meta(c: dict) -> dict:
    try:
        m = json.loads(c.get("metadata") or "{}")
        return m if isinstance(m, dict) else {}
    except (ValueError, RecursionError):
        return {}


def image_config(root: str, image_id: str) -> dict | None:
    """The image config from big data key `sha256:<id>` (images.go: file name "=" + base64(key))."""
    key = "=" + base64.b64encode(f"sha256:{image_id}".encode()).decode()
    try:
        with open(os.path.join(root, "overlay-images", image_id, key), "rb") as fh:
            doc = json.loads(fh.read(16 << 20))
    except (OSError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


class PodmanRuntime(IdentityMemo):
    name = "podman"

    def __init__(self, found: Any):
        self.found = found
        self.root = found.path
        self.state = read_podman(found.path, found.run_root)
        self.home = os.path.realpath(os.path.join(found.path, DRIVER))
        self.links = read_links(self.home, self.state.problems)
        self._by_layer = {c.get("layer"): c for c in self.state.containers.values() if c.get("layer")}

    @property
    def problems(self) -> list[Problem]:
        return self.state.problems

    def layer_id_of(self, path: str) -> str | None:
        p = os.path.normpath(path)
        if not p.startswith(self.home + "/"):
            return None
        rest = p[len(self.home) + 1 :].split("/")
        if len(rest) == 2 and rest[0] == "l":
            t = self.links.get(rest[1])
            return link_target_id(t) if t else None
        if len(rest) == 2 and rest[1] == "diff":
            return rest[0]
        return None

    def identity(self, lid: str) -> dict[str, str]:
        ident = {"runtime": "podman", "layer-id": lid}
        la = self.state.layers.get(lid)
        if la is not None and isinstance(la.get("diff-digest"), str):
            ident["diff-digest"] = la["diff-digest"]
        c = self._by_layer.get(lid)
        if c is not None:
            ident["container-id"] = c["id"]
        return ident

    def owner_of(self, c: dict) -> Owner:
        meta = _meta(c)
        names = c.get("names") or []
        img = self.state.images.get(c.get("image") or "")
        ref = meta.get("image-name") if isinstance(meta.get("image-name"), str) else None
        ref = ref or ((img.get("names") or [None])[0] if img else None)
        details = {"graphroot": self.root, "layer-id": str(c.get("layer"))}
        mp = self.state.mountpoints.get(c.get("layer") or "")
        details["state"] = "mounted" if mp and mp.get("count", 0) else "not mounted"
        name = names[0] if names else (meta.get("name") if isinstance(meta.get("name"), str) else None)
        return Owner("podman", c["id"], name, ref, c.get("image"), details)

    def _identify(self, la: Layer) -> Layer:
        lid = self.layer_id_of(la.path) or self.layer_id_of(la.written)
        return la if lid is None else dc_replace(la, identity={**la.identity, **self.identity(lid)}, **_through_link(la, self.home, lid))

    def claim_mount(self, m: OverlayMount) -> OverlayMount | None:
        mp = os.path.normpath(m.entry.mountpoint)
        lid = None
        if mp.startswith(self.home + "/") and mp.endswith("/merged"):
            lid = mp[len(self.home) + 1 : -len("/merged")]
        elif m.upper is not None:
            lid = self.layer_id_of(m.upper.path)
        if not lid or "/" in lid:
            return None
        c = self._by_layer.get(lid)
        owner = self.owner_of(c) if c else Owner("podman", details={"graphroot": self.root, "layer-id": lid})
        return dc_replace(m, owner=owner, layers=tuple(self._with_identity(la) for la in m.layers))

    def find(self, container: str | None = None, image: str | None = None) -> Any:
        if container is not None:
            for c in self.state.containers.values():
                if container in (c.get("names") or []) or c["id"] == container:
                    return ("container", c)
            hits = [c for c in self.state.containers.values() if len(container) >= 4 and c["id"].startswith(container)]
            return ("container", hits[0]) if len(hits) == 1 else None
        assert image is not None
        cands = {image, "localhost/" + image, image + ":latest", "localhost/" + image + ":latest", "docker.io/library/" + image}
        for img in self.state.images.values():
            if cands & set(img.get("names") or []):
                return ("image", img)
        key = image[7:] if image.startswith("sha256:") else image
        hits = [i for i in self.state.images.values() if len(key) >= 4 and i["id"].startswith(key)]
        return ("image", hits[0]) if len(hits) == 1 else None

    def chain(self, top: str) -> list[str]:
        """Layer ids from `top` down through `parent` (layers.json), top first."""
        out: list[str] = []
        cur: str | None = top
        while cur and cur not in out:
            out.append(cur)
            la = self.state.layers.get(cur)
            cur = la.get("parent") if la else None
        return out

    def _notes(self, layers: tuple[Layer, ...], image_id: str | None) -> dict[int, dict[str, str]]:
        if not image_id:
            return {}
        img = self.state.images.get(image_id)
        cfg = image_config(self.root, image_id)
        if img is None or cfg is None:
            return {}
        bottom_first = list(reversed(self.chain(img.get("layer") or "")))
        hist = [h for h in cfg.get("history") or [] if isinstance(h, dict) and not h.get("empty_layer")]
        if len(hist) != len(bottom_first):
            return {}
        notes: dict[int, dict[str, str]] = {}
        for la in layers:
            lid = la.identity.get("layer-id")
            if lid in bottom_first:
                i = bottom_first.index(lid)
                cb = hist[i].get("created_by") or hist[i].get("comment")
                n = {"image_layer": str(i + 1), "image_layers": str(len(bottom_first))}
                if isinstance(cb, str):
                    n["created_by"] = _clean_created_by(cb)
                notes[la.index] = n
        return notes

    def stack(self, hit: Any, roots: Any) -> LayerStack:
        from ovlinspect import hostfs
        from ovlinspect.analysis.mounts import effective_options

        kind, obj = hit
        eff = effective_options({}, hostfs.read_module_params(roots))
        if kind == "container":
            c = obj
            lid = c.get("layer")
            if not lid:
                raise NotFoundError(f"container {c['id'][:12]} has no layer")
            owner = self.owner_of(c)
            label = f"podman container {owner.container_name or c['id'][:12]}"
            ids = [lid] + self._lowers(lid)
            layers = self._layers(ids, upper=True)
            return LayerStack(layers, eff, label, owner=owner, layer_notes=self._notes(layers, c.get("image")))
        img = obj
        top = img.get("layer")
        if not top:
            raise NotFoundError(f"image {img['id'][:12]} has no layers")
        ids = [top] + self._lowers(top)
        layers = self._layers(ids, upper=False)
        names = img.get("names") or []
        owner = Owner("podman", image_ref=names[0] if names else None, image_id=img["id"], details={"graphroot": self.root})
        return LayerStack(layers, eff, f"podman image {names[0] if names else img['id'][:12]}", owner=owner, layer_notes=self._notes(layers, img["id"]))

    def _lowers(self, lid: str) -> list[str]:
        ids, bad = resolve_lower_ids(self.home, lid, self.links)
        if bad or not ids:
            return self.chain(lid)[1:]
        return ids

    def _layers(self, ids: list[str], upper: bool) -> tuple[Layer, ...]:
        out = []
        for i, lid in enumerate(ids):
            path = os.path.join(self.home, lid, "diff")
            role = LayerRole.UPPER if upper and i == 0 else LayerRole.LOWER
            out.append(Layer(i, role, path, path, True, os.path.isdir(path), "from containers/storage records", self.identity(lid)))
        return tuple(out)

    def _label(self, lid: str) -> str:
        c = self._by_layer.get(lid)
        if c is not None:
            names = c.get("names") or [c["id"][:12]]
            return f"podman container {names[0]} (upper)"
        if lid in self.state.layers:
            imgs = [i for i in self.state.images.values() if lid in self.chain(i.get("layer") or "")]
            names = sorted({n for i in imgs for n in (i.get("names") or [])})
            return f"podman layer {lid[:12]}" + (f" ({', '.join(names[:3])})" if names else " (no image)")
        return "podman (unreferenced)"

    def layer_dirs(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        try:
            names = sorted(os.listdir(self.home))
        except OSError:
            return out
        for n in names:
            d = os.path.join(self.home, n, "diff")
            if n not in NON_LAYER_DIRS and os.path.isdir(d):
                out.append((d, self._label(n)))
        return out

    def orphan_facts(self, mounted: set[str], now: float, daemon_running: bool) -> list[Any]:
        from ovlinspect.analysis import orphans as A
        from ovlinspect.runtimes.docker import _looks_like_id
        from ovlinspect.runtimes.orphans import age_of, allocated_bytes

        st = self.state
        complete = st.complete
        refs: dict[str, str] = {}
        for lid, la in st.layers.items():
            flags = la.get("flags") or {}
            refs[lid] = "layers.json" + (" (incomplete: being created or deleted)" if isinstance(flags, dict) and flags.get("incomplete") else "")
        todo = list(refs)
        while todo:
            cur = todo.pop()
            for lower in resolve_lower_ids(self.home, cur, self.links)[0]:
                if lower not in refs:
                    refs[lower] = f"in the `lower` file of {cur[:12]}"
                    todo.append(lower)
        base = {"runtime": "podman", "root": self.root, "daemon_running": daemon_running, "records_complete": complete}
        link_of = {link_target_id(t): os.path.join(self.home, "l", s) for s, t in self.links.items() if link_target_id(t)}
        facts: list[Any] = []
        try:
            names = sorted(os.listdir(self.home))
        except OSError:
            names = []
        for n in names:
            if n in NON_LAYER_DIRS:
                continue
            d = os.path.join(self.home, n)
            is_mounted = any(p == d or p.startswith(d + "/") for p in mounted)
            if n in refs:  # (containers/storage keeps `merged/` of stopped containers by design)
                continue
            kind = A.KIND_LAYER if _looks_like_id(n) else A.KIND_STRAY
            is_dir = os.path.isdir(d) and not os.path.islink(d)
            facts.append(
                A.DirFacts(
                    path=d,
                    kind=kind,
                    mounted=is_mounted,
                    age_seconds=age_of(d, now),
                    size_bytes=allocated_bytes(d) if is_dir else 0,
                    also=tuple(p for p in [link_of.get(n)] if p),
                    is_dir=is_dir,
                    **base,
                )
            )
        for short, tgt in self.links.items():
            tid = link_target_id(tgt)
            if tid is not None and not os.path.lexists(os.path.join(self.home, tid)):
                p = os.path.join(self.home, "l", short)
                facts.append(A.DirFacts(path=p, kind=A.KIND_DANGLING_LINK, age_seconds=age_of(p, now), size_bytes=0, is_dir=False, **base))
        return facts
