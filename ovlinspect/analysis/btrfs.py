"""btrfs metadata-exhaustion verdict from sysfs numbers + statvfs (pure; no I/O).

Input: the text of the attributes under /sys/fs/btrfs/<FSID>/ (relative path -> content), the
statvfs fields of a mount point and, when known, per-device sizes (BTRFS_IOC_DEV_INFO). Output: a
BtrfsReport with every input number, OK / WARNING / CRITICAL / UNKNOWN, the reason in words and the
remedies in the order that works.

The failure mode (moby/moby#29601, #27653): no unallocated space is left for a new metadata chunk,
and the free space inside the metadata chunks beyond the global reserve drops below what a single
file-creating transaction reserves. From then on every create fails with ENOSPC although `df`
still shows free space (data chunks are half empty). The threshold is a fixed number of bytes, not
a percentage, so the verdict is computed in bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# --- kernel facts (cite: linux fs/btrfs/) -------------------------------------------------------
# BTRFS_MAX_LEVEL (ctree.h) and btrfs_calc_insert_metadata_size() (fs.h):
#   nodesize * BTRFS_MAX_LEVEL * 2 * num_items
BTRFS_MAX_LEVEL = 8
# btrfs_new_inode_prepare() (inode.c): 1 inode item + dir item + dir index + parent inode update,
# + 1 for the LSM xattr when an LSM is active (observed here: ENOSPC came with 3,915,776 bytes free,
# just under the 5-item reservation of 3,932,160 bytes at 16 KiB nodes; 4 items would have fit).
CREATE_TRANS_ITEMS = 5
# start_transaction() (transaction.c, since 6.7 "always reserve space for delayed refs") reserves
# btrfs_calc_delayed_ref_bytes() (delayed-ref.h) on top: the same size again, doubled with the
# free-space tree.
# BTRFS_DEVICE_RANGE_RESERVED (volumes.h): the first 1 MiB of every device is never allocated.
DEVICE_RANGE_RESERVED = 1024 * 1024
# BTRFS_STRIPE_LEN (volumes.h): gather_device_info() skips devices with less than
# BTRFS_STRIPE_LEN * dev_stripes available; a chunk can be that small.
BTRFS_STRIPE_LEN = 64 * 1024
# WARNING while the metadata headroom is below this many file-create reservations.
WARN_RESERVATIONS = 3

# btrfs_raid_array (volumes.c): devs_min, dev_stripes, ncopies, nparity
PROFILES: dict[str, tuple[int, int, int, int]] = {
    "single": (1, 1, 1, 0),
    "dup": (1, 2, 2, 0),
    "raid0": (1, 1, 1, 0),
    "raid1": (2, 1, 2, 0),
    "raid1c3": (3, 1, 3, 0),
    "raid1c4": (4, 1, 4, 0),
    "raid10": (2, 1, 2, 0),
    "raid5": (2, 1, 1, 1),
    "raid6": (3, 1, 1, 2),
}
SPACE_ATTRS = (
    "total_bytes", "bytes_used", "bytes_reserved", "bytes_pinned", "bytes_readonly",
    "bytes_may_use", "bytes_zone_unusable", "disk_total", "disk_used", "chunk_size", "flags",
)

OK, WARNING, CRITICAL, UNKNOWN = "ok", "warning", "critical", "unknown"
VERDICT_ORDER = {OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3}


@dataclass(frozen=True)
class BtrfsDevice:
    """One device of the filesystem; sizes from BTRFS_IOC_DEV_INFO (None when not known)."""

    devid: int
    path: str | None = None
    total_bytes: int | None = None  # the filesystem's size on this device (not the block device)
    used_bytes: int | None = None  # allocated to chunks on this device
    missing: bool | None = None
    writeable: bool | None = None

    @property
    def unallocated_bytes(self) -> int | None:
        if self.total_bytes is None or self.used_bytes is None:
            return None
        return self.total_bytes - self.used_bytes


@dataclass(frozen=True)
class BtrfsInputs:
    """Everything the verdict is computed from, as read (live) or replayed (capture)."""

    fsid: str
    attrs: dict[str, str]  # relative path under /sys/fs/btrfs/<FSID>/ -> content
    statvfs: dict[str, int] | None = None  # os.statvfs fields of a mount point
    devices: tuple[BtrfsDevice, ...] | None = None  # per-device sizes, when known
    mountpoints: tuple[str, ...] = ()
    docker_roots: tuple[str, ...] = ()
    subvolume_count: int | None = None
    source: str = "live"  # "live" or the capture directory


@dataclass(frozen=True)
class BtrfsReport:
    """The verdict for one btrfs filesystem, with every number it rests on."""

    fsid: str
    mountpoints: list[str]
    verdict: str  # "ok" | "warning" | "critical" | "unknown"
    reason: str
    remedies: list[str]
    notes: list[str]
    metrics: dict[str, int | None]
    metadata_profile: str | None
    subvolume_count: int | None
    docker_roots: list[str]
    data_profile: str | None = None
    metadata_copies: int | None = None
    can_allocate_metadata_chunk: bool | None = None
    label: str | None = None
    devices: list[BtrfsDevice] = field(default_factory=list)
    source: str = "live"
    statvfs: dict[str, int] | None = None  # the statvfs fields the sizes came from


def _int(attrs: dict[str, str], key: str) -> int | None:
    raw = attrs.get(key)
    if raw is None:
        return None
    try:
        return int(raw.strip().split()[0], 0)
    except (ValueError, IndexError):
        return None


def _flag(attrs: dict[str, str], key: str) -> bool | None:
    v = _int(attrs, key)
    return None if v is None else bool(v)


def parse_space(attrs: dict[str, str], kind: str) -> dict[str, int | None] | None:
    """allocation/<kind>/* numbers; None when the space info does not exist."""
    prefix = f"allocation/{kind}/"
    if not any(k.startswith(prefix) for k in attrs):
        return None
    return {a: _int(attrs, prefix + a) for a in SPACE_ATTRS}


def parse_profiles(attrs: dict[str, str], kind: str) -> list[str]:
    """Profiles of allocation/<kind>/<profile>/total_bytes (several while a convert is running)."""
    prefix = f"allocation/{kind}/"
    found = set()
    for k in attrs:
        if k.startswith(prefix) and k.endswith("/total_bytes"):
            middle = k[len(prefix):-len("/total_bytes")]
            if middle and "/" not in middle and middle in PROFILES:
                found.add(middle)
    return sorted(found, key=lambda p: -PROFILES[p][2])


def parse_devices(attrs: dict[str, str]) -> list[int]:
    """devids listed under devinfo/<devid>/."""
    ids = set()
    for k in attrs:
        if k.startswith("devinfo/"):
            part = k.split("/")[1]
            if part.isdigit():
                ids.add(int(part))
    return sorted(ids)


def create_reservation_bytes(nodesize: int, free_space_tree: bool) -> int:
    """Metadata reserved by one file-creating transaction (see the constants above)."""
    items = nodesize * BTRFS_MAX_LEVEL * 2 * CREATE_TRANS_ITEMS
    delayed_refs = items * (2 if free_space_tree else 1)
    return items + delayed_refs


def mirrored_capacity(usable: list[int], ncopies: int) -> int:
    """Largest C with sum(min(u, C)) >= ncopies*C: logical bytes of chunks that each need a stripe
    on `ncopies` distinct devices (RAID1/RAID1C3/RAID1C4/RAID10)."""
    usable = [max(0, u) for u in usable]
    if len([u for u in usable if u > 0]) < ncopies:
        return 0
    lo, hi = 0, sum(usable) // ncopies
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(u, mid) for u in usable) >= ncopies * mid:
            lo = mid
        else:
            hi = mid - 1
    return lo


def allocatable_chunk_bytes(usable: list[int], profile: str) -> tuple[int, bool]:
    """(logical bytes that new chunks of `profile` could still get, whether one chunk fits now).

    `usable` = per-device unallocated minus the reserved first MiB. Mirrors gather_device_info():
    a device counts when it has BTRFS_STRIPE_LEN * dev_stripes available; a chunk needs devs_min
    such devices.
    """
    devs_min, dev_stripes, ncopies, nparity = PROFILES.get(profile, PROFILES["single"])
    ok_devs = [u for u in usable if u >= BTRFS_STRIPE_LEN * dev_stripes]
    can = len(ok_devs) >= devs_min
    if not can:
        return 0, False
    if profile == "dup":
        return sum(u // 2 for u in ok_devs), True
    if nparity:
        return max(0, sum(ok_devs) - nparity * max(ok_devs)), True
    if ncopies > 1:
        return mirrored_capacity(ok_devs, ncopies), True
    return sum(ok_devs), True


def remedies_for(mount: str, verdict: str, can_allocate: bool | None) -> list[str]:
    """The fix, in the order that works (free metadata first, never balance metadata)."""
    mnt = mount or "<mountpoint>"
    steps = [
        "Free metadata first: remove what is not needed — `docker container prune`, `docker image prune -a`, "
        "`docker builder prune` (or podman/crictl equivalents) — then `btrfs subvolume sync "
        f"{mnt}` so deleted layer subvolumes are really cleaned up (their space returns only then).",
        "Then give space back to the allocator from half-empty data chunks, in small steps: "
        f"`btrfs balance start -dusage=5 {mnt}`, then -dusage=10, 20, 30 … (stop once there is unallocated space).",
        "Never balance metadata now (`-m…` or an unfiltered balance): it needs free metadata itself and makes it worse.",
        "If the data balance itself fails with ENOSPC: add a temporary device (`btrfs device add /dev/<spare> "
        f"{mnt}`, e.g. a loop file on another filesystem), run the -dusage steps, then `btrfs device remove /dev/<spare> {mnt}`.",
    ]
    if verdict in (WARNING, CRITICAL):
        return steps
    if can_allocate is False:
        # OK today, but nothing left to allocate: the cheap preventive step
        return [
            "Preventive: give space back to the allocator from half-empty data chunks, in small steps: "
            f"`btrfs balance start -dusage=5 {mnt}`, then -dusage=10, 20, 30 … so a metadata chunk can be allocated.",
            steps[2],
        ]
    return []


def _fmt(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def assess_btrfs(inp: BtrfsInputs) -> BtrfsReport:
    """Compute the metadata-exhaustion verdict for one filesystem."""
    a = inp.attrs
    notes: list[str] = []
    mixed = parse_space(a, "mixed")
    meta = mixed or parse_space(a, "metadata")
    data = mixed or parse_space(a, "data")
    system = parse_space(a, "system")
    meta_profiles = parse_profiles(a, "mixed" if mixed else "metadata")
    data_profiles = parse_profiles(a, "mixed" if mixed else "data")
    meta_profile = meta_profiles[0] if meta_profiles else None
    data_profile = data_profiles[0] if data_profiles else None
    if len(meta_profiles) > 1:
        notes.append(f"several metadata profiles ({', '.join(meta_profiles)}): a conversion is unfinished; using {meta_profile}")
    if mixed:
        notes.append("mixed block groups: data and metadata share the same chunks")
    nodesize = _int(a, "nodesize")
    fst = "features/free_space_tree" in a
    rsv_size = _int(a, "allocation/global_rsv_size")
    rsv_reserved = _int(a, "allocation/global_rsv_reserved")

    m = meta or {}
    d = data or {}
    s = system or {}
    metrics: dict[str, int | None] = {
        "metadata_total_bytes": m.get("total_bytes"),
        "metadata_used_bytes": m.get("bytes_used"),
        "metadata_reserved_bytes": m.get("bytes_reserved"),
        "metadata_pinned_bytes": m.get("bytes_pinned"),
        "metadata_readonly_bytes": m.get("bytes_readonly"),
        "metadata_may_use_bytes": m.get("bytes_may_use"),
        "metadata_zone_unusable_bytes": m.get("bytes_zone_unusable"),
        "metadata_disk_total_bytes": m.get("disk_total"),
        "metadata_chunk_size_bytes": m.get("chunk_size"),
        "global_reserve_bytes": rsv_size,
        "global_reserve_reserved_bytes": rsv_reserved,
        "data_total_bytes": d.get("total_bytes"),
        "data_used_bytes": d.get("bytes_used"),
        "data_disk_total_bytes": d.get("disk_total"),
        "system_total_bytes": s.get("total_bytes"),
        "system_used_bytes": s.get("bytes_used"),
        "system_disk_total_bytes": s.get("disk_total"),
        "nodesize_bytes": nodesize,
    }

    # -- metadata headroom: free bytes in metadata chunks beyond the global reserve ---------------
    # (bytes_pinned is not subtracted: the kernel's ENOSPC flushing commits the transaction,
    # which returns pinned space; btrfs_space_info_used() in space-info.c counts the rest)
    meta_free: int | None = None
    reserve = rsv_size if rsv_size is not None else m.get("bytes_may_use")
    if m.get("total_bytes") is not None and m.get("bytes_used") is not None and reserve is not None:
        meta_free = m["total_bytes"] - m["bytes_used"] - reserve  # type: ignore[operator]
        for k in ("bytes_reserved", "bytes_readonly", "bytes_zone_unusable"):
            meta_free -= m.get(k) or 0
        if mixed:
            # data lives in the same chunks; bytes_used above already counts it
            pass
    metrics["metadata_free_bytes"] = meta_free

    # -- filesystem size and unallocated space --------------------------------------------------
    ncopies_data = PROFILES[data_profile][2] if data_profile in PROFILES and not PROFILES[data_profile][3] else 1
    fs_size: int | None = None
    devs = list(inp.devices) if inp.devices else []
    known_devs = [dv for dv in devs if dv.total_bytes is not None and dv.used_bytes is not None]
    if devs and len(known_devs) == len(devs):
        fs_size = sum(dv.total_bytes for dv in known_devs)  # type: ignore[misc]
    elif inp.statvfs and inp.statvfs.get("f_blocks") is not None:
        # btrfs_statfs() (super.c): f_blocks = super total_bytes / data raid factor
        frsize = inp.statvfs.get("f_frsize") or inp.statvfs.get("f_bsize") or 0
        fs_size = inp.statvfs["f_blocks"] * frsize * ncopies_data
    allocated: int | None = None
    parts = [x.get("disk_total") for x in ((mixed, system) if mixed else (data, meta, system)) if x is not None]
    if parts and all(p is not None for p in parts) and (mixed or (data and meta)):
        allocated = sum(parts)  # type: ignore[arg-type]
    unallocated = fs_size - allocated if fs_size is not None and allocated is not None else None
    metrics["fs_size_bytes"] = fs_size
    metrics["allocated_bytes"] = allocated
    metrics["unallocated_bytes"] = unallocated
    if inp.statvfs:
        fr = inp.statvfs.get("f_frsize") or inp.statvfs.get("f_bsize") or 0
        metrics["df_size_bytes"] = inp.statvfs.get("f_blocks", 0) * fr
        metrics["df_available_bytes"] = inp.statvfs.get("f_bavail", 0) * fr
    else:
        metrics["df_size_bytes"] = metrics["df_available_bytes"] = None

    # devinfo/<devid>/{missing,writeable} (sysfs.c btrfs_devinfo_*_show) complete the ioctl's sizes
    devs = [
        BtrfsDevice(
            dv.devid, dv.path, dv.total_bytes, dv.used_bytes,
            dv.missing if dv.missing is not None else _flag(a, f"devinfo/{dv.devid}/missing"),
            dv.writeable if dv.writeable is not None else _flag(a, f"devinfo/{dv.devid}/writeable"),
        )
        for dv in devs
    ]
    devids = parse_devices(a)
    ndev = len(devs) or len(devids) or 1
    metrics["device_count"] = ndev
    usable: list[int] | None = None
    if known_devs and len(known_devs) == len(devs):
        usable = [max(0, (dv.unallocated_bytes or 0) - DEVICE_RANGE_RESERVED) for dv in known_devs
                  if not dv.missing and dv.writeable is not False]
    elif unallocated is not None and ndev == 1:
        usable = [max(0, unallocated - DEVICE_RANGE_RESERVED)]
    elif unallocated is not None:
        total_usable = max(0, unallocated - DEVICE_RANGE_RESERVED * ndev)
        if meta_profile in PROFILES and total_usable < BTRFS_STRIPE_LEN * PROFILES[meta_profile][1] * PROFILES[meta_profile][0]:
            usable = [0] * ndev
        else:
            notes.append("per-device allocation unknown (no BTRFS_IOC_DEV_INFO in this capture): "
                         f"{_fmt(unallocated)} unallocated in total, but a {meta_profile or '?'} metadata chunk "
                         "needs it on enough devices")

    can_alloc: bool | None = None
    allocatable: int | None = None
    if usable is not None:
        allocatable, can_alloc = allocatable_chunk_bytes(usable, meta_profile or "single")
        if mixed:
            pass
    metrics["metadata_allocatable_bytes"] = allocatable
    full_chunk = None
    if m.get("chunk_size") is not None and fs_size:
        # init_alloc_chunk_ctl_policy_regular() (volumes.c): at most 10% of the writable size
        full_chunk = min(m["chunk_size"], fs_size // 10)  # type: ignore[type-var]
    metrics["metadata_full_chunk_bytes"] = full_chunk

    create = create_reservation_bytes(nodesize, fst) if nodesize else None
    metrics["create_reservation_bytes"] = create
    warn = create * WARN_RESERVATIONS if create else None
    metrics["warning_threshold_bytes"] = warn

    mnt = inp.mountpoints[0] if inp.mountpoints else ""
    metrics["metadata_headroom_bytes"] = None
    verdict, reason = UNKNOWN, ""
    if meta_free is None or create is None or warn is None:
        missing = [n for n, v in (("allocation/metadata/total_bytes", m.get("total_bytes")),
                                  ("allocation/metadata/bytes_used", m.get("bytes_used")),
                                  ("allocation/global_rsv_size", reserve), ("nodesize", nodesize)) if v is None]
        reason = f"cannot tell: missing sysfs attributes ({', '.join(missing)})"
    else:
        headroom = meta_free + (allocatable or 0)
        metrics["metadata_headroom_bytes"] = headroom if allocatable is not None else None
        # the global reserve could not be refilled (block_rsv->full == 0): only alarming when no
        # chunk can be allocated to refill it
        short_rsv = (rsv_size is not None and rsv_reserved is not None and rsv_reserved < rsv_size
                     and (allocatable or 0) < create)
        if allocatable is None and meta_free < warn:
            verdict = UNKNOWN
            reason = (f"only {_fmt(meta_free)} free in metadata chunks beyond the global reserve, and it is unknown "
                      "whether a new metadata chunk can be allocated (per-device space unknown)")
        elif meta_free + (allocatable or 0) < create or short_rsv:
            verdict = CRITICAL
            why = (f"the global reserve is not fully backed ({_fmt(rsv_reserved)} of {_fmt(rsv_size)})" if short_rsv
                   else f"only {_fmt(meta_free)} free in metadata chunks beyond the {_fmt(reserve)} global reserve, "
                        f"less than one file create reserves ({_fmt(create)})")
            reason = (f"metadata exhausted: {why}, and no new metadata chunk can be allocated"
                      + ("" if can_alloc is False else f" beyond {_fmt(allocatable)}")
                      + ": creating files fails with ENOSPC")
        elif headroom < warn:
            verdict = WARNING
            reason = (f"metadata nearly exhausted: {_fmt(meta_free)} free in metadata chunks beyond the global reserve"
                      + (", no unallocated space for a new metadata chunk" if not can_alloc
                         else f", room for only {_fmt(allocatable)} of new metadata chunks")
                      + f"; file creates fail with ENOSPC below {_fmt(create)}")
        else:
            verdict = OK
            if can_alloc:
                reason = (f"a new metadata chunk can still be allocated ({_fmt(allocatable)} possible); "
                          f"{_fmt(meta_free)} free in metadata chunks beyond the global reserve")
            else:
                reason = (f"{_fmt(meta_free)} free in metadata chunks beyond the global reserve "
                          f"(ENOSPC below {_fmt(create)})")
        if can_alloc is False:
            notes.append("all space is allocated to chunks: no new metadata (or data) chunk can be allocated; "
                         "metadata can only use what is left inside its chunks")
            dfa = metrics.get("df_available_bytes")
            if dfa and not mixed:
                notes.append(f"df shows {_fmt(dfa)} available: that is free space inside data chunks, "
                             "which metadata cannot use")
        elif can_alloc and full_chunk and allocatable is not None and allocatable < full_chunk:
            notes.append(f"only {_fmt(allocatable)} left for new metadata chunks (a full one is {_fmt(full_chunk)})")
        if can_alloc is False and ndev > 1 and usable and sum(usable) >= BTRFS_STRIPE_LEN * 2:
            # calc_available_free_space() (space-info.c) counts the total unallocated space
            # (free_chunk_space / profile factor) when overcommitting metadata reservations
            notes.append(f"{_fmt(sum(usable))} is unallocated, but on too few devices for a {meta_profile} chunk: "
                         "the kernel still overcommits metadata against it, so writes can go on past this point "
                         "until a transaction aborts with ENOSPC and the filesystem turns read-only")
        if len(meta_profiles) == 1 and meta_profile in ("raid1", "raid1c3", "raid1c4", "raid10") and usable:
            notes.append(f"{meta_profile} metadata needs unallocated space on {PROFILES[meta_profile][0]} devices at once; "
                         "per-device usable: " + ", ".join(_fmt(u) for u in usable))

    return BtrfsReport(
        fsid=inp.fsid,
        mountpoints=list(inp.mountpoints),
        verdict=verdict,
        reason=reason,
        remedies=remedies_for(mnt, verdict, can_alloc),
        notes=notes,
        metrics=metrics,
        metadata_profile=meta_profile,
        subvolume_count=inp.subvolume_count,
        docker_roots=list(inp.docker_roots),
        data_profile=data_profile,
        metadata_copies=PROFILES[meta_profile][2] if meta_profile in PROFILES else None,
        can_allocate_metadata_chunk=can_alloc,
        label=(a.get("label") or "").strip() or None,
        devices=devs,
        source=inp.source,
        statvfs=dict(inp.statvfs) if inp.statvfs else None,
    )


def worst_verdict(reports: list[BtrfsReport]) -> str:
    """The most severe verdict of several (unknown ranks above critical for exit codes)."""
    if not reports:
        return OK
    return max((r.verdict for r in reports), key=lambda v: VERDICT_ORDER.get(v, 3))
