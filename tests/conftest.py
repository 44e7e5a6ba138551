"""Test session set-up: a private mount namespace for root, and CI's rule that required tiers run.

Under CI=true a skipped test marked kernel / btrfs / runtime / prometheus is turned into a failure:
CI must prove them, not skip them.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

REQUIRED_IN_CI = {"kernel", "btrfs", "runtime", "prometheus"}
IS_ROOT = os.geteuid() == 0
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SAMPLES = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "samples"))
if not os.path.isdir(SAMPLES):
    SAMPLES = os.environ.get("OVLINSPECT_SAMPLES", SAMPLES)


def pytest_configure(config: pytest.Config) -> None:
    # Enter a private mount namespace before any thread exists (unshare(CLONE_NEWNS) needs a
    # single-threaded caller): every mount the tests make dies with this process.
    if IS_ROOT and not os.environ.get("OVLINSPECT_TEST_NO_UNSHARE"):
        from ovl import enter_private_mount_namespace, in_private_namespace

        if not in_private_namespace():
            enter_private_mount_namespace()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    rep = outcome.get_result()
    if IN_CI and rep.skipped and REQUIRED_IN_CI & {m.name for m in item.iter_markers()}:
        rep.outcome = "failed"
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.longrepr = f"CI=true: a {sorted(REQUIRED_IN_CI & {m.name for m in item.iter_markers()})} test must run, but it was skipped: {reason}"


@pytest.fixture
def root_required() -> None:
    if not IS_ROOT:
        pytest.skip("needs root (real mounts)")


@pytest.fixture
def samples() -> str:
    if not os.path.isdir(SAMPLES):
        if IN_CI:
            pytest.fail(f"CI=true: the shared samples must be beside the clone ({SAMPLES})")
        pytest.skip(reason=f"shared samples not found at {SAMPLES}")
    return SAMPLES
