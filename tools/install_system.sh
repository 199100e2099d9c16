#!/usr/bin/env bash
# Installs the Debian packages the system tests use, when missing (apt-get as root, or with passwordless sudo):
#   bash tools/install_system.sh      (tools/install_dev.sh runs it; so does CI's runtime venv step, tools/ci/runtime.sh)
set -euo pipefail
# Debian packages the system tests use: chromium (browser test, driven by Playwright: never `playwright install`,
# no browser downloads here), redis-server (the Redis outage test starts its own), pgbouncer (the PgBouncer test).
need=()
command -v chromium >/dev/null || need+=(chromium)
for binary in redis-server pgbouncer; do
  command -v $binary >/dev/null || [[ -x /usr/sbin/$binary ]] || need+=($binary)
done
if (( ${#need[@]} )); then
  as_root=(); [[ $(id -u) == 0 ]] || as_root=(sudo -n)  # not root: passwordless sudo (a CI runner) or nothing
  if command -v apt-get >/dev/null && { [[ $(id -u) == 0 ]] || sudo -n true 2>/dev/null; }; then
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "not installed: ${need[*]}; their tests will be skipped (apt-get install ${need[*]})" >&2
  fi
fi
