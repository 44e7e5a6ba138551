"""The shared vocabulary: frozen dataclasses and enums, no I/O.

Paths are `str` decoded with the filesystem encoding and `surrogateescape` (os.fsdecode), so
any byte sequence survives a round trip through os functions; renderers escape them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ovlinspect.errors import Problem


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/<pid>/mountinfo, fields octal-decoded (super options kept raw)."""

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mountpoint: str
    mount_options: str
    optional_fields: tuple[str, ...]
    fstype: str
    source: str
    super_options_raw: str  # still octal-escaped: split on ',' before decoding values
    line_number: int = 0


class LayerRole(str, enum.Enum):
    UPPER = "upper"
    LOWER = "lower"
    DATA_ONLY = "data-only"  # after '::' or given with datadir+=: never visible by path


@dataclass(frozen=True)
class LayerSpec:
    """A layer as written in the mount options (octal- and user-escapes decoded)."""

    role: LayerRole
    path: str  # decoded path, possibly relative
    written: str  # the option value exactly as the kernel printed it (octal escapes decoded)


@dataclass(frozen=True)
class OverlaySpec:
    """Decoded overlay super options: layers top-first plus every other option verbatim."""

    lowerdirs: tuple[LayerSpec, ...]  # top first, excluding data-only layers
    datadirs: tuple[LayerSpec, ...]
    upperdir: LayerSpec | None
    workdir: str | None
    options: dict[str, str | None]  # every other option, value verbatim (None: a bare flag)
    api: str  # "legacy" (lowerdir=A:B) or "new" (lowerdir+=, datadir+=)

    @property
    def layers(self) -> tuple[LayerSpec, ...]:
        """Every layer in lookup order: upper, lowers top-first, then data-only layers."""
        up = (self.upperdir,) if self.upperdir else ()
        return up + self.lowerdirs + self.datadirs


@dataclass(frozen=True)
class Layer:
    """A layer of a concrete mount: its chain position, where it resolves, whether it exists."""

    index: int  # 0 = top (the upper dir when there is one)
    role: LayerRole
    written: str
    path: str  # absolute path when resolved, else the path as written
    resolved: bool
    exists: bool | None  # None: could not tell (permission, replayed mountinfo of another host)
    resolution: str = "absolute"  # how a relative path was resolved, or why it could not be
    identity: dict[str, str] = field(default_factory=dict)  # runtime ids (cache-id, layer id…)


@dataclass(frozen=True)
class EffectiveOption:
    value: str
    source: str  # "mount" | "module-default" | "kernel-default" | "implied" | "unknown"


class Severity(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class HealthFlag:
    """A per-mount finding: stable id, severity and an explanation in words."""

    id: str
    severity: Severity
    message: str


@dataclass(frozen=True)
class Owner:
    """Who owns a mount (filled in by the runtimes; None when unknown)."""

    runtime: str  # "docker" | "podman" | "containerd" | ...
    container_id: str | None = None
    container_name: str | None = None
    image_ref: str | None = None
    image_id: str | None = None
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Namespace:
    """A mount namespace and one process seen in it."""

    ns_id: str  # e.g. "mnt:[4026531841]"
    pid: int | None
    comm: str | None = None


@dataclass(frozen=True)
class OverlayMount:
    """An overlay mount as the kernel sees it, with resolved layers, options and health."""

    entry: MountEntry
    spec: OverlaySpec | None  # None for fuse-overlayfs (its layers are not in mountinfo)
    layers: tuple[Layer, ...]
    effective: dict[str, EffectiveOption]
    flags: tuple[HealthFlag, ...]
    namespace: Namespace | None = None
    owner: Owner | None = None
    problems: tuple[Problem, ...] = ()
    workdir: str | None = None  # resolved like the layers

    @property
    def upper(self) -> Layer | None:
        return next((la for la in self.layers if la.role is LayerRole.UPPER), None)

    @property
    def lowers(self) -> tuple[Layer, ...]:
        return tuple(la for la in self.layers if la.role is LayerRole.LOWER)

    @property
    def datas(self) -> tuple[Layer, ...]:
        return tuple(la for la in self.layers if la.role is LayerRole.DATA_ONLY)


@dataclass(frozen=True)
class LayerStack:
    """What the layer analyses work on: a stack of layer dirs, top first, plus how to read them.

    Made from a live mount, an explicit --lowerdir/--upperdir stack, or a runtime's records
    (a container or an image) — see ovlinspect/targets.py.
    """

    layers: tuple[Layer, ...]  # upper (if any) first, then lowers top-first, then data-only
    effective: dict[str, EffectiveOption]
    label: str  # for people: "mount 123 /var/lib/…/merged", "--lowerdir stack", "container web-1"
    mount: OverlayMount | None = None
    subpath: str = ""  # the path inside the merged view the target pointed at ("" = root)
    covered: tuple[str, ...] = ()  # merged-view paths ("/proc", "/etc/hosts") with another mount on them
    owner: Owner | None = None
    # runtime-provided notes per layer index, e.g. {"created_by": "RUN rm /data/x"}
    layer_notes: dict[int, dict[str, str]] = field(default_factory=dict)

    @property
    def upper(self) -> Layer | None:
        return next((la for la in self.layers if la.role is LayerRole.UPPER), None)

    @property
    def visible_layers(self) -> tuple[Layer, ...]:
        """Layers that take part in path lookup (data-only layers never do)."""
        return tuple(la for la in self.layers if la.role is not LayerRole.DATA_ONLY)

    @property
    def xattr_prefix(self) -> str:
        """`user.overlay.` with userxattr, else `trusted.overlay.` (overlayfs.rst)."""
        ux = self.effective.get("userxattr")
        return "user.overlay." if ux is not None and ux.value == "on" else "trusted.overlay."


@dataclass(frozen=True)
class TopFile:
    """One of the largest regular files of a layer (path relative to the layer dir)."""

    path: str
    apparent_bytes: int
    allocated_bytes: int


@dataclass(frozen=True)
class TreeUsage:
    """Disk usage of one directory tree walked alone, by GNU du's rules (see README `ovlinspect du`).

    Type counts count names (a whiteout hard-linked 100 times counts 100); bytes and `inodes`
    count each (dev, ino) once, like `du -sb` / `du -s -B1` / `du -s --inodes`.
    """

    apparent_bytes: int = 0
    allocated_bytes: int = 0  # st_blocks * 512
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    whiteouts: int = 0
    opaque_dirs: int = 0
    other: int = 0  # fifos, sockets, devices that are not whiteouts
    inodes: int = 0
    skipped_mounts: int = 0  # entries on another device or mount points: not walked into
    complete: bool = True  # False when something could not be read (see problems)
    top: tuple[TopFile, ...] = ()
    problems: tuple[Problem, ...] = ()


@dataclass(frozen=True)
class ShadowUsage:
    """What one layer spends that the merged view of a stack does not show (see README `ovlinspect du`)."""

    hidden_entries: int = 0  # entries of this layer hidden by higher layers (subtrees included)
    hidden_apparent_bytes: int = 0
    hidden_allocated_bytes: int = 0
    copy_up_files: int = 0  # regular files of this layer whose lower copy is still there
    copy_up_apparent_bytes: int = 0
    copy_up_allocated_bytes: int = 0
    metacopy_files: int = 0  # ... of which metadata-only copy-ups the kernel made (metacopy=on)
    same_size_files: int = 0  # ... of which the lower copy has the same size
    identical_files: int | None = None  # ... of which the content is identical (--compare-content)
    identical_allocated_bytes: int | None = None
