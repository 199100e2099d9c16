#!/usr/bin/env bash
# Installs everything the tests need into the active Python environment (run it inside a venv):
#   the project with its [dev] extra (nbdev 2 and its pins, the backend drivers, pytest, playwright),
#   on Python 3.12 the session-management client we test against, and the Debian packages the system tests use.
#   bash tools/install_dev.sh
set -euo pipefail
cd "$(dirname "$0")/.."
pip_q() { python -m pip install -q --disable-pip-version-check "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; return "${PIPESTATUS[0]}"; }

pip_q -e ".[dev]"

bash tools/install_client.sh

bash tools/install_system.sh  # Debian's chromium, redis-server, pgbouncer
