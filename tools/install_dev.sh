#!/usr/bin/env bash
# Installs everything the tests need into the active Python environment (run it inside a venv):
#   the project with its [dev] extra (nbdev 2 and its pins, the backend drivers, pytest, playwright),
#   on Python 3.12 the session-management client we test against, and Debian's chromium for the browser test.
#   bash tools/install_dev.sh
set -euo pipefail
cd "$(dirname "$0")/.."
pip_q() { python -m pip install -q --disable-pip-version-check "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; return "${PIPESTATUS[0]}"; }

pip_q -e ".[dev]"

bash tools/install_client.sh

# The Redis outage test starts its own redis-server, the PgBouncer test its own pgbouncer (Debian's packages).
for binary in redis-server pgbouncer; do
  if ! command -v $binary >/dev/null && [[ ! -x /usr/sbin/$binary ]]; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $binary >/dev/null || echo "could not install $binary" >&2
    else echo "$binary is not installed: its test will be skipped (apt-get install $binary)" >&2; fi
  fi
done

# The browser test drives Debian's chromium with Playwright (never `playwright install`: no browser downloads here).
if ! command -v chromium >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium is not installed: the browser test will be skipped (apt-get install chromium)" >&2
  fi
fi
