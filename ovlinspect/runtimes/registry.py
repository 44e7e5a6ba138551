"""Load every discovered runtime root into its adapter (I/O: reads the runtimes' records)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ovlinspect.errors import Problem
from ovlinspect.model import Layer


@dataclass
class Loaded:
    runtimes: list[Any] = field(default_factory=list)  # DockerRuntime | PodmanRuntime | ContainerdRuntime
    problems: list[Problem] = field(default_factory=list)


def load_all(rr: Any) -> Loaded:
    """One adapter per data root found; a root that cannot be read at all becomes a Problem."""
    import importlib

    out = Loaded(problems=list(rr.problems))
    for modname, clsname, founds in (
        ("docker", "DockerRuntime", rr.docker),
        ("podman", "PodmanRuntime", rr.podman),
        ("containerd", "ContainerdRuntime", rr.containerd),
    ):
        if not founds:
            continue  # an adapter is imported only for a runtime this host has (~10 ms each)
        cls = getattr(importlib.import_module(f"ovlinspect.runtimes.{modname}"), clsname)
        for f in founds:
            try:
                rt = cls(f)
            except OSError as exc:
                from ovlinspect.errors import problem_from_oserror

                out.problems.append(problem_from_oserror(exc, f.path))
                continue
            out.runtimes.append(rt)
            out.problems.extend(rt.problems)
    return out


class IdentityMemo:
    """Runtime adapters' `_with_identity(layer)`, memoised per Layer object: the containers of one
    image share their lower Layers (analysis.mounts.AssessMemo), and keep sharing them once the
    runtime has named them, so `ls` names each layer once and encodes its record once. An adapter
    implements `_identify(layer) -> Layer`."""

    _identity_memo: dict[int, tuple[Layer, Layer]]

    def _identify(self, la: Layer) -> Layer:
        raise NotImplementedError

    def _with_identity(self, la: Layer) -> Layer:
        memo = self.__dict__.setdefault("_identity_memo", {})
        hit = memo.get(id(la))
        if hit is not None and hit[0] is la:  # the input is kept, so its id stays its own
            return hit[1]
        out = self._identify(la)
        memo[id(la)] = (la, out)
        return out
