"""Containerd: read the on-disk records of a data root (I/O, read-only)."""

from __future__ import annotations

from typing import Any


class ContainerdRuntime:
    name = "containerd"

    def __init__(self, found: Any):
        self.found = found
        self.root = found.path
        self.problems: list[Any] = []

    def claim_mount(self, m: Any) -> Any:
        return None

    def find(self, container: str | None = None, image: str | None = None) -> Any:
        return None

    def stack(self, hit: Any, roots: Any) -> Any:
        raise NotImplementedError

    def layer_dirs(self) -> list[tuple[str, str]]:
        return []

    def orphan_facts(self, mounted: set[str], now: float, daemon_running: bool) -> list[Any]:
        return []
