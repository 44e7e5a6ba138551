#!/usr/bin/env bash
# The whole test suite: installs what the tests need (Debian packages too, when root), then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
[ -x .venv/bin/python ] || python3 -m venv .venv
# editable_mode=compat: a path entry instead of setuptools' import hook, which cost ~15 ms of
# every start-up (README's install line does the same)
.venv/bin/pip install -q --disable-pip-version-check --config-settings editable_mode=compat -e '.[test]'
exec .venv/bin/python -m pytest "$@"
