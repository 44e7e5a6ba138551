"""A small read-only reader for bbolt (BoltDB) files, as containerd uses them. I/O: reads one file.

What it reads (layout from go.etcd.io/bbolt page.go, db.go, bucket.go, node.go):
- the two meta pages (page ids 0 and 1): magic 0xED0CDAED, version 2, page size, the root
  bucket's root page id, txid and an FNV-64a checksum of the meta fields; the valid meta with the
  higher txid wins (the other is the previous transaction).
- branch pages (flag 0x01): elements {pos u32, ksize u32, pgid u64}; followed down to
- leaf pages (flag 0x02): elements {flags u32, pos u32, ksize u32, vsize u32}; flag 0x01 marks
  a nested bucket whose value is {root pgid u64, sequence u64}, and when root is 0 the bucket is
  "inline": a whole page image follows those 16 bytes inside the value.
- overflow: a page's `overflow` count says how many following pages belong to it.
The freelist page (0x10) is never read. Nothing is written, locked or mmap'ed: the file is read
with plain reads, so a running containerd (which holds an flock) is not disturbed; a file caught
mid-transaction still shows the last committed meta.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

MAGIC = 0xED0CDAED  # bbolt db.go `magic`
VERSION = 2  # bbolt db.go `version`
PAGE_HEADER = 16  # id u64, flags u16, count u16, overflow u32
BRANCH_FLAG = 0x01
LEAF_FLAG = 0x02
META_FLAG = 0x04
BUCKET_LEAF_FLAG = 0x01  # leaf element flag: value is a nested bucket
MAX_DEPTH = 64  # b+tree depth and bucket nesting guard against loops in a corrupt file
MAX_WALK_KEYS = 1_000_000  # walk(): keys visited in all, against buckets that contain themselves


class BoltError(ValueError):
    """The file is not a bbolt database, or is corrupt."""


def _fnv64a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


class BoltDB:
    """A bbolt file held in memory (containerd's metadata files are small: KiB to a few MiB)."""

    def __init__(self, data: bytes):
        self.data = data
        meta = self._pick_meta()
        self.page_size, self.root_pgid, self.txid = meta

    @classmethod
    def open(cls, path: str, limit: int = 1 << 30) -> BoltDB:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise BoltError(f"{path}: larger than {limit} bytes")
        return cls(data)

    def _read_meta(self, off: int) -> tuple[int, int, int] | None:
        d = self.data
        if len(d) < off + PAGE_HEADER + 64:
            return None
        _pid, flags, _count, _ovf = struct.unpack_from("<QHHI", d, off)
        if not flags & META_FLAG:
            return None
        m = off + PAGE_HEADER
        magic, version, page_size, _mflags, root, _seq, _freelist, _pgid, txid, checksum = struct.unpack_from(
            "<IIIIQQQQQQ", d, m
        )
        if magic != MAGIC or version != VERSION:
            return None
        if _fnv64a(d[m : m + 56]) != checksum:
            return None
        return page_size, root, txid

    def _pick_meta(self) -> tuple[int, int, int]:
        first = self._read_meta(0)
        if first is None:
            # page 0 tells the page size; if it is damaged try the common sizes for page 1
            cands = [self._read_meta(ps) for ps in (4096, 8192, 16384, 65536)]
        else:
            cands = [first, self._read_meta(first[0])]
        good = [c for c in cands if c is not None]
        if not good:
            raise BoltError("not a bbolt database (no valid meta page)")
        return max(good, key=lambda c: c[2])

    def _page(self, pgid: int) -> int:
        off = pgid * self.page_size
        if off + PAGE_HEADER > len(self.data) or pgid < 2:
            raise BoltError(f"page {pgid} out of range")
        return off

    def _iter_page(self, base: bytes, off: int, depth: int, seen: set[int] | None = None) -> Iterator[tuple[bytes, bytes, bool]]:
        """Leaf entries (key, value, is_bucket) under the page at `off` in `base`, in key order.

        `seen`: pages already visited in this traversal; a b+tree never reaches a page twice, so a
        corrupt file whose branch points back up is refused instead of looping (count^depth)."""
        if depth > MAX_DEPTH:
            raise BoltError("b+tree too deep (corrupt file?)")
        if off + PAGE_HEADER > len(base):
            raise BoltError("page header beyond the end of the data")
        _pid, flags, count, _ovf = struct.unpack_from("<QHHI", base, off)
        ebase = off + PAGE_HEADER
        if ebase + 16 * count > len(base):
            raise BoltError(f"page at offset {off} claims {count} elements beyond the end of the data")
        if flags & LEAF_FLAG:
            for i in range(count):
                e = ebase + 16 * i
                eflags, pos, ksize, vsize = struct.unpack_from("<IIII", base, e)
                k0 = e + pos
                yield base[k0 : k0 + ksize], base[k0 + ksize : k0 + ksize + vsize], bool(eflags & BUCKET_LEAF_FLAG)
        elif flags & BRANCH_FLAG:
            if base is not self.data:
                raise BoltError("branch page inside an inline bucket")
            seen = set() if seen is None else seen
            for i in range(count):
                e = ebase + 16 * i
                _pos, _ksize, child = struct.unpack_from("<IIQ", base, e)
                if child in seen:
                    raise BoltError(f"page {child} reached twice (corrupt b+tree)")
                seen.add(child)
                yield from self._iter_page(self.data, self._page(child), depth + 1, seen)
        else:
            raise BoltError(f"unexpected page flags {flags:#x}")

    def _iter_bucket_value(self, value: bytes, depth: int) -> Iterator[tuple[bytes, bytes, bool]]:
        if len(value) < 16:
            raise BoltError("short bucket header")
        root, _seq = struct.unpack_from("<QQ", value, 0)
        if root == 0:  # inline bucket: a page image follows the header
            yield from self._iter_page(value, 16, depth + 1)
        else:
            yield from self._iter_page(self.data, self._page(root), depth + 1)

    def items(self, *path: bytes) -> Iterator[tuple[bytes, bytes, bool]]:
        """(key, value, is_bucket) of the bucket at `path` (() = the root bucket). Raises KeyError."""
        it = self._iter_page(self.data, self._page(self.root_pgid), 0)
        for depth, name in enumerate(path):
            for k, v, is_bucket in it:
                if k == name and is_bucket:
                    it = self._iter_bucket_value(v, depth + 1)
                    break
            else:
                raise KeyError(b"/".join(path))
        yield from it

    def get(self, *path: bytes) -> bytes | None:
        """The value of key path[-1] in the bucket path[:-1] (None when absent or a bucket)."""
        try:
            for k, v, is_bucket in self.items(*path[:-1]):
                if k == path[-1]:
                    return None if is_bucket else v
        except KeyError:
            return None
        return None

    def buckets(self, *path: bytes) -> list[bytes]:
        """Names of the nested buckets of the bucket at `path` ([] when absent)."""
        try:
            return [k for k, _v, b in self.items(*path) if b]
        except KeyError:
            return []

    def values(self, *path: bytes) -> dict[bytes, bytes]:
        """Plain key/values of the bucket at `path` ({} when absent)."""
        try:
            return {k: v for k, v, b in self.items(*path) if not b}
        except KeyError:
            return {}

    def walk(self, *path: bytes, depth: int = 0, budget: list[int] | None = None) -> Iterator[tuple[tuple[bytes, ...], bytes | None]]:
        """Every key under `path`, depth first: (full path, value or None for a bucket).

        A corrupt file can make buckets contain themselves; `budget` bounds the total keys visited
        (a real containerd metadata file has a few thousand)."""
        if depth > MAX_DEPTH:
            raise BoltError("buckets nested too deep")
        budget = [MAX_WALK_KEYS] if budget is None else budget
        for k, v, b in list(self.items(*path)):
            budget[0] -= 1
            if budget[0] < 0:
                raise BoltError(f"more than {MAX_WALK_KEYS} keys (corrupt file: buckets that contain themselves?)")
            yield (*path, k), (None if b else v)
            if b:
                yield from self.walk(*path, k, depth=depth + 1, budget=budget)


def uvarint(b: bytes) -> int:
    """Go's binary.Uvarint (containerd stores snapshot ids this way)."""
    x = 0
    s = 0
    for i, c in enumerate(b):
        if i >= 10:
            break
        x |= (c & 0x7F) << s
        if c < 0x80:
            return x
        s += 7
    raise BoltError("bad uvarint")


def varint(b: bytes) -> int:
    ux = uvarint(b)
    x = ux >> 1
    return ~x if ux & 1 else x
