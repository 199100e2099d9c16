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

# Debian packages the system tests use: chromium (browser test, driven by Playwright: never `playwright install`,
# no browser downloads here), redis-server (the Redis outage test starts its own), pgbouncer (the PgBouncer test).
need=()
command -v chromium >/dev/null || need+=(chromium)
for binary in redis-server pgbouncer; do
  command -v $binary >/dev/null || [[ -x /usr/sbin/$binary ]] || need+=($binary)
done
if (( ${#need[@]} )); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "not installed: ${need[*]}; their tests will be skipped (apt-get install ${need[*]})" >&2
  fi
fi
