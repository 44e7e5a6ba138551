"""Stream the disk usage of layer directories (I/O): scandir over directory fds, lstat only.

Rules (GNU du's, so `apparent_bytes` = `du -sb DIR` and `allocated_bytes` = `du -s -B1 DIR`):
- every entry counts its own st_size / st_blocks*512, directories and the root included;
- a non-directory with st_nlink > 1 counts once per (st_dev, st_ino) (coreutils du.c: hash_ins
  only when `!S_ISDIR && 1 < st_nlink`);
- symlinks are never followed: children are opened relative to their parent's fd with
  O_NOFOLLOW|O_DIRECTORY, entries are lstat'ed (fstatat AT_SYMLINK_NOFOLLOW via DirEntry.stat);
- another mount is never walked into: an entry whose st_dev differs from the root's, or a
  directory that is a mount point in mountinfo (a same-device bind mount), is skipped and counted;
- iterative, no recursion; memory is the hard-link table plus one fd and one list of subdirectory
  names per level of depth that still has subdirectories to visit (a frame is dropped when its last
  subdirectory is entered) — not proportional to the number of files.
Markers (Documentation/filesystems/overlayfs.rst): a whiteout is a char device 0/0 (or, 6.7+, a
zero-size regular file with `<prefix>whiteout` inside a dir whose `<prefix>opaque` is "x");
an opaque dir has `<prefix>opaque` == "y". Xattrs are read on directory fds only (plus the rare
zero-size file in an "x" dir), never through a symlink.

`walk_layers` runs many walks on worker processes (fork; units of a layer's top-level entries,
largest first): threads do not help a Python walker (GIL), processes do. `walk_shadows` walks a
stack's layers together where they overlap (hidden bytes, copy-ups; verdicts from
analysis/usage.merge_dir). `collect_usage` is the library entry point: stacks in, DuReport out.
"""

from __future__ import annotations

import errno
import heapq
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from ovlinspect.errors import Problem, problem_from_oserror
from ovlinspect.model import LayerRole, LayerStack, ShadowUsage, TopFile, TreeUsage

if TYPE_CHECKING:
    from ovlinspect.analysis.usage import DuReport

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
O_ROOT = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC  # the layer path itself is a host path
O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
MAX_PROBLEMS = 50  # per walk: the first ones are kept, the rest only counted
TICK = 8192  # entries between progress ticks

_S_IFMT = 0o170000
_S_IFDIR = 0o040000
_S_IFREG = 0o100000
_S_IFLNK = 0o120000
_S_IFCHR = 0o020000


@dataclass
class WalkResult:
    """A walk's usage plus its hard-link table (to merge slices and dedupe across layers)."""

    usage: TreeUsage
    dev: int = 0
    links: dict[int, tuple[int, int]] = field(default_factory=dict)  # ino -> (apparent, allocated)


def _opaque_mark(fd: int, name: str) -> bytes | None:
    """The value of `name` (an overlay xattr) on an open directory, or None."""
    try:
        return os.getxattr(fd, name)
    except OSError:
        return None


def _is_file_whiteout(dir_fd: int, name: str, attr: str) -> bool:
    """A zero-size regular file marked `<prefix>whiteout` (inside an opaque=x dir)."""
    try:
        fd = os.open(name, O_FILE, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        os.getxattr(fd, attr)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def walk_tree(
    root: str,
    *,
    xattr_prefix: str = "trusted.overlay.",
    mount_relpaths: frozenset[str] = frozenset(),
    top_n: int = 0,
    sub: Sequence[str] = (),
    names: Sequence[str] | None = None,
    count_root: bool = True,
    tick: Callable[[int], None] | None = None,
    dir_fd: int | None = None,
    absent_ok: bool = False,
) -> WalkResult:
    """Walk one directory tree alone and count it by du's rules.

    sub: start at this subdirectory of `root` (components, each opened with O_NOFOLLOW; paths
    in the result stay relative to `root`). names: walk only these entries of the start dir (a
    slice; `count_root` says whether the start dir itself is counted). mount_relpaths: paths
    relative to `root` that are mount points. dir_fd: open `root` itself relative to this fd with
    O_NOFOLLOW (a subtree inside a layer). absent_ok: a `sub` that this layer does not have as a
    directory (absent, a file, a symlink: not followed) counts as empty. Never raises for trouble inside the tree: it becomes
    a Problem and `complete=False`.
    """
    try:
        if dir_fd is None:
            rfd = os.open(root, O_ROOT)
        else:
            rfd = os.open(root, O_DIR, dir_fd=dir_fd)
    except OSError as exc:
        return WalkResult(TreeUsage(complete=False, problems=(problem_from_oserror(exc, root, "open layer dir"),)))
    try:
        dev = os.fstat(rfd).st_dev
        rel = ""
        for comp in sub:
            rel = _rel(rel, comp)
            try:
                nfd = os.open(comp, O_DIR, dir_fd=rfd)
            except OSError as exc:
                if absent_ok and exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    return WalkResult(TreeUsage(), dev)
                return WalkResult(TreeUsage(complete=False, problems=(problem_from_oserror(exc, _join(root, rel), "open directory"),)), dev)
            os.close(rfd)
            rfd = nfd
            if os.fstat(rfd).st_dev != dev or rel in mount_relpaths:
                return WalkResult(TreeUsage(skipped_mounts=1 if count_root else 0), dev)
        return _walk(rfd, dev, rel, root, xattr_prefix, mount_relpaths, top_n, names, count_root, tick)
    finally:
        os.close(rfd)


def _walk(
    rfd: int,
    dev: int,
    base_rel: str,
    root: str,
    prefix: str,
    mount_relpaths: frozenset[str],
    top_n: int,
    names: Sequence[str] | None,
    count_root: bool,
    tick: Callable[[int], None] | None,
) -> WalkResult:
    problems: list[Problem] = []
    n_problems = 0
    opaque_attr = prefix + "opaque"
    whiteout_attr = prefix + "whiteout"
    links: dict[int, tuple[int, int]] = {}
    heap: list[tuple[int, int, str]] = []
    apparent = blocks = files = dirs = symlinks = whiteouts = opaques = other = skipped = dup_names = 0
    next_tick = TICK
    rst = os.fstat(rfd)
    if count_root:
        apparent += rst.st_size
        blocks += rst.st_blocks
        dirs += 1
    mark = _opaque_mark(rfd, opaque_attr)
    if count_root and mark == b"y":
        opaques += 1
    root_x = mark == b"x"
    check_mounts = bool(mount_relpaths)
    S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR = _S_IFMT, _S_IFDIR, _S_IFREG, _S_IFLNK, _S_IFCHR  # locals: faster
    wanted = None if names is None else set(names)

    # A frame: (fd, relative path ("" = root), pending subdirectory names, "x"-opaque dir)
    stack: list[tuple[int, str, list[str], bool]] = []
    cur_fd, cur_rel, cur_x = rfd, base_rel, root_x
    try:
        while True:
            # -- list the current directory: lstat every entry while the iterator is open --
            subdirs: list[str] = []
            try:
                with os.scandir(cur_fd) as it:
                    entries = it if wanted is None or cur_fd != rfd else (e for e in it if e.name in wanted)
                    for e in entries:
                        try:
                            st = e.stat(follow_symlinks=False)
                        except OSError as exc:
                            n_problems += 1
                            if len(problems) < MAX_PROBLEMS:
                                problems.append(problem_from_oserror(exc, _join(root, cur_rel, e.name), "lstat"))
                            continue
                        if st.st_dev != dev:
                            skipped += 1
                            continue
                        m = st.st_mode & S_IFMT
                        if m == S_IFREG:  # the common case first
                            if st.st_nlink > 1:
                                ino = st.st_ino
                                if ino in links:  # counted already: only the name counts
                                    dup_names += 1
                                    files += 1
                                    continue
                                links[ino] = (st.st_size, st.st_blocks * 512)
                            apparent += st.st_size
                            blocks += st.st_blocks
                            if cur_x and st.st_size == 0 and _is_file_whiteout(cur_fd, e.name, whiteout_attr):
                                whiteouts += 1
                                continue
                            files += 1
                            if top_n:
                                size = st.st_size
                                if len(heap) < top_n:
                                    heapq.heappush(heap, (size, st.st_blocks * 512, _rel(cur_rel, e.name)))
                                elif size > heap[0][0]:
                                    heapq.heapreplace(heap, (size, st.st_blocks * 512, _rel(cur_rel, e.name)))
                            continue
                        if m == S_IFDIR:
                            if check_mounts and _rel(cur_rel, e.name) in mount_relpaths:
                                skipped += 1
                                continue
                            apparent += st.st_size
                            blocks += st.st_blocks
                            dirs += 1
                            subdirs.append(e.name)
                            continue
                        if m == S_IFLNK:
                            symlinks += 1
                        elif m == S_IFCHR and st.st_rdev == 0:
                            whiteouts += 1
                        else:
                            other += 1
                        if st.st_nlink > 1:
                            ino = st.st_ino
                            if ino in links:
                                dup_names += 1
                                continue
                            links[ino] = (st.st_size, st.st_blocks * 512)
                        apparent += st.st_size
                        blocks += st.st_blocks
            except OSError as exc:
                n_problems += 1
                if len(problems) < MAX_PROBLEMS:
                    problems.append(problem_from_oserror(exc, _join(root, cur_rel), "read directory"))
            if tick is not None:
                seen = files + dirs + symlinks + whiteouts + other + skipped
                if seen >= next_tick:
                    tick(seen)
                    next_tick = seen + TICK
            stack.append((cur_fd, cur_rel, subdirs, cur_x))
            cur_fd = -1  # owned by the stack now
            # -- descend into the next pending subdirectory (depth first), closing finished dirs --
            while stack:
                fd, rel, pend, _x = stack[-1]
                if not pend:
                    stack.pop()
                    if fd != rfd:
                        os.close(fd)
                    continue
                name = pend.pop()
                try:
                    cfd = os.open(name, O_DIR, dir_fd=fd)
                except OSError as exc:
                    # ELOOP/ENOTDIR: replaced by a symlink or a file since the lstat (not followed)
                    n_problems += 1
                    if len(problems) < MAX_PROBLEMS:
                        problems.append(problem_from_oserror(exc, _join(root, rel, name), "open directory"))
                    continue
                if not pend:
                    # its last subdirectory: the frame is done, so drop it (and its fd) now. A deep
                    # chain then holds one fd, not one per level (10,000 levels > RLIMIT_NOFILE 1024)
                    stack.pop()
                    if fd != rfd:
                        os.close(fd)
                # (its st_dev was checked on the lstat from the parent's listing)
                cmark = _opaque_mark(cfd, opaque_attr)
                if cmark == b"y":
                    opaques += 1
                cur_fd, cur_rel, cur_x = cfd, _rel(rel, name), cmark == b"x"
                break
            else:
                break
    finally:
        if cur_fd not in (-1, rfd):
            os.close(cur_fd)
        for frame in stack:
            if frame[0] != rfd:
                os.close(frame[0])
    if tick is not None:
        tick(files + dirs + symlinks + whiteouts + other + skipped)
    if n_problems > len(problems):
        problems.append(Problem("truncated", f"{n_problems - len(problems)} more problems not shown", root))
    top = tuple(TopFile(p, a, b) for a, b, p in sorted(heap, reverse=True))
    usage = TreeUsage(
        apparent_bytes=apparent,
        allocated_bytes=blocks * 512,
        files=files,
        dirs=dirs,
        symlinks=symlinks,
        whiteouts=whiteouts,
        opaque_dirs=opaques,
        other=other,
        inodes=files + dirs + symlinks + whiteouts + other - dup_names,  # names less repeated hard links
        skipped_mounts=skipped,
        complete=n_problems == 0,
        top=top,
        problems=tuple(problems),
    )
    return WalkResult(usage, dev, links)


def _rel(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _join(root: str, rel: str, name: str = "") -> str:
    out = os.path.join(root, rel) if rel else root
    return os.path.join(out, name) if name else out


# ---------------------------------------------------------------------------------------------
# Merging slices and layers


def merge_results(parts: Iterable[WalkResult], top_n: int = 0) -> WalkResult:
    """Combine walks of disjoint slices of one tree (or of several trees): sums, with inodes
    hard-linked across slices counted once (same device)."""
    parts = list(parts)
    if len(parts) == 1:
        return parts[0]
    links: dict[int, tuple[int, int]] = {}
    acc: dict[str, int] = dict.fromkeys(
        ("apparent_bytes", "allocated_bytes", "files", "dirs", "symlinks", "whiteouts", "opaque_dirs", "other", "inodes", "skipped_mounts"), 0
    )
    complete = True
    problems: list[Problem] = []
    tops: list[TopFile] = []
    dev = next((p.dev for p in parts if p.dev), 0)
    for p in parts:
        u = p.usage
        for k in acc:
            acc[k] += getattr(u, k)
        complete = complete and u.complete
        problems.extend(u.problems)
        tops.extend(u.top)
        if p.dev == dev:
            for ino, val in p.links.items():
                if ino in links:
                    acc["apparent_bytes"] -= val[0]
                    acc["allocated_bytes"] -= val[1]
                    acc["inodes"] -= 1
                else:
                    links[ino] = val
    tops.sort(key=lambda t: t.apparent_bytes, reverse=True)
    usage = TreeUsage(**acc, complete=complete, top=tuple(tops[:top_n]), problems=tuple(problems))
    return WalkResult(usage, dev, links)


def cross_layer_duplicates(results: Sequence[WalkResult]) -> tuple[int, int, int]:
    """(apparent, allocated, inodes) counted in more than one layer because a file is hard-linked
    across layer dirs: subtract from a plain sum to get what `du -s L1 L2 ...` reports."""
    seen: dict[tuple[int, int], tuple[int, int]] = {}
    dup_a = dup_b = dup_i = 0
    for r in results:
        for ino, val in r.links.items():
            key = (r.dev, ino)
            if key in seen:
                dup_a += val[0]
                dup_b += val[1]
                dup_i += 1
            else:
                seen[key] = val
    return dup_a, dup_b, dup_i


# ---------------------------------------------------------------------------------------------
# Parallel driver


@dataclass(frozen=True)
class WalkJob:
    """One unit of work for a worker: a layer dir, or a slice of its top-level entries."""

    key: int  # which layer the result belongs to
    path: str
    xattr_prefix: str = "trusted.overlay."
    mount_relpaths: frozenset[str] = frozenset()
    top_n: int = 0
    sub: tuple[str, ...] = ()
    names: tuple[str, ...] | None = None
    count_root: bool = True
    absent_ok: bool = False  # the start dir (a subpath of the merged view) may be missing in this layer


_counter = None  # a shared multiprocessing.RawValue in workers: entries seen so far


def _init_worker(counter: object) -> None:
    import signal

    # Ctrl-C goes to the whole process group: the parent handles it (exit 130, one line) and
    # terminates the workers; they must not print tracebacks of their own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _counter
    _counter = counter


def _run_job(job: WalkJob) -> tuple[int, WalkResult]:
    last = [0]

    def tick(n: int) -> None:
        c = _counter
        if c is not None:
            c.value += n - last[0]  # type: ignore[attr-defined]
            last[0] = n

    return job.key, _walk_job(job, tick)


def _walk_job(job: WalkJob, tick: Callable[[int], None] | None) -> WalkResult:
    """Walk one job's slice of a layer (in this process or a worker)."""
    return walk_tree(job.path, xattr_prefix=job.xattr_prefix, mount_relpaths=job.mount_relpaths, top_n=job.top_n,
                     sub=job.sub, names=job.names, count_root=job.count_root, tick=tick, absent_ok=job.absent_ok)


def default_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def plan_jobs(layers: Sequence[WalkJob], workers: int, expand_nlink: int = 48) -> list[WalkJob]:
    """Cut layers into units for the workers: per layer, one unit for the root dir and its
    non-directory entries, one per top-level directory (and one level deeper for directories
    with more than `expand_nlink` subdirectories), largest first by directory st_nlink (2 + the
    number of subdirectories on ext4/xfs: a free size hint) so no big tree runs alone at the end."""
    if workers <= 1:
        return list(layers)
    units: list[tuple[int, int, WalkJob]] = []
    for li, job in enumerate(layers):
        todo = [(job, 0)]
        while todo:
            unit, depth = todo.pop()
            try:
                fd = _open_sub(job.path, unit.sub)
                try:
                    with os.scandir(fd) as it:
                        listing = [(e.name, e.is_dir(follow_symlinks=False) and e.stat(follow_symlinks=False).st_nlink) for e in it]
                finally:
                    os.close(fd)
            except OSError:
                units.append((1 << 30, li, unit))  # the walk reports the problem
                continue
            plain = tuple(n for n, nl in listing if not nl)
            units.append((len(plain) // 16 + 1, li, replace(unit, names=plain, count_root=True)))
            for name, nl in listing:
                if not nl:
                    continue
                child = replace(unit, sub=unit.sub + (name,), names=None, count_root=True)
                if depth == 0 and nl > expand_nlink:
                    todo.append((child, depth + 1))
                else:
                    units.append((int(nl), li, child))
    units.sort(key=lambda u: (-u[0], u[1]))
    return [u[2] for u in units]


def _descend(fd: int, comps: Sequence[str]) -> int:
    """Walk `fd` down through `comps`, each component opened with O_NOFOLLOW; consumes `fd`."""
    try:
        for comp in comps:
            nfd = os.open(comp, O_DIR, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except OSError:
        os.close(fd)
        raise
    return fd


def _open_sub(root: str, sub: Sequence[str]) -> int:
    """An fd for root/sub..., each component opened with O_NOFOLLOW (scandir(fd) dups and closes it)."""
    return _descend(os.open(root, O_ROOT), sub)


def walk_layers(
    layers: Sequence[WalkJob],
    workers: int | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> dict[int, WalkResult]:
    """Walk every layer (key -> merged result). Runs on `workers` forked processes when > 1.

    progress(entries_seen, layers_done, layers_total) is called from this process now and then.
    KeyboardInterrupt terminates the workers and propagates.
    """
    workers = default_workers() if workers is None else max(1, workers)
    jobs = plan_jobs(layers, workers)
    parts: dict[int, list[WalkResult]] = {j.key: [] for j in layers}
    remaining = {j.key: 0 for j in layers}
    for j in jobs:
        remaining[j.key] += 1
    done_layers = 0
    top_n = max((j.top_n for j in layers), default=0)
    if workers == 1 or len(jobs) <= 1:
        total = [0]
        for j in jobs:
            base = total[0]

            def tick(n: int, base: int = base, done: int = done_layers) -> None:
                total[0] = base + n
                if progress:
                    progress(total[0], done, len(layers))

            parts[j.key].append(_walk_job(j, tick))
            remaining[j.key] -= 1
            if remaining[j.key] == 0:
                done_layers += 1
        return {k: merge_results(v, top_n) for k, v in parts.items()}

    import multiprocessing as mp

    ctx = mp.get_context("fork")
    counter = ctx.RawValue("q", 0)
    pool = ctx.Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=(counter,))
    try:
        it = pool.imap_unordered(_run_job, jobs, chunksize=1)
        while True:
            try:
                key, res = it.next(timeout=0.2)
            except mp.TimeoutError:
                if progress:
                    progress(counter.value, done_layers, len(layers))
                continue
            except StopIteration:
                break
            parts[key].append(res)
            remaining[key] -= 1
            if remaining[key] == 0:
                done_layers += 1
            if progress:
                progress(counter.value, done_layers, len(layers))
        pool.close()
    except BaseException:
        # Ctrl-C: stop the workers at once. Pool.terminate() alone can wait on a worker that is
        # busy in a syscall under load (seen once in CI-like runs), so kill them first.
        for proc in list(getattr(pool, "_pool", [])):
            try:
                proc.kill()
            except (OSError, AttributeError, ValueError):
                pass
        pool.terminate()
        raise
    finally:
        pool.join()
    return {k: merge_results(v, top_n) for k, v in parts.items()}


# ---------------------------------------------------------------------------------------------
# Shadows: what each layer of one stack spends that the merged view does not show


def _lgetxattr(dir_fd: int, name: str, attr: str) -> bytes | None:
    """An xattr of `name` inside an open directory, never following a symlink (lgetxattr on the
    /proc/self/fd path: the directory is the fd itself, the last component is not followed)."""
    try:
        return os.getxattr(f"/proc/self/fd/{dir_fd}/{name}", attr, follow_symlinks=False)
    except OSError:
        return None


def _same_content(dfd1: int, name1: str, dfd2: int, name2: str, limit: int = 1 << 20) -> bool | None:
    """Compare two regular files byte for byte (None: could not read one of them)."""
    try:
        f1 = os.open(name1, O_FILE, dir_fd=dfd1)
    except OSError:
        return None
    try:
        f2 = os.open(name2, O_FILE, dir_fd=dfd2)
    except OSError:
        os.close(f1)
        return None
    try:
        while True:
            a = os.read(f1, limit)
            b = os.read(f2, limit)
            if a != b:
                return False
            if not a:
                return True
    except OSError:
        return None
    finally:
        os.close(f1)
        os.close(f2)


def walk_shadows(
    paths: Sequence[str],
    *,
    xattr_prefix: str = "trusted.overlay.",
    compare_content: bool = False,
    start: tuple[str, ...] = (),
) -> tuple[list[ShadowUsage], list[Problem]]:
    """Walk a stack's lookup layers (top first) together, only where they overlap: the merged
    directories present in two or more layers. Returns one ShadowUsage per layer: entries hidden
    by higher layers (a hidden directory counts its whole subtree, walked with walk_tree) and
    copy-ups (regular files over a lower regular file). Memory: one directory's names at a time
    plus the pending merged directories."""
    from ovlinspect.analysis.usage import DIR, LNK, OTHER, REG, WHITEOUT, EntryInfo, merge_dir

    n = len(paths)
    acc = [dict.fromkeys(("hidden_entries", "hidden_apparent_bytes", "hidden_allocated_bytes", "copy_up_files", "copy_up_apparent_bytes",
                          "copy_up_allocated_bytes", "metacopy_files", "same_size_files", "identical_files", "identical_allocated_bytes"), 0)
           for _ in range(n)]
    seen_links: list[set[int]] = [set() for _ in range(n)]
    problems: list[Problem] = []
    opaque_attr, metacopy_attr = xattr_prefix + "opaque", xattr_prefix + "metacopy"
    whiteout_attr, redirect_attr = xattr_prefix + "whiteout", xattr_prefix + "redirect"
    roots: dict[int, int] = {}
    devs: dict[int, int] = {}
    redirect_noted = False
    sub_fds = _DirFdCache()
    try:
        for i, p in enumerate(paths):
            try:
                roots[i] = os.open(p, O_ROOT)
                devs[i] = os.fstat(roots[i]).st_dev
            except OSError as exc:
                problems.append(problem_from_oserror(exc, p, "open layer dir"))
        # a frame: (path components, ((layer, "x"-opaque dir), ...)) — reopened from the layer root
        stack: list[tuple[tuple[str, ...], tuple[tuple[int, bool], ...]]] = []
        top = tuple((i, _opaque_mark(roots[i], opaque_attr) == b"x") for i in sorted(roots))
        if len(top) > 1:
            stack.append((start, top))
        while stack:
            comps, contrib = stack.pop()
            fds: list[int] = []
            try:
                listing_names: list[list[str]] = []
                live: list[tuple[int, bool]] = []
                for li, xdir in contrib:
                    try:
                        fd = sub_fds.open(li, roots[li], comps)
                    except OSError as exc:
                        if comps == start and exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                            continue  # this layer has nothing at the subpath
                        problems.append(problem_from_oserror(exc, _join(paths[li], "/".join(comps)), "open directory"))
                        continue
                    if os.fstat(fd).st_dev != devs[li]:
                        os.close(fd)
                        continue
                    fds.append(fd)
                    live.append((li, xdir))
                    try:
                        listing_names.append(os.listdir(fd))
                    except OSError as exc:
                        problems.append(problem_from_oserror(exc, _join(paths[li], "/".join(comps)), "read directory"))
                        listing_names.append([])
                count: dict[str, int] = {}
                for names in listing_names:
                    for nm in names:
                        count[nm] = count.get(nm, 0) + 1
                multi = {nm for nm, c in count.items() if c > 1}
                if not multi:
                    continue
                listings: list[dict[str, EntryInfo]] = []
                for (li, xdir), fd, names in zip(live, fds, listing_names, strict=True):
                    entries: dict[str, EntryInfo] = {}
                    for nm in names:
                        if nm not in multi:
                            continue
                        try:
                            st = os.lstat(nm, dir_fd=fd)
                        except OSError as exc:
                            problems.append(problem_from_oserror(exc, _join(paths[li], "/".join(comps), nm), "lstat"))
                            continue
                        if st.st_dev != devs[li]:
                            continue
                        fmt = st.st_mode & _S_IFMT
                        opaque = metacopy = False
                        if fmt == _S_IFDIR:
                            kind = DIR
                            opaque = _lgetxattr(fd, nm, opaque_attr) == b"y"
                            if not redirect_noted and _lgetxattr(fd, nm, redirect_attr) is not None:
                                redirect_noted = True
                                problems.append(Problem("redirect", "renamed directories (redirect_dir) are not followed: "
                                                        "their lower content counts as hidden", _join(paths[li], "/".join(comps), nm)))
                        elif fmt == _S_IFREG:
                            if xdir and st.st_size == 0 and _lgetxattr(fd, nm, whiteout_attr) is not None:
                                kind = WHITEOUT
                            else:
                                kind = REG
                                metacopy = _lgetxattr(fd, nm, metacopy_attr) is not None
                        elif fmt == _S_IFLNK:
                            kind = LNK
                        elif fmt == _S_IFCHR and st.st_rdev == 0:
                            kind = WHITEOUT
                        else:
                            kind = OTHER
                        entries[nm] = EntryInfo(kind, st.st_size, st.st_blocks * 512, st.st_ino, st.st_nlink, opaque, metacopy)
                    listings.append(entries)
                verdict = merge_dir(listings)
                for pos, nm in verdict.hidden:
                    li, fd = live[pos][0], fds[pos]
                    e = listings[pos][nm]
                    a = acc[li]
                    if e.kind == DIR:
                        r = walk_tree(nm, xattr_prefix=xattr_prefix, dir_fd=fd)
                        u = r.usage
                        a["hidden_entries"] += u.files + u.dirs + u.symlinks + u.whiteouts + u.other
                        a["hidden_apparent_bytes"] += u.apparent_bytes
                        a["hidden_allocated_bytes"] += u.allocated_bytes
                        problems.extend(u.problems)
                        continue
                    a["hidden_entries"] += 1
                    if e.nlink > 1:
                        if e.ino in seen_links[li]:
                            continue
                        seen_links[li].add(e.ino)
                    a["hidden_apparent_bytes"] += e.size
                    a["hidden_allocated_bytes"] += e.allocated
                for up, lo, nm in verdict.copy_ups:
                    ue, le = listings[up][nm], listings[lo][nm]
                    a = acc[live[up][0]]
                    a["copy_up_files"] += 1
                    a["copy_up_apparent_bytes"] += ue.size
                    a["copy_up_allocated_bytes"] += ue.allocated
                    if ue.metacopy:
                        a["metacopy_files"] += 1
                    elif ue.size == le.size:
                        a["same_size_files"] += 1
                        if compare_content and _same_content(fds[up], nm, fds[lo], nm):
                            a["identical_files"] += 1
                            a["identical_allocated_bytes"] += ue.allocated
                for nm, positions in verdict.descend:
                    sub = []
                    for pos in positions:
                        x = _lgetxattr(fds[pos], nm, opaque_attr) == b"x"
                        sub.append((live[pos][0], x))
                    stack.append((comps + (nm,), tuple(sub)))
            finally:
                for fd in fds:
                    os.close(fd)
    finally:
        sub_fds.close()
        for fd in roots.values():
            os.close(fd)
    out = []
    for a in acc:
        if not compare_content:
            a["identical_files"] = None  # type: ignore[assignment]
            a["identical_allocated_bytes"] = None  # type: ignore[assignment]
        out.append(ShadowUsage(**a))  # type: ignore[arg-type]
    return out, problems


class _DirFdCache:
    """A few recently opened directory fds per (layer, path): a frame's directory is opened from its
    parent's (depth first, the parent is the last one opened), not from the layer root, which cost
    O(depth) opens per directory — O(depth^2), minutes, on a 10,000-deep tree."""

    SIZE = 32

    def __init__(self) -> None:
        self._fds: OrderedDict[tuple[int, tuple[str, ...]], int] = OrderedDict()

    def open(self, layer: int, root_fd: int, comps: tuple[str, ...]) -> int:
        """A new fd (the caller closes it) for `comps` under `root_fd`, each component O_NOFOLLOW."""
        base, done = root_fd, 0
        for j in (len(comps), len(comps) - 1):
            hit = self._fds.get((layer, comps[:j])) if j > 0 else None
            if hit is not None:
                self._fds.move_to_end((layer, comps[:j]))
                base, done = hit, j
                break
        fd = _open_sub_at(base, comps[done:])
        if done < len(comps):
            self._fds[(layer, comps)] = os.dup(fd)
            while len(self._fds) > self.SIZE:
                os.close(self._fds.popitem(last=False)[1])
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _open_sub_at(root_fd: int, comps: Sequence[str]) -> int:
    """An fd for the directory at `comps` under an open root, each component O_NOFOLLOW."""
    return _descend(os.open(".", O_DIR, dir_fd=root_fd), comps)


# ---------------------------------------------------------------------------------------------
# The library entry point: stacks in, DuReport out


@dataclass(frozen=True)
class StackInput:
    """One target for `collect_usage`: a label and its layers (path, role, index), top first."""

    label: str
    layers: tuple[tuple[str, LayerRole, int], ...]
    xattr_prefix: str = "trusted.overlay."
    shadows: bool = False  # compute hidden bytes / copy-ups for this stack
    subpath: tuple[str, ...] = ()  # measure only this directory of the merged view, in every layer


def stack_input(stack: LayerStack, shadows: bool = False) -> StackInput:
    sub = tuple(c for c in stack.subpath.split("/") if c and c != ".")
    label = stack.label + (f" (subpath /{'/'.join(sub)})" if sub else "")
    return StackInput(label, tuple((la.path, la.role, la.index) for la in stack.layers), stack.xattr_prefix, shadows, sub)


def mount_points(mountinfo: bytes) -> list[str]:
    """Every mount point of a mountinfo (to be skipped when found inside a layer dir)."""
    from ovlinspect.mountinfo import parse_mountinfo

    entries, _ = parse_mountinfo(mountinfo)
    return [e.mountpoint for e in entries]


def _mount_relpaths(layer: str, mps: Sequence[str]) -> frozenset[str]:
    base = os.path.realpath(layer).rstrip("/")
    out = set()
    for mp in mps:
        if mp.startswith(base + "/"):
            out.add(mp[len(base) + 1 :])
    return frozenset(out)


def collect_usage(
    stacks: Sequence[StackInput],
    *,
    mountpoints: Sequence[str] = (),
    top_n: int = 0,
    compare_content: bool = False,
    workers: int | None = None,
    progress: Callable[[int, int, int], None] | None = None,
    problems: Sequence[Problem] = (),
) -> DuReport:
    """Walk every distinct layer dir of the stacks once (dirs are the same when their (dev, ino)
    are), then the shadows of the stacks that ask for them, and build the report."""
    from ovlinspect.analysis.usage import LayerUse, Target, build_report

    probs = list(problems)
    keys: dict[object, int] = {}
    paths: list[str] = []
    prefixes: list[str] = []
    subs: list[tuple[str, ...]] = []
    targets: list[Target] = []
    for s in stacks:
        uses = []
        for path, role, index in s.layers:
            try:
                st = os.stat(path)
                ident: object = (st.st_dev, st.st_ino, s.subpath)
            except OSError:
                ident = ("path", path, s.subpath)
            if ident not in keys:
                keys[ident] = len(paths)
                paths.append(path)
                prefixes.append(s.xattr_prefix)
                subs.append(s.subpath)
            uses.append(LayerUse(keys[ident], role, index))
        targets.append(Target(s.label, tuple(uses)))
    jobs = [WalkJob(k, p, prefixes[k], _mount_relpaths(p, mountpoints), top_n, sub=subs[k], absent_ok=bool(subs[k])) for k, p in enumerate(paths)]
    results = walk_layers(jobs, workers, progress)
    for k in range(len(paths)):
        probs.extend(results[k].usage.problems)
    dup = cross_layer_duplicates([results[k] for k in range(len(paths))])
    shadows: dict[int, tuple[int, ShadowUsage]] = {}
    for ti, (s, t) in enumerate(zip(stacks, targets, strict=True)):
        if not s.shadows:
            continue
        lookup = [lu for lu in t.layers if lu.role is not LayerRole.DATA_ONLY]
        if len(lookup) < 1:
            continue
        got, sp = walk_shadows([paths[lu.key] for lu in lookup], xattr_prefix=s.xattr_prefix, compare_content=compare_content, start=s.subpath)
        probs.extend(sp)
        for lu, su in zip(lookup, got, strict=True):
            shadows.setdefault(lu.key, (ti, su))
    usage = {k: r.usage for k, r in results.items()}
    return build_report(paths, targets, usage, dup, shadows, probs)
