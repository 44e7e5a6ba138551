"""Load every discovered runtime root into its adapter (I/O: reads the runtimes' records)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ovlinspect.errors import Problem


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
