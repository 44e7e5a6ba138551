"""Container runtimes: who owns a mount, and the stacks of containers and images (I/O on disk).

`attach_owners` is the seam `ls` calls; runtime modules fill in `OverlayMount.owner` and layer
identities from the runtime's on-disk records (no daemon API).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ovlinspect.hostfs import HostRoots
    from ovlinspect.model import OverlayMount


def attach_owners(mounts: list[OverlayMount], roots: HostRoots) -> list[OverlayMount]:
    """Return the mounts with `owner` filled in where a runtime claims them (unchanged for now)."""
    return mounts


def stack_for_named(roots: HostRoots, container: str | None = None, image: str | None = None):  # type: ignore[no-untyped-def]
    """The LayerStack of a container or image, rebuilt from the runtime's on-disk records."""
    from ovlinspect.errors import UsageError

    raise UsageError("--container/--image need runtime support, which is not built yet")
