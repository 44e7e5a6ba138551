#!/usr/bin/env bash
# The whole test suite: installs what the tests need (Debian packages too, when root), then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
exec .venv/bin/python -m pytest "$@"
